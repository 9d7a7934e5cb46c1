"""Hyperparameter sweeps on Optuna: grids (every point enqueued once) or TPE search with a pruner.

The Optuna study lives in SQLite inside the study folder (or any `--storage` URL), so a sweep that is
interrupted resumes with the same command and several `--worker` processes can share one study.
Every trial trains through `Study.run`, which reuses a finished run of the same config.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from slmtune import runs
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
    point_of,
    poll,
    queue_missing,
    require_optuna,
    waiting,
)
from slmtune.experiments.racing import ALPHA, counts_of_predictions, cut, cut_note, rungs_of, standing
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
    race: bool = True
    """Grids race (slmtune.experiments.racing): every point trains to the first rung, and after each rung a point
    significantly behind the leader on the validation rows (paired permutation test, Holm) and outside the best
    half stops there; the others resume on the same schedule, so a point that goes on ends exactly where an
    unraced run would. Only the points trained to the end score the test rows. false (`--exhaustive`) trains
    every point to the end. Searches (`search`) prune with Optuna's median pruner instead."""
    first_rung: float = 1.0
    """Epoch of the first rung; later rungs double it, the last is the schedule's end."""
    alpha: float = ALPHA
    """A point is cut when its Holm-adjusted p-value against the leader is below this."""

    def __post_init__(self) -> None:
        if self.method not in (None, "lora", "full"):
            raise SlmtuneError(f"method must be lora or full, got {self.method!r}")
        if not isinstance(self.first_rung, (int, float)) or isinstance(self.first_rung, bool) or self.first_rung <= 0:
            raise SlmtuneError(f"first_rung must be a positive number of epochs, got {self.first_rung!r}")
        if not isinstance(self.alpha, float) or not 0 < self.alpha < 1:
            raise SlmtuneError(f"alpha must be a number between 0 and 1, got {self.alpha!r}")
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
    points = [] if search else grid_points(space)
    raced = cfg.race and not search and len(points) > 1
    optuna_study = _open_queue(cfg, study, base, space, points, raced, worker, cli_overrides, progress)
    _announce(cfg, study, optuna_study, base, points, raced, progress)
    objective = _objective(cfg, study, base, space, raced, progress)

    def run_queue() -> None:
        drain(optuna_study, objective, cfg.heartbeat, lambda running: progress(
            f"waiting for {running} trial(s) running in another process (retried if its heartbeat stops for "
            f"{3 * cfg.heartbeat}s)"), progress)

    if search:
        remaining = cfg.search - len(counted(optuna_study))
        if remaining > 0:
            optuna_study.optimize(objective, n_trials=remaining)
    elif raced and worker:
        _race_as_worker(optuna_study, run_queue, cfg.heartbeat, progress)
    elif raced:
        _race(optuna_study, study, points, base, cfg, run_queue, progress)
    else:
        run_queue()
    return summarize_sweep(optuna_study, study, space, base, cfg.alpha)


def _open_queue(cfg: SweepConfig, study: Study, base: RunConfig, space: dict[str, Any], points: list[dict[str, Any]],
                raced: bool, worker: bool, cli_overrides: list[str] | None, progress):
    """The sweep's Optuna study: joined as a worker, or created or resumed by the starting command (trials of
    killed processes failed and queued again, damaged run folders named, an unraced grid's missing points
    queued, study.yaml written)."""
    import optuna

    storage = open_storage(cfg.storage or f"sqlite:///{(study.root / 'optuna.db').resolve()}", cfg.heartbeat)
    if worker:
        return load_when_created(cfg.name, storage, f"no sweep named {cfg.name!r} in that storage yet: start it "
                                                    "without --worker")
    search = cfg.search is not None
    optuna_study = optuna.create_study(
        study_name=cfg.name, storage=storage, load_if_exists=True, direction="maximize",
        sampler=None if not search else optuna.samplers.TPESampler(seed=base.seed),
        pruner=optuna.pruners.MedianPruner() if search else optuna.pruners.NopPruner(),
    )
    optuna.storages.fail_stale_trials(optuna_study)  # trials of killed processes: failed, points queued again
    fresh = not optuna_study.trials
    for trial in damaged_trials(optuna_study, study.root):
        progress(f"trial {trial.number}: its run folder {run_dir_of(trial, study.root)} is damaged or gone (no "
                 "finished result.json); its point is trained again")
    if not raced:  # a point a raced run of this sweep left paused at a rung is trained to the end now
        paused = [t for t in completed(optuna_study) if t.user_attrs.get("rung") is not None]
        queued = queue_missing(optuna_study, points, skip=set(optuna_study.user_attrs.get(DAMAGED, [])) |
                               {t.number for t in paused})
        if queued and not fresh:
            folders = {run_dir_of(t, study.root) for t in paused} - {None}
            cut = sum(runs.paused_at(f) is not None and not runs.has_checkpoint(f) for f in folders)
            progress(f"re-running {queued} trial(s) stopped earlier" + (
                f" ({cut} cut by a race, whose checkpoints went with the cut: trained again from the start)"
                if cut else ""))
    study.write_study_yaml({"study": "sweep", "name": cfg.name, "recipe": cfg.recipe, "run": cfg.run,
                            "method": cfg.method, "space": space, "search": cfg.search, "storage": cfg.storage,
                            "race": raced, "first_rung": cfg.first_rung, "alpha": cfg.alpha,
                            "cli_overrides": cli_overrides or []})
    return optuna_study


