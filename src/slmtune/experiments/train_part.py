"""The reference study's baseline part: one run per recipe (full fine-tuning and LoRA by default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmtune.config import RunConfig
from slmtune.experiments.common import DataSizes, Study, flat_metrics, load_run_config


@dataclass
class TrainPartConfig:
    name: str = "train"
    recipe: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    recipes: list[str] = field(default_factory=lambda: ["configs/agnews-full.yaml", "configs/agnews-lora.yaml"])
    """One run per recipe: the baseline (full fine-tuning) and LoRA."""


def run_train_part(cfg: TrainPartConfig, study_dir: Path, cli_overrides: list[str] | None, progress=print) -> dict:
    study = Study(study_dir)
    rows = []
    for recipe in cfg.recipes:
        config = load_run_config(recipe, cfg.run, cli_overrides)
        row = {"recipe": recipe, "method": config.model.method, **flat_metrics(study.run(config))}
        rows.append(row)
        progress(f"  {recipe}: test accuracy {row['test_accuracy']:.4f}{' (reused)' if row['reused'] else ''}")
    summary = {"study": "train", "rows": rows}
    study.write_summary(rows, summary)
    return summary


# ---------------------------------------------------------------------------------------- study protocol

CONFIG = TrainPartConfig
run = run_train_part


def plan(cfg: TrainPartConfig, base: RunConfig, cli_overrides: list[str] | None, data: DataSizes,
         root: Path):
    return [load_run_config(r, cfg.run, cli_overrides) for r in cfg.recipes], 0.0


def report(summary: dict[str, Any]) -> list[str]:
    return [f"  {row['recipe']}: test accuracy {row['test_accuracy']:.4f}" for row in summary["rows"]]
