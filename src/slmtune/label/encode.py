"""The loop's inputs from an encoder: pool embeddings (computed once, cached by model and texts) and the label
prompts' embeddings (the zero-shot prior)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slmtune.errors import SlmtuneError


def encoder(model: str):
    from slmtune.methods.embeddings import load_encoder

    try:
        return load_encoder(model)
    except OSError as exc:
        raise SlmtuneError(f"cannot load encoder {model!r}: {str(exc).splitlines()[0]}") from None


def pool_embeddings(model: str, texts: list[str], cache_dir: Path | None, say=print) -> np.ndarray:
    from slmtune.methods.embeddings import embed

    pair = encoder(model)
    if cache_dir is None or not any(Path(cache_dir).glob("embeddings-*.npy")):
        say(f"embedding {len(texts):,} texts with {model} (once; kept in the project's cache)")
    return embed(pair, texts, cache_dir=cache_dir)


def prompt_embeddings(model: str, labels: list[str], descriptions: dict[str, str] | None) -> np.ndarray:
    """One unit vector per label: the mean embedding of its prompts ("This text is about {description}." ...)."""
    from slmtune.methods.zeroshot import GENERIC_TEMPLATES, default_descriptions, prompt_classifier

    described = {**default_descriptions(labels), **(descriptions or {})}
    return prompt_classifier(encoder(model), labels, GENERIC_TEMPLATES, described)
