"""Tokenising: cached token ids, padded batches, length-sorted batches for inference."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

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
