"""Two-fold cross-fitting where the validation rows are few: the encoder candidates tied with the best on validation
train again with the two folds swapped (on the validation rows, scored on the training rows they learnt from
before), and the choice among them is made on every labelled row (each scored by the model that did not train on
it) instead of on the validation rows alone.

With a few hundred validation rows every candidate's interval is several points wide and the race ends with most of
them tied: on 160 AG News and 200 Reuters validation rows the candidate best on test was not the one validation
chose (docs/results.md, "Small data"). Swapping the folds doubles (or more) the rows the choice is made on for the
cost of one more, smaller, training per tied candidate, with the time the race left. The model kept is still the
candidate's own run, trained on the training rows: the second fold only informs the choice.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from slmtune import runs
from slmtune.config import RunConfig
from slmtune.data import Splits, TextDataset
from slmtune.errors import SlmtuneError
from slmtune.experiments.racing import Standing
from slmtune.experiments.tune_board import ENCODER_KINDS, standing_on, validation_probs
from slmtune.multilabel import metric_name

if TYPE_CHECKING:
    from slmtune.experiments.tune import Candidate, Search

CROSS_FIT_ROWS = 1000
"""Validation rows below which the candidates tied with the best are cross-fitted (single-label data): at 1,000 rows
a 95% interval of accuracy is about +-2.5 points, below it wider than most differences between candidates."""


def applies(search: Search, validation_rows: int) -> bool:
    """Whether the search's data is where cross-fitting chooses: single-label, fewer than CROSS_FIT_ROWS validation
    rows."""
    return not search.multi_label and validation_rows < CROSS_FIT_ROWS


def _fold_twin(cand: Candidate, rows: int) -> Candidate:
    """The candidate's configuration trained on the other fold: its own folder (cross-fit/NAME-fold2) and log."""
    from slmtune.experiments.tune import Candidate

    class FoldTwin(Candidate):
        @property
        def folder(self) -> str:
            return f"cross-fit/{self.name}"

    return FoldTwin(f"{cand.name}-fold2", cand.kind, cand.model, cand.learning_rate, cand.epochs, rows=rows)


def _other_fold(search: Search, cand: Candidate, base: RunConfig, swapped: Splits, hard: float,
                progress) -> np.ndarray | None:
    """`cand` trained on the validation rows to the end of its schedule, its probabilities on the training rows; None
    when the time left cannot hold it (or the deadline stopped it)."""
    from slmtune.experiments.tune import _prepare
    from slmtune.experiments.tune_workers import train_job

    twin = _fold_twin(cand, len(swapped.train))
    folder = search.root / twin.folder
    if folder.is_dir() and runs.is_finished(folder) and runs.read_result(folder).get("paused_at") is None:
        return validation_probs(folder, search)  # a rerun of the search: trained before
    entries: dict[str, np.ndarray] = {}
    job = _prepare(search, twin, base, swapped, 0.0 if cand.kind in ("probe", "prompt") else cand.epochs, hard,
                   entries, progress)
    if job is None:
        return None
    try:
        train_job(job, swapped)
    except SlmtuneError as exc:
        progress(f"tune: {twin.name}: {exc}")
        return None
    if runs.read_result(folder).get("paused_at") is not None:  # the deadline stopped it half way
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return validation_probs(folder, search)


def cross_fit(search: Search, base: RunConfig, splits: Splits, hard: float, entries: dict[str, np.ndarray],
              progress) -> None:
    """Where the validation rows are fewer than CROSS_FIT_ROWS: the finished encoder candidates tied with the best
    (on the encoder training rows `splits.train`, so every one is scored on the same rows) train on the other fold
    as the time left allows, best first, and `search.cross_fit` records their standing on every row."""
    if not applies(search, len(splits.validation)):
        return
    names = [n for n in entries if search.candidates[n].kind in ENCODER_KINDS
             and search.candidates[n].status == "finished" and not search.candidates[n].refit_of]
    if len(names) < 2:
        return
    board = standing_on(search, entries, splits.validation, names, search.alpha)
    tied = sorted(board.tied, key=lambda n: -board.scores[n].value)
    if len(tied) < 2:
        return
    progress(f"tune: {len(tied)} candidates tied with the best on {len(splits.validation)} validation rows: "
             f"{', '.join(tied)} train on the validation rows too (folds swapped), to be compared on all "
             f"{len(splits.train) + len(splits.validation)} rows")
    swapped = Splits(splits.validation, splits.train, splits.test)
    other = {}
    for name in tied:
        probs = _other_fold(search, search.candidates[name], base, swapped, hard, progress)
        if probs is not None:
            other[name] = probs
    if board.leader not in other or len(other) < 2:
        progress("tune: too little time left to cross-fit the tied candidates: validation alone chooses")
        return
    rows = TextDataset(splits.train.texts + splits.validation.texts,
                       list(splits.train.labels) + list(splits.validation.labels), search.label_names)
    pooled = {n: np.vstack([other[n], entries[n]]) for n in other}
    both = standing_on(search, pooled, rows, list(pooled), search.alpha)
    search.cross_fit = {"rows": len(rows), "leader": both.leader, "tied": both.tied,
                        "scores": {n: asdict(s) for n, s in both.scores.items()}}
    for name, score in both.scores.items():
        note = f"both folds ({len(rows)} rows): {score.value:.4f} [{score.low:.4f}, {score.high:.4f}]"
        cand = search.candidates[name]  # (a rerun of the search replaces the note it left)
        cand.note = "; ".join([p for p in cand.note.split("; ") if p and not p.startswith("both folds")] + [note])
    progress(f"tune: on all {len(rows)} rows ({metric_name(search.metric)}): " + ", ".join(
        f"{n} {s.value:.4f}" for n, s in sorted(both.scores.items(), key=lambda x: -x[1].value))
        + f"; {both.leader} is chosen among the tied candidates")
    search.save()


def preferred(search: Search, board: Standing) -> str:
    """The validation leader, or, where cross-fitting compared it with the candidates tied with it, the one best on
    every row."""
    cv = search.cross_fit
    if cv and board.leader in cv["scores"] and cv["leader"] in board.scores:
        return cv["leader"]
    return board.leader
