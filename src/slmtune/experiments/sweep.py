"""Hyperparameter sweeps on Optuna: grids (every point enqueued once) or TPE search with a pruner.

The Optuna study lives in SQLite inside the study folder (or any `--storage` URL), so a sweep that is
interrupted resumes with the same command and several `--worker` processes can share one study.
Every trial trains through `Study.run`, which reuses a finished run of the same config.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

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
from slmtune.experiments.protocol import Reduction
from slmtune.experiments.queue import (
    completed,
    drain,
    load_when_created,
    open_storage,
    queue_missing,
    require_optuna,
)
from slmtune.multilabel import metric_name

LR_VALUES = [1e-5, 5e-5, 1e-4, 2e-4, 5e-4]
WD_VALUES = [0.0, 0.001, 0.01, 0.05, 0.1]
SPACES: dict[str, dict[str, list]] = {
    "lr": {"train.learning_rate": LR_VALUES},
    "wd": {"train.weight_decay": WD_VALUES},
    "grid": {"train.learning_rate": LR_VALUES, "train.weight_decay": WD_VALUES},
    "rank": {"lora.r": [4, 8, 16, 32]},
    "alpha": {"lora.alpha": [8, 16, 32, 64]},
    "batch": {"train.batch_size": [8, 16, 32]},
    "epochs": {"train.epochs": [1, 2, 3, 5]},
}
# Ranges for `--search N` (TPE) when the study gives none.
SEARCH_SPACE = {"train.learning_rate": {"low": 1e-5, "high": 5e-4, "log": True},
                "train.weight_decay": {"low": 0.0, "high": 0.1}}


@dataclass
class SweepConfig:
    name: str = "sweep"
    """Study name (folder studies/<name>, Optuna study name)."""
    recipe: str | None = None
    """Base run recipe (YAML); the `run` section and CLI overrides apply on top."""
    run: dict[str, Any] = field(default_factory=dict)
    """Run-config fields shared by every trial (nested, as in a recipe)."""
    space: str | dict[str, Any] = "lr"
    """A named space (lr, wd, grid, rank, alpha, batch, epochs) or {dotted.field: [values] | {low, high, log}}."""
    search: int | None = None
    """Number of TPE trials; null runs the grid of every listed value."""
    storage: str | None = None
    """Optuna storage URL; null is sqlite in the study folder."""
    method: str | None = None
    """`lora` or `full`: the method every trial trains (its own learning rate and pooling unless the recipe, `run`
    or the space sets them); null keeps the recipe's."""
    heartbeat: int = 10
    """Seconds between a running trial's heartbeats; a trial silent for 3 heartbeats (its process was killed) is
    failed and its point run again. A live trial of another worker is never taken over."""

    def __post_init__(self) -> None:
        if self.method not in (None, "lora", "full"):
            raise SlmtuneError(f"method must be lora or full, got {self.method!r}")
        if not isinstance(self.heartbeat, int) or isinstance(self.heartbeat, bool) or self.heartbeat < 1:
            raise SlmtuneError(f"heartbeat must be a positive whole number of seconds, got {self.heartbeat!r}")

    def resolved_space(self) -> dict[str, Any]:
        if isinstance(self.space, str):
            if self.space not in SPACES:
                raise SlmtuneError(f"unknown sweep space {self.space!r}; known: {', '.join(SPACES)}")
            return dict(SPACES[self.space])
        if not isinstance(self.space, dict) or not self.space:
            raise SlmtuneError("the sweep space is empty: give at least one field with values")
        return dict(self.space)


def with_method(base: RunConfig, method: str | None) -> RunConfig:
    """`base` training `method` instead (the method's defaulted fields re-resolve)."""
    return replace(base, **{"model.method": method}) if method and method != base.model.method else base


def grid_points(space: dict[str, Any]) -> list[dict[str, Any]]:
    for key, values in space.items():
        if not isinstance(values, list) or not values:
            raise SlmtuneError(f"grid sweeps need a non-empty list of values for {key!r}")
    keys = list(space)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(space[k] for k in keys))]


def _check_space(base: RunConfig, space: dict[str, Any], search: bool) -> None:
    """Every swept field exists and every value is valid, before anything trains."""
    if not space:
        raise SlmtuneError("the sweep space is empty")
    for key, values in space.items():
        if isinstance(values, dict):
            if not search:
                raise SlmtuneError(f"{key!r} has a range; ranges need --search N (grids take lists)")
            probes = [values.get("low"), values.get("high")]
        else:
            probes = list(values)
        for value in probes:
            replace(base, **{key: value})  # raises SlmtuneError on unknown fields or bad values


class _PruningCallback(TrainerCallback):
    """Reports each validation figure of the objective (micro-F1 on multi-label data, else accuracy) to Optuna
    and stops a trial its pruner gives up on."""

    def __init__(self, trial):
        self.trial = trial

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        import optuna

        metrics = metrics or {}
        value = metrics.get("eval_micro_f1", metrics.get("eval_accuracy"))
        if value is not None:
            self.trial.report(value, step=state.global_step)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {state.global_step}")