def _announce(cfg: SweepConfig, study: Study, optuna_study, base: RunConfig, points: list[dict[str, Any]],
              raced: bool, progress) -> None:
    """The sweep's first line: its size, the time it plans and its folder."""
    total = cfg.search if cfg.search is not None else len(points)
    done_before = ended_points(optuna_study)
    estimate = study.estimate_seconds(base)
    if raced:  # planned at successive halving's share of the exhaustive work
        share = planned_share(cfg, [base] * len(points), study.data_sizes(base))
        left = estimate * len(points) * share * (0 if optuna_study.user_attrs.get(RACE_DONE) else 1)
        progress(f"sweep {cfg.name}: {total} points, raced (~{format_duration(estimate)} per point trained to the "
                 f"end; ~{format_duration(left)} planned if half go on at each rung); folder {study.root}")
    else:
        progress(f"sweep {cfg.name}: {total} trials ({len(done_before)} done), ~{format_duration(estimate)} per new "
                 f"trial, ~{format_duration(estimate * max(0, total - len(done_before)))} left (estimate); "
                 f"folder {study.root}")


def _objective(cfg: SweepConfig, study: Study, base: RunConfig, space: dict[str, Any], raced: bool, progress):
    """What a trial does: train its point (to its rung when racing; pruned by the median rule when searching),
    keep its metrics on the trial and say so in one line; the validation metric is its value."""
    search = cfg.search is not None
    total = cfg.search if search else len(grid_points(space))
    clock = Clock()

    def objective(trial) -> float:
        params = _suggest(trial, space)
        config = replace(base, **params, name=f"{cfg.name}-{trial.number}")
        rung = trial.user_attrs.get("rung")  # a racing rung short of the schedule's end: no test scoring
        result = study.run(config, callbacks=[_PruningCallback(trial)] if search else None, until=rung)
        row = {**flat_metrics(result), "epochs": result.get("paused_at") or result["best"].get("epochs_run")}
        for key, value in row.items():
            trial.set_user_attr(key, value)
        finished = 1 + len(counted(trial.study) if raced else ended_points(trial.study))
        metric = study_metric([row])
        tested = f"test {row[f'test_{metric}']:.4f}" if row[f"test_{metric}"] is not None else "test not scored"
        progress(f"  trial {trial.number}: {params}{f' to epoch {rung:g}' if rung else ''} -> validation "
                 f"{row[f'validation_{metric}']:.4f}, {tested}, {row['total_seconds']:.0f}s"
                 f"{' (reused)' if row['reused'] else ''}; "
                 f"{f'{finished} trial(s)' if raced else f'{finished}/{total}'} done, {format_duration(clock.elapsed)} "
                 "elapsed")
        return row[f"validation_{metric}"]

    return objective


CUTS = "race_cuts"
"""Study attribute: the points cut by racing, {point key: {epoch, leader, pvalue}}."""
DECIDED = "race_decided"
"""Study attribute: the levels whose standing was decided (a rerun does not decide them again on later data)."""
RACE_DONE = "race_done"
"""Study attribute: the starting command has decided every rung (workers waiting for a rung stop)."""


def _key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True)


def _label(point: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in point.items())


def _rung_of(trial) -> float:
    rung = trial.user_attrs.get("rung")
    return float("inf") if rung is None else float(rung)


