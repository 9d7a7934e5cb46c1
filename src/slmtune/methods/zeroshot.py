"""Zero-shot classifiers: label-prompt embedding similarity, and NLI through transformers."""

from __future__ import annotations

import numpy as np

from slmtune.errors import SlmtuneError

# Short descriptions of AG News labels; other datasets use their label names (made readable) unless given some.
DESCRIPTIONS = {"World": "world news and politics", "Sports": "sports", "Business": "business and the economy",
                "Sci/Tech": "science and technology"}

AG_NEWS_TEMPLATES = ["This is a news article about {}.", "A news story about {}.", "{}"]
GENERIC_TEMPLATES = ["This text is about {}.", "A text about {}.", "{}"]


def templates_for(dataset: str) -> list[str]:
    """Sentence templates for the `templates` prompts: AG News's for `ag_news`, generic ones for any other data."""
    return AG_NEWS_TEMPLATES if dataset == "ag_news" else GENERIC_TEMPLATES


def default_descriptions(label_names: list[str]) -> dict[str, str]:
    """What a prompt says for each label: AG News's descriptions for its labels, else the name made readable
    (`money-fx` -> `money fx`, `billing_issue` -> `billing issue`)."""
    if set(label_names) <= set(DESCRIPTIONS):
        return {n: DESCRIPTIONS[n] for n in label_names}
    return {n: " ".join(n.replace("_", " ").replace("-", " ").split()) or n for n in label_names}


def label_prompts(label_names: list[str], templates: list[str], descriptions: dict[str, str] | None) -> list[list[str]]:
    """Per label, its prompts (one per template)."""
    described = [(descriptions or {}).get(n, n) for n in label_names]
    return [[t.format(d) for t in templates] for d in described]


def prompt_classifier(encoder, label_names: list[str], templates: list[str],
                      descriptions: dict[str, str] | None) -> np.ndarray:
    """(labels x hidden) matrix of normalised mean prompt embeddings."""
    from slmtune.methods.embeddings import embed

    prompts = label_prompts(label_names, templates, descriptions)
    flat = [p for group in prompts for p in group]
    vectors = embed(encoder, flat)
    centroids, start = [], 0
    for group in prompts:
        centroids.append(vectors[start: start + len(group)].mean(axis=0))
        start += len(group)
    matrix = np.stack(centroids)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def nli_predict(model_name: str, texts: list[str], label_names: list[str], hypothesis_template: str,
                descriptions: dict[str, str] | None, batch_size: int = 16) -> np.ndarray:
    from transformers import pipeline

    from slmtune.models.build import resolve_model

    candidates = [(descriptions or {}).get(n, n) for n in label_names]
    try:
        pipe = pipeline("zero-shot-classification", model=resolve_model(model_name))
    except OSError:
        raise SlmtuneError(f"cannot load the NLI model {model_name!r} (not a folder, and not on the Hub now)") from None
    outputs = pipe(texts, candidate_labels=candidates, hypothesis_template=hypothesis_template,
                   batch_size=batch_size)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return np.array([candidates.index(o["labels"][0]) for o in outputs])
