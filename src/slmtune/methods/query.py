"""Active-learning query strategies: `query(model, pool, labeled, n, rng) -> indices`.

`model` has `predict_proba(texts) -> (rows, classes)`, `pool` is the `TextDataset` every index refers to,
`labeled` the indices labelled so far. Register your own with `STRATEGIES["name"] = MyStrategy()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from slmtune.data import TextDataset


class QueryStrategy(Protocol):
    def query(self, model, pool: TextDataset, labeled: list[int], n: int, rng: np.random.Generator) -> list[int]: ...


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - max probability: higher is more uncertain."""
    return 1.0 - probs.max(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """Minus the gap between the two most probable classes: higher is more uncertain."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return -(top2[:, 1] - top2[:, 0])


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of the predicted distribution: higher is more uncertain."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def top_uncertain(scores: np.ndarray, n: int, tiebreak: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions of the n highest scores; equal scores go by `tiebreak` (higher first), then at random."""
    order = np.lexsort((rng.random(len(scores)), -np.round(tiebreak, 12), -np.round(scores, 12)))
    return order[:n]


class RandomStrategy:
    def query(self, model, pool, labeled, n, rng):
        rest = np.setdiff1d(np.arange(len(pool)), labeled)
        return sorted(int(i) for i in rng.choice(rest, size=min(n, len(rest)), replace=False))


@dataclass
class UncertaintyStrategy:
    """Query the rows the model is least sure of, by `score` (ties broken by entropy, then at random)."""

    score: Any

    def query(self, model, pool, labeled, n, rng):
        rest = np.setdiff1d(np.arange(len(pool)), labeled)
        probs = model.predict_proba([pool.texts[i] for i in rest])
        chosen = top_uncertain(self.score(probs), min(n, len(rest)), entropy(probs), rng)
        return sorted(int(rest[i]) for i in chosen)


STRATEGIES: dict[str, QueryStrategy] = {
    "random": RandomStrategy(),
    "least_confidence": UncertaintyStrategy(least_confidence),
    "margin": UncertaintyStrategy(margin),
    "entropy": UncertaintyStrategy(entropy),
}
