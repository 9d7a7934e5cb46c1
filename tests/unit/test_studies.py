"""Sweeps and seed studies end to end on tiny random models."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import crashed, gated_env, tiny_overrides, wait_until
from slmtune import runs
from slmtune.cli import main
from slmtune.experiments.queue import open_storage, point_of, queue_missing
from slmtune.experiments.seeds import SeedsConfig, run_seeds
from slmtune.experiments.sweep import SweepConfig, grid_points, run_sweep

GRID = {"train.learning_rate": [0.01, 0.03], "train.weight_decay": [0.0, 0.01]}


def _run_section(tiny_models, synthetic_files, **extra):
    values = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 1, **extra})
    values["data"].update(train_size=48, val_size=12)
    return values


def _study_file(tmp_path, run, name="grid", space=GRID, **fields):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"study": "sweep", "name": name, "run": run, "space": space, **fields}))
    return path


def _finished_runs(study_dir: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime for p in study_dir.glob("runs/*/result.json")
            if runs.is_finished(p.parent)}


def test_grid_sweep_writes_summary_plots_and_best_config(tiny_models, synthetic_files, tmp_path):
    cfg = SweepConfig(name="g", run=_run_section(tiny_models, synthetic_files), space=GRID)
    summary = run_sweep(cfg, tmp_path / "g", progress=lambda *_: None)
    assert summary["trials"] == 4
    rows = json.loads((tmp_path / "g" / "summary.json").read_text())["rows"]
    assert sorted((r["train.learning_rate"], r["train.weight_decay"]) for r in rows) == [
        (0.01, 0.0), (0.01, 0.01), (0.03, 0.0), (0.03, 0.01)]
    assert all(r["test_accuracy"] is not None and r["trainable_params"] > 0 for r in rows)
    for name in ("heatmap.png", "surface.png", "sweep_learning_rate.png", "sweep_weight_decay.png"):
        assert (tmp_path / "g" / "plots" / name).stat().st_size > 5000, name
    best = yaml.safe_load((tmp_path / "g" / "best-config.yaml").read_text())
    assert summary["best"]["validation_accuracy"] == max(r["validation_accuracy"] for r in rows)
    assert best["train"]["learning_rate"] == summary["best"]["params"]["train.learning_rate"]
    assert best["train"]["weight_decay"] == summary["best"]["params"]["train.weight_decay"]
    # the same sweep again trains nothing: every trial is already done
    before = _finished_runs(tmp_path / "g")
    run_sweep(cfg, tmp_path / "g", progress=lambda *_: None)
    assert _finished_runs(tmp_path / "g") == before


def test_a_raced_grid_cuts_a_point_behind_at_its_first_rung_and_scores_only_the_rest_on_test(
        tiny_models, synthetic_files, tmp_path, monkeypatch):
    """Racing's wiring on real runs: the validation decisions are made to put lr=0.01 behind (all 40 rows wrong,
    the others all right), so it stops paused at epoch 1, never looks at the test rows, and is marked in the
    summary, the report and the plots; the others resume to the end, are scored on test and are tied. An
    exhaustive sweep beside it reuses their runs and trains lr=0.01 to the end (a paused run is never reused)."""
    import numpy as np

    from slmtune.experiments import sweep
    from slmtune.stats import row_counts

    def decisions(path):
        lr = yaml.safe_load((Path(path).parent / "config.yaml").read_text())["train"]["learning_rate"]
        gold = np.arange(40) % 4
        return "rows", row_counts(gold, (gold + (lr == 0.01)) % 4, 4)

    monkeypatch.setattr(sweep, "counts_of_predictions", decisions)
    run = _run_section(tiny_models, synthetic_files, **{"train.epochs": 2})
    space = {"train.learning_rate": [0.01, 0.02, 0.03]}
    messages = []
    summary = run_sweep(SweepConfig(name="r", run=run, space=space), tmp_path / "r", progress=messages.append)
    rows = {r["train.learning_rate"]: r for r in json.loads((tmp_path / "r" / "summary.json").read_text())["rows"]}
    assert rows[0.01]["cut_at"] == 1 and rows[0.01]["test_accuracy"] is None and rows[0.01]["epochs"] == 1
    cut_dir = Path(rows[0.01]["run_dir"])
    result = runs.read_result(cut_dir)
    assert result["paused_at"] == 1 and "test" not in result["metrics"]
    assert not (cut_dir / "predictions.csv").exists() and not (cut_dir / "checkpoints").exists()
    assert sum("cut at epoch 1" in m for m in messages) == 1
    for lr in (0.02, 0.03):
        assert rows[lr]["cut_at"] is None and rows[lr]["test_accuracy"] is not None and rows[lr]["tied_with_best"]
        assert runs.is_complete(rows[lr]["run_dir"])
    assert summary["raced"] == {"cut": 1, "to_the_end": 2, "scored_on_test": 2}
    assert len(summary["tied_with_best"]) == 1
    lines = sweep.report(summary)
    assert any("1 point(s) cut" in line for line in lines) and any("tied with the best" in line for line in lines)
    assert (tmp_path / "r" / "plots" / "sweep_learning_rate.png").stat().st_size > 5000

    messages.clear()
    run_sweep(SweepConfig(name="e", run=run, space=space, race=False), tmp_path / "e", progress=messages.append)
    assert sum("(reused)" in m for m in messages) == 2  # the two trained to the end; not the paused one
    exhaustive = json.loads((tmp_path / "e" / "summary.json").read_text())["rows"]
    assert all(r["cut_at"] is None and r["test_accuracy"] is not None for r in exhaustive)
    assert runs.paused_at(cut_dir) == 1  # the raced study's own run is left as it was

    messages.clear()  # the raced sweep again, unraced, in a copy of its folder (`--exhaustive` on a copied study)
    shutil.copytree(tmp_path / "r", tmp_path / "copy" / "r")
    run_sweep(SweepConfig(name="r", run=run, space=space, race=False), tmp_path / "copy" / "r",
              progress=messages.append)
    assert any("1 cut by a race" in m and "from the start" in m for m in messages), messages
    assert any("0.01} -> validation" in m and "3/3 done" in m for m in messages), messages
    cut_dir = tmp_path / "copy" / "r" / "runs" / cut_dir.name
    assert runs.is_complete(cut_dir) and runs.read_result(cut_dir)["best"]["epochs_run"] == 2
    again = {r["train.learning_rate"]: r
             for r in json.loads((tmp_path / "copy" / "r" / "summary.json").read_text())["rows"]}
    assert again[0.01]["cut_at"] is None  # trained to the end from the start: what the unraced sweep got
    assert again[0.01]["test_accuracy"] == {r["train.learning_rate"]: r for r in exhaustive}[0.01]["test_accuracy"]
    assert all(Path(r["run_dir"]).is_relative_to(tmp_path / "copy") for r in again.values())  # its own runs
    shutil.rmtree(tmp_path / "r")  # the original gone (its trials' recorded folders): the copy keeps its own
    messages.clear()
    run_sweep(SweepConfig(name="r", run=run, space=space, race=False), tmp_path / "copy" / "r",
              progress=messages.append)
    assert any("3 trials (3 done)" in m for m in messages) and not any("damaged" in m for m in messages), messages


def test_sibling_study_reuses_identical_runs(tiny_models, synthetic_files, tmp_path):
    run = _run_section(tiny_models, synthetic_files)
    run_sweep(SweepConfig(name="lr", run=run, space={"train.learning_rate": [0.01, 0.03]}), tmp_path / "lr",
              progress=lambda *_: None)
    messages = []
    run_sweep(SweepConfig(name="g", run=run, space=GRID), tmp_path / "g", progress=messages.append)
    reused = [m for m in messages if "(reused)" in m]
    assert len(reused) == 2  # the lr sweep ran at wd=0.01: those two grid points are shared
    assert len(_finished_runs(tmp_path / "g")) == 2


def _sweep_process(study_file, study_dir, *extra, gate: Path | None = None):
    """The sweep command in a new process; with `gate`, each run it trains waits at its first step (tests/gate)."""
    env = gated_env(gate) if gate else {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "slmtune.cli", "sweep", "--config", str(study_file),
                             "--study-dir", str(study_dir), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)


def _running_runs(study_dir: Path) -> list[str]:
    return [p.parent.name for p in study_dir.glob("runs/*/result.json")
            if json.loads(p.read_text())["status"] == "running"]


def _at_gate(proc, gate: Path, k: int) -> bool:
    """Whether `proc`'s k-th trained run waits at the gate (False once the process has ended)."""
    wait_until(lambda: (gate / f"started-{proc.pid}-{k}").exists() or proc.poll() is not None,
               what=f"run {k} of process {proc.pid} at the gate")
    return (gate / f"started-{proc.pid}-{k}").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig, race", [(signal.SIGKILL, True), (signal.SIGINT, True), (signal.SIGTERM, True),
                                       (signal.SIGTERM, False)])
