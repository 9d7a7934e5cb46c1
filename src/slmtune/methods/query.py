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


@dataclass
class ClassBalancedStrategy:
    """Uncertainty within each predicted class, the classes taken in turn: the most uncertain row predicted as
    class 1, then as class 2, ... (classes no row is predicted as are skipped). Plain uncertainty sampling can
    collapse onto the class the model is least sure of; this keeps every class in each query (class-balanced
    uncertainty sampling, e.g. Aggarwal et al. 2020, "Active learning for imbalanced datasets")."""

    score: Any = margin

    def query(self, model, pool, labeled, n, rng):
        rest = np.setdiff1d(np.arange(len(pool)), labeled)
        n = min(n, len(rest))
        probs = model.predict_proba([pool.texts[i] for i in rest])
        predicted = probs.argmax(axis=1)
        ranked = top_uncertain(self.score(probs), len(rest), entropy(probs), rng)  # most uncertain first
        queues = [[i for i in ranked if predicted[i] == c] for c in range(probs.shape[1])]
        queues = [q[::-1] for q in queues if q]  # popped from the end: most uncertain first
        chosen: list[int] = []
        while len(chosen) < n:
            for queue in queues:
                if queue and len(chosen) < n:
                    chosen.append(queue.pop())
        return sorted(int(rest[i]) for i in chosen)


STRATEGIES: dict[str, QueryStrategy] = {
    "random": RandomStrategy(),
    "least_confidence": UncertaintyStrategy(least_confidence),
    "margin": UncertaintyStrategy(margin),
    "entropy": UncertaintyStrategy(entropy),
    "class_balanced": ClassBalancedStrategy(margin),
}
