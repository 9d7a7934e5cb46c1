"""`slmtune tune --workers N`: the candidates of one racing rung trained side by side, each in a process of its own.

A job is one candidate's training to a rung, decided by tune (slmtune.experiments.tune): its run config, its run
folder, the rung it pauses at and the deadline it stops by. `run_jobs` keeps up to N jobs training at once, CPU
threads divided between them, starting the next as one ends; each process runs this module on a job file
(`python -m slmtune.experiments.tune_workers JOB.json`), draws the same sample of the same splits as the search,
trains with its output in the candidate's log, and exits 0, or 2 after one line saying what was wrong. Ctrl-C,
SIGTERM or SIGHUP of the search stop the processes too, and a process whose search was killed (SIGKILL) stops at
its next step; each leaves its run folder as a stopped run does: resumable from its last checkpoint.

With a storage URL (`--storage`), a rung's jobs go through a run queue instead (Optuna's RDB storage, as the studies'
queue, slmtune.experiments.queue): the search trains them itself, one after another, and so does every
`slmtune tune --worker --storage URL` started on a machine that sees the same search folder; a worker waits for
the next rung until the search says it has ended. A worker that is stopped puts its job back in the queue; one
that dies is noticed by its missing heartbeat and its job queued again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmtune import runs
from slmtune.errors import SlmtuneError

STOP_WAIT_S = 120.0
"""Seconds a worker process stopped by the search may take to save its run folder before it is killed."""
IDLE_EXIT_S = 15.0
"""Seconds a queue worker started by the search is given to notice that the search has ended and exit by itself
(it polls the queue every second, or every heartbeat while it waits for jobs of other processes)."""


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


def spec_of(job: Job) -> dict[str, Any]:
    """What a job file (or a queued job) holds: the job, its deadline as wall-clock time (monotonic clocks are not
    shared between processes, nor between machines)."""
    stop_at = None if job.stop_by is None else time.time() + job.stop_by - time.monotonic()
    return {"name": job.name, "config": job.config, "folder": str(job.folder), "rows": job.rows,
            "pause_epoch": job.pause_epoch, "log": str(job.log), "resume": job.resume, "stop_at": stop_at}


def job_of(spec: dict[str, Any], parent: int | None = None) -> Job:
    """The job a job file or queued job describes, its deadline on this process's monotonic clock."""
    stop_at = spec["stop_at"]
    return Job(spec["name"], spec["config"], Path(spec["folder"]), spec["rows"], spec["pause_epoch"],
               None if stop_at is None else time.monotonic() + stop_at - time.time(), spec["resume"],
               Path(spec["log"]), parent=parent)


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
        runs.write_json(path, spec_of(job))
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
            _reap(processes)


QUEUE = "tune"
"""The name of a search's run queue in its storage (one search per storage, as one study per storage)."""


def _queue(url: str, create: bool, wait_for_queue: float = 60.0):
    from slmtune.experiments.queue import HEARTBEAT, load_when_created, open_storage, require_optuna

    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url, HEARTBEAT)
    if create:
        return optuna.create_study(study_name=QUEUE, storage=storage, load_if_exists=True)
    return load_when_created(QUEUE, storage, f"no tune search in {url} yet: start `slmtune tune --storage "
                                              f"{url}` first", wait_for_queue)


def open_search_queue(url: str):
    """The search's queue (created when new), marked as running: workers wait for its rungs until `end_queue`. Each
    start of the search is a new session: jobs an earlier one left queued (it was stopped) are not trained."""
    import uuid

    queue = _queue(url, create=True)
    queue.set_user_attr("session", uuid.uuid4().hex)
    queue.set_user_attr("ended", False)
    return queue


def end_queue(queue) -> None:
    """Tell the workers the search has ended (finished, stopped or failed): they exit once idle."""
    queue.set_user_attr("ended", True)


