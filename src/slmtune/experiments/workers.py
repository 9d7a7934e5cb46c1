"""Several runs at once: how a study executes (`Execution`), and the worker processes that train its planned runs
through the run queue (slmtune.experiments.queue).

A study with workers first queues every planned run that is not finished, trains them with this process and
`workers - 1` copies of its command (`--worker`), CPU threads divided between them, then runs the study itself,
which finds its runs done (results kept outside run folders, such as few-shot probe rows, are computed by that
last pass). A study whose trials are its own queue (a sweep: `OWN_QUEUE`) gets its extra workers directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from slmtune.config import RunConfig
from slmtune.errors import SlmtuneError
from slmtune.experiments.queue import fill_queue, queue_url, work


@dataclass(frozen=True)
class Execution:
    """How a study executes: alone in this process, with worker processes, or as a worker of a study started
    elsewhere."""

    workers: int = 1
    """Processes training at once, this one included; CPU threads are divided between them."""
    storage: str | None = None
    """The queue's storage URL, shared by machines; None: SQLite in the study folder."""
    worker: bool = False
    """Only take runs from the queue of a study started elsewhere (same folder and storage)."""
    argv: tuple[str, ...] = ()
    """The command line, which the extra workers run again with `--worker`."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise SlmtuneError(f"--workers must be at least 1, got {self.workers}")

    @property
    def threads(self) -> int:
        """CPU threads for each of the worker processes on this machine (at least 1)."""
        return max(1, (os.cpu_count() or 1) // self.workers)

    @property
    def queued(self) -> bool:
        """Whether planned runs go through the queue first (several workers, or a queue other machines share)."""
        return self.workers > 1 or self.storage is not None

    def worker_command(self) -> list[str]:
        """The command of an extra worker: the same command line, `--workers N` dropped and `--worker` added."""
        out, skip = [], False
        for arg in self.argv:
            if skip:
                skip = False
            elif arg == "--workers":
                skip = True
            elif not arg.startswith("--workers="):
                out.append(arg)
        return [sys.executable, "-m", "slmtune.cli", *out, "--worker"]

    @contextmanager
    def extra_workers(self) -> Iterator[list[subprocess.Popen]]:
        """`workers - 1` copies of the command, each told its thread count, while this process trains with the
        same count; stopped with it when it is interrupted or fails."""
        from slmtune.trainer import thread_budget

        env = {**os.environ, "SLMTUNE_THREADS": str(self.threads)}
        children = [subprocess.Popen(self.worker_command(), env=env) for _ in range(self.workers - 1)]
        try:
            with thread_budget(self.threads):
                yield children
        finally:
            for child in children:
                if child.poll() is None:  # interrupted: the workers stop too (their runs come back on a rerun)
                    child.terminate()
                    child.wait()


ALONE = Execution()
"""One process, no queue: how a study runs unless told otherwise."""


def run_workers(items: list[tuple[Path, RunConfig]], root: str | Path, execution: Execution, progress=print) -> int:
    """Queue `items` (study folder, run config) and train them with `execution.workers` processes. Returns the
    runs queued."""
    Path(root).mkdir(parents=True, exist_ok=True)
    url = queue_url(root, execution.storage)
    added = fill_queue(items, url)
    progress(f"queue: {added} run(s) to train, {execution.workers} worker(s) with {execution.threads} CPU "
             f"thread(s) each; storage {url.split('@')[-1]}")
    with execution.extra_workers() as children:
        work(url, progress=progress)
        failed = [c.args for c in children if c.wait() != 0]
    if failed:
        raise SlmtuneError(f"{len(failed)} worker process(es) failed; rerun the command to finish their runs")
    return added


def run_study(module, cfg, study_dir: str | Path | None, overrides: list[str], options: dict,
              execution: Execution = ALONE, progress=print) -> dict | None:
    """One study command as `execution` says: a worker only takes queued runs (None is returned); several
    workers or a shared storage first train the study's planned runs through the queue, then the study runs and
    reuses them. A study that is its own queue (`OWN_QUEUE`) gets its extra workers as they are."""
    root = Path(study_dir or Path("studies") / cfg.name)
    if getattr(module, "OWN_QUEUE", False):
        if execution.workers == 1 or options.get("worker"):
            return module.run(cfg, study_dir, overrides, **options)
        with execution.extra_workers() as children:
            summary = module.run(cfg, study_dir, overrides, **options)
            if any(child.wait() != 0 for child in children):
                raise SlmtuneError("a sweep worker failed; rerun the command to finish its trials")
        return summary
    if execution.worker:
        progress(f"worker: trained {work(queue_url(root, execution.storage), progress=progress)} run(s)")
        return None
    if execution.queued:
        from slmtune.experiments.common import data_sizes, load_run_config

        base = load_run_config(cfg.recipe, cfg.run, overrides)
        configs, _ = module.plan(cfg, base, overrides, data_sizes(base), root)
        run_workers([(root, config) for config in configs], root, execution, progress=progress)
    return module.run(cfg, study_dir, overrides, **options)
