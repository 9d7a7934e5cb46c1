"""The reference study's baseline part: one run per recipe (full fine-tuning and LoRA by default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmtune.config import RunConfig
from slmtune.experiments.common import DataSizes, Study, flat_metrics, load_run_config
from slmtune.experiments.protocol import flags_as_given, keeps_runs, trains_to_the_end


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
shares_runs = keeps_runs
planned_share = trains_to_the_end
from_cli = flags_as_given
OWN_QUEUE = False
REDUCTIONS: tuple = ()


def plan(cfg: TrainPartConfig, base: RunConfig, cli_overrides: list[str] | None, data: DataSizes,
         root: Path):
    return [load_run_config(r, cfg.run, cli_overrides) for r in cfg.recipes], 0.0


def report(summary: dict[str, Any]) -> list[str]:
    return [f"  {row['recipe']}: test accuracy {row['test_accuracy']:.4f}" for row in summary["rows"]]


def report_section(page, folder: Path, summary: dict) -> str:
    """This study's section of report.html (`page`: slmtune.report.html.Report, whose key findings it adds to)."""
    from slmtune import runs
    from slmtune.report.cells import escape

    html = ""
    for row in summary.get("rows", []):
        run = Path(row["run_dir"])
        if (run / runs.RESULT).is_file():
            html += f"<h3>{escape(row.get('recipe', run.name))} ({escape(run.name)})</h3>" + page.run_body(run, 6)
    return html


def figure_caption(summary: dict) -> str:
    """What the captions of this study's figures in report.html say."""
    return f"{len(summary.get('rows', []))} runs"
