"""Several runs at once: a study's planned runs go into a queue kept in Optuna's RDB storage (SQLite in the
study folder, or a server URL that several machines share), and worker processes take them one at a time.

Each queued run is an Optuna trial whose user attribute `run` names a job; the job (the run's config and the
study folder it belongs to) is a study attribute. Workers heartbeat their trials like sweep trials do, so a
worker that dies mid-run has its trial failed and its run queued again; a finished run folder is never
trained twice. When the queue is empty, the study itself runs as usual and finds its runs done (results kept
outside run folders, such as few-shot probe rows, are still computed by that last pass).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from slmtune.config import RunConfig, from_dict
from slmtune.errors import SlmtuneError
from slmtune.experiments.common import Study, digest, run_key
from slmtune.experiments.sweep import _GridExhausted, _require_optuna, drain, load_when_created, open_storage

QUEUE = "runs"
HEARTBEAT = 10


def queue_url(root: str | Path, storage: str | None = None) -> str:
    """The queue's storage: `storage`, else a SQLite file in the study folder."""
    return storage or f"sqlite:///{(Path(root) / 'queue.db').resolve()}"


def _job_id(folder: Path, config: RunConfig) -> str:
    return digest([str(Path(folder).resolve()), run_key(config)])


def fill_queue(items: list[tuple[Path, RunConfig]], url: str, heartbeat: int = HEARTBEAT) -> int:
    """Queue every (study folder, run config) whose run is not finished, queued or running; returns how many."""
    optuna = _require_optuna()
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    queue = optuna.create_study(study_name=QUEUE, storage=open_storage(url, heartbeat), load_if_exists=True)
    optuna.storages.fail_stale_trials(queue)
    held = {t.user_attrs.get("run") for t in queue.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING))}
    added = 0
    for folder, config in items:
        job = _job_id(folder, config)
        if job in held or Study(folder).finished(config):
            continue
        queue.set_user_attr(f"job-{job}", {"folder": str(Path(folder).resolve()), "config": config.to_dict()})
        queue.enqueue_trial({}, user_attrs={"run": job}, skip_if_exists=False)
        held.add(job)
        added += 1
    return added


def work(url: str, heartbeat: int = HEARTBEAT, progress=print, wait_for_queue: float = 60.0) -> int:
    """Take queued runs until none is waiting and none runs elsewhere; returns how many this process trained."""
    optuna = _require_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    queue = load_when_created(QUEUE, open_storage(url, heartbeat),
                              f"no run queue in {url} yet: start the study without --worker first", wait_for_queue)
    trained = 0

    def objective(trial) -> float:
        nonlocal trained
        job = trial.user_attrs.get("run")
        if job is None:  # the queue was empty when this trial started: nothing to do
            raise _GridExhausted
        spec = trial.study.user_attrs[f"job-{job}"]
        config = from_dict(spec["config"])
        result = Study(spec["folder"]).run(config)
        trained += not result["reused"]
        progress(f"  worker {os.getpid()}: {config.name} -> test accuracy "
                 f"{result['metrics']['test']['accuracy']:.4f}{' (reused)' if result['reused'] else ''}")
        return float(result["metrics"]["test"]["accuracy"])

    drain(queue, objective, heartbeat)
    return trained


def threads_per_worker(workers: int) -> int:
    """CPU threads for each of `workers` processes on this machine (at least 1)."""
    return max(1, (os.cpu_count() or 1) // workers)


def run_workers(items: list[tuple[Path, RunConfig]], root: str | Path, workers: int, storage: str | None = None,
                worker_argv: list[str] | None = None, progress=print) -> int:
    """Queue `items` and train them with `workers` processes: this one and `workers - 1` copies of the command
    (`worker_argv`, which joins the queue). CPU threads are divided between them. Returns the runs queued."""
    Path(root).mkdir(parents=True, exist_ok=True)
    url = queue_url(root, storage)
    added = fill_queue(items, url)
    progress(f"queue: {added} run(s) to train, {workers} worker(s) with {threads_per_worker(workers)} CPU "
             f"thread(s) each; storage {url.split('@')[-1]}")
    env = {**os.environ, "SLMTUNE_THREADS": str(threads_per_worker(workers))}
    children = [subprocess.Popen(worker_argv, env=env) for _ in range(workers - 1)] if worker_argv else []
    previous = os.environ.get("SLMTUNE_THREADS")
    os.environ["SLMTUNE_THREADS"] = env["SLMTUNE_THREADS"]
    try:
        work(url, progress=progress)
        failed = [c.args for c in children if c.wait() != 0]
    finally:
        for child in children:
            if child.poll() is None:  # interrupted: the workers stop too (their runs are marked interrupted)
                child.terminate()
                child.wait()
        if previous is None:
            os.environ.pop("SLMTUNE_THREADS", None)
        else:
            os.environ["SLMTUNE_THREADS"] = previous
    if failed:
        raise SlmtuneError(f"{len(failed)} worker process(es) failed; rerun the command to finish their runs")
    return added


def worker_command(argv: list[str]) -> list[str]:
    """The CLI command of a worker: the same command line, `--workers N` dropped and `--worker` added."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return [sys.executable, "-m", "slmtune.cli", *out, "--worker"]


def run_study(module, cfg, study_dir: str | Path | None, overrides: list[str], options: dict, workers: int = 1,
              storage: str | None = None, worker: bool = False, argv: list[str] | None = None,
              progress=print) -> dict | None:
    """One study command with workers: `worker` only takes queued runs (None is returned); `workers` > 1 or a
    shared `storage` first trains the study's planned runs through the queue, then runs the study, which
    reuses them. A sweep is its own queue: its extra workers are copies of the command with `--worker`."""
    root = Path(study_dir or Path("studies") / cfg.name)
    if module.__name__.endswith(".sweep"):
        children = []
        if workers > 1 and not options.get("worker"):
            env = {**os.environ, "SLMTUNE_THREADS": str(threads_per_worker(workers))}
            os.environ["SLMTUNE_THREADS"] = env["SLMTUNE_THREADS"]
            children = [subprocess.Popen(worker_command(argv or []), env=env) for _ in range(workers - 1)]
        try:
            summary = module.run(cfg, study_dir, overrides, **options)
        except BaseException:  # interrupted or failed: the workers stop too (their trials come back on a rerun)
            for child in children:
                child.terminate()
                child.wait()
            raise
        if any(child.wait() != 0 for child in children):
            raise SlmtuneError("a sweep worker failed; rerun the command to finish its trials")
        return summary
    if worker:
        progress(f"worker: trained {work(queue_url(root, storage), progress=progress)} run(s)")
        return None
    if workers > 1 or storage:
        from slmtune.experiments.common import data_sizes, load_run_config

        base = load_run_config(cfg.recipe, cfg.run, overrides)
        configs, _ = module.plan(cfg, base, overrides, data_sizes(base), root)
        run_workers([(root, config) for config in configs], root, workers, storage,
                    worker_command(argv or []), progress=progress)
    return module.run(cfg, study_dir, overrides, **options)
