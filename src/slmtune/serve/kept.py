"""Measurements kept in a run folder (auto's engine choice, the int8 plans): each holds only for the budget it was
measured with, on the machine it was measured on (int8 and bf16 kernels, and so speeds and predictions, differ
between CPUs and torch versions); anything else, or a damaged file, is measured again."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from slmtune import runs


def machine() -> dict[str, Any]:
    """What a kept measurement depends on besides the run and the budget."""
    from slmtune.precision import cpu_bf16_support

    return {"processor": platform.processor() or platform.machine(), "cpu_bf16": cpu_bf16_support(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def load(path: str | Path, max_change: float) -> dict[str, Any] | None:
    """What `path` keeps, if it was measured for `max_change` on this machine; None otherwise."""
    try:
        kept = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(kept, dict) and kept.get("max_change") == max_change and kept.get("machine") == machine():
        return kept
    return None


def save(path: str | Path, measured: dict[str, Any], max_change: float) -> dict[str, Any]:
    """`measured`, stamped with the budget and this machine, written to `path` (atomically); returned stamped."""
    stamped = {**measured, "max_change": max_change, "machine": machine()}
    runs.write_json(path, stamped)
    return stamped
