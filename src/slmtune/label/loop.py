"""The labelling loop's model and choices, on pool embeddings computed once.

A logistic-regression probe on sentence embeddings is refitted after every answer (tens of milliseconds on two
cores), with the label prompts' embeddings as one extra example per class, so that it starts as a zero-shot
classifier and the labels take over as they come. What to show next:

- an audit item, with probability `audit_share`: the next unlabelled row of a fixed random order. Audit items
  are held out of the probe, so its accuracy on them is an unbiased estimate of its accuracy on the pool.
- cold start, while a class has fewer than `cold_start_labels` labels: the row most likely (zero-shot or probe)
  to be of the class with the fewest labels, taken from the embedding clusters with the fewest labelled rows,
  so the first items are both aimed at the classes and spread over the pool.
- else uncertainty within classes and diversity: the smallest margin among rows predicted as the next class in
  turn (rare classes get their share on imbalanced data), never a near-duplicate of a recently labelled row.

The stopping signal follows stabilizing predictions (Bloodgood and Vijay-Shanker, CoNLL 2009): every
`stop_every` labels the probe's predictions on a fixed sample of the pool are kept, and when Cohen's kappa
between successive ones stays at or above `stop_kappa` for `stop_windows` windows, further labels are unlikely to
change the model. It is advice, never enforced.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from slmtune.errors import SlmtuneError


@dataclass(frozen=True)
class LoopConfig:
    """How the loop fits its probe and picks what to show."""

    probe_c: float = 10.0
    """Inverse regularisation of the logistic-regression probe (embeddings are unit vectors); each refit starts from
    the previous solution."""
    prompt_weight: float = 1.0
    """Weight of each label prompt's embedding as a training example (the zero-shot prior)."""
    cold_start_labels: int = 2
    """Labels each class needs before the loop turns from cold start to uncertainty."""
    duplicate_similarity: float = 0.95
    """Cosine similarity above which two texts count as near-duplicates (never shown one after the other)."""
    recent: int = 20
    """Latest labelled rows a new item must not be a near-duplicate of."""
    balance_classes: bool = True
    """Take turns over predicted classes when choosing uncertain rows (for imbalanced data)."""
    stop_every: int = 10
    """Labels between two stability checks."""
    stop_set: int = 1000
    """Pool rows whose predictions the stability checks compare."""
    stop_kappa: float = 0.99
    """Cohen's kappa between successive models at or above which a window counts as stable."""
    stop_windows: int = 3
    """Stable windows in a row that raise the stopping signal."""


DEFAULTS = LoopConfig()


@dataclass
class Choice:
    """An item to show: pool row, how it was chosen, the model's suggestion and its confidence."""

    row: int
    how: str
    suggested: int
    confidence: float


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two label vectors (scikit-learn's; 1.0 for identical ones, where it is undefined when
    both hold a single class)."""
    from sklearn.metrics import cohen_kappa_score

    return 1.0 if np.array_equal(a, b) else float(cohen_kappa_score(a, b))


class StopSignal:
    """The stabilizing-predictions rule, fed the stop set's predictions after each window of labels."""

    def __init__(self, config: LoopConfig):
        self.config, self.previous, self.stable = config, None, 0

    def update(self, predictions: np.ndarray) -> float | None:
        """Kappa against the previous window's predictions (None for the first window)."""
        k = None
        if self.previous is not None:
            k = kappa(self.previous, predictions)
            self.stable = self.stable + 1 if k >= self.config.stop_kappa else 0
        self.previous = predictions
        return k

    @property
    def up(self) -> bool:
        return self.stable >= self.config.stop_windows


