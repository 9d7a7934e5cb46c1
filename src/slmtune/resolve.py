"""The one place that turns (config, data) into a resolved run: every data-dependent default decided once, with
its reason. Training, study planners, run keys and summaries all read it.

Where is the epoch count decided? `resolve_epochs`. The head's start? `resolve_head_init`. The checkpoint
metric? `resolve_metric`. Class weights? `resolve_class_weight`. Decision thresholds? `resolve_thresholds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slmtune.config import RunConfig, replace
from slmtune.errors import SlmtuneError

IMBALANCED = 3.0
"""Largest class over smallest: above this the data counts as imbalanced (metric, weights, epochs)."""
EPOCHS = 3
LONG_EPOCHS = 6
"""`train.epochs` when null: EPOCHS, but LONG_EPOCHS for LoRA on imbalanced or multi-label data, where the rare
classes were still being learned at epoch 3 (Reuters topics and topic sets, docs/results.md)."""
PROBE_ROWS_PER_CLASS = 100
"""head_init=auto fits the probe when a single-label training set has at most this many rows per class: measured
better than a random head at 23 (Reuters topics, 500 rows), 25 and 100 (AG News, 100 and 400 rows) a class
(docs/results.md); not measured between 100 and 600 a class, where LP-FT and a random head were level."""


@dataclass(frozen=True)
class DataFacts:
    """What a run's defaults depend on in its data: the training rows, classes, their balance, label sets."""

    rows: int | None
    """Training rows (None: every row of a file whose size is not known yet)."""
    classes: int
    imbalance: float = 1.0
    """Training rows of the largest class over the smallest present one (labels, on multi-label data)."""
    multi_label: bool = False
    counts: tuple[int, ...] = ()
    """Training rows per class (per label on multi-label data)."""

    @classmethod
    def of(cls, splits) -> DataFacts:
        """The facts of loaded splits (their training rows)."""
        from slmtune.methods.tfidf import class_balance
        from slmtune.multilabel import label_balance

        train = splits.train
        balance = (label_balance if train.multi_label else class_balance)(train.labels, len(splits.label_names))
        return cls(len(train), len(splits.label_names), balance["imbalance"], train.multi_label,
                   tuple(int(c) for c in balance["counts"]))


KNOWN_DATA = {"ag_news": DataFacts(rows=None, classes=4)}
"""Datasets whose shape is known without loading them (AG News: 4 balanced classes): their defaults are decided
from the config alone, which is how run keys of AG News runs name the epochs, head and metric they train with."""


def known_facts(config: RunConfig) -> DataFacts | None:
    """The facts of `config`'s dataset when KNOWN_DATA knows it (rows from the config's sizes), else None."""
    known = KNOWN_DATA.get(config.data.dataset)
    if known is None:
        return None
    data = config.data
    rows = data.shots_per_class * known.classes if data.shots_per_class else data.train_size
    return DataFacts(rows, known.classes, known.imbalance, known.multi_label)


def resolve_epochs(config: RunConfig, data: DataFacts) -> tuple[float, str]:
    """`train.epochs`: as set, else LONG_EPOCHS for LoRA on imbalanced or multi-label data, else EPOCHS."""
    if config.train.epochs is not None:
        return config.train.epochs, "train.epochs"
    if config.model.method == "lora" and (data.multi_label or data.imbalance > IMBALANCED):
        why = "multi-label" if data.multi_label else f"imbalanced: largest class {data.imbalance:.0f}x the smallest"
        return LONG_EPOCHS, f"train.epochs=null: LoRA on {why} data"
    return EPOCHS, "train.epochs=null"


def resolve_head_init(config: RunConfig, data: DataFacts) -> tuple[str, str]:
    """`model.head_init`: as set, else (auto) a probe for single-label data with at most PROBE_ROWS_PER_CLASS
    training rows a class, else random."""
    if config.train.epochs == 0:
        if data.multi_label:
            raise SlmtuneError("train.epochs=0 (a linear probe) needs single-label data; train at least one epoch")
        if config.model.head_init == "prompt":
            return "prompt", "model.head_init=prompt, train.epochs=0: the prompt-tuned encoder with a probe head"
        return "probe", "train.epochs=0: a linear probe on the frozen encoder"
    if config.model.head_init != "auto":
        return config.model.head_init, "model.head_init"
    if data.multi_label:
        return "random", "head_init=auto: multi-label data"
    if data.rows is not None and data.rows <= PROBE_ROWS_PER_CLASS * data.classes:
        return "probe", (f"head_init=auto: {data.rows} training rows for {data.classes} classes, at most "
                         f"{PROBE_ROWS_PER_CLASS} a class")
    return "random", f"head_init=auto: more than {PROBE_ROWS_PER_CLASS} training rows a class"


