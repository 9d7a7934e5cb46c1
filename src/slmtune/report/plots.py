"""Study figures: sweep curves, heatmaps and surfaces; seed box/strip plots, run times, accuracy vs time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slmtune.runs.figures import plt, save_figure

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]
SHORT = {"train.learning_rate": "learning rate", "train.weight_decay": "weight decay", "lora.r": "LoRA rank",
         "lora.alpha": "LoRA alpha", "train.batch_size": "batch size", "train.epochs": "epochs"}


def _label(key: str) -> str:
    return SHORT.get(key, key)


def _cut(row) -> bool:
    """A point raced out before the end of its schedule: its validation score is at the rung it reached."""
    return row.get("cut_at") is not None


def _line(rows, key, path: Path, log_x: bool) -> None:
    points = sorted((r[key], r["validation_accuracy"], r["test_accuracy"], _cut(r)) for r in rows)
    x = [p[0] for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(x, [p[1] for p in points], "o-", color=PALETTE[0], label="validation (selects)")
    ended = [p for p in points if p[2] is not None]
    ax.plot([p[0] for p in ended], [p[2] for p in ended], "s--", color=PALETTE[1], label="test (best checkpoint)")
    if any(p[3] for p in points):
        ax.plot([p[0] for p in points if p[3]], [p[1] for p in points if p[3]], "x", color="black", markersize=9,
                label="raced out (validation at the rung it reached)")
    best = max(ended or points, key=lambda p: p[1])
    ax.axvline(best[0], color="grey", linestyle=":", label=f"best {_label(key)} = {best[0]:g}")
    if log_x and min(x) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(_label(key))
    ax.set_ylabel("accuracy")
    ax.set_title(f"Accuracy vs {_label(key)} (n={len(points)} trials)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def _grid(rows, keys, metric: str):
    xs = sorted({r[keys[0]] for r in rows})
    ys = sorted({r[keys[1]] for r in rows})
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        grid[ys.index(r[keys[1]]), xs.index(r[keys[0]])] = np.nan if r[metric] is None else r[metric]
    return xs, ys, grid


def _heatmap(rows, keys, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    cut_at = {(r[keys[0]], r[keys[1]]): r["cut_at"] for r in rows if _cut(r)}
    for ax, metric in zip(axes, ("validation_accuracy", "test_accuracy")):
        xs, ys, grid = _grid(rows, keys, metric)
        image = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
        for i in range(len(ys)):
            for j in range(len(xs)):
                cut = cut_at.get((xs[j], ys[i]))
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.3f}" + (f"\ncut @ ep {cut:g}" if cut is not None else ""),
                            ha="center", va="center", fontsize=8 if cut is None else 7,
                            color="white" if grid[i, j] < np.nanmean(grid) else "black")
                elif cut is not None:
                    ax.text(j, i, f"cut @ ep {cut:g}", ha="center", va="center", fontsize=7, color="grey")
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
        ax.set_xlabel(_label(keys[0]))
        ax.set_ylabel(_label(keys[1]))
        ax.set_title(metric.replace("_", " "))
        fig.colorbar(image, ax=ax, fraction=0.046)
    raced = f"; {len(cut_at)} raced out, shown at the rung they reached" if cut_at else ""
    fig.suptitle(f"{_label(keys[0])} x {_label(keys[1])} ({len(rows)} trials{raced})")
    save_figure(fig, path)


def _surface(rows, keys, path: Path) -> None:
    xs, ys, grid = _grid(rows, keys, "validation_accuracy")
    fig = plt.figure(figsize=(7, 5.5))
    ax = fig.add_subplot(projection="3d")
    gx, gy = np.meshgrid(np.log10(xs) if min(xs) > 0 else xs, range(len(ys)))
    ax.plot_surface(gx, gy, np.nan_to_num(grid, nan=np.nanmin(grid)), cmap="viridis", edgecolor="k", alpha=0.9)
    ax.set_xlabel(f"log10 {_label(keys[0])}" if min(xs) > 0 else _label(keys[0]))
    ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
    ax.set_ylabel(_label(keys[1]))
    ax.set_zlabel("validation accuracy")
    cut = sum(map(_cut, rows))
    ax.set_title("Validation accuracy surface" + (f" ({cut} raced-out points at the rung they reached)" if cut else ""))
    save_figure(fig, path)


def sweep_plots(rows: list[dict[str, Any]], keys: list[str], folder: str | Path) -> list[str]:
    """Curves per swept field (log x for learning rates), and heatmaps + a 3D surface for 2-field grids."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    numeric = [k for k in keys if all(isinstance(r.get(k), (int, float)) for r in rows)]
    if len(numeric) == 1:
        path = folder / f"sweep_{numeric[0].split('.')[-1]}.png"
        _line(rows, numeric[0], path, log_x="learning_rate" in numeric[0])
        written.append(path)
    elif len(numeric) == 2:
        for key, other in (numeric, numeric[::-1]):  # one curve per value of the other field
            fig, ax = plt.subplots(figsize=(6.4, 4))
            for i, value in enumerate(sorted({r[other] for r in rows})):
                points = sorted((r[key], r["validation_accuracy"], _cut(r)) for r in rows if r[other] == value)
                ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=PALETTE[i % len(PALETTE)],
                        label=f"{_label(other)} {value:g}")
                ax.plot([p[0] for p in points if p[2]], [p[1] for p in points if p[2]], "x", color="black",
                        markersize=9)
            if "learning_rate" in key:
                ax.set_xscale("log")
            ax.set_xlabel(_label(key))
            ax.set_ylabel("validation accuracy")
            ax.set_title(f"Impact of {_label(key)}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            path = folder / f"sweep_{key.split('.')[-1]}.png"
            save_figure(fig, path)
            written.append(path)
        _heatmap(rows, numeric, folder / "heatmap.png")
        _surface(rows, numeric, folder / "surface.png")
        written += [folder / "heatmap.png", folder / "surface.png"]
    return [str(p) for p in written]


def seeds_plots(groups: dict[str, list[dict[str, Any]]], folder: str | Path) -> list[str]:
    """Box + strip plots of test accuracy and macro-F1 per config, train time per run, accuracy vs time."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(groups)
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("test_accuracy", "test_macro_f1")):
        data = [[r[metric] for r in groups[n]] for n in names]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names)
        for i, values in enumerate(data):
            ax.scatter(i + 1 + rng.uniform(-0.08, 0.08, len(values)), values, color=PALETTE[i % len(PALETTE)],
                       zorder=3, s=22)
        ax.set_title(f"{metric.replace('_', ' ')} (n={len(data[0])} seeds each)")
        ax.grid(alpha=0.3, axis="y")
    save_figure(fig, folder / "seeds_box.png")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rows = groups[name]
        left.bar(np.arange(len(rows)) + i * width, [r["train_seconds"] for r in rows], width,
                 label=name, color=PALETTE[i % len(PALETTE)])
        right.scatter([r["train_seconds"] for r in rows], [r["test_accuracy"] for r in rows], label=name,
                      color=PALETTE[i % len(PALETTE)], s=30)
    left.set_xticks(np.arange(len(groups[names[0]])) + width * (len(names) - 1) / 2,
                    [str(r["seed"]) for r in groups[names[0]]])
    left.set_xlabel("seed")
    left.set_ylabel("train seconds")
    left.set_title("Training time per run")
    left.legend()
    right.set_xlabel("train seconds")
    right.set_ylabel("test accuracy")
    right.set_title("Accuracy vs training time")
    right.grid(alpha=0.3)
    right.legend()
    save_figure(fig, folder / "seeds_time.png")
    return [str(folder / "seeds_box.png"), str(folder / "seeds_time.png")]


def _band(ax, xs, summaries, color, label, marker="o"):
    means = [s["mean"] for s in summaries]
    ax.plot(xs, means, marker=marker, color=color, label=label)
    ax.fill_between(xs, [s["ci_low"] for s in summaries], [s["ci_high"] for s in summaries], color=color,
                    alpha=0.18, linewidth=0)


def _bands(ax, curves: dict[str, dict[Any, dict]], unit: str) -> None:
    """One mean line with its 95% CI band per named curve ({x: summary}); n in the legend."""
    for i, (name, points) in enumerate(curves.items()):
        xs = sorted(points)
        _band(ax, xs, [points[k] for k in xs], PALETTE[i % len(PALETTE)], f"{name} (n={points[xs[-1]]['n']} {unit})",
              marker="s" if name == "random" else "o")


def fewshot_plot(curves: dict[str, dict[int, dict]], anchors: dict[str, dict[int, float]], path: str | Path) -> str:
    """Test accuracy vs shots per class (log x), mean with 95% CI band per method, published anchors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _bands(ax, curves, "draws")
    for j, (name, points) in enumerate(anchors.items()):
        ax.plot(list(points), list(points.values()), linestyle=":", marker="x", color="grey" if j else "black",
                label=name)
    ax.set_xscale("log")
    ax.set_xlabel("training rows per class")
    ax.set_ylabel("test accuracy")
    ax.set_title("Few-shot learning curves (mean, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return str(path)


def scaling_plots(points: list[tuple[int, float]], fit, folder: str | Path, predictions: list[dict]) -> list[str]:
    """Learning curve (log x) with the power-law fit and its 95% band; residuals of the fit."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = np.array([p[0] for p in points], dtype=float)
    acc = np.array([p[1] for p in points])
    grid = np.geomspace(sizes.min(), max(sizes.max(), *(p["n"] for p in predictions)), 200)
    band = [fit.predict(n, samples=1000) for n in grid]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(sizes, acc, color=PALETTE[0], s=18, label=f"runs (n={len(points)})", zorder=3)
    ax.plot(grid, [b["accuracy"] for b in band], color=PALETTE[1],
            label=f"fit: err = {fit.a:.2f} n^-{fit.b:.2f} + {fit.c:.3f} (R²={fit.r2:.3f})")
    ax.fill_between(grid, [b["low"] for b in band], [b["high"] for b in band], color=PALETTE[1], alpha=0.2,
                    linewidth=0, label="95% band")
    for p in predictions:
        ax.errorbar([p["n"]], [p["accuracy"]], yerr=[[p["accuracy"] - p["low"]], [p["high"] - p["accuracy"]]],
                    fmt="s", color=PALETTE[3], capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("training rows")
    ax.set_ylabel("test accuracy")
    ax.set_title("Data scaling")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, folder / "scaling.png")
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.axhline(0, color="grey")
    ax.scatter(sizes, (1 - acc) - fit.error(sizes), color=PALETTE[0], s=18)
    ax.set_xscale("log")
    ax.set_xlabel("training rows")
    ax.set_ylabel("error residual")
    ax.set_title("Residuals of the power-law fit")
    ax.grid(alpha=0.3)
    save_figure(fig, folder / "scaling_residuals.png")
    return [str(folder / "scaling.png"), str(folder / "scaling_residuals.png")]


def augmentation_plot(curves: dict[str, dict[str, list[dict]]], path: str | Path) -> str:
    """Test accuracy vs augmentation ratio, one panel per training size, mean with 95% CI band per operation set."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = list(curves)
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for i, (op, points) in enumerate(curves[size].items()):
            xs = [p["ratio"] for p in points]
            color = "grey" if op.startswith("steps-matched") else PALETTE[i % len(PALETTE)]
            _band(ax, xs, points, color, f"{op} (n={points[-1]['n']} seeds)")
        ax.axhline(curves[size][next(iter(curves[size]))][0]["mean"], color="grey", linestyle=":", linewidth=1,
                   label="control (ratio 0)")
        ax.set_xlabel("augmented rows per training row")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{size} training rows")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Augmentation vs control (mean, 95% CI over seeds)")
    save_figure(fig, path)
    return str(path)


def active_plot(curves: dict[str, dict[int, dict]], path: str | Path) -> str:
    """Test accuracy vs labelled rows per query strategy: mean with 95% CI band over seeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _bands(ax, curves, "seeds")
    ax.set_xlabel("labelled training rows")
    ax.set_ylabel("test accuracy")
    ax.set_title("Active learning curves (mean, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return str(path)


def radar_plot(models: dict[str, dict[str, float]], path: str | Path) -> str:
    """Models over metrics (accuracy, macro-F1, per-class F1) on one radar, axes zoomed to the data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = list(next(iter(models.values())))
    values = np.array([[m[k] for k in metrics] for m in models.values()])
    low = max(0.0, float(values.min()) - 0.05)
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(6, 5.4), subplot_kw={"polar": True})
    for i, (name, row) in enumerate(zip(models, values)):
        closed = list(row) + [row[0]]
        ax.plot(angles + angles[:1], closed, color=PALETTE[i % len(PALETTE)], label=name, linewidth=2)
        ax.fill(angles + angles[:1], closed, color=PALETTE[i % len(PALETTE)], alpha=0.08)
    ax.set_xticks(angles)
    ax.set_xticklabels(metrics, fontsize=9)
    ax.set_ylim(low, 1.0)
    ax.set_yticks(np.round(np.linspace(low, 1.0, 4)[1:], 2))
    ax.tick_params(axis="y", labelsize=7)
    ax.set_rlabel_position(90 + 180 / len(metrics))
    ax.set_title("Models over test metrics", pad=18)
    ax.legend(loc="lower right", bbox_to_anchor=(1.25, -0.08), fontsize=8)
    save_figure(fig, path)
    return str(path)


def dashboard_plot(models: dict[str, dict[str, Any]], path: str | Path) -> str:
    """Four panels per model: accuracy (±1 sd), macro-F1, training seconds, trainable share of weights."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(models)
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(names))]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    panels = [("test accuracy", [m["metrics"]["accuracy"] for m in models.values()],
               [m.get("accuracy_sd", 0.0) for m in models.values()]),
              ("test macro-F1", [m["metrics"]["macro-F1"] for m in models.values()], None),
              ("training seconds", [m["train_seconds"] for m in models.values()], None),
              ("trainable weights (%)", [m["trainable_percent"] for m in models.values()], None)]
    for ax, (title, values, errors) in zip(axes, panels):
        ax.bar(range(len(names)), values, color=colors, yerr=errors, capsize=4)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        if "accuracy" in title or "F1" in title:
            ax.set_ylim(max(0.0, min(values) - 0.05), 1.0)
        if "trainable" in title:
            ax.set_yscale("log")
        for i, v in enumerate(values):
            ax.annotate(f"{v:.3f}" if v < 10 else f"{v:.0f}", (i, v), ha="center", va="bottom", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Multi-metric dashboard (n runs per model in the report)")
    save_figure(fig, path)
    return str(path)
