"""Multi-seed runs: mean, std, CIs per metric, and a paired comparison of two configs on the same seeds."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slmtune import stats
from slmtune.config import RunConfig, replace
from slmtune.errors import SlmtuneError
from slmtune.experiments.common import (
    Clock,
    DataSizes,
    Study,
    flat_metrics,
    format_duration,
    load_run_config,
    study_metric,
)
from slmtune.experiments.protocol import Reduction, flags_as_given, keeps_runs, trains_to_the_end
from slmtune.multilabel import metric_name

METRICS = ("test_accuracy", "test_macro_f1", "validation_accuracy", "train_seconds")


@dataclass
class SeedsConfig:
    name: str = "seeds"
    """Study name (folder studies/<name>)."""
    recipe: str | None = None
    """Run recipe for the main config."""
    run: dict[str, Any] = field(default_factory=dict)
    """Run-config fields on top of the recipe."""
    seeds: list[int] | None = None
    """Seeds to run; null draws `num_runs` seeds (recorded in the summary)."""
    num_runs: int = 5
    """How many seeds to draw when `seeds` is null."""
    compare: str | None = None
    """A second recipe (e.g. full fine-tuning) run on the same seeds and compared pairwise."""
    compare_run: dict[str, Any] = field(default_factory=dict)
    """Run-config fields on top of `compare`."""
    sequential: bool = True
    """With `compare`: run the seeds pair by pair and stop once the comparison is decided (a repeated confidence
    interval of the paired difference excludes 0 or lies within +-`margin`), at `min_seeds` or later; false runs
    every seed."""
    min_seeds: int = 3
    """Seeds a sequential comparison runs before its first look."""
    margin: float = 0.005
    """Differences within +-margin (of the study metric) count as no difference worth having."""
    alpha: float = 0.05
    """Error rate of the sequential decision, over all its looks."""

    def __post_init__(self) -> None:
        if self.min_seeds < 2:
            raise SlmtuneError(f"min_seeds must be at least 2; got {self.min_seeds}")
        if not 0 < self.alpha < 1 or self.margin < 0:
            raise SlmtuneError(f"alpha must be in (0, 1) and margin at least 0; got {self.alpha}, {self.margin}")


def resolve_seeds(seeds: list[int] | None, num_runs: int) -> list[int]:
    if seeds:
        if len(set(seeds)) != len(seeds):
            duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
            raise SlmtuneError(f"seed list has duplicates: {', '.join(map(str, duplicates))}")
        return list(seeds)
    if num_runs < 1:
        raise SlmtuneError("num_runs must be at least 1")
    return [int(s) for s in np.random.default_rng(2024).choice(100_000, size=num_runs, replace=False)]


def _label(config: RunConfig) -> str:
    return f"{Path(config.model.name).name}:{config.model.method}"


def _correct(run_dir: str) -> np.ndarray:
    with (Path(run_dir) / "predictions.csv").open(encoding="utf-8") as handle:
        return np.array([row.get("correct", row.get("exact")) == "1" for row in csv.DictReader(handle)])


def run_seeds(cfg: SeedsConfig, study_dir: str | Path | None = None, cli_overrides: list[str] | None = None,
              progress=print) -> dict[str, Any]:
    """Train every config on every seed (reusing finished runs) and summarise; returns summary.json's content."""
    seeds = resolve_seeds(cfg.seeds, cfg.num_runs)
    configs = {"main": load_run_config(cfg.recipe, cfg.run, cli_overrides)}
    if cfg.compare:
        configs["compare"] = load_run_config(cfg.compare, cfg.compare_run, cli_overrides)
    labels = {key: _label(c) for key, c in configs.items()}
    if len(set(labels.values())) < len(labels):
        labels = {"main": f"{labels['main']} (main)", "compare": f"{labels['compare']} (compare)"}
    study = Study(study_dir or Path("studies") / cfg.name)
    study.write_study_yaml({"study": "seeds", "name": cfg.name, "recipe": cfg.recipe, "run": cfg.run,
                            "seeds": seeds, "compare": cfg.compare, "compare_run": cfg.compare_run,
                            "cli_overrides": cli_overrides or []})
    sequential = is_sequential(cfg, seeds)
    plan = [(key, seed) for seed in seeds for key in configs]  # pair by pair: a sequential study can stop early
    estimate = sum(study.estimate_seconds(configs[key]) for key, _ in plan)
    progress(f"seeds {cfg.name}: {len(plan)} runs ({', '.join(labels.values())} x seeds {seeds}), "
             f"~{format_duration(estimate)} if none is done yet"
             f"{f'; sequential: stops once decided, from {cfg.min_seeds} seeds' if sequential else ''}; "
             f"folder {study.root}")
    clock = Clock()
    groups: dict[str, list[dict[str, Any]]] = {labels[k]: [] for k in configs}
    looks: list[dict[str, Any]] = []
    for i, (key, seed) in enumerate(plan, 1):
        config = replace(configs[key], seed=seed, name=f"{cfg.name}-{key}-{seed}")
        row = {"config": labels[key], "seed": seed, **flat_metrics(study.run(config))}
        groups[labels[key]].append(row)
        metric = study_metric([row])
        progress(f"  {i}/{len(plan)} {labels[key]} seed {seed}: test {metric_name(metric)} "
                 f"{row[f'test_{metric}']:.4f}"
                 f"{' (reused)' if row['reused'] else ''}; {format_duration(clock.elapsed)} elapsed")
        done = min(len(rows) for rows in groups.values())
        if sequential and key == list(configs)[-1] and done >= cfg.min_seeds:
            look = _look(cfg, groups, metric, done, len(seeds))
            looks.append(look.to_dict())
            progress(f"  look {len(looks)} at {done} seeds: {look.decision} (difference {look.mean_difference:+.4f}, "
                     f"{look.confidence:.1%} interval [{look.low:+.4f}, {look.high:+.4f}], margin +-{cfg.margin})")
            if look.decision in ("different", "equivalent"):
                break
    used = seeds[:min(len(rows) for rows in groups.values())]
    summary_extra = {"sequential": {"rule": stats.SEQUENTIAL_RULE, "alpha": cfg.alpha, "margin": cfg.margin,
                                    "min_seeds": cfg.min_seeds, "max_seeds": len(seeds), "looks": looks,
                                    "seeds_used": len(used),
                                    "stopped": looks[-1]["decision"] if looks else "undecided"}} if sequential else {}
    return summarize_seeds(study, groups, used, summary_extra)


