"""`slmtune tune --workers N`: the candidates of one racing rung trained side by side, each in a process of its own.

A job is one candidate's training to a rung, decided by tune (slmtune.experiments.tune): its run config, its run
folder, the rung it pauses at and the deadline it stops by. `run_jobs` keeps up to N jobs training at once, CPU
threads divided between them, starting the next as one ends; each process runs this module on a job file
(`python -m slmtune.experiments.tune_workers JOB.json`), draws the same sample of the same splits as the search,
trains with its output in the candidate's log, and exits 0, or 2 after one line saying what was wrong. Ctrl-C,
SIGTERM or SIGHUP of the search stop the processes too, and a process whose search was killed (SIGKILL) stops at
its next step; each leaves its run folder as a stopped run does: resumable from its last checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmtune import runs

STOP_WAIT_S = 120.0
"""Seconds a worker process stopped by the search may take to save its run folder before it is killed."""


@dataclass
class Job:
    """One candidate's training to a rung, as the search decided it."""

    name: str
    """The candidate's name (its log is logs/<name>.log)."""
    config: dict[str, Any]
    """The run config, as RunConfig.to_dict() gives it."""
    folder: Path
    """The candidate's run folder."""
    rows: int
    """Training rows of the sample the candidate trains on (the search's stratified sample, or every row)."""
    pause_epoch: float | None
    """The rung's epoch, or None when the rung is the schedule's end."""
    stop_by: float | None
    """time.monotonic() deadline by which training stops at the next step (None: a probe, nothing to stop)."""
    resume: bool
    """Resume from the candidate's checkpoint (paused at the previous rung) instead of starting over."""
    log: Path
    """The candidate's log (logs/<name>.log), which its worker process writes to; the job file sits beside it."""
    parent: int | None = None
    """In a worker process: the search's process id; training stops as Ctrl-C stops it when that process is gone
    (killed by SIGKILL, which it cannot pass on), so that no orphan trains on into a folder a rerun reuses."""

    def pause(self):
        """The Trainer callback that pauses training at the rung or the deadline (None for a probe)."""
        from slmtune.trainer import PauseAt

        if self.stop_by is None:
            return None
        parent = self.parent

        class Pause(PauseAt):
            def on_step_end(self, args, state, control, **kwargs):
                if parent is not None and os.getppid() != parent:
                    raise KeyboardInterrupt  # the run folder is saved as a stopped run's
                return super().on_step_end(args, state, control, **kwargs)

        return Pause(epoch=self.pause_epoch, deadline=self.stop_by)


def sample(splits, rows: int, seed: int):
    """The splits (slmtune.data.Splits) with a seeded, class-stratified sample of `rows` training rows (all of them
    when there are no more): what the encoder candidates train on."""
    if rows >= len(splits.train):
        return splits
    from slmtune.data.splits import Splits, stratified_indices

    keep = stratified_indices(splits.train.strata(), rows, seed)
    return Splits(splits.train.subset(sorted(keep)), splits.validation, splits.test)


def train_job(job: Job, splits=None) -> None:
    """Train `job` here, its output appended to its log: the splits given, else drawn as the search drew them."""
    import contextlib

    from slmtune.config import from_dict
    from slmtune.train import train

    config = from_dict(job.config)
    if splits is None:
        from slmtune.data import load_splits

        splits = sample(load_splits(config.data, config.seed), job.rows, config.seed)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with job.log.open("a", encoding="utf-8") as handle, contextlib.redirect_stdout(handle), \
            contextlib.redirect_stderr(handle):
        train(config, splits=splits, run_dir=job.folder, pause=job.pause(), resume=job.resume, score_test=False)


def run_jobs(todo: list[Any], prepare: Callable[[Any, int], Job | None],
             finish: Callable[[Job, int, int], None], workers: int, threads: int) -> None:
    """Train the jobs that `prepare(item, concurrency)` makes of `todo`, in order, up to `workers` at once in
    processes of `threads` CPU threads each; `finish(job, exit code, concurrency)` is called in this thread as
    each ends. `concurrency` is how many jobs are expected to train side by side while that one does (what its
    time estimate and its measured speed are scaled by). prepare returns None for an item that needs no
    training (or that the time left cannot hold)."""
    pending = list(todo)
    running: dict[Any, tuple[Job, int]] = {}
    processes: list[subprocess.Popen] = []
    lock, stopping = threading.Lock(), threading.Event()

    def launch(job: Job) -> int:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        path = job.log.parent / f"{job.name}.job.json"
        stop_at = None if job.stop_by is None else time.time() + job.stop_by - time.monotonic()
        runs.write_json(path, {"name": job.name, "config": job.config, "folder": str(job.folder), "rows": job.rows,
                               "pause_epoch": job.pause_epoch, "log": str(job.log), "resume": job.resume,
                               "stop_at": stop_at})
        env = {**os.environ, "SLMTUNE_THREADS": str(threads)}
        with lock:
            if stopping.is_set():
                return -1
            with job.log.open("a", encoding="utf-8") as log:  # the child writes its own output there too
                process = subprocess.Popen([sys.executable, "-m", "slmtune.experiments.tune_workers", str(path)],
                                           env=env, stdout=log, stderr=subprocess.STDOUT)
            processes.append(process)
        return process.wait()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            while pending or running:
                while pending and len(running) < workers:
                    concurrency = min(workers, len(running) + len(pending))
                    job = prepare(pending.pop(0), concurrency)
                    if job is not None:
                        running[pool.submit(launch, job)] = (job, concurrency)
                if not running:
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job, concurrency = running.pop(future)
                    finish(job, future.result(), concurrency)
        finally:
            with lock:
                stopping.set()
                for process in processes:
                    if process.poll() is None:  # stopped: each saves its run folder as a stopped run does
                        process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=STOP_WAIT_S)
                except subprocess.TimeoutExpired:  # a hung worker: the bound, never a synchronisation
                    process.kill()


def last_line(path: Path) -> str:
    """The last non-empty line of a log: what a worker process that failed said last."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line), "")


def main(argv: list[str] | None = None) -> int:
    """A worker process: train the job in the file named by the first argument."""
    from slmtune.errors import SlmtuneError
    from slmtune.runs.recorder import stop_on_signals

    args = sys.argv[1:] if argv is None else argv
    spec = runs.read_json(args[0])
    stop_at = spec["stop_at"]  # wall-clock time: monotonic clocks are not shared between processes
    job = Job(spec["name"], spec["config"], Path(spec["folder"]), spec["rows"], spec["pause_epoch"],
              None if stop_at is None else time.monotonic() + stop_at - time.time(), spec["resume"], Path(spec["log"]),
              parent=os.getppid())
    try:
        with stop_on_signals(("SIGTERM", "SIGHUP")):  # stopped by the search: the run folder kept, resumable
            train_job(job)
    except SlmtuneError as exc:
        print(f"slmtune: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