def _race(optuna_study, study: Study, points: list[dict[str, Any]], base: RunConfig, cfg: SweepConfig, run_queue,
          progress) -> None:
    """Successive halving over the grid, rung by rung through the queue (workers take trials as they come): the
    points alive at a level train to their next rung, then each is compared with the leader on the validation
    rows and those behind and outside the best half stop."""
    from optuna.trial import TrialState

    from slmtune.resolve import DataFacts, resolve
    from slmtune.train import VALIDATION_PREDICTIONS

    optuna_study.set_user_attr(RACE_DONE, False)
    facts = DataFacts.of(study.splits(base))
    ladders = {_key(p): rungs_of(resolve(replace(base, **p), facts).epochs, cfg.first_rung) for p in points}
    levels = max(map(len, ladders.values()))
    for level in range(levels):
        cuts = optuna_study.user_attrs.get(CUTS, {})
        live = optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
        held = {(_key(point_of(t)), t.user_attrs.get("level")) for t in [*counted(optuna_study), *live]}
        todo = [p for p in points if _key(p) not in cuts and level < len(ladders[_key(p)])]
        for point in todo:
            if (_key(point), level) not in held:
                ladder = ladders[_key(point)]
                rung = None if level == len(ladder) - 1 else ladder[level]  # None: to the end, test scored
                optuna_study.enqueue_trial(point, user_attrs={"rung": rung, "level": level}, skip_if_exists=False)
        if todo:
            ends = sorted({"end" if level == len(ladders[_key(p)]) - 1 else f"epoch {ladders[_key(p)][level]:g}"
                           for p in todo})
            progress(f"sweep: rung {level + 1} of {levels}: {len(todo)} point(s) train to {' / '.join(ends)}")
        run_queue()
        decided = optuna_study.user_attrs.get(DECIDED, [])
        if level == levels - 1 or level in decided:  # decided before this process (a rerun): never twice
            continue
        latest = _latest_trials(optuna_study)
        alive = [p for p in points if _key(p) not in cuts and _key(p) in latest]
        if len(alive) < 2:
            continue
        counts, rows = {}, set()
        for point in alive:
            digest, counts[_key(point)] = counts_of_predictions(
                Path(run_dir_of(latest[_key(point)], study.root)) / VALIDATION_PREDICTIONS)
            rows.add(digest)
        if len(rows) > 1:
            progress("sweep: the points were validated on different rows (a swept field changes the data): no "
                     "racing, every point trains to the end")
            continue
        metric = "micro_f1" if latest[_key(alive[0])].user_attrs.get("validation_micro_f1") is not None \
            else "accuracy"
        board = standing(counts, metric, cfg.alpha)

        def record(stopped: dict[str, float], board=board, cuts=cuts, latest=latest) -> None:
            optuna_study.set_user_attr(CUTS, {**cuts, **{name: {
                "epoch": latest[name].user_attrs["rung"], "leader": board.leader, "pvalue": round(p, 6)}
                for name, p in stopped.items()}})
            for name, p in stopped.items():
                progress(f"sweep: {_label(json_point(name))} "
                         f"{cut_note(latest[name].user_attrs['rung'], _label(json_point(board.leader)), p)}")

        cut(board, lambda name, latest=latest: _rung_of(latest[name]) != float("inf"),  # one trained to its end
            record, lambda name, latest=latest: run_dir_of(latest[name], study.root))  # has nothing to stop
        optuna_study.set_user_attr(DECIDED, [*decided, level])
    optuna_study.set_user_attr(RACE_DONE, True)


def json_point(key: str) -> dict[str, Any]:
    return json.loads(key)


def _latest_trials(optuna_study) -> dict[str, Any]:
    """Each point's finished trial at its highest rung."""
    latest: dict[str, Any] = {}
    for trial in counted(optuna_study):
        key = _key(point_of(trial))
        if key not in latest or (_rung_of(trial), trial.number) > (_rung_of(latest[key]), latest[key].number):
            latest[key] = trial
    return latest


def _race_as_worker(optuna_study, run_queue, heartbeat: int, progress) -> None:
    """A worker of a raced grid: takes every rung's trials until the starting command has decided the last rung."""
    while True:
        run_queue()
        if optuna_study.user_attrs.get(RACE_DONE):
            return
        # the starting command decides a rung in seconds
        if not poll(lambda: waiting(optuna_study) or optuna_study.user_attrs.get(RACE_DONE), 6 * heartbeat):
            progress(f"sweep: no rung queued for {6 * heartbeat}s: the starting command decides the next rung "
                     "(is it running?); this worker stops, its runs are kept")
            return


