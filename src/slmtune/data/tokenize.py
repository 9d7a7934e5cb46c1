"""Tokenising: cached token ids, padded batches, length-sorted batches for inference."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from slmtune.config import TRUNCATIONS

_CACHE: OrderedDict[tuple, list[list[int]]] = OrderedDict()


_CACHE_SIZE = 32


def encode(tokenizer, texts: list[str], max_length: int, cache: bool = True, truncation: str = "head"
           ) -> list[list[int]]:
    """Token ids per text, cut to `max_length` by `truncation`; cached per process so repeated runs tokenise
    once (`cache=False` for streams of new texts, which would only fill the cache)."""
    if not cache:
        return _tokenize(tokenizer, texts, max_length, truncation)
    digest = hashlib.sha1("\x1e".join(texts).encode("utf-8")).hexdigest()
    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), max_length, truncation, digest)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    ids = _tokenize(tokenizer, texts, max_length, truncation)
    _CACHE[key] = ids
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return ids


def _tokenize(tokenizer, texts: list[str], max_length: int, truncation: str) -> list[list[int]]:
    """`head` keeps the first tokens (the tokenizer's own truncation); `tail` the last; `head+tail` a quarter of
    the budget from the start and the rest from the end (Sun et al. 2019). Special tokens always stay."""
    if truncation == "head":
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
    with_special = tokenizer("x")["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    prefix = next(i for i in range(len(with_special)) if with_special[i: i + len(plain)] == plain)
    suffix = len(with_special) - prefix - len(plain)
    budget = max_length - prefix - suffix
    out = []
    for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]:
        if len(ids) > max_length:
            body = ids[prefix: len(ids) - suffix]
            head = 0 if truncation == "tail" else budget // 4
            ids = ids[:prefix] + body[:head] + body[len(body) - (budget - head):] + ids[len(ids) - suffix:]
        out.append(ids)
    return out


def count_truncated(tokenizer, texts: list[str], max_length: int) -> int:
    """How many of `texts` are longer than `max_length` tokens (and so lose some)."""
    lengths = tokenizer(texts, truncation=True, max_length=max_length + 1, return_length=True)["length"]
    return int(sum(n > max_length for n in lengths))


def pad_batch(sequences: list[list[int]], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Token ids and attention mask, padded to the longest sequence rounded up to a multiple of `multiple`."""
    longest = -(-max(len(s) for s in sequences) // multiple) * multiple
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def sorted_batches(ids: list[list[int]], batch_size: int, pad_id: int, multiple: int = 1):
    """(row indices, padded batch) in order of length, so batches carry almost no padding (up to `multiple`)."""
    order = np.argsort([len(s) for s in ids], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        yield rows, pad_batch([ids[i] for i in rows], pad_id, multiple)
