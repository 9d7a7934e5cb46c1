"""One self-contained report.html for a run, a study, or a folder of studies (e.g. the reference study).

Every number comes from the folder's files (result.json, summary.json, predictions.csv); figures are the
PNGs the runs and studies wrote plus a radar chart and a multi-metric dashboard drawn here, all embedded
as base64, so the page needs no network. Dataset text is HTML-escaped.
"""

from __future__ import annotations

import base64
import csv
import json
from html import escape
from pathlib import Path
from typing import Any

from slmtune import runs
from slmtune.errors import SlmtuneError
from slmtune.multilabel import metric_name

CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:22px 32px}header h1{margin:0;font-size:24px}
header p{margin:6px 0 0;color:#b8c0cc;font-size:14px}header p.notice{color:#ffd479}
main{max-width:1180px;margin:0 auto;padding:20px 32px 60px}
section{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:18px 24px;margin:18px 0}
h2{margin:0 0 12px;font-size:19px}h3{font-size:15px;margin:16px 0 8px;color:#3a4252}
table{border-collapse:collapse;width:100%;font-size:13.5px;margin:6px 0 12px}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e6e8ec;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:14px}.wide{grid-column:1/-1}
figure{margin:0;background:#fafbfc;border:1px solid #eceef1;border-radius:8px;padding:8px}
figure img{width:100%;height:auto}figcaption{font-size:12.5px;color:#5b6475;padding:4px 2px 0}
.verdict{background:#eef5ff;border-left:4px solid #4C72B0;padding:8px 12px;font-size:14px;margin:8px 0}
.muted{color:#6b7384;font-size:12.5px}code{background:#f0f2f5;padding:1px 4px;border-radius:4px}
nav a{color:#9fc3ff;margin-right:14px;font-size:14px;text-decoration:none}
"""


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _table(header: list[str], rows: list[list[Any]], numeric_from: int = 1, numeric_to: int | None = None) -> str:
    """Cells are trusted HTML (escape dataset text before); columns numeric_from..numeric_to align right."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    last = len(header) if numeric_to is None else numeric_to

    def cell(i: int, c: Any) -> str:
        return f"<td class='num'>{c}</td>" if numeric_from <= i < last else f"<td>{c}</td>"

    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: Path, caption: str, wide: bool = False) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"<figure{' class=wide' if wide else ''}><img alt='{escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _p(value: float | None) -> str:
    """A p-value, or a dash where none was computed (summaries written before corrections were added)."""
    return "–" if value is None or value != value else f"{value:.3g}"


def _ci(summary: dict) -> str:
    return f"{summary['mean']:.4f} [{summary['ci_low']:.4f}, {summary['ci_high']:.4f}]"


class Report:
    def __init__(self, root: Path):
        self.root = root
        self.sections: list[tuple[str, str, str]] = []  # (anchor, title, html)
        self.findings: list[list[str]] = []  # finding, value, n, interval
        self.models: dict[str, dict[str, Any]] = {}  # for the radar chart and the dashboard

    # -------------------------------------------------------------------------------------- runs
    def add_run(self, folder: Path, title: str | None = None, examples: int = 8) -> None:
        self.sections.append((f"run-{folder.name}", title or f"Run {folder.name}", self._run_body(folder, examples)))

    def _run_body(self, folder: Path, examples: int = 8) -> str:
        """Metrics, per-class table, the run's figures and its most confident mistakes; adds a finding."""
        result = runs.read_result(folder)
        if result.get("status") != "success":
            return f"<p>status <b>{escape(str(result.get('status')))}</b>: no metrics.</p>"
        test, val = result["metrics"]["test"], result["metrics"].get("validation", {})
        name = f"{Path(str(result.get('model'))).name}:{result.get('method')}"
        multi = "micro_f1" in test  # multi-label: accuracy is the subset accuracy
        headline = "micro_f1" if multi else "accuracy"
        rows = [*([["test micro-F1", _pct(test["micro_f1"]), test.get("n", "")]] if multi else []),
                ["test subset accuracy" if multi else "test accuracy", _pct(test["accuracy"]), test.get("n", "")],
                ["test macro-F1", _pct(test["macro_f1"]), test.get("n", "")],
                ["validation accuracy", _pct(val.get("accuracy")), val.get("n", "")],
                ["trainable parameters", f"{result['params']['trainable']:,} of {result['params']['total']:,} "
                                         f"({result['params']['percent']:.2f}%)", ""],
                ["seconds (train / eval / total)", " / ".join(str(result["seconds"][k]) for k in
                                                              ("train", "eval", "total")), ""],
                ["samples per second (train / eval)", " / ".join(str(result["samples_per_second"][k]) for k in
                                                                 ("train", "eval")), ""]]
        if blend := result.get("blend"):
            alone = blend.get("test_encoder", {})
            rows.append([f"encoder alone (this run blends it with TF-IDF, encoder weight {blend['weight']}): "
                         f"{metric_name(headline)} / macro-F1",
                         f"{_pct(alone.get(headline))} / {_pct(alone.get('macro_f1'))}", test.get("n", "")])
        base = result.get("baseline")
        if base:
            gap = base.get("model_minus_baseline", {})
            rows.append([f"TF-IDF + logistic regression, same split: {metric_name(headline)} / macro-F1",
                         f"{_pct(base[headline])} / {_pct(base['macro_f1'])} ({base['seconds']} s); model "
                         f"{gap.get(headline, float('nan')):+.4f} / {gap.get('macro_f1', float('nan')):+.4f}", ""])
        per_class = [[escape(c), _num(m["precision"]), _num(m["recall"]), _num(m["f1"]), m["support"]]
                     for c, m in test["per_class"].items()]
        metrics_html = _table(["metric", "value", "n"], rows)
        per_class_html = "<h3>Per class (test)</h3>" + _table(["class", "precision", "recall", "F1", "support"],
                                                               per_class)
        imbalance = result.get("data", {}).get("imbalance", 1.0)
        html = (per_class_html + metrics_html) if imbalance > 3 else (metrics_html + per_class_html)
        figs = [_figure(p, f"{p.stem.replace('_', ' ')} (test n={test.get('n', '?')})")
                for p in sorted(folder.glob("*.png"))]
        if figs:
            html += "<div class='figs'>" + "".join(figs) + "</div>"
        html += self._misclassified(folder, examples)
        self.findings.append([f"{escape(name)} test {metric_name(headline)} (seed {result.get('seed')})",
                              _pct(test[headline]),
                              str(test.get("n", "")), "single run"])
        if base:  # the comparison that decides whether the model is worth its cost, beside its own figure
            gap = base.get("model_minus_baseline", {}).get(headline, float("nan"))
            self.findings.append([f"TF-IDF + logistic regression, same split: test {metric_name(headline)}",
                                  _pct(base[headline]), str(test.get("n", "")),
                                  f"the model is {'above' if gap > 0 else 'below'} it by {abs(gap):.4f}"])
        if result.get("advice"):
            self.findings.append([f"{escape(name)}: a better model on validation", escape(result["advice"]),
                                  str(val.get("n", "")), "advice"])
        self._model(name, [result])
        return html

    def _study_train(self, folder: Path, summary: dict) -> str:
        html = ""
        for row in summary.get("rows", []):
            run = Path(row["run_dir"])
            if (run / runs.RESULT).is_file():
                html += f"<h3>{escape(row.get('recipe', run.name))} ({escape(run.name)})</h3>" + self._run_body(run, 6)
        return html

    def _misclassified(self, folder: Path, limit: int) -> str:
        path = folder / "predictions.csv"
        if not path.is_file() or limit <= 0:
            return ""
        wrong = []
        with path.open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row.get("correct", row.get("exact")) == "0":  # multi-label: `exact`, the whole label set
                    probs = {k[2:]: float(v) for k, v in row.items() if k.startswith("p_")}
                    chosen = [probs.get(label, 0.0) for label in row["predicted"].split("|") if label]
                    wrong.append((min(chosen) if "exact" in row and chosen else probs.get(row["predicted"], 0.0),
                                  row))
        wrong.sort(key=lambda t: -t[0])
        rows = [[escape(r["gold"]), escape(r["predicted"]), f"{p:.3f}", escape(r.get("text", ""))[:400]]
                for p, r in wrong[:limit]]
        if not rows:
            return ""
        return (f"<h3>Most confident mistakes ({len(wrong)} of the test rows are wrong)</h3>"
                + _table(["gold", "predicted", "p(predicted)", "text"], rows, numeric_from=2, numeric_to=3))

    def _model(self, name: str, results: list[dict]) -> None:
        """Mean test metrics of a model config over its runs, for the radar chart and the dashboard."""
        import numpy as np

        ok = [r for r in results if r.get("status") == "success"]
        if not ok or len(ok) < self.models.get(name, {}).get("n", 0):  # keep the mean over more runs
            return
        tests = [r["metrics"]["test"] for r in ok]
        metrics = {"accuracy": float(np.mean([t["accuracy"] for t in tests])),
                   "macro-F1": float(np.mean([t["macro_f1"] for t in tests]))}
        for cls in tests[0]["per_class"]:
            metrics[f"F1 {cls}"] = float(np.mean([t["per_class"][cls]["f1"] for t in tests]))
        self.models[name] = {"metrics": metrics, "n": len(ok),
                             "accuracy_sd": float(np.std([t["accuracy"] for t in tests], ddof=1)) if len(ok) > 1
                             else 0.0,
                             "train_seconds": float(np.mean([r["seconds"]["train"] for r in ok])),
                             "trainable_percent": ok[0]["params"]["percent"]}

    # ----------------------------------------------------------------------------------- studies
    def add_study(self, folder: Path, summary: dict[str, Any]) -> None:
        kind = summary.get("study", "study")
        render = getattr(self, f"_study_{kind}", self._study_generic)
        body = render(folder, summary)
        plots = [folder / "plots" / Path(p).name for p in summary.get("plots", [])]
        plots += [p for p in sorted((folder / "plots").glob("*.png")) if p.name not in {q.name for q in plots}
                  and not p.name.startswith("report_")]
        figs = [_figure(p, f"{kind}: {p.stem.replace('_', ' ')} — {self._caption(kind, summary)}")
                for p in plots if p.is_file()]
        if figs:
            body += "<div class='figs'>" + "".join(figs) + "</div>"
        self.sections.append((f"{kind}-{folder.name}", f"{kind.title()} study: {folder.name}", body))

    @staticmethod
    def _caption(kind: str, summary: dict) -> str:
        rows = summary.get("rows", [])
        if kind == "seeds":
            return f"n={len(summary.get('seeds', []))} seeds per config; bands/whiskers: 95% t interval"
        if kind in ("fewshot", "augmentation", "active"):
            return "mean over seeds/draws with 95% t interval bands (n in the legend)"
        if kind == "scaling":
            return "power-law fit with 95% band; points: mean over seeds"
        if kind == "zeroshot":
            return f"n={rows[0]['n'] if rows else '?'} test rows"
        return f"{len(rows)} runs"

    def _study_seeds(self, folder: Path, summary: dict) -> str:
        key = summary.get("metric", "accuracy")  # micro_f1 on multi-label data
        name = metric_name(key)
        rows = [[escape(r["model"]), r[key], f"[{r[f'{key}_ci95'][0]:.4f}, {r[f'{key}_ci95'][1]:.4f}]",
                 r["macro_f1"], f"{r['trainable_params']:,} ({r['trainable_percent']:.2f}%)", r["train_seconds"]]
                for r in summary["table"]]
        html = _table(["model", f"{name} (mean ± sd)", "95% CI", "macro-F1", "trainable", "train s"], rows)
        n = len(summary["seeds"])
        for r in summary["table"]:
            self.findings.append([f"{escape(r['model'])} {name} over seeds", r[key], str(n),
                                  f"[{r[f'{key}_ci95'][0]:.4f}, {r[f'{key}_ci95'][1]:.4f}]"])
        comparison = summary.get("comparison")
        if comparison:
            c = comparison[f"test_{key}"]
            html += f"<div class='verdict'>{escape(comparison['verdict'])}</div>"
            html += _table(["test", "value"], [
                ["paired t p-value", f"{c['t_pvalue']:.3g}"], ["Wilcoxon p-value", f"{c['wilcoxon_pvalue']:.3g}"],
                ["mean difference, 95% bootstrap CI", f"{c['mean_difference']:+.4f} [{c['boot_low']:+.4f}, "
                                                      f"{c['boot_high']:+.4f}]"],
                ["Cohen's d_z", f"{c['cohens_dz']:.2f}"],
                ["McNemar p (pooled test predictions)", f"{comparison['mcnemar_pooled_test']['pvalue']:.3g}"]])
            self.findings.append([f"difference in {name} (paired by seed)", f"{c['mean_difference']:+.4f}", str(n),
                                  f"[{c['boot_low']:+.4f}, {c['boot_high']:+.4f}] p={c['t_pvalue']:.3g}"])
        by_config: dict[str, list[dict]] = {}
        for row in summary.get("rows", []):
            if row.get("run_dir") and runs.is_finished(Path(row["run_dir"])):
                by_config.setdefault(row["config"], []).append(runs.read_result(Path(row["run_dir"])))
        for name, results in by_config.items():
            self._model(name, results)
        first = next((Path(r["run_dir"]) for r in summary.get("rows", []) if r.get("run_dir")), None)
        if first is not None and (first / "predictions.csv").is_file():
            html += f"<h3>One run in detail: {escape(first.name)}</h3>" + self._run_figures(first)
        return html

    def _run_figures(self, folder: Path) -> str:
        figs = [_figure(p, p.stem.replace("_", " ")) for p in sorted(folder.glob("*.png"))]
        return ("<div class='figs'>" + "".join(figs) + "</div>" if figs else "") + self._misclassified(folder, 6)

    def _study_sweep(self, folder: Path, summary: dict) -> str:
        best = summary["best"]
        metric = summary.get("metric", "accuracy")  # micro_f1 on multi-label data
        name = metric_name(metric)
        keys = list(summary.get("space", {}))
        rows = sorted(summary.get("rows", []), key=lambda r: [r.get(k, 0) for k in keys])
        table = _table([*keys, f"validation {name}", f"test {name}", "train s"],
                       [[*(f"{r.get(k):g}" if isinstance(r.get(k), float) else r.get(k) for k in keys),
                         _num(r.get(f"validation_{metric}")), _num(r.get(f"test_{metric}")),
                         _num(r.get("train_seconds"), 1)] for r in rows], numeric_from=0)
        params = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best["params"].items())
        val, test = best[f"validation_{metric}"], best[f"test_{metric}"]
        self.findings.append([f"best {escape(', '.join(keys))} ({escape(folder.name)})", escape(params),
                              f"{summary.get('trials')} trials", f"validation {val:.4f}, test {test:.4f}"])
        return (f"<div class='verdict'>best: {escape(params)} — validation {name} "
                f"{val:.4f}, its test {name} {test:.4f} "
                f"({escape(summary.get('selection', ''))})</div>" + table)

    def _study_zeroshot(self, folder: Path, summary: dict) -> str:
        rows = [[escape(r["method"]), _num(r["accuracy"]), _num(r["macro_f1"]), r["n"], escape(r.get("note", ""))]
                for r in summary["rows"]]
        best = max(summary["rows"], key=lambda r: r["accuracy"])
        self.findings.append([f"zero-shot, best method ({escape(best['method'])})", _pct(best["accuracy"]),
                              str(best["n"]), "no training"])
        return f"<p class='muted'>chance = {summary.get('chance', 0):.2f}</p>" + _table(
            ["method", "accuracy", "macro-F1", "n", "note"], rows)

    def _study_fewshot(self, folder: Path, summary: dict) -> str:
        rows = []
        for method, points in summary["curves"].items():
            for k, p in points.items():
                rows.append([escape(method), k, _ci(p), f"± {p['std']:.4f}", p["n"], _num(p.get("seconds", 0.0), 1)])
        anchors = "; ".join(f"{escape(n)}: " + ", ".join(f"{k}-shot {v:.3f}" for k, v in pts.items())
                            for n, pts in summary.get("anchors", {}).items())
        for method, points in summary["curves"].items():
            k = max(points, key=lambda s: int(s))
            p = points[k]
            self.findings.append([f"few-shot {escape(method)} at {k} per class", f"{p['mean']:.4f}",
                                  f"{p['n']} draws", f"[{p['ci_low']:.4f}, {p['ci_high']:.4f}]"])
        return _table(["method", "shots/class", "accuracy [95% CI]", "sd", "draws", "seconds"], rows) + (
            f"<p class='muted'>anchors: {anchors}</p>" if anchors else "")

    def _study_scaling(self, folder: Path, summary: dict) -> str:
        fit = summary["fit"]
        name = metric_name(summary.get("metric", "accuracy"))  # the fitted error is 1 - this
        rows = [[p["n"], _num(p["accuracy"]), f"[{p['low']:.4f}, {p['high']:.4f}]"] for p in summary["predictions"]]
        self.findings.append(["scaling fit: error = a·n^-b + c", f"b = {fit['b']:.3f}, c = {fit['c']:.4f}",
                              f"{len(summary.get('per_size', []))} sizes", f"R² = {fit['r2']:.3f}"])
        for p in summary["predictions"]:
            self.findings.append([f"predicted {name} at {p['n']:,} rows", f"{p['accuracy']:.4f}", "fit",
                                  f"[{p['low']:.4f}, {p['high']:.4f}]"])
        dr = summary.get("diminishing_returns", {})
        return (f"<div class='verdict'>error = {fit['a']:.3f} · n^-{fit['b']:.3f} + {fit['c']:.4f} "
                f"(R² {fit['r2']:.3f});"
                f" b 95% CI [{fit['b_ci'][0]:.3f}, {fit['b_ci'][1]:.3f}]; diminishing returns from ~"
                f"{dr.get('size', float('nan')):,.0f} rows</div>"
                + _table(["rows", f"predicted {name}", "95% band"], rows))

    def _study_augmentation(self, folder: Path, summary: dict) -> str:
        rows = []
        for f in summary["vs_control"]:
            rows.append([f["size"], escape(f["operations"]), f"{f['ratio']:g}", escape(f.get("against", "control")),
                         f"{f['difference']:+.4f}",
                         f"[{f['ci'][0]:+.4f}, {f['ci'][1]:+.4f}]", f"{f['p_value']:.3g}", _p(f.get("p_holm")),
                         _p(f.get("p_bh")), "yes" if f["significant"] else "no"])
        steps_matched = any(f.get("against") == "control (same steps)" for f in summary["vs_control"])
        for f in summary["vs_control"]:  # key findings: the fairest comparison only
            if f["operations"].startswith("steps-matched") or (
                    steps_matched and f.get("against") != "control (same steps)"):
                continue
            self.findings.append([f"augmentation {escape(f['operations'])} x{f['ratio']:g} at {f['size']} rows "
                                  f"vs {escape(f.get('against', 'control'))}",
                                  f"{f['difference']:+.4f}", "paired seeds",
                                  f"[{f['ci'][0]:+.4f}, {f['ci'][1]:+.4f}] p={f['p_value']:.3g}"
                                  + (f" (Holm {f['p_holm']:.3g})" if f.get("p_holm") is not None else "")])
        name = metric_name(summary.get("metric", "accuracy"))
        return _table(["rows", "operations", "ratio", "against", f"{name} − control", "95% bootstrap CI",
                       "paired t p", "Holm p", "BH p", "significant"], rows, numeric_from=4)

    def _study_active(self, folder: Path, summary: dict) -> str:
        rows = []
        for r in summary["aulc"]:
            v = r["vs_random"]
            rows.append([escape(r["strategy"]), _ci(r["aulc"]), f"{v['mean_difference']:+.4f}" if v else "–",
                         f"[{v['boot_low']:+.4f}, {v['boot_high']:+.4f}]" if v else "–",
                         f"{v['t_pvalue']:.3g}" if v else "–", _p(v.get("p_holm")) if v else "–"])
            if v:
                self.findings.append([f"active learning {escape(r['strategy'])} vs random (area under curve)",
                                      f"{v['mean_difference']:+.4f}", f"{v['n']} seeds",
                                      f"[{v['boot_low']:+.4f}, {v['boot_high']:+.4f}] p={v['t_pvalue']:.3g}"
                                      + (f" (Holm {v['p_holm']:.3g})" if v.get("p_holm") is not None else "")])
        curve_rows = [[escape(s), n, _ci(p), p["n"]] for s, pts in summary["curves"].items() for n, p in pts.items()]
        return (_table(["strategy", "AULC [95% CI]", "vs random", "95% bootstrap CI", "paired t p", "Holm p"], rows)
                + "<h3>Accuracy at each checkpoint</h3>"
                + _table(["strategy", "labels", "accuracy [95% CI]", "seeds"], curve_rows))

    def _study_generic(self, folder: Path, summary: dict) -> str:
        items = [[escape(k), escape(json.dumps(v)[:200])] for k, v in summary.items()
                 if k not in ("rows", "plots") and not isinstance(v, (dict, list))]
        return _table(["field", "value"], items)

    # ------------------------------------------------------------------------------------ overview
    def overview_figures(self, folder: Path) -> str:
        if not self.models:
            return ""
        from slmtune.report.plots import dashboard_plot, radar_plot

        out = folder / "plots"
        radar = radar_plot({k: v["metrics"] for k, v in self.models.items()}, out / "report_radar.png")
        dash = dashboard_plot(self.models, out / "report_dashboard.png")
        n = ", ".join(f"{escape(k)} n={v['n']}" for k, v in self.models.items())
        return ("<div class='figs'>" + _figure(Path(radar), f"Models over test metrics (means; {n} runs)")
                + _figure(Path(dash), f"Dashboard: accuracy (error bars ±1 sd), macro-F1, train time, trainable "
                                      f"share ({n} runs)", wide=True) + "</div>")

    def html(self, title: str, subtitle: str, overview: str, notices: list[str] | None = None) -> str:
        nav = "".join(f"<a href='#{escape(a)}'>{escape(t)}</a>" for a, t, _ in self.sections[:12])
        banner = "".join(f"<p class='notice'><b>Incomplete:</b> {escape(n)}</p>" for n in notices or [])
        findings = _table(["finding", "value", "n", "interval / note"], self.findings) if self.findings else ""
        body = "".join(f"<section id='{escape(a)}'><h2>{escape(t)}</h2>{h}</section>" for a, t, h in self.sections)
        return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
                f"<body><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p>{banner}<nav>{nav}</nav></header><main>"
                f"<section id='findings'><h2>Key findings</h2>{findings}{overview}</section>{body}</main>"
                "</body></html>")


def _studies_under(folder: Path) -> list[Path]:
    found = []
    for summary in sorted(folder.glob("*/summary.json")) + sorted(folder.glob("*/*/summary.json")):
        if "runs" not in summary.parts[len(folder.parts):]:
            found.append(summary.parent)
    return found


def unfinished(folder: Path) -> list[str]:
    """What in `folder` did not finish: a run that was interrupted or failed, study runs that did, and parts of
    a whole study that have not run yet. The report says so at the top."""
    notes = []
    if (folder / runs.RESULT).is_file():
        status = runs.read_result(folder).get("status")
        if status != "success":
            notes.append(f"this run did not finish (status {status}); rerun it to get its metrics")
        return notes
    stopped: dict[str, int] = {}
    for result in folder.glob("**/runs/*/" + runs.RESULT):
        try:
            status = runs.read_json(result).get("status")
        except (OSError, ValueError):
            status = "unreadable"
        if status != "success":
            stopped[status] = stopped.get(status, 0) + 1
    if stopped:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(stopped.items()))
        notes.append(f"some runs did not finish ({counts}); rerun the same command to complete them")
    record = folder / "reference.json"
    if record.is_file():
        values = runs.read_json(record)
        missing = [p for p in values.get("parts", {}) if p not in values.get("seconds", {})]
        if missing:
            notes.append(f"the study stopped before these parts finished: {', '.join(missing)}")
    return notes


def build_report(folder: str | Path, output: str | Path | None = None) -> Path:
    """Write report.html for a run folder, a study folder, or a folder holding studies; returns its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SlmtuneError(f"{folder} is not a folder")
    report = Report(folder)
    if (folder / runs.RESULT).is_file():
        report.add_run(folder, examples=12)
        kind = "run"
    else:
        studies = [folder] if (folder / "summary.json").is_file() else _studies_under(folder)
        if not studies:
            raise SlmtuneError(f"{folder} holds no run (result.json) or study (summary.json) to report on")
        for study in studies:
            try:
                summary = json.loads((study / "summary.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise SlmtuneError(f"cannot read {study / 'summary.json'}: {exc}") from None
            report.add_study(study, summary)
        kind = f"{len(studies)} studies" if len(studies) > 1 else "study"
    env = {}
    for candidate in [folder / "env.json", *sorted(folder.rglob("env.json"))[:1]]:
        if candidate.is_file():
            env = json.loads(candidate.read_text(encoding="utf-8"))
            break
    packages = env.get("packages", {})
    machine = ", ".join(x for x in (f"{env['cpu_count']} CPUs" if "cpu_count" in env else None,
                                    f"{env['torch_threads']} threads" if "torch_threads" in env else None,
                                    env.get("device"), f"torch {packages['torch']}" if "torch" in packages else None)
                        if x)
    subtitle = f"{kind} in {folder.resolve()}" + (f" · {machine}" if machine else "")
    (folder / "plots").mkdir(exist_ok=True)
    notices = unfinished(folder)
    page = report.html(f"slmtune report: {folder.resolve().name}", subtitle, report.overview_figures(folder),
                       notices)
    path = Path(output) if output else folder / "report.html"
    if path.is_dir():
        raise SlmtuneError(f"--output {path} is a folder; give a file name such as {path / 'report.html'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        runs.atomic_write(path, page)
        findings = findings_markdown(report.findings, subtitle)
        if notices:
            findings = "".join(f"**Incomplete:** {n}\n\n" for n in notices) + findings
        runs.atomic_write(path.with_name("findings.md"), findings)
    except OSError as exc:
        raise SlmtuneError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return path


def findings_markdown(findings: list[list[str]], subtitle: str) -> str:
    """The key-findings table as Markdown (for a README or a paper's notes): the same cells as the page."""
    import html as html_lib

    def cell(text: str) -> str:
        return html_lib.unescape(str(text)).replace("|", "\\|").replace("\n", " ")

    lines = [f"Key findings: {cell(subtitle)}", "", "| finding | value | n | interval / note |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in findings]
    return "\n".join(lines) + "\n"