def run_dir_of(trial, root: Path) -> str | None:
    """A trial's run folder, recorded as an absolute path. A study folder copied or moved with its sibling studies
    (e.g. a copy of a reference study rerun with --exhaustive) uses its own copy: the same <study>/runs/<run>
    under its parent, where that exists, so it never reads, cuts or counts the original's runs."""
    recorded = trial.user_attrs.get("run_dir")
    if not recorded:
        return recorded
    path = Path(recorded)
    here = Path(root).resolve().parent / path.parent.parent.name / "runs" / path.name
    return str(here) if here.exists() and here != path.resolve() else recorded


DAMAGED = "damaged_trials"
"""Study attribute: numbers of finished trials whose run folder was found damaged; they count for nothing."""


def damaged_trials(optuna_study, root: Path) -> list:
    """Finished trials whose run folder no longer holds a finished run (a truncated or deleted result.json),
    newly found: recorded in the study (DAMAGED) so that their points are queued again and their rows dropped."""
    known = set(optuna_study.user_attrs.get(DAMAGED, []))
    found = [t for t in completed(optuna_study) if t.number not in known and t.user_attrs.get("run_dir")
             and not runs.is_finished(run_dir_of(t, root))]
    if found:
        optuna_study.set_user_attr(DAMAGED, sorted(known | {t.number for t in found}))
    return found


def ended_points(optuna_study) -> set[str]:
    """The points with a trial trained to the end (a raced study's rungs are trials too)."""
    return {_key(point_of(t)) for t in counted(optuna_study) if t.user_attrs.get("rung") is None}


def counted(optuna_study) -> list:
    """The finished trials that count: those whose run folder was not found damaged."""
    damaged = set(optuna_study.user_attrs.get(DAMAGED, []))
    return [t for t in completed(optuna_study) if t.number not in damaged]


def summarize_sweep(optuna_study, study: Study, space: dict[str, Any], base: RunConfig,
                    alpha: float = ALPHA) -> dict[str, Any]:
    """One row per point at the furthest it trained (raced-out points at the rung they reached, marked `cut_at`,
    without test scores), the best point on validation among those trained to the end, and the points tied with
    it (a paired test on the validation rows)."""
    cuts = optuna_study.user_attrs.get(CUTS, {})
    latest = _latest_trials(optuna_study)
    rows = []
    for key, trial in latest.items():
        row = {"trial": trial.number, **point_of(trial)}
        row.update({k: v for k, v in trial.user_attrs.items() if k not in ("retry_of", "rung", "level")})
        row["run_dir"] = run_dir_of(trial, study.root)
        row["cut_at"] = cuts[key]["epoch"] if key in cuts and trial.user_attrs.get("rung") is not None else None
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
    ended = [r for r in unique if r["cut_at"] is None and r.get(f"test_{metric}") is not None]
    if not ended:
        raise SlmtuneError("the sweep has no point trained to the end yet")
    best = max(ended, key=lambda r: (r[f"validation_{metric}"], -(r.get("total_seconds") or 0)))
    best_params = {k: best[k] for k in space}
    tied = _tied_with(best, ended, metric, alpha)
    for row in unique:
        row["tied_with_best"] = None if tied is None else row in tied
    best_config = replace(base, **best_params, name=f"{optuna_study.study_name}-best")
    path = study.write_config("best-config.yaml", best_config)
    summary = {"study": "sweep", "name": optuna_study.study_name, "space": space, "trials": len(unique),
               "metric": metric,
               "best": {"params": best_params, "validation_accuracy": best["validation_accuracy"],
                        "test_accuracy": best["test_accuracy"], "config": str(path),
                        **({"validation_micro_f1": best["validation_micro_f1"],
                            "test_micro_f1": best["test_micro_f1"]} if metric == "micro_f1" else {})},
               "tied_with_best": None if tied is None else [{k: r[k] for k in space} for r in tied if r is not best],
               "raced": {"cut": len(cuts), "to_the_end": len(ended), "scored_on_test": len(ended)},
               "selection": f"best validation {metric_name(metric)} of each trial's best checkpoint; test "
                            "never used to select; tied: not behind it on validation (paired permutation test, "
                            f"Holm, alpha {alpha:g})"}
    from slmtune.report.plots import sweep_plots

    summary["plots"] = sweep_plots(unique, list(space), study.root / "plots")
    study.write_summary(unique, summary)
    return summary