def test_sweep_stopped_mid_trial_resumes_every_point_once(tiny_models, synthetic_files, tmp_path, sig, race):
    """Whatever stops the sweep during its second trial (raced: the second point's first rung), the rerun
    finishes all 4 points, trains each point's rung once, and resumes the first run rather than redoing it."""
    import optuna

    run = _run_section(tiny_models, synthetic_files, **{"train.epochs": 2})
    study_file = _study_file(tmp_path, run, heartbeat=1, race=race)
    gate = tmp_path / "gate"
    proc = _sweep_process(study_file, tmp_path / "s", gate=gate)
    assert _at_gate(proc, gate, 0), proc.communicate()[0].decode()[-2000:]
    (gate / f"go-{proc.pid}-0").touch()  # the first trial runs to its end (raced: to the first rung)
    assert _at_gate(proc, gate, 1), proc.communicate()[0].decode()[-2000:]  # the second waits at its first step
    proc.send_signal(sig)  # once: slmtune raises it again until it is seen (runs/recorder.py)
    out = proc.communicate(timeout=120)[0].decode()
    done = _finished_runs(tmp_path / "s")
    assert len(done) == 1, out[-2000:]
    (first,) = done
    log = tmp_path / "s" / "runs" / first / "metrics.jsonl"
    inode, size = log.stat().st_ino, log.stat().st_size
    if sig != signal.SIGKILL:
        assert proc.returncode == 130 and not crashed(out), out[-2000:]
        assert len(_running_runs(tmp_path / "s")) == 0  # the stopped trial's folder says interrupted
    assert main(["sweep", "--config", str(study_file), "--study-dir", str(tmp_path / "s")]) == 0
    after = _finished_runs(tmp_path / "s")
    assert len(after) == 4 and all(runs.is_complete(tmp_path / "s" / "runs" / name) for name in after)
    if race:  # the first run went on from its rung: the same metrics log, longer
        assert log.stat().st_ino == inode and log.stat().st_size > size
    else:  # finished runs were not redone
        assert after[first] == done[first]
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{tmp_path / 's' / 'optuna.db'}")
    trained = [(str(point_of(t)), t.user_attrs.get("level")) for t in study.trials if t.state.name == "COMPLETE"]
    cut = len(study.user_attrs.get("race_cuts", {}))
    assert len(trained) == (8 - cut if race else 4) and len(set(trained)) == len(trained)  # each rung once
    rows = json.loads((tmp_path / "s" / "summary.json").read_text())["rows"]
    assert len(rows) == 4 and len({r["run_dir"] for r in rows}) == 4


