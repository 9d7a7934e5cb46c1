"""A run's predictions.csv: one row per test text with gold and predicted labels and class probabilities."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from slmtune.data import TextDataset
from slmtune.runs.folder import atomic_write


def write_predictions(path: Path, data: TextDataset, probs: np.ndarray) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = data.label_names
    writer.writerow(["id", "gold", "predicted", "correct", *[f"p_{n}" for n in names], "text"])
    predicted = probs.argmax(axis=1)
    for i, (text, gold) in enumerate(zip(data.texts, data.labels)):
        writer.writerow([i, names[gold], names[predicted[i]], int(predicted[i] == gold),
                         *[f"{p:.5f}" for p in probs[i]], text])
    atomic_write(path, buffer.getvalue())
