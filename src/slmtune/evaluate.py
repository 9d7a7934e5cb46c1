"""Tokenising (cached), length-sorted inference, and classification metrics."""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from tqdm.auto import tqdm

from slmtune.pooling import first_token_only

_CACHE: OrderedDict[tuple, list[list[int]]] = OrderedDict()
_CACHE_SIZE = 32


def encode(tokenizer, texts: list[str], max_length: int, cache: bool = True) -> list[list[int]]:
    """Token ids per text, truncated; cached per process so repeated runs tokenise once (`cache=False` for
    streams of new texts, which would only fill the cache)."""
    if not cache:
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    digest = hashlib.sha1("\x1e".join(texts).encode("utf-8")).hexdigest()
    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), max_length, digest)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    _CACHE[key] = ids
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return ids


def pad_batch(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def sorted_batches(ids: list[list[int]], batch_size: int, pad_id: int):
    """(row indices, padded batch) in order of length, so batches carry almost no padding."""
    order = np.argsort([len(s) for s in ids], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        yield rows, pad_batch([ids[i] for i in rows], pad_id)


@torch.inference_mode()
def predict_logits(model, tokenizer, texts: list[str], batch_size: int = 64, max_length: int = 128,
                   progress: bool = False, precision=None, cache: bool = True) -> np.ndarray:
    """Logits for `texts`, in input order. `model` is a transformers model or an ONNX runner (slmtune.onnx);
    `precision` (a slmtune.precision.Precision) runs a torch model under its autocast; `cache` keeps the
    token ids for the next call on the same texts."""
    ids = encode(tokenizer, texts, max_length, cache=cache)
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
    preds = logits.argmax(axis=-1)
    gold = softmax(logits)[np.arange(len(labels)), labels]
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        "gold_prob": float(gold.mean()),
    }


def classification_report_text(metrics: dict) -> str:
    """The per-class table as plain text (like sklearn's classification_report)."""
    lines = [f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, row in metrics["per_class"].items():
        lines.append(f"{name:<14}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>10}")
    lines.append(f"{'accuracy':<14}{'':>20}{metrics['accuracy']:>10.4f}{metrics['n']:>10}")
    lines.append(f"{'macro f1':<14}{'':>20}{metrics['macro_f1']:>10.4f}{metrics['n']:>10}")
    return "\n".join(lines)
