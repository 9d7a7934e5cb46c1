"""One self-contained report.html for a run, a study, or a folder of studies (e.g. the reference study).

Every number comes from the folder's files (result.json, summary.json, predictions.csv); figures are the
PNGs the runs and studies wrote plus a radar chart and a multi-metric dashboard drawn here, all embedded
as base64, so the page needs no network. Dataset text is HTML-escaped.
"""

from __future__ import annotations

import csv
import json
from html import escape
from pathlib import Path
from typing import Any

from slmtune import runs
from slmtune.errors import SlmtuneError
from slmtune.multilabel import metric_name
from slmtune.report.cells import figure, num, pct, table

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


class Report:
    def __init__(self, root: Path):
        self.root = root
        self.sections: list[tuple[str, str, str]] = []  # (anchor, title, html)
        self.findings: list[list[str]] = []  # finding, value, n, interval
        self.models: dict[str, dict[str, Any]] = {}  # for the radar chart and the dashboard

    # -------------------------------------------------------------------------------------- runs
    def add_run(self, folder: Path, title: str | None = None, examples: int = 8) -> None:
        self.sections.append((f"run-{folder.name}", title or f"Run {folder.name}", self.run_body(folder, examples)))

    def run_body(self, folder: Path, examples: int = 8) -> str:
        """Metrics, per-class table, the run's figures and its most confident mistakes; adds a finding."""
        result = runs.read_result(folder)
        if result.get("status") != "success":
            return f"<p>status <b>{escape(str(result.get('status')))}</b>: no metrics.</p>"
        test, val = result["metrics"]["test"], result["metrics"].get("validation", {})
        name = f"{Path(str(result.get('model'))).name}:{result.get('method')}"
        multi = "micro_f1" in test  # multi-label: accuracy is the subset accuracy
        headline = "micro_f1" if multi else "accuracy"
        rows = [*([["test micro-F1", pct(test["micro_f1"]), test.get("n", "")]] if multi else []),
                ["test subset accuracy" if multi else "test accuracy", pct(test["accuracy"]), test.get("n", "")],
                ["test macro-F1", pct(test["macro_f1"]), test.get("n", "")],
                ["validation accuracy", pct(val.get("accuracy")), val.get("n", "")],
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
                         f"{pct(alone.get(headline))} / {pct(alone.get('macro_f1'))}", test.get("n", "")])
        base = result.get("baseline")
        if base:
            gap = base.get("model_minus_baseline", {})
            rows.append([f"TF-IDF + logistic regression, same split: {metric_name(headline)} / macro-F1",
                         f"{pct(base[headline])} / {pct(base['macro_f1'])} ({base['seconds']} s); model "
                         f"{gap.get(headline, float('nan')):+.4f} / {gap.get('macro_f1', float('nan')):+.4f}", ""])
        per_class = [[escape(c), num(m["precision"]), num(m["recall"]), num(m["f1"]), m["support"]]
                     for c, m in test["per_class"].items()]
        metrics_html = table(["metric", "value", "n"], rows)
        per_class_html = "<h3>Per class (test)</h3>" + table(["class", "precision", "recall", "F1", "support"],
                                                               per_class)
        imbalance = result.get("data", {}).get("imbalance", 1.0)
        html = (per_class_html + metrics_html) if imbalance > 3 else (metrics_html + per_class_html)
        figs = [figure(p, f"{p.stem.replace('_', ' ')} (test n={test.get('n', '?')})")
                for p in sorted(folder.glob("*.png"))]
        if figs:
            html += "<div class='figs'>" + "".join(figs) + "</div>"
        html += self.misclassified(folder, examples)
        self.findings.append([f"{escape(name)} test {metric_name(headline)} (seed {result.get('seed')})",
                              pct(test[headline]),
                              str(test.get("n", "")), "single run"])
        if base:  # the comparison that decides whether the model is worth its cost, beside its own figure
            gap = base.get("model_minus_baseline", {}).get(headline, float("nan"))
            self.findings.append([f"TF-IDF + logistic regression, same split: test {metric_name(headline)}",
                                  pct(base[headline]), str(test.get("n", "")),
                                  f"the model is {'above' if gap > 0 else 'below'} it by {abs(gap):.4f}"])
        if result.get("advice"):
            self.findings.append([f"{escape(name)}: a better model on validation", escape(result["advice"]),
                                  str(val.get("n", "")), "advice"])
        self.add_model(name, [result])
        return html

    def misclassified(self, folder: Path, limit: int) -> str:
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
                + table(["gold", "predicted", "p(predicted)", "text"], rows, numeric_from=2, numeric_to=3))

    def add_model(self, name: str, results: list[dict]) -> None:
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
        from slmtune.experiments.registry import STUDIES

        module = STUDIES[kind].load() if kind in STUDIES else None
        body = module.report_section(self, folder, summary) if module else self._study_generic(folder, summary)
        caption = module.figure_caption(summary) if module else f"{len(summary.get('rows', []))} runs"
        plots = [folder / "plots" / Path(p).name for p in summary.get("plots", [])]
        plots += [p for p in sorted((folder / "plots").glob("*.png")) if p.name not in {q.name for q in plots}
                  and not p.name.startswith("report_")]
        figs = [figure(p, f"{kind}: {p.stem.replace('_', ' ')} — {caption}")
                for p in plots if p.is_file()]
        if figs:
            body += "<div class='figs'>" + "".join(figs) + "</div>"
        self.sections.append((f"{kind}-{folder.name}", f"{kind.title()} study: {folder.name}", body))

    def run_figures(self, folder: Path) -> str:
        figs = [figure(p, p.stem.replace("_", " ")) for p in sorted(folder.glob("*.png"))]
        return ("<div class='figs'>" + "".join(figs) + "</div>" if figs else "") + self.misclassified(folder, 6)

    def _study_generic(self, folder: Path, summary: dict) -> str:
        items = [[escape(k), escape(json.dumps(v)[:200])] for k, v in summary.items()
                 if k not in ("rows", "plots") and not isinstance(v, (dict, list))]
        return table(["field", "value"], items)

    # ------------------------------------------------------------------------------------ overview
    def overview_figures(self, folder: Path) -> str:
        if not self.models:
            return ""
        from slmtune.report.plots import dashboard_plot, radar_plot

        out = folder / "plots"
        radar = radar_plot({k: v["metrics"] for k, v in self.models.items()}, out / "report_radar.png")
        dash = dashboard_plot(self.models, out / "report_dashboard.png")
        n = ", ".join(f"{escape(k)} n={v['n']}" for k, v in self.models.items())
        return ("<div class='figs'>" + figure(Path(radar), f"Models over test metrics (means; {n} runs)")
                + figure(Path(dash), f"Dashboard: accuracy (error bars ±1 sd), macro-F1, train time, trainable "
                                      f"share ({n} runs)", wide=True) + "</div>")

    def html(self, title: str, subtitle: str, overview: str, notices: list[str] | None = None) -> str:
        nav = "".join(f"<a href='#{escape(a)}'>{escape(t)}</a>" for a, t, _ in self.sections[:12])
        banner = "".join(f"<p class='notice'><b>Incomplete:</b> {escape(n)}</p>" for n in notices or [])
        findings = table(["finding", "value", "n", "interval / note"], self.findings) if self.findings else ""
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
        done = values.get("part_seconds", values.get("seconds", {}))  # every segment of a resumed study
        missing = [p for p in values.get("parts", {}) if p not in done]
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
