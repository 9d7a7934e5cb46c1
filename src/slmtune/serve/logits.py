"""Length-sorted batched inference: logits for texts from a transformers model or an ONNX runner, and the
probabilities they give. Serving, evaluation and training all score through here."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from tqdm.auto import tqdm

from slmtune.allocator import keep_freed_memory
from slmtune.data.tokenize import encode, sorted_batches
from slmtune.models.pooling import first_token_only


@torch.inference_mode()
def predict_logits(model, tokenizer, texts: list[str], batch_size: int = 64, max_length: int = 128,
                   progress: bool = False, precision=None, cache: bool = True, truncation: str = "head") -> np.ndarray:
    """Logits for `texts`, in input order. `model` is a transformers model or an ONNX runner (slmtune.onnx);
    `precision` (a slmtune.precision.Precision) runs a torch model in it (Precision.inference); `cache` keeps the
    token ids for the next call on the same texts; `truncation` is the side long texts are cut from."""
    keep_freed_memory()
    ids = encode(tokenizer, texts, max_length, cache=cache, truncation=truncation)
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    onnx = not isinstance(model, torch.nn.Module)
    if not onnx:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
    multiple = precision.pad_multiple if precision is not None and not onnx else 1
    batches = sorted_batches(ids, batch_size, tokenizer.pad_token_id or 0, multiple)
    total = -(-len(ids) // batch_size)
    computed_in = precision.inference(model) if precision is not None and not onnx else contextlib.nullcontext()
    with contextlib.nullcontext() if onnx else first_token_only(model), computed_in:
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


def scores_of(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Class probabilities (softmax), or each label's sigmoid score on multi-label data."""
    if not multi_label:
        return softmax(logits)
    from slmtune.multilabel import sigmoid

    return sigmoid(logits)
