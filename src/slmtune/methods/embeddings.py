"""Sentence embeddings from an encoder: masked mean pooling (how all-MiniLM-L6-v2 was trained), L2-normalised."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

from slmtune.data.tokenize import encode, sorted_batches
from slmtune.models.build import _load, load_tokenizer

_ENCODERS: dict[str, tuple] = {}


def load_encoder(name: str):
    """(encoder without head, tokenizer), cached per process."""
    if name not in _ENCODERS:
        model = _load(AutoModel, name)
        model.eval()
        _ENCODERS[name] = (model, load_tokenizer(name))
    return _ENCODERS[name]


@torch.inference_mode()
def embed(name_or_pair, texts: list[str], batch_size: int = 64, max_length: int = 128, normalize: bool = True,
          cache_dir: str | Path | None = None) -> np.ndarray:
    """One row per text. With `cache_dir`, embeddings are stored as .npy keyed by model, texts and settings."""
    model, tokenizer = load_encoder(name_or_pair) if isinstance(name_or_pair, str) else name_or_pair
    cache = None
    if cache_dir is not None:
        key = hashlib.sha1(("\x1e".join(texts) + f"|{getattr(model, 'name_or_path', '')}|{max_length}|{normalize}")
                           .encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"embeddings-{key}.npy"
        if cache.is_file():
            return np.load(cache)
    ids = encode(tokenizer, texts, max_length)
    device = next(model.parameters()).device
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for rows, batch in sorted_batches(ids, batch_size, tokenizer.pad_token_id or 0):
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        out[rows] = pooled.float().cpu().numpy()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, out)
    return out