def _sweep_and_worker_training(study_file, folder: Path, gate: Path):
    """The starting command and a --worker, returned once both wait at the first step of a trial of their own."""
    first = _sweep_process(study_file, folder, gate=gate)
    assert _at_gate(first, gate, 0), first.communicate()[0].decode()[-2000:]
    worker = _sweep_process(study_file, folder, "--worker", gate=gate)
    assert _at_gate(worker, gate, 0), worker.communicate()[0].decode()[-2000:]
    assert len(_running_runs(folder)) == 2, "the two processes never trained at once"
    return first, worker


@pytest.mark.slow
def test_restarting_the_sweep_leaves_a_live_workers_trial_alone(tiny_models, synthetic_files, tmp_path):
    """A second start of the sweep while a worker trains: the worker's trial stays its own, and both end well."""
    run = _run_section(tiny_models, synthetic_files, **{"train.epochs": 2})
    space = {"train.learning_rate": [0.01, 0.02, 0.03]}
    study_file = _study_file(tmp_path, run, space=space, heartbeat=1)
    gate = tmp_path / "gate"
    first, worker = _sweep_and_worker_training(study_file, tmp_path / "w", gate)
    first.send_signal(signal.SIGKILL)
    first.wait()
    again = _sweep_process(study_file, tmp_path / "w", gate=gate)  # the starting command, rerun: the worker waits
    assert _at_gate(again, gate, 0), again.communicate()[0].decode()[-2000:]  # it trains a point of its own
    (gate / "go").touch()
    outputs = [p.communicate(timeout=300)[0].decode() for p in (worker, again)]
    assert worker.returncode == 0 and again.returncode == 0, [out[-3000:] for out in outputs]
    import optuna

    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{tmp_path / 'w' / 'optuna.db'}")
    complete = [(t.params["train.learning_rate"], t.user_attrs["level"]) for t in study.trials
                if t.state.name == "COMPLETE"]
    cut = {json.loads(k)["train.learning_rate"] for k in study.user_attrs.get("race_cuts", {})}
    assert sorted(complete) == sorted([(lr, 0) for lr in (0.01, 0.02, 0.03)]
                                      + [(lr, 1) for lr in (0.01, 0.02, 0.03) if lr not in cut])  # each rung once
    assert len(_finished_runs(tmp_path / "w")) == 3


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_worker_killed_mid_trial_loses_nothing(tiny_models, synthetic_files, tmp_path, request, backend):
    """Two processes share a grid through the storage; one dies by SIGKILL while training. The other finishes
    every point, the dead worker's point exactly once more, and every run folder ends finished."""
    import uuid

    import optuna

    storage = (request.getfixturevalue("postgres_url") if backend == "postgresql"
               else f"sqlite:///{tmp_path / 'optuna.db'}")
    name = f"kill-{uuid.uuid4().hex[:8]}"  # a fresh study in a shared server
    run = _run_section(tiny_models, synthetic_files, **{"train.epochs": 2})
    space = {"train.learning_rate": [0.01, 0.02, 0.03, 0.04]}
    study_file = _study_file(tmp_path, run, name=name, space=space, heartbeat=1, storage=storage, race=False)
    gate = tmp_path / "gate"
    first, worker = _sweep_and_worker_training(study_file, tmp_path / "k", gate)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    (gate / "go").touch()
    out = first.communicate(timeout=300)[0].decode()
    assert first.returncode == 0, out[-3000:]
    study = optuna.load_study(study_name=name, storage=storage)
    complete = sorted(t.params["train.learning_rate"] for t in study.trials if t.state.name == "COMPLETE")
    assert complete == [0.01, 0.02, 0.03, 0.04]  # each point finished once
    assert sum(t.state.name == "FAIL" for t in study.trials) == 1  # the killed trial, retried once
    assert len(_finished_runs(tmp_path / "k")) == 4 and not _running_runs(tmp_path / "k")


