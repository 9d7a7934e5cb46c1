"""The run queue: Optuna's RDB storage (SQLite in a study folder, or a server URL that several machines share) as a
queue of trials that processes take one at a time, with heartbeats so that a dead process's trial comes back.

Sweeps queue grid points (each trial a point); studies with workers queue planned runs (each trial names a job:
a run config and the study folder it belongs to, kept as study attributes). `drain` is the one loop that takes
queued trials until none waits and none runs elsewhere; raced sweeps use it rung by rung.
"""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Any

from slmtune.config import RunConfig, from_dict
from slmtune.errors import SlmtuneError
from slmtune.experiments.common import Study, digest, run_key


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise SlmtuneError("sweeps need Optuna: pip install 'slmtune[sweep]'") from None
    return optuna


class QueueEmpty(Exception):
    """A trial found no queued work: the process taking trials stops."""


def queued_only_sampler():
    import optuna

    class GridOnly(optuna.samplers.RandomSampler):
        """Grid trials come from the queue only; a trial that finds the queue empty ends the worker."""

        def sample_independent(self, study, trial, param_name, param_distribution):
            raise QueueEmpty

    return GridOnly()


def open_storage(url: str, heartbeat: int = 10):
    """Optuna RDB storage with heartbeats: a trial whose process stops beating for 3 heartbeats is failed and
    its point queued again (once, by whichever process notices first); a live trial is never taken over."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    # Optuna 5 names the callback for stale trials heartbeat_stale_trial_callback; Optuna 4 failed_trial_callback
    stale = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in
             inspect.signature(RDBStorage).parameters else "failed_trial_callback")
    try:
        engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None  # workers wait for locks
        storage = _created(lambda: RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                              grace_period=3 * heartbeat, **{stale: _retry_point}))
        if url.startswith("sqlite"):
            _immediate_transactions(storage.engine)
        return storage
    except (optuna.exceptions.OptunaError, ValueError, ImportError, OSError) as exc:
        raise SlmtuneError(f"cannot open the Optuna storage {url}: {_first_line(exc)}") from None
    except Exception as exc:  # SQLAlchemy connection errors and the like
        raise SlmtuneError(f"cannot open the Optuna storage {url}: {type(exc).__name__}: {_first_line(exc)}") from None


def _immediate_transactions(engine) -> None:
    """Every SQLite transaction of `engine` begins IMMEDIATE (SQLAlchemy's pysqlite recipe): SQLite ignores
    SELECT ... FOR UPDATE, so without it two processes could both read a trial as WAITING and both take it (seen:
    two workers training one queued run, the second then refused "Cannot tell a COMPLETE trial"). With the write
    lock taken at BEGIN, the read and the update of a queue pop happen in one locked transaction."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None  # the driver issues no BEGIN of its own

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners (Optuna's schema checks) are not reused


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def point_of(trial) -> dict[str, Any]:
    """A trial's whole grid point: fixed_params for queued trials (params holds only what was suggested)."""
    return trial.system_attrs.get("fixed_params") or trial.params


def _retry_point(study, trial) -> None:
    """Heartbeat-stale callback: the dead trial's point (or queued run, slmtune.experiments.workers) goes back in
    the queue."""
    job = {k: trial.user_attrs[k] for k in ("run", "rung", "level", "job") if k in trial.user_attrs}  # its work
    study.enqueue_trial(point_of(trial), user_attrs={"retry_of": trial.number, **job}, skip_if_exists=False)


def queue_missing(study, points: list[dict[str, Any]], skip: set[int] | frozenset = frozenset()) -> int:
    """Queue every grid point that has no finished, waiting or running trial: all of them on a new sweep; on a
    rerun, those whose trial was stopped by Ctrl-C, SIGTERM or an error (Optuna marks it FAIL), and those whose
    finished trial is in `skip` (its run folder was found damaged). Running trials are left to their owners'
    heartbeats."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
    held = [point_of(t) for t in study.get_trials(deepcopy=False, states=live) if t.number not in skip]
    count = 0
    for point in points:
        if point not in held:
            study.enqueue_trial(point, skip_if_exists=False)
            count += 1
    return count


def poll(ready, seconds: float, interval: float = 1.0):
    """`ready()`'s first truthy value, asked every `interval` seconds for up to `seconds`; None after that. A
    storage shared by processes (SQLite, PostgreSQL) has nothing to wait on but its rows."""
    deadline = time.monotonic() + seconds
    while True:
        value = ready()
        if value or time.monotonic() > deadline:
            return value or None
        time.sleep(interval)


SCHEMA_TRIES = 20
"""Times opening a new storage is tried while other processes create its tables at the same moment."""


def _created(open_storage):
    """`open_storage()`, tried again while it fails because another process is creating the same new storage's
    tables: Optuna creates them check-then-create (SQLAlchemy's create_all), so two processes that open a new
    database at once can both see a table missing and one fails with "already exists" (or a duplicate schema
    version row). Once the other has created them, opening succeeds."""
    import random

    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(SCHEMA_TRIES):
        try:
            return open_storage()
        except (IntegrityError, OperationalError, ProgrammingError) as exc:
            said = str(exc).lower()
            racing = any(w in said for w in ("already exists", "unique constraint", "duplicate", "locked"))
            if not racing or attempt == SCHEMA_TRIES - 1:
                raise
            time.sleep(random.uniform(0.05, 0.25))  # a backoff so that the other process finishes its tables


def load_when_created(name: str, storage, missing: str, seconds: float = 60.0):
    """The Optuna study `name`, waiting up to `seconds` for the process that creates it (workers start beside it);
    `missing` is the one-line error after that."""
    import optuna

    def loaded():
        try:
            return optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            return None

    study = poll(loaded, seconds)
    if study is None:
        raise SlmtuneError(missing)
    return study


def drain(optuna_study, objective, heartbeat: int, on_wait=None, progress=print) -> None:
    """Run the queued (WAITING) trials one at a time, then wait for those running in other processes: a live
    trial is its owner's, a dead one comes back through its heartbeat. `on_wait(n_running)` is called once."""
    import optuna

    optuna_study.sampler = queued_only_sampler()
    said = False
    returned, taken = [None], [False]  # the trial whose objective returned; refused an update of its failed trial

    def failed_elsewhere(trial_id: int) -> bool:
        return optuna_study._storage.get_trial(trial_id).state == optuna.trial.TrialState.FAIL

    def tracked(trial):
        try:
            value = objective(trial)
        except RuntimeError:  # Optuna's refusal to update a finished trial (UpdateFinishedTrialError from 5.0)
            taken[0] = failed_elsewhere(trial._trial_id)  # still running as far as this process knows
            raise
        returned[0] = trial._trial_id
        return value

    while True:
        if waiting(optuna_study):
            returned[0], taken[0] = None, False
            try:
                optuna_study.optimize(tracked, n_trials=1)
            except QueueEmpty:  # another process took the last waiting trial
                pass
            except (RuntimeError, ValueError):  # ValueError: Optuna's "cannot tell a FAIL trial"
                if not (taken[0] or (returned[0] is not None and failed_elsewhere(returned[0]))):
                    raise
                # this process fell silent for 3 heartbeats while it trained (a suspended laptop, a stalled
                # disk) and another one took it for dead: its trial was failed and its point queued again. The
                # run folder stays, and whoever takes the retry reuses it if it finished.
                progress(f"  a trial of this process was taken for dead by another one while it trained (no "
                         f"heartbeat for {3 * heartbeat}s); its retry reuses the run if it finished")
            continue
        live = running(optuna_study)
        if not live:
            return
        if on_wait and not said:
            on_wait(len(live))
            said = True
        time.sleep(heartbeat)
        optuna.storages.fail_stale_trials(optuna_study)


def completed(optuna_study) -> list:
    from optuna.trial import TrialState

    return optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def running(optuna_study) -> list:
    from optuna.trial import TrialState

    return optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def waiting(optuna_study) -> list:
    from optuna.trial import TrialState

    return optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


QUEUE = "runs"
HEARTBEAT = 10


def queue_url(root: str | Path, storage: str | None = None) -> str:
    """The queue's storage: `storage`, else a SQLite file in the study folder."""
    return storage or f"sqlite:///{(Path(root) / 'queue.db').resolve()}"


def _job_id(folder: Path, config: RunConfig) -> str:
    return digest([str(Path(folder).resolve()), run_key(config)])


def fill_queue(items: list[tuple[Path, RunConfig]], url: str, heartbeat: int = HEARTBEAT) -> int:
    """Queue every (study folder, run config) whose run is not finished, queued or running; returns how many."""
    optuna = require_optuna()
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
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    queue = load_when_created(QUEUE, open_storage(url, heartbeat),
                              f"no run queue in {url} yet: start the study without --worker first", wait_for_queue)
    trained = 0

    def objective(trial) -> float:
        nonlocal trained
        job = trial.user_attrs.get("run")
        if job is None:  # the queue was empty when this trial started: nothing to do
            raise QueueEmpty
        spec = trial.study.user_attrs[f"job-{job}"]
        config = from_dict(spec["config"])
        result = Study(spec["folder"]).run(config)
        trained += not result["reused"]
        progress(f"  worker {os.getpid()}: {config.name} -> test accuracy "
                 f"{result['metrics']['test']['accuracy']:.4f}{' (reused)' if result['reused'] else ''}")
        return float(result["metrics"]["test"]["accuracy"])

    drain(queue, objective, heartbeat, progress=progress)
    return trained