def _tied_with(best: dict[str, Any], rows: list[dict[str, Any]], metric: str, alpha: float) -> list | None:
    """The rows not significantly behind `best` on the validation rows (itself included), or None when a run has
    no validation predictions (runs from before they were kept) or the rows differ."""
    from slmtune.train import VALIDATION_PREDICTIONS

    ordered = [best] + [r for r in rows if r is not best]
    counts, digests = {}, set()
    for i, row in enumerate(ordered):
        path = Path(row.get("run_dir") or "") / VALIDATION_PREDICTIONS
        if not path.is_file():
            return None
        digest, counts[str(i)] = counts_of_predictions(path)
        digests.add(digest)
    if len(digests) > 1:
        return None
    if len(ordered) == 1:
        return [best]
    board = standing(counts, metric, alpha, eta=len(ordered), leader="0")  # no rank rule: the test alone decides
    return [ordered[int(name)] for name in board.tied]


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


def planned_share(cfg: SweepConfig, configs: list[RunConfig], data: DataSizes) -> float:
    """The share of its exhaustive work a raced grid is planned at: successive halving's floor, half of the points
    going on at each rung (points tied with the leader can keep more, points behind can stop sooner)."""
    if not cfg.race or cfg.search or len(configs) < 2:
        return 1.0
    from slmtune.experiments.racing import ETA
    from slmtune.resolve import resolve_epochs

    epochs = resolve_epochs(configs[0], data.facts)[0]
    ladder = rungs_of(epochs, cfg.first_rung)
    n, work, before = len(configs), 0.0, 0.0
    for level, rung in enumerate(ladder):
        work += max(1, -(-n // ETA ** level)) * (rung - before)
        before = rung
    return work / (n * epochs)


def report(summary: dict[str, Any]) -> list[str]:
    best = summary["best"]
    metric = summary.get("metric", "accuracy")
    name = metric_name(metric)
    lines = [f"  trials                    {summary['trials']}", f"  best params               {best['params']}",
             f"  best validation {name:<9} {best[f'validation_{metric}']:.4f}",
             f"  its test {name:<16} {best[f'test_{metric}']:.4f}", f"  best config               {best['config']}"]
    raced = summary.get("raced") or {}
    if raced.get("cut"):
        lines.append(f"  raced                     {raced['cut']} point(s) cut before the end (behind on validation); "
                     f"{raced['to_the_end']} trained to the end and scored on test")
    tied = summary.get("tied_with_best")
    if tied is not None:
        lines.append(f"  tied with the best        {len(tied)} point(s)"
                     + (f": {'; '.join(_label(p) for p in tied[:8])}{' ...' if len(tied) > 8 else ''}" if tied else
                        " (every other point is behind it on validation)"))
    return lines


def report_section(page, folder: Path, summary: dict) -> str:
    """This study's section of report.html (`page`: slmtune.report.html.Report, whose key findings it adds to)."""
    from slmtune.multilabel import metric_name
    from slmtune.report.cells import escape, num, table

    best = summary["best"]
    metric = summary.get("metric", "accuracy")  # micro_f1 on multi-label data
    name = metric_name(metric)
    keys = list(summary.get("space", {}))
    rows = sorted(summary.get("rows", []), key=lambda r: [r.get(k, 0) for k in keys])
    table = table([*keys, f"validation {name}", f"test {name}", "train s", "raced"],
                   [[*(f"{r.get(k):g}" if isinstance(r.get(k), float) else r.get(k) for k in keys),
                     num(r.get(f"validation_{metric}")), num(r.get(f"test_{metric}")),
                     num(r.get("train_seconds"), 1), _race_cell(r)] for r in rows], numeric_from=0)
    params = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best["params"].items())
    val, test = best[f"validation_{metric}"], best[f"test_{metric}"]
    page.findings.append([f"best {escape(', '.join(keys))} ({escape(folder.name)})", escape(params),
                          f"{summary.get('trials')} trials", f"validation {val:.4f}, test {test:.4f}"])
    return (f"<div class='verdict'>best: {escape(params)} — validation {name} "
            f"{val:.4f}, its test {name} {test:.4f} "
            f"({escape(summary.get('selection', ''))})</div>" + table)


def _race_cell(row: dict[str, Any]) -> str:
    if row.get("cut_at") is not None:
        return f"cut at epoch {row['cut_at']:g} (validation there; test not scored)"
    return {True: "tied with the best", False: "behind the best", None: ""}[row.get("tied_with_best")]


def figure_caption(summary: dict) -> str:
    """What the captions of this study's figures in report.html say."""
    return f"{len(summary.get('rows', []))} runs"