def test_a_damaged_run_folder_is_named_and_trained_again_on_resume(tiny_models, synthetic_files, tmp_path):
    """A finished trial whose result.json was truncated since: the rerun says so in one line, trains that point
    again, and the summary counts the new run, never the broken one."""
    cfg = SweepConfig(name="d", run=_run_section(tiny_models, synthetic_files), space=GRID)
    run_sweep(cfg, tmp_path / "d", progress=lambda *_: None)
    damaged = sorted((tmp_path / "d").glob("runs/*/result.json"))[0]
    damaged.write_text(damaged.read_text()[:40])  # cut off mid-write
    untouched = {k: v for k, v in _finished_runs(tmp_path / "d").items() if k != damaged.parent.name}
    messages = []
    summary = run_sweep(cfg, tmp_path / "d", progress=messages.append)
    said = [m for m in messages if "damaged or gone" in m]
    assert len(said) == 1 and damaged.parent.name in said[0]
    after = _finished_runs(tmp_path / "d")
    assert len(after) == 4 and all(after[k] == v for k, v in untouched.items())  # only the damaged one retrained
    rows = json.loads((tmp_path / "d" / "summary.json").read_text())["rows"]
    assert summary["trials"] == 4 and len({r["run_dir"] for r in rows}) == 4
    messages.clear()
    run_sweep(cfg, tmp_path / "d", progress=messages.append)  # nothing damaged now: nothing said, nothing trained
    assert not [m for m in messages if "damaged or gone" in m] and _finished_runs(tmp_path / "d") == after


