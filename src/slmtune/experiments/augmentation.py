"""Augmentation study: ratios x operation sets x training sizes, each on several seeds, against the
ratio-0 control trained on the same seeds and splits; mean ± CI and the paired difference to the control."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmtune import stats
from slmtune.config import EDA_OPS, RunConfig, replace
from slmtune.errors import SlmtuneError
from slmtune.experiments.common import (
    Clock,
    DataSizes,
    Study,
    all_rows,
    flat_metrics,
    format_duration,
    load_run_config,
    study_metric,
)
from slmtune.experiments.protocol import Reduction, keeps_runs, trains_to_the_end
from slmtune.multilabel import metric_name
from slmtune.resolve import pin_epochs


@dataclass
class AugmentStudyConfig:
    name: str = "augmentation"
    recipe: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    """Augmented rows per training row; 0 (the control) is always run."""
    operations: dict[str, list[str]] = field(default_factory=lambda: {
        "eda": list(EDA_OPS), "backtranslate": ["backtranslate"]})
    """Named operation sets; each augmented row uses one operation of its set."""
    sizes: list[int] = field(default_factory=lambda: [200, 2400])
    """Training rows before augmentation (augmentation helps most with little data)."""
    seeds: list[int] = field(default_factory=lambda: [42, 123, 456])
    rate: float = 0.1
    """EDA's alpha (share of words touched)."""
    back_translation: str = "apertium"
    """Backend for the backtranslate operation: apertium[:eng-spa] or marian[:fwd,bwd]."""
    steps_matched_control: bool = True
    """Also train the unaugmented rows for as many optimizer steps as each ratio gives (epochs x (1 + ratio)),
    so a gain from augmentation is not just a gain from training longer."""


STEPS_MATCHED = "steps-matched control"


def _plan(cfg: AugmentStudyConfig, base: RunConfig) -> list[tuple[dict[str, Any], RunConfig]]:
    plan = []
    for size in cfg.sizes:
        for seed in cfg.seeds:
            sized = replace(base, seed=seed, **{"data.train_size": size})
            control = replace(sized, name=f"{cfg.name}-control-{size}-{seed}", **{"data.augment_ratio": 0.0})
            plan.append(({"size": size, "operations": "none", "ratio": 0.0, "seed": seed}, control))
            for ratio in sorted(r for r in cfg.ratios if r > 0) if cfg.steps_matched_control else []:
                longer = replace(control, name=f"{cfg.name}-control-steps{ratio:g}-{size}-{seed}",
                                 **{"train.epochs": control.train.epochs * (1 + ratio)})
                plan.append(({"size": size, "operations": STEPS_MATCHED, "ratio": float(ratio), "seed": seed}, longer))
            for label, ops in cfg.operations.items():
                for ratio in sorted(r for r in cfg.ratios if r > 0):
                    config = replace(sized, name=f"{cfg.name}-{label}-{ratio:g}-{size}-{seed}", **{
                        "data.augment_ratio": float(ratio), "data.augment_ops": list(ops),
                        "data.augment_rate": cfg.rate, "data.back_translation": cfg.back_translation})
                    plan.append(({"size": size, "operations": label, "ratio": float(ratio), "seed": seed}, config))
    return plan


def check(cfg: AugmentStudyConfig) -> None:
    if not cfg.sizes or any(s < 1 for s in cfg.sizes):
        raise SlmtuneError("sizes must be a non-empty list of positive integers")
    if any(r < 0 for r in cfg.ratios):
        raise SlmtuneError("augmentation ratios must be non-negative")
    if len(set(cfg.seeds)) != len(cfg.seeds) or not cfg.seeds:
        raise SlmtuneError("seeds must be a non-empty list without duplicates")
    if not cfg.operations:
        raise SlmtuneError("operations must name at least one operation set")


