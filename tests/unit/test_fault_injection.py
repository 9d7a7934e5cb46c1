"""A whole study stopped by SIGINT, SIGTERM and SIGKILL in the middle of one of its runs (a different one each
time, held at the gate of tests/gate, so where it stops never depends on the machine's speed), resumed each time,
ends exactly as an uninterrupted run of the same study: the same runs, each trained once to success, the same
summaries."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import crashed, gated_env, tiny_overrides, wait_until

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
INTERRUPTIONS = 6


def _study_file(tmp_path: Path, tiny_models, synthetic_files) -> Path:
    values = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 4, "data.val_size": 12,
                                                                      "data.train_size": 48})
    lora, full = tmp_path / "lora.yaml", tmp_path / "full.yaml"
    lora.write_text(yaml.safe_dump(values))
    full.write_text(yaml.safe_dump({**values, "model": {**values["model"], "method": "full"},
                                    "train": {**values["train"], "learning_rate": 1e-3}}))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"study": "reference", "name": "faults", "recipe": str(lora), "parts": {
        "train": {"recipes": [str(full), str(lora)]},
        "seeds": {"compare": str(full), "seeds": [42, 7, 8]},
        "sweep-lr": {"space": {"train.learning_rate": [0.01, 0.02, 0.03]}, "heartbeat": 1},
    }}))
    return study


def _start(study: Path, root: Path, gate: Path | None = None) -> subprocess.Popen:
    root.mkdir(exist_ok=True)
    # a fixed calibration: the test measures resuming, not this machine's speed
    (root / "calibration.json").write_text(json.dumps({"train": 56.0, "eval": 209.7, "speed_vs_reference": 1.0}))
    return subprocess.Popen([sys.executable, "-m", "slmtune.cli", "study", str(study), "--study-dir", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=gated_env(gate) if gate else {**os.environ, "PYTHONUNBUFFERED": "1"})


def _finished(root: Path) -> dict[str, int]:
    """Finished run folders and the time their result was written (a retrained run would write it again)."""
    out = {}
    for result in root.glob("*/runs/*/result.json"):
        try:
            if json.loads(result.read_text())["status"] == "success":
                out[f"{result.parent.parent.parent.name}/{result.parent.name}"] = result.stat().st_mtime_ns
        except (OSError, ValueError):
            pass
    return out


def _summaries(root: Path) -> dict[str, list]:
    """Each part's summary rows, without what differs between two runs of one study (times, folders, reuse)."""
    out = {}
    for path in sorted(root.glob("*/summary.json")):
        rows = json.loads(path.read_text())["rows"]
        out[path.parent.name] = sorted(
            json.dumps({k: (Path(v).name if k == "run_dir" and v else v) for k, v in row.items()
                        if "seconds" not in k and k not in ("reused", "trial", "samples_per_second")}, sort_keys=True)
            for row in rows)
    return out


def _stop_at_run(proc: subprocess.Popen, gate: Path, run: int, sig) -> bool:
    """Let `proc` train `run` runs, then send `sig` while its next one waits at its first step. False when the
    study ended before that run."""
    for k in range(run + 1):
        marker = gate / f"started-{proc.pid}-{k}"
        wait_until(lambda m=marker: m.exists() or proc.poll() is not None, what=f"run {k} of the study at the gate")
        if not marker.exists():
            return False
        if k < run:
            (gate / f"go-{proc.pid}-{k}").touch()
    proc.send_signal(sig)
    return True


@pytest.mark.slow
def test_study_survives_interruptions_mid_run(tiny_models, synthetic_files, tmp_path):
    study = _study_file(tmp_path, tiny_models, synthetic_files)
    rng = random.Random(20261130)
    root, seen, survived = tmp_path / "interrupted", {}, []
    for i in range(INTERRUPTIONS):
        sig = rng.choice(SIGNALS)
        proc = _start(study, root, gate=tmp_path / f"gate-{i}")
        if _stop_at_run(proc, tmp_path / f"gate-{i}", rng.choice([0, 1]), sig):  # at most 6 of its ~8 runs finish
            survived.append(sig.name)
        out = proc.communicate(timeout=300)[0].decode()
        if sig != signal.SIGKILL:
            assert not crashed(out), out[-3000:]
        now = _finished(root)
        for name, stamp in seen.items():  # a run that finished is never trained again
            assert now.get(name) == stamp, f"{name} was redone or lost after {sig.name}"
        seen = now
    proc = _start(study, root)
    out = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    final = _finished(root)
    assert all(final[name] == stamp for name, stamp in seen.items())
    assert len(survived) == INTERRUPTIONS, "the study ended before an interruption: give it more runs"

    clean = tmp_path / "clean"
    proc = _start(study, clean)
    out = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    assert set(final) == set(_finished(clean))  # the same runs, in the same parts
    assert _summaries(root) == _summaries(clean)
    assert not [p for p in root.glob("*/runs/*/result.json") if json.loads(p.read_text())["status"] != "success"]
