"""Several workers on one study: runs go through a queue in Optuna's storage; each run is trained once, and the
results equal a one-worker study's."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import gated_env, started, tiny_overrides, wait_until
from slmtune.experiments.queue import open_storage

pytest.importorskip("optuna")


def _seeds_file(tmp_path, tiny_models, synthetic_files, seeds, epochs=12):
    run = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": epochs, "train.max_evals": 2})
    run["data"].update(train_size=48, val_size=12)
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump({"study": "seeds", "name": "s", "run": run, "seeds": seeds}))
    return path


def _command(study_file, study_dir, *extra, storage=None) -> list[str]:
    return [sys.executable, "-m", "slmtune.cli", "seeds", "--config", str(study_file), "--study-dir",
            str(study_dir), *extra, *(["--storage", storage] if storage else [])]


def _seeds(study_file, study_dir, *extra, storage=None):
    return subprocess.run(_command(study_file, study_dir, *extra, storage=storage), capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _accuracies(study_dir):
    rows = json.loads((study_dir / "summary.json").read_text())["rows"]
    return sorted((r["seed"], r["test_accuracy"]) for r in rows)


def _trained_once(study_dir):
    """Every run folder finished, and each trained exactly once (one test line in its metrics log)."""
    folders = sorted(study_dir.glob("runs/*"))
    for folder in folders:
        assert json.loads((folder / "result.json").read_text())["status"] == "success", folder
        lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert sum(line.get("split") == "test" for line in lines) == 1, folder
    return len(folders)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_train_each_run_once_with_the_results_of_one(tiny_models, synthetic_files, tmp_path, request,
                                                                 backend):
    storage = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    if storage:  # a fresh database schema per test run: the queue study is named `runs`
        import uuid

        import sqlalchemy

        schema = f"q{uuid.uuid4().hex[:8]}"
        with sqlalchemy.create_engine(storage).begin() as connection:
            connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
        storage = f"{storage}?options=-csearch_path%3D{schema}"
    # every run waits at its first step until both processes hold one (tests/gate): each of them trains
    study_file = _seeds_file(tmp_path, tiny_models, synthetic_files, [1, 2, 3, 4], epochs=2)
    gate = tmp_path / "gate"
    proc = subprocess.Popen(_command(study_file, tmp_path / "parallel", "--workers", "2", storage=storage),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=gated_env(gate))
    wait_until(lambda: len({name.split("-")[1] for name in started(gate)}) == 2 or proc.poll() is not None,
               what="two worker processes each training a run")
    (gate / "go").touch()
    out, err = proc.communicate(timeout=600)
    parallel = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert parallel.returncode == 0, parallel.stdout[-3000:] + parallel.stderr[-3000:]
    assert "queue: 4 run(s) to train, 2 worker(s) with 1 CPU thread(s) each" in parallel.stdout
    workers = set(re.findall(r"worker (\d+):", parallel.stdout + parallel.stderr))
    assert len(workers) == 2, parallel.stdout[-3000:]  # both processes trained runs
    assert _trained_once(tmp_path / "parallel") == 4
    serial = _seeds(study_file, tmp_path / "serial")
    assert serial.returncode == 0, serial.stderr[-3000:]
    assert _accuracies(tmp_path / "parallel") == _accuracies(tmp_path / "serial")
    again = _seeds(study_file, tmp_path / "parallel", "--workers", "2", storage=storage)  # nothing left to train
    assert again.returncode == 0 and "queue: 0 run(s) to train" in again.stdout
    assert _trained_once(tmp_path / "parallel") == 4


@pytest.mark.slow
def test_sweep_with_two_workers_completes_every_point_once(tiny_models, synthetic_files, tmp_path):
    import optuna

    run = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 12, "train.max_evals": 2})
    run["data"].update(train_size=48, val_size=12)
    study_file = tmp_path / "grid.yaml"
    study_file.write_text(yaml.safe_dump({"study": "sweep", "name": "grid", "run": run,
                                          "space": {"train.learning_rate": [0.01, 0.02, 0.03, 0.04]},
                                          "race": False}))  # each point trained once, to the end
    done = subprocess.run([sys.executable, "-m", "slmtune.cli", "sweep", "--config", str(study_file), "--study-dir",
                           str(tmp_path / "g"), "--workers", "2"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{tmp_path / 'g' / 'optuna.db'}")
    complete = sorted(t.params["train.learning_rate"] for t in study.trials if t.state.name == "COMPLETE")
    assert complete == [0.01, 0.02, 0.03, 0.04]
    assert _trained_once(tmp_path / "g") == 4


def _pop_all(url: str, out) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="q", storage=open_storage(url))
    taken = []
    while (trial_id := study._pop_waiting_trial_id()) is not None:
        taken.append(trial_id)
    out.put(taken)


@pytest.mark.slow
def test_processes_popping_one_sqlite_queue_never_take_a_trial_twice(tmp_path):
    """SQLite ignores SELECT ... FOR UPDATE: without IMMEDIATE transactions (queue.open_storage) three processes
    popping 300 queued trials took 11 of them twice here; each trial must go to exactly one process."""
    import multiprocessing

    import optuna

    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=open_storage(url))
    for i in range(300):
        study.enqueue_trial({"x": i}, skip_if_exists=False)
    out = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_pop_all, args=(url, out)) for _ in range(3)]
    for process in processes:
        process.start()
    taken = [trial_id for _ in processes for trial_id in out.get(timeout=300)]
    for process in processes:
        process.join()
    assert len(taken) == 300 and len(set(taken)) == 300


def test_poll_returns_the_first_ready_value_or_none_at_the_deadline():
    from slmtune.experiments.queue import poll

    answers = iter([None, [], {"trial": 3}, "never asked"])
    assert poll(lambda: next(answers), seconds=60, interval=0) == {"trial": 3}
    asked = []
    assert poll(lambda: asked.append(1), seconds=0, interval=0) is None and asked == [1]  # asked once, then given up


def _open_at_once(url: str, barrier, out) -> None:
    barrier.wait()  # every process opens the new database at the same moment
    try:
        open_storage(url)
        out.put("opened")
    except Exception as exc:  # noqa: BLE001 - the test reports what a process said
        out.put(str(exc))


def test_processes_opening_one_new_storage_at_once_all_open_it(tmp_path):
    """Optuna creates a new storage's tables check-then-create: 3 processes opening a new SQLite file at once failed
    9 times in 60 here ("table studies already exists", a duplicate schema version row) before open_storage tried
    again; a worker started beside its search is exactly that."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for round_ in range(6):
        url = f"sqlite:///{tmp_path / f'new{round_}.db'}"
        barrier, out = context.Barrier(3), context.Queue()
        processes = [context.Process(target=_open_at_once, args=(url, barrier, out)) for _ in range(3)]
        for process in processes:
            process.start()
        said = [out.get(timeout=120) for _ in processes]
        for process in processes:
            process.join()
        assert said == ["opened"] * 3, said


def test_opening_a_storage_tries_again_only_while_another_process_creates_its_tables():
    from sqlalchemy.exc import OperationalError

    from slmtune.experiments.queue import _created

    attempts = []

    def racing():
        attempts.append(1)
        if len(attempts) < 3:
            raise OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
        return "storage"

    assert _created(racing) == "storage" and len(attempts) == 3

    def unreachable():
        attempts.append(1)
        raise OperationalError("connect", {}, Exception("unable to open database file"))

    attempts.clear()
    with pytest.raises(OperationalError):
        _created(unreachable)
    assert len(attempts) == 1  # a storage that cannot be opened is said at once