def run_augmentation(cfg: AugmentStudyConfig, study_dir: str | Path | None = None,
                     cli_overrides: list[str] | None = None, progress=print) -> dict[str, Any]:
    check(cfg)
    base = load_run_config(cfg.recipe, cfg.run, cli_overrides)
    plan = _plan(cfg, _pinned(base))  # builds every config first, so a bad operation fails before any training
    study = Study(study_dir or Path("studies") / cfg.name)
    study.write_study_yaml({"study": "augmentation", **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                            "cli_overrides": cli_overrides or []})
    estimate = sum(study.estimate_seconds(c) for _, c in plan)
    progress(f"augmentation {cfg.name}: {len(plan)} runs ({len(cfg.sizes)} sizes x {len(cfg.seeds)} seeds x "
             f"(control + {len(cfg.operations)} operation sets x {len([r for r in cfg.ratios if r > 0])} ratios"
             f"{' + steps-matched controls' if cfg.steps_matched_control else ''})), "
             f"~{format_duration(estimate)} if none is done yet; folder {study.root}")
    clock = Clock()
    rows = []
    for i, (keys, config) in enumerate(plan, 1):
        row = {**keys, **flat_metrics(study.run(config))}
        rows.append(row)
        progress(f"  {i}/{len(plan)} size {keys['size']} {keys['operations']} x{keys['ratio']:g} seed {keys['seed']}: "
                 f"test {metric_name(study_metric([row]))} {row[f'test_{study_metric([row])}']:.4f}"
                 f"{' (reused)' if row['reused'] else ''}; "
                 f"{format_duration(clock.elapsed)} elapsed")
    return summarize_augmentation(study, rows)


