"""The study protocol: what every study module of slmtune.experiments provides, typed, and checked when the
registry loads it. A new study is one module that implements it plus one `StudyKind` line in the registry: its
command, its part in `slmtune study`, its plan, its budget reductions and its report section all come from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from slmtune.config import RunConfig


@dataclass(frozen=True)
class Reduction:
    """One way `slmtune study --budget` shrinks a part of this kind when the plan does not fit."""

    rank: int
    """Order across every kind, cheapest loss of evidence first."""
    field: str
    """The study-config field it changes."""
    change: Callable[[Any], Any]
    """The field's new value from its current one; None drops the part."""
    message: str
    """What the plan says it dropped."""


class StudyModule(Protocol):
    """A study: a module with these names (a module satisfies a Protocol structurally, PEP 544)."""

    CONFIG: type
    """Its config dataclass (fields with docstrings; `name`, `recipe` and `run` are shared by all)."""
    OWN_QUEUE: bool
    """Its trials are their own queue (a sweep): extra workers join it directly, not the run queue."""
    REDUCTIONS: tuple[Reduction, ...]
    """How `--budget` shrinks it."""

    def run(self, cfg: Any, study_dir: str | Path | None = None, cli_overrides: list[str] | None = None,
            progress: Callable[[str], None] = print, **options: Any) -> dict[str, Any]:
        """Run (resumable: finished runs and kept results are reused); returns the summary, also written to the
        study folder as summary.json."""

    def plan(self, cfg: Any, base: RunConfig, cli_overrides: list[str] | None, data: Any,
             root: Path) -> tuple[list[RunConfig], float]:
        """What `run` will train, and the seconds of work outside runs (`data`: the dataset's DataSizes)."""

    def planned_share(self, cfg: Any, configs: list[RunConfig], data: Any) -> float:
        """The share of its planned runs' full work it is expected to do (below 1 where it stops runs early, as a
        raced sweep does); the study's plan counts that share of each run's seconds."""

    def shares_runs(self, cfg: Any) -> bool:
        """Whether its configs name their runs, so that parts of one study share them."""

    def from_cli(self, values: dict[str, Any], from_file: bool) -> dict[str, Any]:
        """Its command-line flag values as config fields."""

    def report(self, summary: dict[str, Any]) -> list[str]:
        """What the command prints when it ends."""

    def report_section(self, page: Any, folder: Path, summary: dict[str, Any]) -> str:
        """Its section of report.html (`page`: slmtune.report.html.Report, whose key findings it adds to)."""

    def figure_caption(self, summary: dict[str, Any]) -> str:
        """What the captions of its figures in report.html say."""


MEMBERS = ("CONFIG", "OWN_QUEUE", "REDUCTIONS", "run", "plan", "planned_share", "shares_runs", "from_cli", "report",
           "report_section", "figure_caption")


def check_protocol(module: ModuleType) -> StudyModule:
    """`module` as a StudyModule; a module that lacks a member is a programming error, named here."""
    missing = [name for name in MEMBERS if not hasattr(module, name)]
    if missing:
        raise TypeError(f"{module.__name__} does not implement the study protocol: no {', '.join(missing)}")
    return module  # type: ignore[return-value]


def trains_to_the_end(cfg: Any, configs: list[RunConfig], data: Any) -> float:
    """`planned_share` for a study that trains every planned run to its end."""
    return 1.0


def keeps_runs(cfg: Any) -> bool:
    """`shares_runs` for a study whose configs always name their runs."""
    return True


def flags_as_given(values: dict[str, Any], from_file: bool) -> dict[str, Any]:
    """`from_cli` for a study whose flags are its config fields as they are."""
    return values
