"""Embedding zero-shot with the real MiniLM beats chance on a tiny hand-made dataset."""

import numpy as np
import pytest

from slmtune.methods.embeddings import embed, load_encoder
from slmtune.methods.zeroshot import AG_NEWS_TEMPLATES, DESCRIPTIONS, prompt_classifier

pytestmark = pytest.mark.integration

TEXTS = [
    ("Leaders met at the United Nations to discuss the ceasefire and the new sanctions.", 0),
    ("The prime minister called an early election after parliament rejected the budget.", 0),
    ("The striker scored twice as the home team won the championship final.", 1),
    ("The coach praised his players after a tense overtime victory in the playoffs.", 1),
    ("Shares fell sharply after the bank reported lower quarterly earnings.", 2),
    ("The two companies agreed to a merger worth four billion dollars.", 2),
    ("Researchers unveiled a faster computer chip and new software for data centers.", 3),
    ("NASA launched a probe to study the atmosphere of Mars.", 3),
]
NAMES = ["World", "Sports", "Business", "Sci/Tech"]


def test_label_prompt_embeddings_beat_chance():
    encoder = load_encoder("minilm-l6")
    texts = embed(encoder, [t for t, _ in TEXTS])
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    classifier = prompt_classifier(encoder, NAMES, AG_NEWS_TEMPLATES, DESCRIPTIONS)
    predicted = (texts @ classifier.T).argmax(axis=1)
    accuracy = float(np.mean(predicted == np.array([y for _, y in TEXTS])))
    assert accuracy >= 0.75  # chance is 0.25
