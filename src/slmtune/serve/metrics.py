"""Classification metrics: accuracy, macro-F1, per-class figures and the confusion matrix (micro-F1 and subset
accuracy on multi-label data), from probabilities or logits, and the Trainer's `compute_metrics`."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from slmtune.serve.logits import scores_of, softmax


def classification_metrics(y_true, y_pred, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    labels = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n": int(len(y_true)),
    }


def compute_metrics(eval_pred) -> dict[str, float]:
    """Drop-in `compute_metrics` for a Hugging Face Trainer: accuracy, macro-F1 and the mean gold-class probability."""
    logits, labels = eval_pred
    if isinstance(logits, tuple):
        logits = logits[0]
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if labels.ndim == 2:  # multi-label: multi-hot rows, sigmoid scores, decided at 0.5 while training
        from slmtune.multilabel import decide, sigmoid

        scores = sigmoid(logits)
        predicted, gold = decide(scores, 0.5), labels.astype(np.int64)
        return {"micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
                "accuracy": float((gold == predicted).all(axis=1).mean()),
                "gold_prob": float(np.where(gold == 1, scores, 1 - scores).mean())}
    preds = logits.argmax(axis=-1)
    gold = softmax(logits)[np.arange(len(labels)), labels]
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        "gold_prob": float(gold.mean()),
    }


def score_probs(probs: np.ndarray, data, thresholds=None) -> tuple[dict, np.ndarray]:
    """(metrics, probabilities) of a split's probabilities: argmax, or for multi-label data the scores decided at
    `thresholds` (one per label; 0.5 when None)."""
    if not data.multi_label:
        return classification_metrics(data.labels, probs.argmax(axis=1), data.label_names), probs
    from slmtune.multilabel import decide, multi_hot, multilabel_metrics

    predicted = decide(probs, 0.5 if thresholds is None else thresholds)
    return multilabel_metrics(multi_hot(data.labels, len(data.label_names)), predicted, data.label_names), probs


def score_split(logits: np.ndarray, data, thresholds=None) -> tuple[dict, np.ndarray]:
    """score_probs of a split's logits."""
    return score_probs(scores_of(logits, data.multi_label), data, thresholds)


def classification_report_text(metrics: dict) -> str:
    """The per-class table as plain text (like sklearn's classification_report)."""
    lines = [f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, row in metrics["per_class"].items():
        lines.append(f"{name:<14}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>10}")
    if "micro_f1" in metrics:  # multi-label
        lines.append(f"{'micro f1':<14}{'':>20}{metrics['micro_f1']:>10.4f}{metrics['n']:>10}")
        lines.append(f"{'macro f1':<14}{'':>20}{metrics['macro_f1']:>10.4f}{metrics['n']:>10}")
        lines.append(f"{'subset acc.':<14}{'':>20}{metrics['subset_accuracy']:>10.4f}{metrics['n']:>10}")
        return "\n".join(lines)
    lines.append(f"{'accuracy':<14}{'':>20}{metrics['accuracy']:>10.4f}{metrics['n']:>10}")
    lines.append(f"{'macro f1':<14}{'':>20}{metrics['macro_f1']:>10.4f}{metrics['n']:>10}")
    return "\n".join(lines)