class Loop:
    """The probe, the choices and the stopping signal over one pool's embeddings."""

    def __init__(self, embeddings: np.ndarray, prompts: np.ndarray, audit_share: float = 0.1, seed: int = 0,
                 config: LoopConfig = DEFAULTS):
        self.x = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.prompts = np.asarray(prompts, dtype=np.float32)
        self.n_classes = len(self.prompts)
        self.audit_share, self.seed, self.config = audit_share, seed, config
        rng = np.random.default_rng(seed)
        self.audit_order = rng.permutation(len(self.x))
        self.stop_rows = np.sort(rng.choice(len(self.x), min(config.stop_set, len(self.x)), replace=False))
        self._clusters: np.ndarray | None = None
        self._probe = None
        self.coef = np.zeros((self.n_classes, self.x.shape[1]), np.float32)
        self.intercept = np.zeros(self.n_classes, np.float32)
        self.version = -1  # labels the probe was fitted on (-1: not fitted)

    # -- the probe --------------------------------------------------------------------------------------------
    def fit(self, rows: list[int], labels: list[int], audit: list[bool] | None = None) -> None:
        """Refit on the labelled rows (audit rows held out) plus one prompt example per class."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        audit = audit or [False] * len(rows)
        train = [(r, y) for r, y, a in zip(rows, labels, audit) if not a]
        x = np.concatenate([self.prompts, self.x[[r for r, _ in train]]]) if train else self.prompts
        y = np.concatenate([np.arange(self.n_classes), np.array([y for _, y in train], dtype=int)])
        weight = np.concatenate([np.full(self.n_classes, self.config.prompt_weight), np.ones(len(train))])
        if self._probe is None:  # kept between fits: each starts from the last solution (4-5x fewer iterations)
            self._probe = LogisticRegression(C=self.config.probe_c, max_iter=300, warm_start=True)
        probe = self._probe
        with warnings.catch_warnings():  # few labels per class is the normal case here, not a mistake
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(x, y, sample_weight=weight)
        coef, intercept = probe.coef_, probe.intercept_
        if self.n_classes == 2:  # sklearn keeps one row for two classes
            coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
        self.coef, self.intercept = coef.astype(np.float32), intercept.astype(np.float32)
        self.version = len(train)

    def probs(self, rows=None) -> np.ndarray:
        return softmax(self.predict(rows))

    def predict(self, rows=None) -> np.ndarray:
        """Scores (logits) of pool rows (default: all)."""
        return self.scores(self.x if rows is None else self.x[rows])

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Scores (logits) of any embedded rows."""
        return x @ self.coef.T + self.intercept

    # -- what to show -------------------------------------------------------------------------------------
    def is_audit_turn(self, answered: int) -> bool:
        """Whether the item after `answered` answers is an audit item (fixed per project and answer count)."""
        return bool(np.random.default_rng([self.seed, answered, 7]).random() < self.audit_share)

    def clusters(self) -> np.ndarray:
        """A cluster per pool row (k-means on the embeddings, computed once)."""
        if self._clusters is None:
            from sklearn.cluster import MiniBatchKMeans

            k = int(min(max(10 * self.n_classes, 20), 100, len(self.x)))
            self._clusters = MiniBatchKMeans(k, n_init=3, random_state=self.seed, batch_size=2048).fit_predict(self.x)
        return self._clusters

    def next(self, taken: np.ndarray, counts: np.ndarray, answered: int, recent: list[int]) -> Choice | None:
        """The item to show after `answered` answers; `taken` marks rows labelled or skipped, `counts` the labels
        per class, `recent` the latest labelled rows (newest last). None when the pool is used up."""
        free = np.flatnonzero(~taken)
        if len(free) == 0:
            return None
        if self.is_audit_turn(answered):
            return self.choice(next(int(r) for r in self.audit_order if not taken[r]), "audit")
        if self.cold(counts, answered):
            return self._cold_start(taken, counts, recent)
        probs = self.probs(free)
        similar = self._near_recent(free, recent)
        top2 = np.sort(probs, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0] + 2.0 * similar  # near-duplicates of recent rows come last
        pool = np.arange(len(free))
        if self.config.balance_classes:
            predicted = probs.argmax(axis=1)
            order = np.argsort(counts, kind="stable")
            for c in np.roll(order, -(answered % self.n_classes)):
                if (predicted == c).any():
                    pool = np.flatnonzero(predicted == c)
                    break
        pick = pool[np.argmin(margin[pool])]
        return self._choice(int(free[pick]), "uncertain", probs[pick])

    def cold(self, counts: np.ndarray, answered: int) -> bool:
        """Cold start: a class still lacks labels (given up after 10 tries per missing label, in case the pool
        has none of it)."""
        need = self.config.cold_start_labels
        return bool(counts.min() < need and answered < 10 * self.n_classes * need)

    def _cold_start(self, taken: np.ndarray, counts: np.ndarray, recent: list[int]) -> Choice | None:
        """The row most likely of the class with the fewest labels, from the clusters with the fewest taken rows."""
        free = np.flatnonzero(~taken)
        if len(free) == 0:
            return None
        probs = self.probs(free)
        target = int(np.argmin(counts))
        clusters = self.clusters()
        taken_per_cluster = np.bincount(clusters[taken], minlength=clusters.max() + 1)
        load = taken_per_cluster[clusters[free]] + 1000 * self._near_recent(free, recent)
        best = np.flatnonzero(load == load.min())
        pick = best[np.argmax(probs[best, target])]
        return self._choice(int(free[pick]), "cold-start", probs[pick])

    def _near_recent(self, free: np.ndarray, recent: list[int]) -> np.ndarray:
        if not recent:
            return np.zeros(len(free), bool)
        sims = self.x[free] @ self.x[recent[-self.config.recent:]].T
        return sims.max(axis=1) >= self.config.duplicate_similarity

    @staticmethod
    def _choice(row: int, how: str, probs: np.ndarray) -> Choice:
        return Choice(row, how, int(np.argmax(probs)), float(np.max(probs)))

    def choice(self, row: int, how: str) -> Choice:
        """Pool row `row` as an item to show, with the probe's suggestion for it."""
        return self._choice(row, how, self.probs([row])[0])

    def batch(self, taken: np.ndarray, counts: np.ndarray, n: int, answered: int) -> list[Choice]:
        """`n` items to label elsewhere: audit items at `audit_share`, the rest uncertain within classes and
        diverse (the most uncertain row of each of `n` k-means clusters over the uncertain candidates), with no
        two near-duplicates."""
        free = np.flatnonzero(~taken)
        if len(free) == 0 or n <= 0:
            return []
        n = min(n, len(free))
        n_audit = sum(self.is_audit_turn(answered + i) for i in range(n))
        audit_rows = [int(r) for r in self.audit_order if not taken[r]][:n_audit]
        chosen = [self.choice(r, "audit") for r in audit_rows]
        rest = n - len(chosen)
        if rest <= 0:
            return chosen
        if self.cold(counts, answered):  # as the page would go on, each pick counted as its suggestion
            taken, counts = taken.copy(), counts.copy()
            taken[audit_rows] = True
            for _ in range(rest):
                choice = self._cold_start(taken, counts, [c.row for c in chosen])
                if choice is None:
                    break
                chosen.append(choice)
                taken[choice.row] = True
                counts[int(np.argmin(counts))] += 1  # the class this pick was aimed at
            return chosen
        probs = self.probs(free)
        top2 = np.sort(probs, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        margin[np.isin(free, audit_rows)] = np.inf
        predicted = probs.argmax(axis=1)
        per_class = max(1, (10 * rest) // self.n_classes)
        candidates = np.concatenate([np.flatnonzero(predicted == c)[np.argsort(margin[predicted == c])[:per_class]]
                                     for c in range(self.n_classes)])
        candidates = candidates[np.isfinite(margin[candidates])]
        if len(candidates) <= rest:
            picks = list(candidates)
        else:
            from sklearn.cluster import KMeans

            groups = KMeans(rest, n_init=1, random_state=self.seed).fit_predict(self.x[free[candidates]])
            picks = [candidates[groups == g][np.argmin(margin[candidates[groups == g]])] for g in range(rest)]
        kept: list[int] = []
        for pick in sorted(picks, key=lambda p: margin[p]):
            if kept and (self.x[free[kept]] @ self.x[free[pick]]).max() >= self.config.duplicate_similarity:
                continue
            kept.append(pick)
        return chosen + [self._choice(int(free[p]), "uncertain", probs[p]) for p in kept]

    # -- how sure, and when to stop --------------------------------------------------------------------------
    def stop_predictions(self) -> np.ndarray:
        return self.predict(self.stop_rows).argmax(axis=1)


def stability(loop: Loop, rows: list[int], labels: list[int], audit: list[bool]) -> list[dict]:
    """Replays the labels in the order given: per window of `stop_every` labels, the kappa between the probe's
    predictions on the stop set before and after it, and whether the stopping signal is up."""
    signal, points = StopSignal(loop.config), []
    for end in range(loop.config.stop_every, len(rows) + 1, loop.config.stop_every):
        loop.fit(rows[:end], labels[:end], audit[:end])
        k = signal.update(loop.stop_predictions())
        if k is not None:
            points.append({"labels": end, "kappa": round(k, 4), "stop": signal.up})
    return points


def audit_estimate(loop: Loop, rows: list[int], labels: list[int], audit: list[bool]) -> dict:
    """The current probe's accuracy on the audit items (which it never saw), with a Wilson interval."""
    from slmtune.stats import proportion_interval

    audit_rows = [r for r, a in zip(rows, audit) if a]
    gold = np.array([y for y, a in zip(labels, audit) if a], dtype=int)
    if len(audit_rows) == 0:
        return {"n": 0}
    correct = int((loop.predict(audit_rows).argmax(axis=1) == gold).sum())
    low, high = proportion_interval(correct, len(audit_rows))
    return {"n": len(audit_rows), "accuracy": correct / len(audit_rows), "low": low, "high": high}


def check_embeddings(embeddings: np.ndarray, rows: int) -> None:
    if embeddings.shape[0] != rows:
        raise SlmtuneError(f"the cached embeddings hold {embeddings.shape[0]} rows for a pool of {rows}; "
                           "delete the project's cache/ folder")