def _suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    params = {}
    for key, values in space.items():
        if isinstance(values, list):
            params[key] = trial.suggest_categorical(key, values)
        elif isinstance(values.get("low"), int) and isinstance(values.get("high"), int):
            params[key] = trial.suggest_int(key, values["low"], values["high"], log=bool(values.get("log")))
        else:
            params[key] = trial.suggest_float(key, float(values["low"]), float(values["high"]),
                                              log=bool(values.get("log")))
    return params


def run_sweep(cfg: SweepConfig, study_dir: str | Path | None = None, cli_overrides: list[str] | None = None,
              worker: bool = False, progress=print) -> dict[str, Any]:
    """Run (or join, or resume) a sweep; returns the summary (also written to the study folder)."""
    optuna = require_optuna()

    # ERROR: Optuna logs a stopped trial's traceback as a warning; slmtune says what happened in one line
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    base = with_method(load_run_config(cfg.recipe, cfg.run, cli_overrides), cfg.method)
    space = cfg.resolved_space()
    search = cfg.search is not None
    if search and cfg.search < 1:
        raise SlmtuneError("--search needs a positive number of trials")
    if search and isinstance(cfg.space, str) and cfg.space in ("lr", "wd", "grid"):
        space = {k: SEARCH_SPACE[k] for k in space}
    _check_space(base, space, search)
    study = Study(study_dir or Path("studies") / cfg.name)
    storage = open_storage(cfg.storage or f"sqlite:///{(study.root / 'optuna.db').resolve()}", cfg.heartbeat)
    points = [] if search else grid_points(space)
    if worker:
        optuna_study = load_when_created(cfg.name, storage, f"no sweep named {cfg.name!r} in that storage yet: "
                                                            "start it without --worker")
    else:
        optuna_study = optuna.create_study(
            study_name=cfg.name, storage=storage, load_if_exists=True, direction="maximize",
            sampler=None if not search else optuna.samplers.TPESampler(seed=base.seed),
            pruner=optuna.pruners.MedianPruner() if search else optuna.pruners.NopPruner(),
        )
        optuna.storages.fail_stale_trials(optuna_study)  # trials of killed processes: failed, points queued again
        fresh = not optuna_study.trials
        for trial in damaged_trials(optuna_study):
            progress(f"trial {trial.number}: its run folder {trial.user_attrs['run_dir']} is damaged or gone (no "
                     "finished result.json); its point is trained again")
        queued = queue_missing(optuna_study, points, skip=set(optuna_study.user_attrs.get(DAMAGED, [])))
        if queued and not fresh:
            progress(f"re-running {queued} trial(s) stopped earlier")
        study.write_study_yaml({"study": "sweep", "name": cfg.name, "recipe": cfg.recipe, "run": cfg.run,
                                "method": cfg.method, "space": space, "search": cfg.search, "storage": cfg.storage,
                                "cli_overrides": cli_overrides or []})

    total = cfg.search if search else len(points)
    done_before = counted(optuna_study)
    estimate = study.estimate_seconds(base)
    progress(f"sweep {cfg.name}: {total} trials ({len(done_before)} done), ~{format_duration(estimate)} per new "
             f"trial, ~{format_duration(estimate * max(0, total - len(done_before)))} left (estimate); "
             f"folder {study.root}")
    clock = Clock()

    def objective(trial) -> float:
        params = _suggest(trial, space)
        config = replace(base, **params, name=f"{cfg.name}-{trial.number}")
        result = study.run(config, callbacks=[_PruningCallback(trial)] if search else None)
        row = flat_metrics(result)
        for key, value in row.items():
            trial.set_user_attr(key, value)
        finished = len(counted(trial.study)) + 1
        metric = study_metric([row])
        progress(f"  trial {trial.number}: {params} -> validation {row[f'validation_{metric}']:.4f}, "
                 f"test {row[f'test_{metric}']:.4f}, {row['total_seconds']:.0f}s"
                 f"{' (reused)' if row['reused'] else ''}; {finished}/{total} done, {format_duration(clock.elapsed)} "
                 "elapsed")
        return row[f"validation_{metric}"]

    if search:
        remaining = total - len(counted(optuna_study))
        if remaining > 0:
            optuna_study.optimize(objective, n_trials=remaining)
    else:
        drain(optuna_study, objective, cfg.heartbeat, lambda running: progress(
            f"waiting for {running} trial(s) running in another process (retried if its heartbeat stops for "
            f"{3 * cfg.heartbeat}s)"), progress)
    return summarize_sweep(optuna_study, study, space, base)


DAMAGED = "damaged_trials"
"""Study attribute: numbers of finished trials whose run folder was found damaged; they count for nothing."""


def damaged_trials(optuna_study) -> list:
    """Finished trials whose run folder no longer holds a finished run (a truncated or deleted result.json),
    newly found: recorded in the study (DAMAGED) so that their points are queued again and their rows dropped."""
    from slmtune import runs

    known = set(optuna_study.user_attrs.get(DAMAGED, []))
    found = [t for t in completed(optuna_study) if t.number not in known and t.user_attrs.get("run_dir")
             and not runs.is_finished(t.user_attrs["run_dir"])]
    if found:
        optuna_study.set_user_attr(DAMAGED, sorted(known | {t.number for t in found}))
    return found


