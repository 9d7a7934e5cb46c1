"""Pool-based active learning: train on a labelled seed set, score the unlabelled pool, query a batch,
retrain, until each labelling checkpoint; strategies (slmtune.methods.query) compared against random on the
same seeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slmtune import runs, stats
from slmtune.config import RunConfig, replace
from slmtune.data import Splits, stratified_indices
from slmtune.errors import SlmtuneError
from slmtune.experiments.common import (
    Clock,
    DataSizes,
    Study,
    flat_metrics,
    format_duration,
    load_run_config,
    single_label_only,
    with_min_steps,
)
from slmtune.experiments.protocol import Reduction, flags_as_given, trains_to_the_end
from slmtune.methods.query import STRATEGIES
from slmtune.resolve import pin_epochs, pin_head_init


class RunScorer:
    """`predict_proba` over texts with a finished run's best model (length-sorted batches, or ONNX)."""

    def __init__(self, run_dir: str | Path, backend: str = "torch"):
        self.run_dir, self.backend, self.seconds = run_dir, backend, 0.0
        self.run = self.engine = None

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Loads the model on first use, so strategies that never score (random) cost nothing."""
        from slmtune.serve.backends import engine
        from slmtune.serve.inference import load_run
        from slmtune.serve.logits import predict_proba

        clock = Clock()
        if self.engine is None:
            self.run, self.engine = load_run(self.run_dir), engine(self.run_dir, self.backend)
        probs = predict_proba(self.engine.model, self.run.tokenizer, texts,
                              batch_size=self.run.config.train.eval_batch_size,
                              max_length=self.run.config.data.max_length, precision=self.engine.precision,
                              truncation=self.run.config.data.truncation)
        self.seconds += clock.elapsed
        return probs


@dataclass
class ActiveConfig:
    name: str = "active"
    recipe: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    strategies: list[str] = field(default_factory=lambda: ["random", "least_confidence", "margin", "entropy"])
    checkpoints: list[int] = field(default_factory=lambda: [100, 500, 1000])
    """Labelled rows at which the model is trained and tested; the first is the random seed set."""
    pool_size: int = 5000
    """Unlabelled pool drawn (stratified, per seed) from the training file, apart from validation."""
    seeds: list[int] = field(default_factory=lambda: [42, 123, 456])
    min_steps: int = 100
    """Each round trains for at least this many optimizer steps."""
    backend: str = "torch"
    """Pool scoring: one of slmtune.serve.ENGINES (torch: length-sorted batches in the run's precision)."""


def check(cfg: ActiveConfig) -> None:
    unknown = [s for s in cfg.strategies if s not in STRATEGIES]
    if unknown or not cfg.strategies:
        raise SlmtuneError(f"unknown strategy(ies) {', '.join(unknown) or '(none given)'}; "
                           f"known: {', '.join(STRATEGIES)}")
    points = cfg.checkpoints
    if not points or points[0] < 1 or any(b <= a for a, b in zip(points, points[1:])):
        raise SlmtuneError(f"checkpoints must be increasing positive row counts, got {points}")
    if points[-1] > cfg.pool_size:
        raise SlmtuneError(f"the last checkpoint ({points[-1]}) exceeds pool_size ({cfg.pool_size})")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise SlmtuneError("seeds must be a non-empty list without duplicates")


def _labeled_key(labeled: list[int], pool_size: int) -> str:
    return f"active pool {pool_size}: " + ",".join(map(str, sorted(labeled)))


def _curve(study: Study, cfg: ActiveConfig, base: RunConfig, strategy: str, seed: int, progress) -> list[dict]:
    """One learning curve; the labelled sets are saved after every query, so a rerun resumes exactly."""
    pool_config = replace(base, seed=seed, **{"data.train_size": cfg.pool_size})
    splits = study.splits(pool_config)
    pool = splits.train
    pool_config = pin_epochs(pool_config, splits)  # every round and strategy trains as long (not by what it queried)
    record_path = study.root / "active" / f"{strategy}-{seed}.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"rounds": []}
    rows = []
    for i, target in enumerate(cfg.checkpoints):
        if i < len(record["rounds"]):
            labeled = record["rounds"][i]["labeled"]
        elif i == 0:
            labeled = stratified_indices(pool.labels, target, seed)  # the same seed set for every strategy
        else:
            scorer = RunScorer(rows[-1]["run_dir"], cfg.backend)
            previous = record["rounds"][i - 1]["labeled"]
            rng = np.random.default_rng([seed, i])  # per round, so a resumed curve queries as an unbroken one
            new = STRATEGIES[strategy].query(scorer, pool, previous, target - len(previous), rng)
            labeled = sorted(set(previous) | set(new))
            record["rounds"][i - 1]["scoring_seconds"] = round(scorer.seconds, 2)
        if i >= len(record["rounds"]):
            record["rounds"].append({"labels": target, "labeled": labeled})
            runs.write_json(record_path, record)
        config = with_min_steps(replace(pool_config, name=f"{cfg.name}-{strategy}-{seed}-{target}"), target,
                                cfg.min_steps)
        # the round trains on `target` rows, not the pool its config draws: auto is decided (and keyed) for those
        config = pin_head_init(config, target, len(pool.label_names))
        round_splits = Splits(pool.subset(labeled), splits.validation, splits.test)
        result = study.run(config, splits=round_splits, key=_labeled_key(labeled, cfg.pool_size))
        row = {"strategy": strategy, "seed": seed, "labels": target, **flat_metrics(result),
               "class_counts": np.bincount([pool.labels[j] for j in labeled], minlength=len(pool.label_names)).tolist()}
        rows.append(row)
        progress(f"  {strategy} seed {seed} {target} labels: test accuracy {row['test_accuracy']:.4f}"
                 f"{' (reused)' if row['reused'] else ''}")
    return rows


def run_active(cfg: ActiveConfig, study_dir: str | Path | None = None, cli_overrides: list[str] | None = None,
               progress=print) -> dict[str, Any]:
    check(cfg)
    base = load_run_config(cfg.recipe, cfg.run, cli_overrides)
    single_label_only(base, "active-learning", "its query strategies rank class probabilities that sum to 1")
    study = Study(study_dir or Path("studies") / cfg.name)
    (study.root / "active").mkdir(exist_ok=True)
    study.write_study_yaml({"study": "active", **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                            "cli_overrides": cli_overrides or []})
    n_runs = len(cfg.seeds) * (1 + len(cfg.strategies) * (len(cfg.checkpoints) - 1))
    progress(f"active {cfg.name}: {len(cfg.strategies)} strategies x {len(cfg.seeds)} seeds, checkpoints "
             f"{cfg.checkpoints}, pool {cfg.pool_size}: {n_runs} training runs (the seed set is shared), "
             f"each followed by scoring the pool; folder {study.root}")
    clock = Clock()
    rows = []
    for seed in cfg.seeds:
        for strategy in cfg.strategies:
            rows.extend(_curve(study, cfg, base, strategy, seed, progress))
            progress(f"  {format_duration(clock.elapsed)} elapsed")
    return summarize_active(study, rows)


def area_under_curve(labels: list[int], accuracy: list[float]) -> float:
    """Trapezoidal area under accuracy vs labels, divided by the label range: a mean accuracy over the budget."""
    if len(labels) < 2:
        return float(accuracy[0])
    return float(np.trapezoid(accuracy, labels) / (labels[-1] - labels[0]))


def summarize_active(study: Study, rows: list[dict[str, Any]]) -> dict[str, Any]:
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    curves, aulc = {}, {}
    for s in strategies:
        curves[s] = {}
        for n in sorted({r["labels"] for r in rows if r["strategy"] == s}):
            curves[s][n] = stats.summarize([r["test_accuracy"] for r in rows
                                            if r["strategy"] == s and r["labels"] == n]).to_dict()
        aulc[s] = {}
        for seed in seeds:
            mine = sorted((r for r in rows if r["strategy"] == s and r["seed"] == seed), key=lambda r: r["labels"])
            aulc[s][seed] = area_under_curve([r["labels"] for r in mine], [r["test_accuracy"] for r in mine])
    table = []
    for s in strategies:
        row = {"strategy": s, "aulc": stats.summarize(list(aulc[s].values())).to_dict(), "vs_random": None}
        if s != "random" and "random" in aulc and len(seeds) >= 2:
            row["vs_random"] = stats.paired_comparison([aulc[s][k] for k in seeds], [aulc["random"][k] for k in seeds],
                                                       names=(s, "random")).to_dict()
        table.append(row)
    versus = [row["vs_random"] for row in table if row["vs_random"]]
    adjusted = stats.adjust_pvalues([v["t_pvalue"] for v in versus])  # several strategies: corrected beside raw
    for v, holm, bh in zip(versus, adjusted["holm"], adjusted["bh"]):
        v.update(p_holm=holm, p_bh=bh)
    summary = {"study": "active", "curves": curves, "aulc": table, "seeds": seeds,
               "selection": "test accuracy at each checkpoint; area under the learning curve per seed, "
                            "paired by seed against random"}
    from slmtune.report.plots import active_plot

    summary["plots"] = [active_plot(curves, study.root / "plots" / "active.png")]
    study.write_summary(rows, summary)
    return summary


# ---------------------------------------------------------------------------------------- study protocol

CONFIG = ActiveConfig
run = run_active
from_cli = flags_as_given
OWN_QUEUE = False
REDUCTIONS = (
    Reduction(3, "seeds", lambda v: v[:2], "active learning: 2 seeds"),
)


planned_share = trains_to_the_end


def shares_runs(cfg: ActiveConfig) -> bool:
    return False  # later rounds train on queried rows: their configs do not name their runs


def plan(cfg: ActiveConfig, base: RunConfig, cli_overrides: list[str] | None, data: DataSizes,
         root: Path):
    """Planned by size only (what is queried is not known in advance); a finished part (summary.json) is done."""
    from slmtune.experiments.common import EVAL_RATE

    if root is not None and (root / "summary.json").is_file():
        return [], 0.0
    out = []
    for seed in cfg.seeds:
        sizes = cfg.checkpoints[:1] + cfg.checkpoints[1:] * len(cfg.strategies)  # the seed set is shared
        out += [with_min_steps(replace(base, seed=seed, **{"data.train_size": n}), n, cfg.min_steps) for n in sizes]
    scoring = len(cfg.seeds) * len(cfg.strategies) * (len(cfg.checkpoints) - 1) * cfg.pool_size
    return out, scoring / EVAL_RATE


def report(summary: dict[str, Any]) -> list[str]:
    lines = ["  area under the learning curve = mean test accuracy over the budget"]
    for row in summary["aulc"]:
        versus = row["vs_random"]
        extra = (f"  vs random {versus['mean_difference']:+.4f} [{versus['boot_low']:+.4f}, "
                 f"{versus['boot_high']:+.4f}] p={versus['t_pvalue']:.2g}") if versus else ""
        lines.append(f"  {row['strategy']:<18}AULC {row['aulc']['mean']:.4f} ± {row['aulc']['std']:.4f}{extra}")
    return lines


def report_section(page, folder: Path, summary: dict) -> str:
    """This study's section of report.html (`page`: slmtune.report.html.Report, whose key findings it adds to)."""
    from slmtune.report.cells import ci, escape, p_value, table

    rows = []
    for r in summary["aulc"]:
        v = r["vs_random"]
        rows.append([escape(r["strategy"]), ci(r["aulc"]), f"{v['mean_difference']:+.4f}" if v else "–",
                     f"[{v['boot_low']:+.4f}, {v['boot_high']:+.4f}]" if v else "–",
                     f"{v['t_pvalue']:.3g}" if v else "–", p_value(v.get("p_holm")) if v else "–"])
        if v:
            page.findings.append([f"active learning {escape(r['strategy'])} vs random (area under curve)",
                                  f"{v['mean_difference']:+.4f}", f"{v['n']} seeds",
                                  f"[{v['boot_low']:+.4f}, {v['boot_high']:+.4f}] p={v['t_pvalue']:.3g}"
                                  + (f" (Holm {v['p_holm']:.3g})" if v.get("p_holm") is not None else "")])
    curve_rows = [[escape(s), n, ci(p), p["n"]] for s, pts in summary["curves"].items() for n, p in pts.items()]
    return (table(["strategy", "AULC [95% CI]", "vs random", "95% bootstrap CI", "paired t p", "Holm p"], rows)
            + "<h3>Accuracy at each checkpoint</h3>"
            + table(["strategy", "labels", "accuracy [95% CI]", "seeds"], curve_rows))


def figure_caption(summary: dict) -> str:
    """What the captions of this study's figures in report.html say."""
    return "mean over seeds/draws with 95% t interval bands (n in the legend)"
