"""The run recorder: owns a run folder's lifecycle, so training code only trains.

It creates the folder (refusing one that holds a run unless told to overwrite), writes config.yaml and env.json,
keeps result.json's status (running, then success, interrupted or failed) with the seconds spent, and turns
SIGTERM into an interruption while the run is open, so a killed run ends like a Ctrl-C: status `interrupted`,
files intact. Every file is written atomically.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from slmtune.runs.folder import RESULT, MetricsLog, atomic_write, environment, make_run_dir, write_json


class Interrupted(KeyboardInterrupt):
    """Raised on SIGTERM while a run is open."""


class RunRecorder:
    """`with RunRecorder(...) as run:` ... `run.result.update(...)`; `run.finish(metrics=...)` on success.

    Leaving the block by an exception records `interrupted` (Ctrl-C, SIGTERM) or `failed` (with the error)."""

    def __init__(self, name: str, output_dir: str | Path | None, config_yaml: str, result: dict[str, Any],
                 overwrite: bool = False, compute: dict[str, str] | None = None):
        self.started = time.perf_counter()
        self.dir = make_run_dir(name, str(output_dir) if output_dir else None, overwrite)
        atomic_write(self.dir / "config.yaml", config_yaml)
        write_json(self.dir / "env.json", {**environment(), **({"compute": compute} if compute else {})})
        self.log = MetricsLog(self.dir / "metrics.jsonl")
        self.result: dict[str, Any] = {"status": "running", **result}
        self.seconds: dict[str, float] = {}
        self.save()
        self._previous = None

    def save(self) -> None:
        write_json(self.dir / RESULT, self.result)

    def finish(self, **values: Any) -> None:
        """Mark the run successful with `values` (metrics, samples/s, ...) and the seconds spent."""
        self.seconds["total"] = time.perf_counter() - self.started
        self.result.update(status="success", seconds=self._rounded(), **values)
        self.save()

    def _rounded(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in self.seconds.items()}

    def __enter__(self) -> RunRecorder:
        def on_term(signum, frame):
            raise Interrupted()

        try:
            self._previous = signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread: leave SIGTERM alone
            self._previous = None
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        try:
            if exc is not None:
                self.seconds["total"] = time.perf_counter() - self.started
                if isinstance(exc, KeyboardInterrupt):
                    self.result.update(status="interrupted", seconds=self._rounded())
                else:
                    self.result.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500],
                                       seconds=self._rounded())
                self.save()
        finally:
            if self._previous is not None:
                signal.signal(signal.SIGTERM, self._previous)
        return False
