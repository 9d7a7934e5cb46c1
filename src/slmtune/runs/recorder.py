"""The run recorder: owns a run folder's lifecycle, so training code only trains.

It creates the folder (refusing one that holds a run unless told to overwrite), writes config.yaml and env.json,
keeps result.json's status (running, then success, interrupted or failed) with the seconds spent, and turns
SIGTERM into an interruption while the run is open, so a killed run ends like a Ctrl-C: status `interrupted`,
files intact. Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from slmtune.errors import SlmtuneError
from slmtune.runs.folder import (
    RESULT,
    MetricsLog,
    atomic_write,
    environment,
    make_run_dir,
    paused_at,
    read_json,
    write_json,
)


class Interrupted(KeyboardInterrupt):
    """Raised on SIGTERM (and, under the CLI, SIGINT and SIGHUP)."""


_pending: list[int] = []  # a stop signal not yet seen as an exception by a run or the CLI


def raise_interrupt(signum, frame) -> None:
    """Signal handler: raise Interrupted now, and again every half second until `interrupt_seen()`. Raised inside
    a weakref callback or `__del__` (garbage collection can run anywhere), Python reports the exception as
    "ignored" and carries on, so one raise is not enough."""
    if not _pending:
        _pending.append(signum)
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0.5)
    raise Interrupted(signal.Signals(_pending[0]).name)


def _raise_again(signum, frame) -> None:
    if _pending:
        raise_interrupt(_pending[0], frame)


def interrupt_seen() -> None:
    """The interruption reached code that handles it: stop raising it again."""
    _pending.clear()
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)


@contextlib.contextmanager
def stop_on_signals(names: tuple[str, ...] = ("SIGINT", "SIGTERM", "SIGHUP")):
    """Inside this block the named signals end the work as Ctrl-C does (Interrupted, a KeyboardInterrupt),
    reliably; the previous handlers come back afterwards. A no-op outside the main thread."""
    previous = {}
    for name in (*names, "SIGALRM"):
        try:
            handler = _raise_again if name == "SIGALRM" else raise_interrupt
            previous[name] = signal.signal(getattr(signal, name), handler)
        except (AttributeError, ValueError):  # no such signal here, or not the main thread
            pass
    try:
        yield
    finally:
        if previous:
            interrupt_seen()
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


class RunRecorder:
    """`with RunRecorder(...) as run:` ... `run.result.update(...)`; `run.finish(metrics=...)` on success.

    Leaving the block by an exception records `interrupted` (Ctrl-C, SIGTERM) or `failed` (with the error)."""

    def __init__(self, name: str, output_dir: str | Path | None, config_yaml: str, result: dict[str, Any],
                 overwrite: bool = False, compute: dict[str, str] | None = None, resume: bool = False):
        """`resume` continues the paused run in `output_dir` (its metrics log and seconds go on)."""
        self.started = time.perf_counter()
        before: dict[str, Any] = {}
        if resume:  # result.json says `resuming_from` until the resumed part ends, so a cut-off resume resumes too
            self.dir = Path(output_dir)
            rung = paused_at(self.dir)
            if rung is None:
                raise SlmtuneError(f"{self.dir} holds no paused run to resume")
            before = {k: v for k, v in read_json(self.dir / RESULT).items() if k not in ("paused_at", "error")}
            before_seconds = before.pop("seconds_before", None)  # a resume cut off: what came before its pause
            seconds = before.pop("seconds", {})
            before.update(resuming_from=rung, seconds_before=seconds if before_seconds is None else before_seconds)
        else:
            self.dir = make_run_dir(name, str(output_dir) if output_dir else None, overwrite)
        atomic_write(self.dir / "config.yaml", config_yaml)
        write_json(self.dir / "env.json", {**environment(), **({"compute": compute} if compute else {})})
        self.log = MetricsLog(self.dir / "metrics.jsonl")
        self.before: dict[str, float] = before.get("seconds_before", {})
        """Seconds the run spent before it was paused (added to this part's)."""
        self.result: dict[str, Any] = {**before, "status": "running", **result}
        self.seconds: dict[str, float] = {}
        self.save()
        self._signals = None

    def save(self) -> None:
        write_json(self.dir / RESULT, self.result)

    def finish(self, **values: Any) -> None:
        """Mark the run successful with `values` (metrics, samples/s, ...) and the seconds spent (with those
        spent before a pause)."""
        self.seconds["total"] = time.perf_counter() - self.started + self.before.get("total", 0.0)
        for key in ("resuming_from", "seconds_before"):
            self.result.pop(key, None)
        self.result.update(status="success", seconds=self._rounded(), **values)
        self.save()

    def _rounded(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in self.seconds.items()}

    def __enter__(self) -> RunRecorder:
        self._signals = stop_on_signals(("SIGTERM",))  # a killed run ends like a Ctrl-C: status interrupted
        self._signals.__enter__()
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        try:
            if exc is not None:
                self.seconds["total"] = time.perf_counter() - self.started
                if isinstance(exc, KeyboardInterrupt):
                    interrupt_seen()  # no second raise while the status is written
                    self.result.update(status="interrupted", seconds=self._rounded())
                else:
                    self.result.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500],
                                       seconds=self._rounded())
                self.save()
        finally:
            self._signals.__exit__(None, None, None)
        return False
