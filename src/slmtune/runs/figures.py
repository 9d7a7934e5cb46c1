"""A run's own figures: confusion matrix and training curves (matplotlib, no display needed)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Write a figure atomically (unique temporary name, then rename) and close it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.tight_layout()
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


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
    save_figure(fig, Path(path))


def co_occurrence_png(matrix: list[list[int]], label_names: list[str], path: str | Path, title: str = "") -> None:
    """Multi-label: rows holding label i (row) that also hold label j (column), coloured by share of row i."""
    counts = np.asarray(matrix)
    share = counts / np.maximum(np.diag(counts)[:, None], 1)
    size = min(0.45 * len(label_names) + 3, 16)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(share, cmap="Purples", vmin=0, vmax=1)
    if len(label_names) <= 12:
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                ax.text(j, i, f"{counts[i, j]}", ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(label_names)), label_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(label_names)), label_names, fontsize=8)
    ax.set_xlabel("also labelled")
    ax.set_ylabel("rows labelled")
    ax.set_title(title or "Label co-occurrence")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the row label's rows")
    save_figure(fig, Path(path))


def training_curves_png(records: list[dict], path: str | Path, n_validation: int | None = None) -> None:
    """Training loss per logged step, validation loss and accuracy (micro-F1 for multi-label runs) per evaluation,
    against epochs.

    The star marks the checkpoint that was kept (best `validation_select`)."""
    train = [(r["epoch"], r["loss"]) for r in records if "loss" in r]
    key = "validation_micro_f1" if any("validation_micro_f1" in r for r in records) else "validation_accuracy"
    name = "micro-F1" if key == "validation_micro_f1" else "accuracy"
    val = [r for r in records if key in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train:
        left.plot(*zip(*train), label="train loss", color="#4C72B0")
    if val:
        epochs = [r["epoch"] for r in val]
        left.plot(epochs, [r.get("validation_loss") for r in val], "o-", label="validation loss", color="#DD8452")
        right.plot(epochs, [r[key] for r in val], "o-", color="#55A868")
        best = max(val, key=lambda r: r.get("validation_select", r[key]))
        right.plot([best["epoch"]], [best[key]], marker="*", markersize=16, color="#C44E52",
                   linestyle="none", label=f"kept: {best[key]:.3f} at epoch {best['epoch']:g}")
        right.legend(loc="best")
        low, high = right.get_ylim()
        right.set_ylim(low, high + 0.1 * (high - low))
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    left.grid(alpha=0.3)
    right.set_xlabel("epoch")
    right.set_ylabel(f"validation {name}" + (f" (n={n_validation})" if n_validation else ""))
    right.grid(alpha=0.3)
    fig.suptitle("Training curves")
    save_figure(fig, Path(path))


def plot_run(run_dir: Path, metrics_log: list[dict], test_metrics: dict, label_names: list[str], n_val: int) -> None:
    """A finished run's own figures: the test confusion matrix (multi-label: the test labels' co-occurrence) and
    the training curves."""
    if "co_occurrence" in test_metrics:
        co_occurrence_png(test_metrics["co_occurrence"], label_names, run_dir / "label_cooccurrence.png",
                          title=f"Test label co-occurrence (n={test_metrics['n']}, micro-F1 "
                                f"{test_metrics['micro_f1']:.3f})")
    else:
        title = f"Test confusion matrix (n={test_metrics['n']}, accuracy {test_metrics['accuracy']:.3f})"
        confusion_matrix_png(test_metrics["confusion_matrix"], label_names, run_dir / "confusion_matrix.png",
                             title=title)
    if any("loss" in r or "validation_loss" in r for r in metrics_log):  # a linear probe has no curve
        training_curves_png(metrics_log, run_dir / "training_curves.png", n_validation=n_val)
