"""Sweeps and seed studies end to end on tiny random models."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_overrides
from slmtune.cli import main
from slmtune.experiments.seeds import SeedsConfig, run_seeds
from slmtune.experiments.sweep import SweepConfig, _requeue_cut_off, open_storage, run_sweep

GRID = {"train.learning_rate": [0.01, 0.03], "train.weight_decay": [0.0, 0.01]}


def _run_section(tiny_models, synthetic_files, **extra):
    values = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 1, **extra})
    values["data"].update(train_size=48, val_size=12)
    return values


def _study_file(tmp_path, run, name="grid", space=GRID):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"study": "sweep", "name": name, "run": run, "space": space}))
    return path


def _finished_runs(study_dir: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime for p in study_dir.glob("runs/*/result.json")
            if json.loads(p.read_text())["status"] == "success"}


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


def test_sibling_study_reuses_identical_runs(tiny_models, synthetic_files, tmp_path):
    run = _run_section(tiny_models, synthetic_files)
    run_sweep(SweepConfig(name="lr", run=run, space={"train.learning_rate": [0.01, 0.03]}), tmp_path / "lr",
              progress=lambda *_: None)
    messages = []
    run_sweep(SweepConfig(name="g", run=run, space=GRID), tmp_path / "g", progress=messages.append)
    reused = [m for m in messages if "(reused)" in m]
    assert len(reused) == 2  # the lr sweep ran at wd=0.01: those two grid points are shared
    assert len(_finished_runs(tmp_path / "g")) == 2


def _sweep_process(study_file, study_dir, *extra):
    return subprocess.Popen([sys.executable, "-m", "slmtune.cli", "sweep", "--config", str(study_file),
                             "--study-dir", str(study_dir), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_sweep_resumes_after_kill_without_rerunning(tiny_models, synthetic_files, tmp_path):
    study_file = _study_file(tmp_path, _run_section(tiny_models, synthetic_files, **{"train.epochs": 2}))
    proc = _sweep_process(study_file, tmp_path / "s")
    deadline = time.time() + 180
    while time.time() < deadline and not _finished_runs(tmp_path / "s"):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _finished_runs(tmp_path / "s")
    assert 1 <= len(done) < 4, "kill came too late to test resuming"
    assert main(["sweep", "--config", str(study_file), "--study-dir", str(tmp_path / "s")]) == 0
    after = _finished_runs(tmp_path / "s")
    assert len(after) == 4
    assert all(after[name] == mtime for name, mtime in done.items())  # finished runs were not redone
    rows = json.loads((tmp_path / "s" / "summary.json").read_text())["rows"]
    assert len(rows) == 4 and len({r["run_dir"] for r in rows}) == 4


def test_trial_killed_between_suggestions_is_rerun_at_its_whole_grid_point(tmp_path):
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(study_name="g", storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    study.enqueue_trial({"train.learning_rate": 0.03, "train.weight_decay": 0.01})
    cut_off = study.ask()
    cut_off.suggest_categorical("train.learning_rate", [0.01, 0.03])  # the kill lands before the second one
    assert _requeue_cut_off(study) == 1
    states = {t.number: t.state for t in study.trials}
    assert states == {0: TrialState.FAIL, 1: TrialState.WAITING}
    assert study.trials[1].system_attrs["fixed_params"] == {"train.learning_rate": 0.03, "train.weight_decay": 0.01}
    assert _requeue_cut_off(study) == 0  # nothing running any more


def test_two_workers_share_one_study(tiny_models, synthetic_files, tmp_path):
    grid = {"train.learning_rate": [0.01, 0.02, 0.03], "train.weight_decay": [0.0, 0.01]}
    study_file = _study_file(tmp_path, _run_section(tiny_models, synthetic_files), space=grid)
    first = _sweep_process(study_file, tmp_path / "w")
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "w" / "study.yaml").exists():
        time.sleep(0.1)
    second = _sweep_process(study_file, tmp_path / "w", "--worker")
    outputs = [p.communicate(timeout=300)[0].decode() for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [out[-3000:] for out in outputs]
    import optuna

    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{tmp_path / 'w' / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    points = [(t.params["train.learning_rate"], t.params["train.weight_decay"]) for t in complete]
    assert len(points) == 6 and len(set(points)) == 6  # every point once, none twice
    assert all("trial" in out for out in outputs)  # both processes trained


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


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--config", "{bad_field}"], "unknown config field"),
    (["sweep", "--config", "{empty}"], "sweep space is empty"),
    (["sweep", "--space", "nope"], "unknown sweep space"),
    (["sweep", "--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open the sweep storage"),
    (["seeds", "--seeds", "1,2,1"], "duplicates"),
    (["seeds", "--seeds", "1,x"], "--seeds takes integers"),
])
def test_study_bad_input(capsys, tmp_path, argv, message):
    files = {
        "bad_field": _study_file(tmp_path, {}, "bad", {"train.learning_rat": [0.1]}),
        "empty": _study_file(tmp_path, {}, "empty", {}),
    }
    code = main([a.format(**files) for a in argv] + ["--study-dir", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