def test_stopped_and_stale_trials_come_back_once(tmp_path):
    import optuna
    from optuna.trial import TrialState

    points = [{"train.learning_rate": lr, "train.weight_decay": 0.01} for lr in (0.01, 0.03)]
    study = optuna.create_study(study_name="g", storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat=1))
    for point in points:
        study.enqueue_trial(point)
    stopped = study.ask()  # Ctrl-C: Optuna marks the trial FAIL
    stopped.suggest_categorical("train.learning_rate", [0.01, 0.03])
    study.tell(stopped, state=TrialState.FAIL)
    live = study.ask()  # another process is training this one
    assert queue_missing(study, points) == 1  # the stopped point, whole; the running one is left alone
    assert study.trials[-1].system_attrs["fixed_params"] == points[0]
    assert queue_missing(study, points) == 0
    study._storage.record_heartbeat(live._trial_id)
    with sqlite3.connect(tmp_path / "o.db") as db:  # its last heartbeat an hour ago: silent, so taken as dead
        db.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-1 hour')")
    optuna.storages.fail_stale_trials(study)
    optuna.storages.fail_stale_trials(study)  # a second process noticing too queues nothing more
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING, TrialState.WAITING]
    assert study.trials[-1].system_attrs["fixed_params"] == points[1]


@pytest.mark.slow
def test_two_workers_share_one_study(tiny_models, synthetic_files, tmp_path):
    grid = {"train.learning_rate": [0.01, 0.02, 0.03], "train.weight_decay": [0.0, 0.01]}
    study_file = _study_file(tmp_path, _run_section(tiny_models, synthetic_files), space=grid)
    gate = tmp_path / "gate"
    first, second = _sweep_and_worker_training(study_file, tmp_path / "w", gate)  # each holds a trial of its own
    (gate / "go").touch()
    outputs = [p.communicate(timeout=300)[0].decode() for p in (first, second)]
    for who, proc, out in zip(("the sweep", "the worker"), (first, second), outputs):
        assert proc.returncode == 0, f"{who} ended with {proc.returncode}:\n{out[-3000:]}"
    import optuna

    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{tmp_path / 'w' / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    points = [(t.params["train.learning_rate"], t.params["train.weight_decay"]) for t in complete]
    assert len(points) == 6 and len(set(points)) == 6  # every point once, none twice
    assert all("trial" in out for out in outputs)  # both processes trained


@pytest.mark.slow
def test_a_trial_taken_for_dead_while_it_trains_is_reused_by_its_retry(tiny_models, synthetic_files, tmp_path):
    """A process silent for 3 heartbeats (a suspended laptop) has its trial failed and queued again by another
    process while it still trains: it says so in one line, carries on, and the retry reuses its finished run."""
    import optuna
    from optuna.trial import TrialState

    from slmtune.experiments.queue import _retry_point

    study_file = _study_file(tmp_path, _run_section(tiny_models, synthetic_files))
    gate = tmp_path / "gate"
    proc = _sweep_process(study_file, tmp_path / "d", gate=gate)
    assert _at_gate(proc, gate, 0), proc.communicate()[0].decode()[-2000:]
    study = optuna.load_study(study_name="grid", storage=open_storage(f"sqlite:///{tmp_path / 'd' / 'optuna.db'}"))
    (trial,) = study.get_trials(states=(TrialState.RUNNING,))
    study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)  # what fail_stale_trials does
    _retry_point(study, study._storage.get_trial(trial._trial_id))
    (gate / "go").touch()
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    assert sum("taken for dead" in line for line in out.splitlines()) == 1, out[-3000:]
    assert sum("(reused)" in line for line in out.splitlines()) == 1, out[-3000:]
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert sorted(map(point_of, complete), key=str) == sorted(grid_points(GRID), key=str)  # every point once
    assert len(_finished_runs(tmp_path / "d")) == 4


def test_seeds_with_comparison(tiny_models, synthetic_files, tmp_path):
    run = _run_section(tiny_models, synthetic_files)
    recipe = tmp_path / "full.yaml"
    recipe.write_text(yaml.safe_dump(_run_section(tiny_models, synthetic_files, **{"model.method": "full"})))
    cfg = SeedsConfig(name="s", run=run, seeds=[1, 2, 3], compare=str(recipe))
    summary = run_seeds(cfg, tmp_path / "s", progress=lambda *_: None)
    assert [row["model"].split(":")[-1] for row in summary["table"]] == ["lora", "full"]
    acc = summary["per_config"][summary["table"][0]["model"]]["test_accuracy"]
    assert acc["n"] == 3 and acc["ci_low"] <= acc["mean"] <= acc["ci_high"]
    comparison = summary["comparison"]
    assert {"t_pvalue", "wilcoxon_pvalue", "boot_low", "cohens_dz"} <= set(comparison["test_accuracy"])
    assert comparison["mcnemar_pooled_test"]["pvalue"] <= 1 and comparison["verdict"]
    for name in ("seeds_box.png", "seeds_time.png"):
        assert (tmp_path / "s" / "plots" / name).stat().st_size > 5000
    assert len((tmp_path / "s" / "summary.csv").read_text().splitlines()) == 7