def counted(optuna_study) -> list:
    """The finished trials that count: those whose run folder was not found damaged."""
    damaged = set(optuna_study.user_attrs.get(DAMAGED, []))
    return [t for t in completed(optuna_study) if t.number not in damaged]


def summarize_sweep(optuna_study, study: Study, space: dict[str, Any], base: RunConfig) -> dict[str, Any]:
    rows = []
    for trial in counted(optuna_study):
        row = {"trial": trial.number, **trial.params}
        row.update({k: v for k, v in trial.user_attrs.items() if k != "retry_of"})
        rows.append(row)
    if not rows:
        raise SlmtuneError("the sweep has no finished trials yet")
    # one row per distinct config: a retried trial never counts twice
    seen, unique = set(), []
    for row in sorted(rows, key=lambda r: r["trial"]):
        key = row.get("run_dir")
        if key not in seen:
            seen.add(key)
            unique.append(row)
    metric = study_metric(unique)  # micro-F1 on multi-label data
    best = max(unique, key=lambda r: (r[f"validation_{metric}"], -(r.get("total_seconds") or 0)))
    best_params = {k: best[k] for k in space}
    best_config = replace(base, **best_params, name=f"{optuna_study.study_name}-best")
    path = study.write_config("best-config.yaml", best_config)
    summary = {"study": "sweep", "name": optuna_study.study_name, "space": space, "trials": len(unique),
               "metric": metric,
               "best": {"params": best_params, "validation_accuracy": best["validation_accuracy"],
                        "test_accuracy": best["test_accuracy"], "config": str(path),
                        **({"validation_micro_f1": best["validation_micro_f1"],
                            "test_micro_f1": best["test_micro_f1"]} if metric == "micro_f1" else {})},
               "selection": f"best validation {metric_name(metric)} of each trial's best checkpoint; test "
                            "never used to select"}
    from slmtune.report.plots import sweep_plots

    summary["plots"] = sweep_plots(unique, list(space), study.root / "plots")
    study.write_summary(unique, summary)
    return summary


# ---------------------------------------------------------------------------------------- study protocol

CONFIG = SweepConfig
run = run_sweep
OWN_QUEUE = True
REDUCTIONS = (
    Reduction(7, "space", lambda v: None if v == "grid" else v, "sweep: the 5x5 grid dropped (lr and wd lines kept)"),
)


def from_cli(values: dict[str, Any], from_file: bool) -> dict[str, Any]:
    if values.get("method") and "name" not in values and not from_file:
        values["name"] = f"sweep-{values.get('space', 'lr')}-{values['method']}"
    return values


def shares_runs(cfg: SweepConfig) -> bool:
    return not cfg.search  # search trials train sampled values: their configs are not known in advance


def plan(cfg: SweepConfig, base: RunConfig, cli_overrides: list[str] | None, data: DataSizes,
         root: Path):
    base = with_method(base, cfg.method)
    if cfg.search:
        return [base] * cfg.search, 0.0
    return [replace(base, **point) for point in grid_points(cfg.resolved_space())], 0.0


def report(summary: dict[str, Any]) -> list[str]:
    best = summary["best"]
    metric = summary.get("metric", "accuracy")
    name = metric_name(metric)
    return [f"  trials                    {summary['trials']}", f"  best params               {best['params']}",
            f"  best validation {name:<9} {best[f'validation_{metric}']:.4f}",
            f"  its test {name:<16} {best[f'test_{metric}']:.4f}", f"  best config               {best['config']}"]


def report_section(page, folder: Path, summary: dict) -> str:
    """This study's section of report.html (`page`: slmtune.report.html.Report, whose key findings it adds to)."""
    from slmtune.multilabel import metric_name
    from slmtune.report.cells import escape, num, table

    best = summary["best"]
    metric = summary.get("metric", "accuracy")  # micro_f1 on multi-label data
    name = metric_name(metric)
    keys = list(summary.get("space", {}))
    rows = sorted(summary.get("rows", []), key=lambda r: [r.get(k, 0) for k in keys])
    table = table([*keys, f"validation {name}", f"test {name}", "train s"],
                   [[*(f"{r.get(k):g}" if isinstance(r.get(k), float) else r.get(k) for k in keys),
                     num(r.get(f"validation_{metric}")), num(r.get(f"test_{metric}")),
                     num(r.get("train_seconds"), 1)] for r in rows], numeric_from=0)
    params = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best["params"].items())
    val, test = best[f"validation_{metric}"], best[f"test_{metric}"]
    page.findings.append([f"best {escape(', '.join(keys))} ({escape(folder.name)})", escape(params),
                          f"{summary.get('trials')} trials", f"validation {val:.4f}, test {test:.4f}"])
    return (f"<div class='verdict'>best: {escape(params)} — validation {name} "
            f"{val:.4f}, its test {name} {test:.4f} "
            f"({escape(summary.get('selection', ''))})</div>" + table)


def figure_caption(summary: dict) -> str:
    """What the captions of this study's figures in report.html say."""
    return f"{len(summary.get('rows', []))} runs"
