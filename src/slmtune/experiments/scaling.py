"""Data scaling: accuracy vs training rows over seeds, with a saturating power-law fit of the error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmtune import stats
from slmtune.config import RunConfig, replace
from slmtune.data import Splits
from slmtune.errors import SlmtuneError
from slmtune.experiments.common import (
    Clock,
    DataSizes,
    Study,
    all_rows,
    every_row,
    flat_metrics,
    format_duration,
    load_run_config,
    study_metric,
    with_min_steps,
)
from slmtune.experiments.protocol import Reduction, flags_as_given, keeps_runs, trains_to_the_end
from slmtune.multilabel import metric_name
from slmtune.resolve import pin_epochs, pin_head_init

FULL_TRAIN_ROWS = 120_000


@dataclass
class ScalingConfig:
    name: str = "scaling"
    recipe: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    sizes: list[int] | None = None
    """Training rows; null: 8 sizes spaced geometrically from 10 up to every training row. Sizes beyond what the
    training split holds (after validation) are dropped."""
    seeds: list[int] = field(default_factory=lambda: [42, 123, 456])
    predict_at: list[int] | None = None
    """Sizes the fitted curve predicts accuracy at; null: 2x, 5x and 10x the training rows."""
    threshold: float = 0.005
    """Diminishing returns: the size past which one more doubling gains less accuracy than this."""
    min_steps: int = 100
    """Every run gets at least this many optimizer steps (more epochs on small sets)."""


def run_scaling(cfg: ScalingConfig, study_dir: str | Path | None = None, cli_overrides: list[str] | None = None,
                progress=print) -> dict[str, Any]:
    base = load_run_config(cfg.recipe, cfg.run, cli_overrides)
    if len(set(cfg.seeds)) != len(cfg.seeds) or not cfg.seeds:
        raise SlmtuneError("seeds must be a non-empty list without duplicates")
    study = Study(study_dir or Path("studies") / cfg.name)
    everything = study.splits(every_row(base))
    available = len(everything.train)
    sizes = sizes_for(cfg, available)
    base = one_recipe(base, sizes, everything)
    dropped = sorted(set(cfg.sizes or []) - set(sizes))
    if len(sizes) < 3:
        raise SlmtuneError(f"need at least 3 sizes within the {available} available training rows")
    study.write_study_yaml({"study": "scaling", **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                            "sizes_run": sizes, "sizes_dropped": dropped, "cli_overrides": cli_overrides or []})
    if dropped:
        progress(f"dropped sizes {dropped}: the training file holds {available} rows after validation")
    plan = [(n, seed) for n in sizes for seed in cfg.seeds]
    estimate = sum(study.estimate_seconds(replace(base, **{"data.train_size": n})) for n, _ in plan)
    progress(f"scaling {cfg.name}: {len(plan)} runs, ~{format_duration(estimate)} if none is done yet")
    clock = Clock()
    rows = []
    for i, (n, seed) in enumerate(plan, 1):
        config = with_min_steps(replace(base, seed=seed, name=f"{cfg.name}-{n}-{seed}",
                                        **{"data.train_size": n}), n, cfg.min_steps)
        row = {"train_rows": n, "seed": seed, **flat_metrics(study.run(config))}
        rows.append(row)
        metric = study_metric([row])
        progress(f"  {i}/{len(plan)} n={n} seed {seed}: test {metric_name(metric)} {row[f'test_{metric}']:.4f}; "
                 f"{format_duration(clock.elapsed)} elapsed")
    return summarize_scaling(study, rows, cfg, available)


def summarize_scaling(study: Study, rows: list[dict[str, Any]], cfg: ScalingConfig, available: int) -> dict[str, Any]:
    metric = study_metric(rows)  # multi-label: the curve is micro-F1's, its "error" 1 - micro-F1
    points = [(r["train_rows"], r[f"test_{metric}"]) for r in rows]
    fit = stats.fit_power_law([p[0] for p in points], [1 - p[1] for p in points])
    per_size = {}
    for n in sorted({p[0] for p in points}):
        values = [a for m, a in points if m == n]
        per_size[n] = {**stats.summarize(values).to_dict(), "accuracy_per_1000_rows": sum(values) / len(values)
                       / (n / 1000)}
    predictions = [fit.predict(n) for n in (cfg.predict_at or [2 * available, 5 * available, 10 * available])]
    summary: dict[str, Any] = {
        "study": "scaling", "metric": metric, "fit": {**fit.to_dict(), "formula": "error = a * n^-b + c"},
        "per_size": per_size, "predictions": predictions,
        "diminishing_returns": {"threshold_per_doubling": cfg.threshold,
                                "size": fit.diminishing_returns_size(cfg.threshold)},
        "training_rows_available": available,
    }
    if available >= FULL_TRAIN_ROWS and FULL_TRAIN_ROWS in per_size:
        summary["check_at_full_set"] = {"predicted": fit.predict(FULL_TRAIN_ROWS),
                                        "measured": per_size[FULL_TRAIN_ROWS]["mean"]}
    from slmtune.report.plots import scaling_plots

    summary["plots"] = scaling_plots(points, fit, study.root / "plots", predictions)
    study.write_summary(rows, summary)
    return summary


# ---------------------------------------------------------------------------------------- study protocol

CONFIG = ScalingConfig
run = run_scaling
shares_runs = keeps_runs
planned_share = trains_to_the_end
from_cli = flags_as_given
OWN_QUEUE = False
REDUCTIONS = (
    Reduction(1, "sizes", lambda v: [s for s in v if s <= 2400], "scaling: sizes above 2,400 rows dropped"),
    Reduction(5, "seeds", lambda v: v[:2], "scaling: 2 seeds"),
)


def sizes_for(cfg: ScalingConfig, available: int) -> list[int]:
    """The sizes to train at: the configured ones that fit, or 8 spaced geometrically from 10 to `available`
    (two significant digits, the last one exactly `available`)."""
    if cfg.sizes:
        return sorted({s for s in cfg.sizes if 0 < s <= available})
    import numpy as np

    spaced = [float(f"{n:.2g}") for n in np.geomspace(10, available, 8)[:-1]] if available > 10 else []
    return sorted({int(n) for n in spaced if n < available} | {available})


def one_recipe(base: RunConfig, sizes: list[int], everything: Splits) -> RunConfig:
    """A learning curve is one recipe: `model.head_init=auto` is decided once, for the largest size (else small
    sizes would start from a probe and large ones from a random head, and the fit would mix the two), and a null
    `train.epochs` once, from every training row's balance."""
    base = pin_epochs(base, everything)
    return pin_head_init(base, max(sizes), len(everything.label_names)) if sizes else base


