"""Multi-label classification: label sets as multi-hot rows, sigmoid scores, decision thresholds tuned on
validation, and the metrics of label sets (micro / macro F1, subset accuracy, per-label precision / recall / F1).

A multi-label TextDataset holds, per row, the sorted list of its label indices (possibly empty); the model has one
sigmoid output per label (transformers' `problem_type="multi_label_classification"`, trained with BCE)."""

from __future__ import annotations

import numpy as np

PROBLEM_TYPE = "multi_label_classification"  # transformers' name: BCE loss, and pipeline() applies a sigmoid
METRIC_NAMES = {"accuracy": "accuracy", "micro_f1": "micro-F1", "macro_f1": "macro-F1",
                "subset_accuracy": "subset accuracy"}
GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # the thresholds tried on validation


def metric_name(key: str) -> str:
    """How a metric key reads in text: `micro_f1` is micro-F1."""
    return METRIC_NAMES.get(key, key.replace("_", " "))


def multi_hot(label_sets: list[list[int]], n_labels: int) -> np.ndarray:
    """(rows, labels) 0/1 matrix of the label sets."""
    out = np.zeros((len(label_sets), n_labels), dtype=np.float32)
    for i, labels in enumerate(label_sets):
        out[i, list(labels)] = 1.0
    return out


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def decide(scores: np.ndarray, thresholds) -> np.ndarray:
    """The 0/1 label matrix: a label is on when its score reaches its threshold (one number, or one per label)."""
    return (scores >= np.asarray(thresholds, dtype=np.float64)).astype(np.int64)


def label_sets(scores: np.ndarray, thresholds, names: list[str]) -> list[list[str]]:
    """Per row, the names of the labels that are on (see `decide`), in label order."""
    on = decide(scores, thresholds)
    return [[names[j] for j in np.flatnonzero(row)] for row in on]


def _micro_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    tp = float((gold * predicted).sum())
    fp_fn = float(((1 - gold) * predicted).sum() + (gold * (1 - predicted)).sum())
    return 2 * tp / (2 * tp + fp_fn) if tp else 0.0


def _label_f1(gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    tp = (gold * predicted).sum(axis=0)
    wrong = ((1 - gold) * predicted).sum(axis=0) + (gold * (1 - predicted)).sum(axis=0)
    return np.divide(2 * tp, 2 * tp + wrong, out=np.zeros(gold.shape[1]), where=(2 * tp + wrong) > 0)


def tune_thresholds(scores: np.ndarray, gold: np.ndarray, per_label: bool = False) -> dict:
    """Decision thresholds chosen on validation scores: one threshold (of GRID) with the best micro-F1; with
    `per_label`, each label then takes its own threshold where that raises the label's validation F1 by more than
    one row's worth, else keeps the shared one. Returns {"threshold", "per_label" (list or None),
    "validation_micro_f1" at 0.5 and tuned}."""
    gold = np.asarray(gold, dtype=np.int64)
    micro = [_micro_f1(gold, decide(scores, t)) for t in GRID]
    shared = float(GRID[int(np.argmax(micro))])  # the first of equals: the lowest threshold
    chosen = np.full(gold.shape[1], shared)
    if per_label:
        base = _label_f1(gold, decide(scores, shared))
        table = np.stack([_label_f1(gold, decide(scores, t)) for t in GRID])  # (thresholds, labels)
        best = table.argmax(axis=0)
        support = np.maximum(gold.sum(axis=0), 1)
        better = table[best, np.arange(gold.shape[1])] - base > 1.0 / support
        chosen = np.where(better, GRID[best], chosen)
    return {"threshold": shared, "per_label": chosen.round(2).tolist() if per_label else None,
            "validation_micro_f1": {"at_0.5": round(_micro_f1(gold, decide(scores, 0.5)), 4),
                                    "tuned": round(_micro_f1(gold, decide(scores, chosen)), 4)}}


def thresholds_of(tuned: dict | None, n_labels: int) -> np.ndarray:
    """The per-label thresholds a run uses (0.5 when none were tuned)."""
    if not tuned:
        return np.full(n_labels, 0.5)
    return np.asarray(tuned["per_label"] if tuned.get("per_label") else [tuned["threshold"]] * n_labels)


def multilabel_metrics(gold: np.ndarray, predicted: np.ndarray, label_names: list[str]) -> dict:
    """micro / macro F1, subset accuracy (the whole set right), Hamming loss, per-label precision / recall / F1 /
    support. `accuracy` is the subset accuracy, so code that reads a run's accuracy reads the strict one."""
    from sklearn.metrics import f1_score, hamming_loss, precision_recall_fscore_support

    gold, predicted = np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, zero_division=0)
    subset = float((gold == predicted).all(axis=1).mean())
    return {
        "micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "subset_accuracy": subset,
        "accuracy": subset,
        "hamming_loss": float(hamming_loss(gold, predicted)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "co_occurrence": co_occurrence(gold).tolist(),
        "labels_per_row": {"gold": round(float(gold.sum(axis=1).mean()), 3),
                           "predicted": round(float(predicted.sum(axis=1).mean()), 3)},
        "n": int(len(gold)),
    }


def co_occurrence(gold: np.ndarray) -> np.ndarray:
    """(labels, labels) counts of rows holding both labels (the diagonal: rows holding the label)."""
    gold = np.asarray(gold, dtype=np.int64)
    return gold.T @ gold


def label_balance(label_sets: list[list[int]], n_labels: int) -> dict:
    """Rows holding each label and the imbalance ratio (most frequent label over the rarest present one)."""
    counts = multi_hot(label_sets, n_labels).sum(axis=0).astype(int)
    present = counts[counts > 0]
    return {"counts": counts.tolist(), "imbalance": float(present.max() / present.min()) if len(present) else 1.0}


def pos_weights(label_sets: list[list[int]], n_labels: int, cap: float = 100.0) -> np.ndarray:
    """`class_weight: balanced` for BCE: each label's negatives over its positives (PyTorch's `pos_weight`),
    capped so that a label seen once does not swamp the loss."""
    positives = multi_hot(label_sets, n_labels).sum(axis=0)
    return np.clip((len(label_sets) - positives) / np.maximum(positives, 1), 1.0, cap).astype(np.float32)
