"""Length-sorted inference and classification metrics."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from tqdm.auto import tqdm

from slmtune.data.tokenize import encode, sorted_batches
from slmtune.models.pooling import first_token_only


@torch.inference_mode()
def predict_logits(model, tokenizer, texts: list[str], batch_size: int = 64, max_length: int = 128,
                   progress: bool = False, precision=None, cache: bool = True, truncation: str = "head") -> np.ndarray:
    """Logits for `texts`, in input order. `model` is a transformers model or an ONNX runner (slmtune.onnx);
    `precision` (a slmtune.precision.Precision) runs a torch model under its autocast; `cache` keeps the
    token ids for the next call on the same texts; `truncation` is the side long texts are cut from."""
    ids = encode(tokenizer, texts, max_length, cache=cache, truncation=truncation)
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    onnx = not isinstance(model, torch.nn.Module)
    if not onnx:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
    batches = sorted_batches(ids, batch_size, tokenizer.pad_token_id or 0)
    total = -(-len(ids) // batch_size)
    autocast = precision.autocast() if precision is not None and not onnx else contextlib.nullcontext()
    with contextlib.nullcontext() if onnx else first_token_only(model), autocast:
        for rows, batch in tqdm(batches, total=total, desc="predict", unit="batch", disable=not progress,
                                leave=False):
            if onnx:
                out[rows] = model(batch)
            else:
                out[rows] = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
    if not onnx:
        model.train(was_training)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predict_proba(model, tokenizer, texts: list[str], **kwargs) -> np.ndarray:
    return softmax(predict_logits(model, tokenizer, texts, **kwargs))


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


def scores_of(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Class probabilities (softmax), or each label's sigmoid score on multi-label data."""
    if not multi_label:
        return softmax(logits)
    from slmtune.multilabel import sigmoid

    return sigmoid(logits)


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
