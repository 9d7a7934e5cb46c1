"""A run's predictions.csv: one row per test text with gold and predicted labels and class probabilities."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from slmtune.data import TextDataset
from slmtune.multilabel import label_sets
from slmtune.runs.folder import atomic_write


def write_predictions(path: Path, data: TextDataset, probs: np.ndarray, thresholds=None) -> None:
    """Single-label: gold, predicted, correct, p_<class>. Multi-label: gold and predicted label sets (joined by
    `|`), exact (the whole set right) and each label's sigmoid score."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = data.label_names
    if data.multi_label:
        chosen = label_sets(probs, 0.5 if thresholds is None else thresholds, names)
        writer.writerow(["id", "gold", "predicted", "exact", *[f"p_{n}" for n in names], "text"])
        for i, (text, gold) in enumerate(zip(data.texts, data.labels)):
            gold_names = [names[j] for j in gold]
            writer.writerow([i, "|".join(gold_names), "|".join(chosen[i]), int(chosen[i] == gold_names),
                             *[f"{p:.5f}" for p in probs[i]], text])
        atomic_write(path, buffer.getvalue())
        return
    writer.writerow(["id", "gold", "predicted", "correct", *[f"p_{n}" for n in names], "text"])
    predicted = probs.argmax(axis=1)
    for i, (text, gold) in enumerate(zip(data.texts, data.labels)):
        writer.writerow([i, names[gold], names[predicted[i]], int(predicted[i] == gold),
                         *[f"{p:.5f}" for p in probs[i]], text])
    atomic_write(path, buffer.getvalue())