def test_sequential_seeds_stop_once_the_comparison_is_decided(tiny_models, synthetic_files, tmp_path):
    """The same recipe compared with itself differs by exactly 0 on every seed: equivalent at the first look, so
    3 of the 5 seeds are run, and the summary says why it stopped."""
    run = _run_section(tiny_models, synthetic_files)
    recipe = tmp_path / "same.yaml"
    recipe.write_text(yaml.safe_dump(run))
    lines: list[str] = []
    cfg = SeedsConfig(name="q", run=run, seeds=[1, 2, 3, 4, 5], compare=str(recipe), margin=0.01)
    summary = run_seeds(cfg, tmp_path / "q", progress=lines.append)
    seq = summary["sequential"]
    assert seq["seeds_used"] == 3 and seq["stopped"] == "equivalent" and len(seq["looks"]) == 1
    assert summary["seeds"] == [1, 2, 3] and len((tmp_path / "q" / "summary.csv").read_text().splitlines()) == 7
    assert any("look 1 at 3 seeds: equivalent" in line for line in lines)
    from slmtune.experiments.seeds import plan, report

    assert "3 of 5 seeds; stopped equivalent" in "\n".join(report(summary))
    from slmtune.experiments.common import load_run_config

    base = load_run_config(None, run)
    assert len(plan(cfg, base, None, None, tmp_path)[0]) == 6  # the plan holds the first look's seeds
    exhaustive = SeedsConfig(name="q", run=run, seeds=[1, 2, 3, 4], compare=str(recipe), sequential=False)
    assert "sequential" not in run_seeds(exhaustive, tmp_path / "q2", progress=lambda *_: None)


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--config", "{bad_field}"], "unknown config field"),
    (["sweep", "--config", "{empty}"], "sweep space is empty"),
    (["sweep", "--space", "nope"], "unknown sweep space"),
    (["sweep", "--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open the Optuna storage"),
    (["sweep", "--config", "{heartbeat}"], "heartbeat must be a positive whole number"),
    (["seeds", "--seeds", "1,2,1"], "duplicates"),
    (["seeds", "--seeds", "1,x"], "--seeds takes integers"),
])
def test_study_bad_input(capsys, tmp_path, argv, message):
    files = {
        "bad_field": _study_file(tmp_path, {}, "bad", {"train.learning_rat": [0.1]}),
        "empty": _study_file(tmp_path, {}, "empty", {}),
        "heartbeat": _study_file(tmp_path, {}, "hb", GRID, heartbeat=0),
    }
    code = main([a.format(**files) for a in argv] + ["--study-dir", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_run_folder_in_training_elsewhere_is_waited_for_not_deleted(monkeypatch, tmp_path):
    """A worker handed a trial whose owner is alive (its heartbeat judged stale under load) waits on the run
    folder's lock and then reuses the owner's finished run; it never deletes the folder under it."""
    import threading

    from slmtune.config import RunConfig
    from slmtune.experiments import common

    study = common.Study(tmp_path / "study")
    config = RunConfig()
    folder = study.folder(config)
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("{}\n")  # the live owner's run, half way
    trained = []
    monkeypatch.setattr(common, "train", lambda *a, **k: trained.append(k))
    owner = study.lock(folder)
    owner.acquire()
    reached = threading.Event()
    lock_of = study.lock

    class Announcing:
        def __init__(self, lock):
            self.lock = lock

        def __enter__(self):
            reached.set()
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    monkeypatch.setattr(study, "lock", lambda f: Announcing(lock_of(f)))
    out = {}
    taker = threading.Thread(target=lambda: out.update(study.run(config)))
    taker.start()
    assert reached.wait(60)
    runs.write_json(folder / "result.json", {"status": "success", "metrics": {}})  # the owner finishes
    owner.release()
    taker.join(60)
    assert out["reused"] is True and not trained
    assert (folder / "metrics.jsonl").exists()
