"""A run's own figures: confusion matrix and training curves (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def confusion_matrix_png(matrix: list[list[int]], label_names: list[str], path: str | Path, title: str = "") -> None:
    """Counts with row-normalised colour, so each row reads as recall."""
    counts = np.asarray(matrix)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(label_names) + 2.5, 1.1 * len(label_names) + 2))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{counts[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(label_names)), label_names, rotation=30, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    _save(fig, Path(path))


def training_curves_png(records: list[dict], path: str | Path) -> None:
    """Training loss per logged step, validation loss and accuracy per evaluation, against epochs."""
    train = [(r["epoch"], r["loss"]) for r in records if "loss" in r]
    val = [(r["epoch"], r.get("validation_loss"), r.get("validation_accuracy"))
           for r in records if "validation_accuracy" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train:
        left.plot(*zip(*train), label="train loss", color="#4C72B0")
    if val:
        left.plot([v[0] for v in val], [v[1] for v in val], "o-", label="validation loss", color="#DD8452")
        right.plot([v[0] for v in val], [v[2] for v in val], "o-", color="#55A868")
        best = max(val, key=lambda v: v[2])
        right.annotate(f"best {best[2]:.3f}", (best[0], best[2]), textcoords="offset points", xytext=(0, 8),
                       ha="center")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    left.grid(alpha=0.3)
    right.set_xlabel("epoch")
    right.set_ylabel("validation accuracy")
    right.grid(alpha=0.3)
    fig.suptitle("Training curves")
    _save(fig, Path(path))