def is_sequential(cfg: SeedsConfig, seeds: list[int]) -> bool:
    """A comparison with more seeds than its first look needs."""
    return bool(cfg.sequential and cfg.compare and len(seeds) > cfg.min_seeds)


def _look(cfg: SeedsConfig, groups: dict[str, list[dict[str, Any]]], metric: str, done: int, max_seeds: int):
    a, b = (sorted(rows, key=lambda r: r["seed"]) for rows in groups.values())
    differences = [x[f"test_{metric}"] - y[f"test_{metric}"] for x, y in zip(a, b)]
    return stats.sequential_look(differences, looks=max_seeds - cfg.min_seeds + 1, alpha=cfg.alpha,
                                 margin=cfg.margin, last=done >= max_seeds)


def summarize_seeds(study: Study, groups: dict[str, list[dict[str, Any]]], seeds: list[int],
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    per_config = {}
    table = []
    metric = study_metric(next(iter(groups.values())))
    measured = METRICS + (("test_micro_f1", "validation_micro_f1") if metric == "micro_f1" else ())
    for name, rows in groups.items():
        per_config[name] = {m: stats.summarize([r[m] for r in rows]).to_dict() for m in measured}
        acc, f1 = per_config[name]["test_accuracy"], per_config[name]["test_macro_f1"]
        table.append({
            "model": name, "accuracy": f"{acc['mean']:.4f} ± {acc['std']:.4f}",
            "macro_f1": f"{f1['mean']:.4f} ± {f1['std']:.4f}",
            "accuracy_ci95": [round(acc["ci_low"], 4), round(acc["ci_high"], 4)],
            "trainable_params": rows[0]["trainable_params"], "trainable_percent": rows[0]["trainable_percent"],
            "train_seconds": round(per_config[name]["train_seconds"]["mean"], 1),
        })
        if metric == "micro_f1":  # multi-label: accuracy above is the subset accuracy
            micro = per_config[name]["test_micro_f1"]
            table[-1].update(micro_f1=f"{micro['mean']:.4f} ± {micro['std']:.4f}",
                             micro_f1_ci95=[round(micro["ci_low"], 4), round(micro["ci_high"], 4)])
    summary: dict[str, Any] = {"study": "seeds", "seeds": seeds, "metric": metric, "per_config": per_config,
                               "table": table, **(extra or {})}
    names = list(groups)
    if len(names) == 2 and len(seeds) >= 2:
        a, b = (sorted(groups[n], key=lambda r: r["seed"]) for n in names)
        comparison = {}
        for key in ("test_accuracy", "test_macro_f1", *(("test_micro_f1",) if metric == "micro_f1" else ())):
            comparison[key] = stats.paired_comparison([r[key] for r in a], [r[key] for r in b],
                                                      names=(names[0], names[1])).to_dict()
        pooled_a = np.concatenate([_correct(r["run_dir"]) for r in a])
        pooled_b = np.concatenate([_correct(r["run_dir"]) for r in b])
        comparison["mcnemar_pooled_test"] = stats.mcnemar(pooled_a, pooled_b)
        comparison["verdict"] = comparison[f"test_{metric}"]["verdict"]
        summary["comparison"] = comparison
    from slmtune.report.plots import seeds_plots

    summary["plots"] = seeds_plots(groups, study.root / "plots")
    study.write_summary([r for rows in groups.values() for r in rows], summary)
    return summary


# ---------------------------------------------------------------------------------------- study protocol

CONFIG = SeedsConfig
run = run_seeds
shares_runs = keeps_runs
planned_share = trains_to_the_end
from_cli = flags_as_given
OWN_QUEUE = False
REDUCTIONS = (
    Reduction(8, "seeds", lambda v: (v or [])[:3] or None, "seeds: 3 seeds"),
)


def plan(cfg: SeedsConfig, base: RunConfig, cli_overrides: list[str] | None, data: DataSizes,
         root: Path):
    configs = [base] + ([load_run_config(cfg.compare, cfg.compare_run, cli_overrides)] if cfg.compare else [])
    seeds = resolve_seeds(cfg.seeds, cfg.num_runs)
    if is_sequential(cfg, seeds):  # the seeds after the first look are run only while undecided
        seeds = seeds[:cfg.min_seeds]
    return [replace(c, seed=s) for c in configs for s in seeds], 0.0


def report(summary: dict[str, Any]) -> list[str]:
    multi = summary.get("metric") == "micro_f1"
    first = "micro-F1" if multi else "accuracy"
    lines = [f"  {'model':<28}{first:>20}{'macro-F1':>20}{'trainable':>14}{'train s':>10}"]
    for row in summary["table"]:
        lines.append(f"  {row['model']:<28}{row['micro_f1' if multi else 'accuracy']:>20}{row['macro_f1']:>20}"
                     f"{row['trainable_percent']:>13.2f}%{row['train_seconds']:>10.1f}")
    if "comparison" in summary:
        lines.append(f"  {summary['comparison']['verdict']}")
    if "sequential" in summary:
        lines.append(f"  {sequential_line(summary['sequential'])}")
    return lines


def sequential_line(seq: dict[str, Any]) -> str:
    """How many seeds the sequential comparison needed, and why it stopped."""
    why = {"different": "its interval excluded 0", "equivalent": f"its interval lay within +-{seq['margin']}",
           "undecided": "the last seed was reached undecided"}.get(seq["stopped"], seq["stopped"])
    last = seq["looks"][-1] if seq["looks"] else None
    interval = (f" ({last['confidence']:.1%} repeated interval [{last['low']:+.4f}, {last['high']:+.4f}])"
                if last else "")
    return (f"sequential: {seq['seeds_used']} of {seq['max_seeds']} seeds; stopped {seq['stopped']}: "
            f"{why}{interval}; error rate <= {seq['alpha']} over all looks")


def report_section(page, folder: Path, summary: dict) -> str:
    """This study's section of report.html (`page`: slmtune.report.html.Report, whose key findings it adds to)."""
    from slmtune import runs
    from slmtune.multilabel import metric_name
    from slmtune.report.cells import escape, table

    key = summary.get("metric", "accuracy")  # micro_f1 on multi-label data
    name = metric_name(key)
    rows = [[escape(r["model"]), r[key], f"[{r[f'{key}_ci95'][0]:.4f}, {r[f'{key}_ci95'][1]:.4f}]",
             r["macro_f1"], f"{r['trainable_params']:,} ({r['trainable_percent']:.2f}%)", r["train_seconds"]]
            for r in summary["table"]]
    html = table(["model", f"{name} (mean ± sd)", "95% CI", "macro-F1", "trainable", "train s"], rows)
    n = len(summary["seeds"])
    for r in summary["table"]:
        page.findings.append([f"{escape(r['model'])} {name} over seeds", r[key], str(n),
                              f"[{r[f'{key}_ci95'][0]:.4f}, {r[f'{key}_ci95'][1]:.4f}]"])
    comparison = summary.get("comparison")
    if comparison:
        c = comparison[f"test_{key}"]
        html += f"<div class='verdict'>{escape(comparison['verdict'])}</div>"
        if "sequential" in summary:
            seq = summary["sequential"]
            html += f"<p>{escape(sequential_line(seq))}. Rule: {escape(seq['rule'])}.</p>"
        html += table(["test", "value"], [
            ["paired t p-value", f"{c['t_pvalue']:.3g}"], ["Wilcoxon p-value", f"{c['wilcoxon_pvalue']:.3g}"],
            ["mean difference, 95% bootstrap CI", f"{c['mean_difference']:+.4f} [{c['boot_low']:+.4f}, "
                                                  f"{c['boot_high']:+.4f}]"],
            ["Cohen's d_z", f"{c['cohens_dz']:.2f}"],
            ["McNemar p (pooled test predictions)", f"{comparison['mcnemar_pooled_test']['pvalue']:.3g}"]])
        page.findings.append([f"difference in {name} (paired by seed)", f"{c['mean_difference']:+.4f}", str(n),
                              f"[{c['boot_low']:+.4f}, {c['boot_high']:+.4f}] p={c['t_pvalue']:.3g}"])
    by_config: dict[str, list[dict]] = {}
    for row in summary.get("rows", []):
        if row.get("run_dir") and runs.is_finished(Path(row["run_dir"])):
            by_config.setdefault(row["config"], []).append(runs.read_result(Path(row["run_dir"])))
    for name, results in by_config.items():
        page.add_model(name, results)
    first = next((Path(r["run_dir"]) for r in summary.get("rows", []) if r.get("run_dir")), None)
    if first is not None and (first / "predictions.csv").is_file():
        html += f"<h3>One run in detail: {escape(first.name)}</h3>" + page.run_figures(first)
    return html


def figure_caption(summary: dict) -> str:
    """What the captions of this study's figures in report.html say."""
    return f"n={len(summary.get('seeds', []))} seeds per config; bands/whiskers: 95% t interval"