def _objective(progress):
    """The queue's objective: train the job a trial names here; its outcome (an error message, or none) is kept on
    the trial for the search to read."""
    import shutil

    from slmtune.experiments.queue import QueueEmpty

    def objective(trial) -> float:
        key = trial.user_attrs.get("job")
        if key is None:  # the queue was empty when this trial started
            raise QueueEmpty
        spec = trial.study.user_attrs[f"job-{key}"]
        if spec.get("session") != trial.study.user_attrs.get("session"):  # left by a stopped, since restarted search
            trial.set_user_attr("error", "queued by an earlier start of the search")
            return 0.0
        job = job_of(spec)
        if not job.resume and job.folder.exists():  # a retry of a job whose process died: it starts over
            shutil.rmtree(job.folder)
        progress(f"tune worker {os.getpid()}: {job.name} (log {job.log})")
        try:
            train_job(job)
        except KeyboardInterrupt:  # this worker was stopped: its job goes back to the queue for another process
            trial.study.enqueue_trial({}, user_attrs={"job": key, "retry_of": trial.number}, skip_if_exists=False)
            raise
        except SlmtuneError as exc:
            trial.set_user_attr("error", str(exc))
        except Exception as exc:  # a crash in training: the search reads it from the trial, the details from the log
            said = (str(exc).splitlines() or [""])[0][:160]
            trial.set_user_attr("error", f"its training failed ({type(exc).__name__}: {said}; the whole output is "
                                         f"in {job.log})")
        trial.set_user_attr("pid", os.getpid())
        return 0.0

    return objective


def queue_jobs(queue, jobs: list[Job], progress=print) -> dict[str, str | None]:
    """Queue `jobs`, train them with every process that takes from the queue (this one included) until none waits
    or runs, and return each job's outcome by name: None when it trained, else its error."""
    import uuid

    from optuna.trial import TrialState

    from slmtune.experiments.queue import HEARTBEAT, drain

    keys = {}
    for job in jobs:
        keys[job.name] = key = uuid.uuid4().hex
        queue.set_user_attr(f"job-{key}", {**spec_of(job), "session": queue.user_attrs["session"]})
        queue.enqueue_trial({}, user_attrs={"job": key}, skip_if_exists=False)
    drain(queue, _objective(progress), HEARTBEAT, on_wait=lambda n: progress(
        f"tune: waiting for {n} job(s) training in other worker processes"), progress=progress)
    done = {t.user_attrs.get("job"): t for t in queue.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    out: dict[str, str | None] = {}
    for name, key in keys.items():
        trial = done.get(key)  # the job's trial, or its retry's (queued again when its process died)
        out[name] = "its job never finished (every process that took it died)" if trial is None else \
            trial.user_attrs.get("error")
    return out


def serve_queue(url: str, progress=print, wait_for_queue: float = 60.0) -> int:
    """`slmtune tune --worker`: take the search's queued jobs, rung after rung, until the search has ended; returns
    how many this process trained."""
    from slmtune.experiments.queue import HEARTBEAT, completed, drain, poll, waiting

    queue = _queue(url, create=False, wait_for_queue=wait_for_queue)
    mine = os.getpid()
    while True:
        drain(queue, _objective(progress), HEARTBEAT, progress=progress)
        if queue.user_attrs.get("ended"):
            return sum(t.user_attrs.get("pid") == mine for t in completed(queue))
        poll(lambda: waiting(queue) or queue.user_attrs.get("ended"), seconds=3600.0)


@contextmanager
def local_workers(count: int, url: str, root: Path) -> Iterator[None]:
    """`count` worker processes on this machine taking from the search's queue (`slmtune tune --worker`), this
    machine's CPU threads divided between them and this process; stopped with the search."""
    from slmtune.experiments.workers import Execution
    from slmtune.trainer import thread_budget

    if count < 1:
        yield
        return
    threads = Execution(workers=count + 1).threads
    env = {**os.environ, "SLMTUNE_THREADS": str(threads)}
    command = [sys.executable, "-m", "slmtune.cli", "tune", "--worker", "--storage", url, "--output-dir", str(root)]
    children = [subprocess.Popen(command, env=env) for _ in range(count)]
    try:
        with thread_budget(threads):
            yield
    finally:
        for child in children:
            try:  # the search has ended: an idle worker exits within a poll of the queue
                child.wait(timeout=IDLE_EXIT_S)
            except subprocess.TimeoutExpired:  # still training (the search was stopped): its run folder is kept
                child.terminate()
        _reap(children)


def _reap(processes: list[subprocess.Popen]) -> None:
    """Wait for stopped worker processes to save their run folders, killing any still alive after STOP_WAIT_S."""
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
    from slmtune.runs.recorder import stop_on_signals

    args = sys.argv[1:] if argv is None else argv
    job = job_of(runs.read_json(args[0]), parent=os.getppid())
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
