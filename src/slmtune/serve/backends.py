"""Inference engines for a run: its torch model (in the run's precision, or fp32), its ONNX export (fused fp32,
int8), or `auto`: the fastest of those whose predictions stay within a budget of fp32 torch's."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slmtune import runs
from slmtune.errors import SlmtuneError
from slmtune.precision import Precision
from slmtune.precision import resolve as resolve_precision
from slmtune.serve.export import ONNX_FILES, export_onnx, require_onnx
from slmtune.serve.loading import load_run

BACKENDS = ("torch", "torch-fp32", "onnx", "onnx-int8")
CHOICE_FILE = "backend.json"
AUTO_MIN_ROWS = 5000  # `auto` measures the backends (about 1,000 rows each) only for jobs at least this large


@dataclass
class Engine:
    """What runs a run's inference: `model` for slmtune.serve.logits.predict_logits, and the precision it runs in."""

    name: str
    model: Any
    precision: Precision


def engine(run_dir: str | Path, backend: str = "auto", max_change: float = 0.005, rows: int | None = None) -> Engine:
    """`torch` (the run's `train.precision` on this machine: bf16 where the CPU has it), `torch-fp32`, `onnx`
    (fused fp32), `onnx-int8`, or `auto`: the choice of choose_backend with `max_change`, measured when the job
    scores at least AUTO_MIN_ROWS `rows` (None: a job of unknown size, such as a file) or already kept for this
    budget and machine; a smaller job uses `torch`, since measuring would cost more than it could save."""
    if backend == "auto":
        measure = rows is None or rows >= AUTO_MIN_ROWS or _kept_choice(run_dir, max_change) is not None
        backend = choose_backend(run_dir, max_change)["chosen"] if measure else "torch"
    run = load_run(run_dir)
    if backend == "torch":
        return Engine(backend, run.model, run.precision)
    if backend == "torch-fp32":
        return Engine(backend, run.model, resolve_precision("fp32"))
    if backend in ("onnx", "onnx-int8"):
        return Engine(backend, onnx_for_run(run_dir, int8=backend == "onnx-int8"), resolve_precision("fp32"))
    raise SlmtuneError(f"unknown backend {backend!r}: use auto, {', '.join(BACKENDS)}")


def choose_backend(run_dir: str | Path, max_change: float = 0.005, rows: int = 1000) -> dict[str, Any]:
    """The fastest backend whose predictions differ from fp32 torch's on at most `max_change` of the run's own
    validation and training rows (up to `rows`; never test rows); a multi-label row counts as changed when any
    label of its set does. Measured once per run, budget and machine, kept in RUN_DIR/backend.json; the choice
    and its figures are printed."""
    import importlib.util
    import time

    from slmtune.data import load_splits
    from slmtune.serve.logits import predict_logits

    kept = _kept_choice(run_dir, max_change)
    if kept is not None:
        return kept
    run = load_run(run_dir)
    path = Path(run_dir) / CHOICE_FILE
    splits = load_splits(run.config.data, run.config.seed)
    texts = (splits.validation.texts + splits.train.texts)[:rows]
    names = ["torch-fp32", *(["torch"] if run.precision.name != "fp32" else []),
             *(["onnx", "onnx-int8"] if importlib.util.find_spec("onnxruntime") else [])]
    reference, table = None, []
    for name in names:
        candidate = engine(run_dir, name)
        kwargs = {"batch_size": run.config.train.eval_batch_size, "max_length": run.config.data.max_length,
                  "precision": candidate.precision, "truncation": run.config.data.truncation, "cache": False}
        predict_logits(candidate.model, run.tokenizer, texts[:64], **kwargs)  # warm-up
        start = time.perf_counter()
        predicted = _decisions(run, predict_logits(candidate.model, run.tokenizer, texts, **kwargs))
        speed = len(texts) / (time.perf_counter() - start)
        reference = predicted if reference is None else reference
        table.append({"backend": name, "rows_per_s": round(speed, 1),
                      "changed": round(float(np.mean((predicted != reference).any(axis=1))), 5)})
    allowed = [row for row in table if row["changed"] <= max_change]
    chosen = max(allowed, key=lambda row: row["rows_per_s"])
    choice = {"chosen": chosen["backend"], "max_change": max_change, "rows": len(texts), "machine": _machine(),
              "candidates": table}
    runs.write_json(path, choice)
    cells = ", ".join(f"{r['backend']} {r['rows_per_s']:.0f}/s ({r['changed']:.2%} changed)" for r in table)
    print(f"slmtune: backend {chosen['backend']}: the fastest whose predictions differ from fp32 torch on at most "
          f"{max_change:.2%} of {len(texts)} validation/training rows ({cells})", flush=True)
    return choice


def _machine() -> dict[str, Any]:
    """What a kept backend choice depends on besides the run and the budget."""
    import platform

    from slmtune.precision import cpu_bf16_support

    return {"processor": platform.processor() or platform.machine(), "cpu_bf16": cpu_bf16_support(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def _kept_choice(run_dir: str | Path, max_change: float) -> dict[str, Any] | None:
    """The choice kept in RUN_DIR/backend.json for this budget on this machine, if any."""
    if not 0 <= max_change < 1:
        raise SlmtuneError(f"--max-change must be in [0, 1), got {max_change}")
    path = Path(run_dir) / CHOICE_FILE
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept.get("max_change") == max_change and kept.get("machine") == _machine():
            return kept
    return None


def _decisions(run, logits: np.ndarray) -> np.ndarray:
    """(rows, k) decisions to compare between backends: the predicted class, or the label set of a multi-label
    run at its thresholds (a row changes when any label does)."""
    if run.multi_label:
        from slmtune.multilabel import decide, sigmoid

        return decide(sigmoid(logits), run.thresholds)
    return logits.argmax(axis=1)[:, None]


class OnnxClassifier:
    """An ONNX Runtime session that `slmtune.serve.logits.predict_logits` runs like a model."""

    def __init__(self, path: str | Path, num_labels: int, threads: int | None = None):
        require_onnx()
        import os

        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.config = type("Config", (), {"num_labels": num_labels})()

    def __call__(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        feeds = {k: v.numpy() for k, v in batch.items() if k in self.inputs}
        return self.session.run(["logits"], feeds)[0]


def onnx_for_run(run_dir: str | Path, int8: bool = False) -> OnnxClassifier:
    """The run's ONNX model, exported into RUN_DIR/onnx/ on first use."""
    run = load_run(run_dir)
    folder = Path(run_dir) / "onnx"
    path = folder / ONNX_FILES[int8]
    if not path.is_file():
        folder.mkdir(exist_ok=True)
        export_onnx(copy.deepcopy(run.model), folder, int8=int8)
    return OnnxClassifier(path, len(run.label_names), threads=run.config.train.threads)
