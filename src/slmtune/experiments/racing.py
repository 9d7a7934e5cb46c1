"""Racing: successive halving in which a candidate is dropped only when a paired test says it is behind.

Candidates train to a rung (an epoch of their own schedule), are scored on the same validation rows, and the
leader is compared with each of the others by a paired permutation test of the selection metric on those rows
(slmtune.stats.paired_test, Holm-adjusted over the comparisons). A candidate is cut when it is significantly
behind the leader and not among the best half (successive halving's rank rule, ETA); statistical ties go on to
the next rung, where training resumes from the checkpoint on the same learning-rate schedule
(slmtune.trainer.PauseAt), so a promoted candidate ends where an unraced run would. `replay` runs
the same rules on recorded curves, to measure what the cuts would have lost against training everything.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slmtune.stats import MetricEstimate, adjust_pvalues, bootstrap_weights, metric_interval, paired_test, row_counts

ALPHA = 0.05
"""A candidate is cut when the Holm-adjusted p-value of 'not behind the leader' is below this."""
ETA = 2
"""Successive halving's ratio: at a rung, the best 1/ETA of the candidates go on whatever the test says."""
RESAMPLES = 1000


@dataclass
class Standing:
    """Where candidates stand on the validation rows: each one's score with its interval, the leader, and each
    other candidate's paired comparison with the leader (difference leader minus it, interval, Holm p)."""

    metric: str
    scores: dict[str, MetricEstimate]
    leader: str
    against_leader: dict[str, dict[str, float]] = field(default_factory=dict)
    alpha: float = ALPHA
    kept: list[str] = field(default_factory=list)
    """Candidates that go on by rank (the best 1/ETA), behind or not."""

    @property
    def tied(self) -> list[str]:
        """The leader and every candidate not significantly behind it."""
        return [self.leader] + [n for n, c in self.against_leader.items() if c["pvalue_holm"] >= self.alpha]

    @property
    def behind(self) -> list[str]:
        """Candidates to cut: significantly behind the leader and not among the best 1/ETA."""
        return [n for n, c in self.against_leader.items() if c["pvalue_holm"] < self.alpha and n not in self.kept]