def plan(cfg: ScalingConfig, base: RunConfig, cli_overrides: list[str] | None, data: DataSizes,
         root: Path):
    sizes = sizes_for(cfg, data.train)
    if base.model.head_init == "auto" or base.train.epochs is None:
        base = one_recipe(base, sizes, all_rows(base))
    return [with_min_steps(replace(base, seed=seed, **{"data.train_size": n}), n, cfg.min_steps)
            for n in sizes for seed in cfg.seeds], 0.0


def report(summary: dict[str, Any]) -> list[str]:
    fit = summary["fit"]
    lines = [f"  error = {fit['a']:.3f} n^-{fit['b']:.3f} + {fit['c']:.4f}  (R² {fit['r2']:.3f})"]
    lines += [f"  predicted accuracy at {p['n']:>7,} rows: {p['accuracy']:.4f} [{p['low']:.4f}, {p['high']:.4f}]"
              for p in summary["predictions"]]
    lines.append(f"  diminishing returns (< {summary['diminishing_returns']['threshold_per_doubling']} per "
                 f"doubling) from ~{summary['diminishing_returns']['size']:,.0f} rows")
    return lines


def report_section(page, folder: Path, summary: dict) -> str:
    """This study's section of report.html (`page`: slmtune.report.html.Report, whose key findings it adds to)."""
    from slmtune.multilabel import metric_name
    from slmtune.report.cells import num, table

    fit = summary["fit"]
    name = metric_name(summary.get("metric", "accuracy"))  # the fitted error is 1 - this
    rows = [[p["n"], num(p["accuracy"]), f"[{p['low']:.4f}, {p['high']:.4f}]"] for p in summary["predictions"]]
    page.findings.append(["scaling fit: error = a·n^-b + c", f"b = {fit['b']:.3f}, c = {fit['c']:.4f}",
                          f"{len(summary.get('per_size', []))} sizes", f"R² = {fit['r2']:.3f}"])
    for p in summary["predictions"]:
        page.findings.append([f"predicted {name} at {p['n']:,} rows", f"{p['accuracy']:.4f}", "fit",
                              f"[{p['low']:.4f}, {p['high']:.4f}]"])
    dr = summary.get("diminishing_returns", {})
    return (f"<div class='verdict'>error = {fit['a']:.3f} · n^-{fit['b']:.3f} + {fit['c']:.4f} "
            f"(R² {fit['r2']:.3f});"
            f" b 95% CI [{fit['b_ci'][0]:.3f}, {fit['b_ci'][1]:.3f}]; diminishing returns from ~"
            f"{dr.get('size', float('nan')):,.0f} rows</div>"
            + table(["rows", f"predicted {name}", "95% band"], rows))


def figure_caption(summary: dict) -> str:
    """What the captions of this study's figures in report.html say."""
    return "power-law fit with 95% band; points: mean over seeds"
