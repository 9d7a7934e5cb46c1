"""Blends: an encoder's class probabilities averaged with a TF-IDF model's, with a weight chosen on validation.

A blend's TF-IDF part lives in the run's model folder (`model/tfidf/`, no pickle) with `blend.json` beside it:
the method, the encoder's weight (one per label on multi-label data) and the SHA-256 of each TF-IDF file, so a
changed or missing file is refused in one line. Serving, evaluation and export read the blend from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slmtune.errors import SlmtuneError
from slmtune.methods.tfidf import TfidfModel

FOLDER = "tfidf"
FILE = "blend.json"
GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
"""Encoder weights tried on validation: 0 (TF-IDF alone) to 1 (the encoder alone) in steps of 0.05."""
EPS = 1e-7


@dataclass
class Blend:
    """The TF-IDF part of a blend and the encoder's weight (a scalar, or one per label)."""

    tfidf: TfidfModel
    weight: np.ndarray

    def mix(self, encoder_probs: np.ndarray, texts: list[str]) -> np.ndarray:
        """The blended probabilities of `texts` given the encoder's."""
        return mix(encoder_probs, self.tfidf.predict_proba(texts), self.weight)


def mix(encoder: np.ndarray, tfidf: np.ndarray, weight) -> np.ndarray:
    """weight x encoder + (1 - weight) x tfidf (a weight per column on multi-label scores)."""
    weight = np.asarray(weight, dtype=np.float64)
    return weight * encoder + (1.0 - weight) * tfidf


def _log_loss(probs: np.ndarray, labels: np.ndarray, multi_label: bool) -> np.ndarray:
    """Mean log-loss: one value (single-label) or one per label (multi-label, binary cross-entropy)."""
    probs = np.clip(probs, EPS, 1 - EPS)
    if multi_label:
        return -(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)).mean(axis=0)
    return np.asarray(-np.log(probs[np.arange(len(labels)), labels]).mean())


def choose_weight(encoder: np.ndarray, tfidf: np.ndarray, labels, multi_label: bool) -> dict:
    """The encoder's weight that minimises validation log-loss over GRID (ties: the larger weight, closer to the
    encoder alone); multi-label data gets one weight per label. Returns the weight and the log-losses of the
    encoder alone, TF-IDF alone and the blend."""
    if multi_label:
        from slmtune.multilabel import multi_hot

        gold = multi_hot(labels, encoder.shape[1]).astype(np.float64)
    else:
        gold = np.asarray(labels)
    losses = np.stack([_log_loss(mix(encoder, tfidf, w), gold, multi_label) for w in GRID])  # (grid[, labels])
    best = len(GRID) - 1 - np.argmin(losses[::-1], axis=0)  # the last minimum: ties go to the encoder
    weight = GRID[best]
    chosen = _log_loss(mix(encoder, tfidf, weight), gold, multi_label)
    return {"weight": weight.tolist(), "log_loss": {"encoder": float(np.mean(losses[-1])),
                                                     "tfidf": float(np.mean(losses[0])),
                                                     "blend": float(np.mean(chosen))}}


def save_blend(model_dir: Path, tfidf: TfidfModel, weight, method: str = "tfidf") -> None:
    """Write the blend's TF-IDF part and blend.json into a run's model folder."""
    checksums = tfidf.save(model_dir / FOLDER)
    (model_dir / FILE).write_text(json.dumps({"method": method, "weight": weight, "checksums": checksums},
                                             indent=2))


def load_blend(model_dir: Path, expected: bool) -> Blend | None:
    """The blend saved in `model_dir`, None when the run has none; `expected` (the run's config names a blend)
    makes a missing blend.json an error too."""
    path = model_dir / FILE
    if not path.is_file():
        if expected:
            raise SlmtuneError(f"the run's config names a blend but {path} is missing; retrain the run")
        return None
    try:
        record = json.loads(path.read_text())
        weight, checksums = np.asarray(record["weight"], dtype=np.float64), record["checksums"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SlmtuneError(f"{path} cannot be read ({exc}); retrain the run") from None
    tfidf = TfidfModel.load(model_dir / FOLDER, checksums)
    if weight.ndim and weight.shape != (tfidf.n_classes,):
        raise SlmtuneError(f"{path}: {weight.size} weights for {tfidf.n_classes} labels; retrain the run")
    return Blend(tfidf, weight)