def standing(counts: dict[str, np.ndarray], metric: str, alpha: float = ALPHA, resamples: int = RESAMPLES,
             seed: int = 0, eta: int = ETA, leader: str | None = None) -> Standing:
    """The standing of candidates given their row_counts on the same validation rows (in order of preference:
    of equal scores, the first leads; `leader` names it instead, for a caller that chose the best by its own
    rule); the best ceil(n / eta) are kept by rank."""
    rows = len(next(iter(counts.values())))
    weights = bootstrap_weights(rows, resamples, seed)
    scores = {name: metric_interval(c, metric, weights) for name, c in counts.items()}
    leader = leader or max(scores, key=lambda n: scores[n].value)  # max keeps the first of equals
    others = [n for n in counts if n != leader]
    ranked = sorted(scores, key=lambda n: -scores[n].value)  # stable: the first of equals first
    result = Standing(metric, scores, leader, alpha=alpha, kept=ranked[:max(1, -(-len(ranked) // eta))])
    if not others:
        return result
    compared = {n: paired_test(counts[leader], counts[n], metric, weights) for n in others}
    holm = adjust_pvalues([compared[n]["pvalue"] for n in others])["holm"]
    for name, p in zip(others, holm):
        result.against_leader[name] = {**compared[name], "pvalue_holm": float(p)}
    return result


def cut(board: Standing, can_stop: Callable[[str], bool], record: Callable[[dict[str, float]], None],
        run_dir_of: Callable[[str], str | Path]) -> dict[str, float]:
    """Stop the candidates `board` puts behind its leader that `can_stop` (still short of their schedule's end):
    `record({name: Holm p-value})` keeps the caller's bookkeeping first, then their resumable checkpoints go (they
    train no further), so a process stopped in between never loses a decision. Returns what was cut."""
    stopped = {name: board.against_leader[name]["pvalue_holm"] for name in board.behind if can_stop(name)}
    if stopped:
        record(stopped)
        for name in stopped:
            shutil.rmtree(Path(run_dir_of(name)) / "checkpoints", ignore_errors=True)
    return stopped


def cut_note(epoch: float, leader: str, pvalue: float) -> str:
    """How a cut is said, in sweeps and in `tune` alike."""
    return f"cut at epoch {epoch:g}: behind {leader} on validation (paired permutation test, Holm p={pvalue:.3g})"


def rungs_of(epochs: float, first: float) -> list[float]:
    """The epochs at which a schedule of `epochs` is raced: `first`, then doubling, then the schedule's end."""
    points, point = [], first
    while point < epochs - 1e-9:
        points.append(point)
        point *= 2
    return [*points, epochs]


def replay(curves: dict[str, list[np.ndarray]], metric: str, alpha: float = ALPHA, resamples: int = RESAMPLES,
           seed: int = 0) -> dict:
    """The racing rules on recorded curves: `curves[name][k]` holds a candidate's row_counts at rung k (every
    candidate trained to the end). Returns who survived each rung, the racing winner, the exhaustive winner
    (best at the last rung) and the regret (exhaustive best's score minus the racing winner's, at the last rung)."""
    alive = list(curves)
    survivors = []
    last = max(len(c) for c in curves.values()) - 1
    for rung in range(last + 1):
        present = [n for n in alive if rung < len(curves[n])]
        if rung < last and len(present) > 1:
            board = standing({n: curves[n][rung] for n in present}, metric, alpha, resamples, seed)
            alive = [n for n in alive if n not in board.behind]
        survivors.append(list(alive))
    final = {n: curves[n][-1] for n in curves}
    everything = standing(final, metric, alpha, resamples, seed)
    raced = standing({n: final[n] for n in alive}, metric, alpha, resamples, seed)
    best = everything.scores[everything.leader].value
    return {"survivors": survivors, "exhaustive_best": everything.leader, "racing_best": raced.leader,
            "regret": best - raced.scores[raced.leader].value,
            "exhaustive_best_kept": everything.leader in alive}


def counts_of_predictions(path) -> tuple[str, np.ndarray]:
    """A run's validation decisions as row_counts, from its predictions-validation.csv (the gold and predicted
    columns: label names, `|`-joined sets on multi-label data), with a digest of the rows' texts and gold labels:
    candidates are compared only on the same rows."""
    import hashlib

    import pandas as pd

    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    names = [c[2:] for c in frame.columns if c.startswith("p_")]
    rows = hashlib.sha1("\0".join(frame["text"] + "\t" + frame["gold"]).encode()).hexdigest()
    return rows, row_counts(_labels(frame, "gold", names), _labels(frame, "predicted", names), len(names))


def _labels(frame, column: str, names: list[str]) -> np.ndarray:
    """A predictions file's column as class indices, or multi-hot rows for label sets (`|`-joined names)."""
    index = {n: i for i, n in enumerate(names)}
    if "exact" not in frame.columns:
        return frame[column].map(index).to_numpy()
    out = np.zeros((len(frame), len(names)), dtype=np.int8)
    for i, value in enumerate(frame[column]):
        for name in filter(None, value.split("|")):
            out[i, index[name]] = 1
    return out


def rung_counts(run_dir: str | Path, rungs: list[float]) -> list[np.ndarray]:
    """A run trained to the end as a race would have seen it at each of `rungs` (epochs): the validation decisions
    of its best evaluation up to that epoch (the first with the highest selection metric: the checkpoint the
    Trainer keeps and a paused run is scored with), as row_counts. Read from the run's validation curve
    (slmtune.trainer.ValidationCurve) and the gold labels of its validation predictions."""
    import json

    import pandas as pd

    from slmtune.errors import SlmtuneError
    from slmtune.train import VALIDATION_CURVE, VALIDATION_PREDICTIONS

    folder = Path(run_dir)
    if not (folder / VALIDATION_CURVE).is_file():
        raise SlmtuneError(f"{folder} has no {VALIDATION_CURVE} (trained before runs recorded their curves)")
    frame = pd.read_csv(folder / VALIDATION_PREDICTIONS, keep_default_na=False, dtype=str)
    names = [c[2:] for c in frame.columns if c.startswith("p_")]
    gold = _labels(frame, "gold", names)
    records = [json.loads(line) for line in (folder / VALIDATION_CURVE).read_text().splitlines() if line.strip()]
    out = []
    for rung in rungs:
        seen = [r for r in records if r["epoch"] <= rung + 1e-6]
        if not seen:
            raise SlmtuneError(f"{folder} was not evaluated by epoch {rung:g}")
        best = max(seen, key=lambda r: r["select"])  # the first of the best, as the Trainer keeps it
        if gold.ndim == 2:
            predicted = np.zeros_like(gold)
            for i, labels in enumerate(best["predicted"]):
                predicted[i, labels] = 1
        else:
            predicted = np.asarray(best["predicted"])
        out.append(row_counts(gold, predicted, len(names)))
    return out