def summarize_augmentation(study: Study, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per size and operation set: accuracy vs ratio (mean, CI) and the paired difference to the control."""
    curves: dict[str, dict[str, list[dict[str, Any]]]] = {}
    metric = study_metric(rows)  # micro-F1 on multi-label data
    key = f"test_{metric}"
    for size in sorted({r["size"] for r in rows}):
        controls = {r["seed"]: r[key] for r in rows if r["size"] == size and r["operations"] == "none"}
        per_op: dict[str, list[dict[str, Any]]] = {}
        for op in dict.fromkeys(r["operations"] for r in rows if r["size"] == size and r["operations"] != "none"):
            points = [{"ratio": 0.0, **stats.summarize(list(controls.values())).to_dict(), "vs_control": None}]
            for ratio in sorted({r["ratio"] for r in rows if r["size"] == size and r["operations"] == op}):
                cell = sorted((r for r in rows if r["size"] == size and r["operations"] == op and r["ratio"] == ratio),
                              key=lambda r: r["seed"])
                values = [r[key] for r in cell]
                point = {"ratio": ratio, **stats.summarize(values).to_dict(), "vs_control": None}
                paired = [controls[r["seed"]] for r in cell if r["seed"] in controls]
                if len(paired) == len(cell) >= 2:
                    point["vs_control"] = stats.paired_comparison(
                        values, paired, names=(f"{op} x{ratio:g}", "no augmentation")).to_dict()
                longer = {r["seed"]: r[key] for r in rows if r["size"] == size
                          and r["operations"] == STEPS_MATCHED and r["ratio"] == ratio}
                point["vs_steps_matched"] = None
                if op != STEPS_MATCHED and len(cell) >= 2 and all(r["seed"] in longer for r in cell):
                    point["vs_steps_matched"] = stats.paired_comparison(
                        values, [longer[r["seed"]] for r in cell],
                        names=(f"{op} x{ratio:g}", "no augmentation, same steps")).to_dict()
                points.append(point)
            per_op[op] = points
        curves[str(size)] = per_op
    best = max(((size, op, p) for size, ops in curves.items() for op, pts in ops.items() for p in pts[1:]
                if op != STEPS_MATCHED),
               key=lambda t: t[2]["mean"], default=None)
    findings = []
    for size, ops in curves.items():
        for op, points in ops.items():
            for p in points[1:]:
                for against in ("vs_control", "vs_steps_matched"):
                    c = p.get(against)
                    if c:
                        findings.append({"size": int(size), "operations": op, "ratio": p["ratio"],
                                         "against": "control (same epochs)" if against == "vs_control"
                                         else "control (same steps)",
                                         "difference": c["mean_difference"], "ci": [c["boot_low"], c["boot_high"]],
                                         "p_value": c["t_pvalue"], "significant": c["significant"]})
    adjusted = stats.adjust_pvalues([f["p_value"] for f in findings])  # many comparisons: corrected beside raw
    for finding, holm, bh in zip(findings, adjusted["holm"], adjusted["bh"]):
        finding.update(p_holm=holm, p_bh=bh)
    summary = {"study": "augmentation", "metric": metric, "curves": curves, "vs_control": findings,
               "highest_mean": {"size": int(best[0]), "operations": best[1], "ratio": best[2]["ratio"],
                        "mean": best[2]["mean"]} if best else None,
               "selection": f"test {metric_name(metric)}, mean and 95% t interval over seeds; differences paired "
                            "by seed against the ratio-0 control on the same splits (same epochs, hence fewer "
                            "optimizer steps) and against the steps-matched control (same steps, no augmentation)"}
    from slmtune.report.plots import augmentation_plot

    summary["plots"] = [augmentation_plot(curves, study.root / "plots" / "augmentation.png")]
    study.write_summary(rows, summary)
    return summary


# ---------------------------------------------------------------------------------------- study protocol

CONFIG = AugmentStudyConfig
run = run_augmentation
shares_runs = keeps_runs
planned_share = trains_to_the_end
OWN_QUEUE = False
REDUCTIONS = (
    Reduction(4, "seeds", lambda v: v[:2], "augmentation: 2 seeds"),
    Reduction(6, "ratios", lambda v: [r for r in v if r in (0, 0.5, 1.0)], "augmentation: ratios 0, 0.5, 1"),
)


def from_cli(values: dict[str, Any], from_file: bool) -> dict[str, Any]:
    """`--ops eda,synonym+swap` -> {"eda": [synonym, insert, delete, swap], "synonym+swap": [synonym, swap]}."""
    from slmtune.config import EDA_OPS

    if isinstance(values.get("operations"), str):
        values["operations"] = {name: list(EDA_OPS) if name == "eda" else name.split("+")
                                for name in values["operations"].split(",") if name}
    return values


def plan(cfg: AugmentStudyConfig, base: RunConfig, cli_overrides: list[str] | None, data: DataSizes,
         root: Path):
    return [c for _, c in _plan(cfg, _pinned(base))], 0.0


def _pinned(base: RunConfig) -> RunConfig:
    """A null `train.epochs` decided once from every training row, so the steps-matched controls can be counted."""
    if base.train.epochs is not None:
        return base
    return pin_epochs(base, all_rows(base))


def report(summary: dict[str, Any]) -> list[str]:
    lines = ["  test accuracy; difference to the ratio-0 control, paired by seed"]
    for size, ops in summary["curves"].items():
        for op, points in ops.items():
            cells = "  ".join(f"x{p['ratio']:g} {p['mean']:.4f}"
                              + (f" ({p['vs_control']['mean_difference']:+.4f}, p={p['vs_control']['t_pvalue']:.2g})"
                                 if p["vs_control"] else "") for p in points)
            lines.append(f"  {size:>6} rows  {op:<23}{cells}")
    return lines


def report_section(page, folder: Path, summary: dict) -> str:
    """This study's section of report.html (`page`: slmtune.report.html.Report, whose key findings it adds to)."""
    from slmtune.multilabel import metric_name
    from slmtune.report.cells import escape, p_value, table

    rows = []
    for f in summary["vs_control"]:
        rows.append([f["size"], escape(f["operations"]), f"{f['ratio']:g}", escape(f.get("against", "control")),
                     f"{f['difference']:+.4f}",
                     f"[{f['ci'][0]:+.4f}, {f['ci'][1]:+.4f}]", f"{f['p_value']:.3g}", p_value(f.get("p_holm")),
                     p_value(f.get("p_bh")), "yes" if f["significant"] else "no"])
    steps_matched = any(f.get("against") == "control (same steps)" for f in summary["vs_control"])
    for f in summary["vs_control"]:  # key findings: the fairest comparison only
        if f["operations"].startswith("steps-matched") or (
                steps_matched and f.get("against") != "control (same steps)"):
            continue
        page.findings.append([f"augmentation {escape(f['operations'])} x{f['ratio']:g} at {f['size']} rows "
                              f"vs {escape(f.get('against', 'control'))}",
                              f"{f['difference']:+.4f}", "paired seeds",
                              f"[{f['ci'][0]:+.4f}, {f['ci'][1]:+.4f}] p={f['p_value']:.3g}"
                              + (f" (Holm {f['p_holm']:.3g})" if f.get("p_holm") is not None else "")])
    name = metric_name(summary.get("metric", "accuracy"))
    return table(["rows", "operations", "ratio", "against", f"{name} − control", "95% bootstrap CI",
                   "paired t p", "Holm p", "BH p", "significant"], rows, numeric_from=4)


def figure_caption(summary: dict) -> str:
    """What the captions of this study's figures in report.html say."""
    return "mean over seeds/draws with 95% t interval bands (n in the legend)"