def resolve_metric(config: RunConfig, data: DataFacts) -> tuple[str, str]:
    """`train.metric`: as set, else (auto) micro-F1 on multi-label data, macro-F1 on imbalanced data, else
    accuracy."""
    if config.train.metric != "auto":
        return config.train.metric, "train.metric"
    if data.multi_label:
        return "micro_f1", "metric=auto: multi-label data"
    if data.imbalance > IMBALANCED:
        return "macro_f1", f"metric=auto: imbalanced data (largest class {data.imbalance:.0f}x the smallest)"
    return "accuracy", "metric=auto: balanced data"


def resolve_class_weight(config: RunConfig, data: DataFacts) -> tuple[str, str]:
    """`train.class_weight`: `balanced` or `none` (auto: balanced on imbalanced data)."""
    choice = config.train.class_weight
    if choice != "auto":
        return choice, "train.class_weight"
    weighted = data.imbalance > IMBALANCED
    return ("balanced" if weighted else "none"), f"class_weight=auto: {'im' if weighted else ''}balanced data"


def resolve_thresholds(config: RunConfig, data: DataFacts) -> tuple[str, str]:
    """How predictions are decided: the argmax, or (multi-label) thresholds tuned on validation."""
    if not data.multi_label:
        return "argmax", "single-label data"
    if config.train.per_label_thresholds:
        return "tuned per label", "multi-label: one threshold tuned on validation, and per label where it helps"
    return "tuned", "multi-label: one threshold tuned on validation (train.per_label_thresholds=false)"


def resolve_blend(config: RunConfig, data: DataFacts) -> tuple[str | None, str]:
    """`model.blend`: what the encoder's probabilities are averaged with (per label on multi-label data)."""
    if config.model.blend is None:
        return None, "model.blend=null"
    per = "label" if data.multi_label else "model"
    return config.model.blend, f"model.blend={config.model.blend}: weight chosen on validation log-loss (one per {per})"


RESOLVERS = {"train.epochs": resolve_epochs, "model.head_init": resolve_head_init, "train.metric": resolve_metric,
             "train.class_weight": resolve_class_weight, "thresholds": resolve_thresholds,
             "model.blend": resolve_blend}
"""Each decided field and the function that decides it."""


@dataclass(frozen=True)
class ResolvedRun:
    """A config with every data-dependent default decided for its data. `config` names the epochs it trains
    (what the run folder's config.yaml records); the other decisions sit beside it."""

    config: RunConfig
    data: DataFacts
    values: dict[str, Any] = field(default_factory=dict)
    """Field -> decided value (keys of RESOLVERS)."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Field -> why it has that value."""

    @property
    def epochs(self) -> float:
        return self.values["train.epochs"]

    @property
    def head_init(self) -> str:
        return self.values["model.head_init"]

    @property
    def metric(self) -> str:
        return self.values["train.metric"]

    @property
    def class_weighted(self) -> bool:
        return self.values["train.class_weight"] == "balanced"

    @property
    def blend(self) -> str | None:
        return self.values["model.blend"]

    def as_record(self) -> dict[str, Any]:
        """For result.json: each decision with its reason."""
        return {key: {"value": self.values[key], "reason": self.reasons[key]} for key in RESOLVERS}


def resolve(config: RunConfig, data: DataFacts) -> ResolvedRun:
    """Every data-dependent default of `config` decided for `data`, with its reason."""
    decided = {key: decide(config, data) for key, decide in RESOLVERS.items()}
    values = {key: value for key, (value, _) in decided.items()}
    if config.train.epochs is None:  # the run folder's config names the number trained
        config = replace(config, **{"train.epochs": values["train.epochs"]})
    return ResolvedRun(config, data, values, {key: why for key, (_, why) in decided.items()})


def pin_epochs(config: RunConfig, splits) -> RunConfig:
    """`config` with a null `train.epochs` decided once from `splits`' training rows, so that every run of a curve
    or comparison trains as long as the others (a queried or smaller subset could count as imbalanced)."""
    if config.train.epochs is not None:
        return config
    return resolve(config, DataFacts.of(splits)).config


def pin_head_init(config: RunConfig, rows: int, classes: int) -> RunConfig:
    """`config` with `model.head_init=auto` decided for `rows` training rows of `classes` classes: a run trained
    on other rows than its config draws (an active-learning round), or every run of a curve alike."""
    if config.model.head_init != "auto":
        return config
    facts = DataFacts(rows, classes, multi_label=config.data.multi_label)
    return replace(config, **{"model.head_init": resolve_head_init(config, facts)[0]})


def balanced_weights(labels: list[int], n_classes: int) -> np.ndarray:
    """scikit-learn's `balanced` class weights: n_rows / (n_classes x rows of the class)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return len(labels) / (n_classes * np.maximum(counts, 1))
