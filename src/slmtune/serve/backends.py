"""Inference engines for a run: its torch model (in the run's precision, or fp32), its ONNX export (fused fp32,
int8), or `auto`: the fastest of those whose predictions stay within a budget of fp32 torch's."""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slmtune.errors import SlmtuneError
from slmtune.precision import Precision
from slmtune.precision import resolve as resolve_precision
from slmtune.serve import ENGINES, kept
from slmtune.serve import int8 as int8_search
from slmtune.serve.export import ONNX_FILES, export_onnx, require_onnx
from slmtune.serve.int8 import decisions
from slmtune.serve.loading import load_run

CHOICE_FILE = "backend.json"
AUTO_MIN_ROWS = 5000  # `auto` measures the backends (about 1,000 rows each) only for jobs at least this large
COMPILED = ("torch-compiled", "torch-int8")
"""Engines Inductor compiles: 10-80 s per process on a 2-core CPU (the first batch pays it)."""
# `auto` measures the compiled engines only for jobs at least this large: their compilation saves about 1 ms a row
# against eager bf16 on a 2-core CPU, so smaller jobs cannot repay it
COMPILE_MIN_ROWS = 50_000


@dataclass
class Engine:
    """What runs a run's inference: `model` for slmtune.serve.logits.predict_logits, and the precision it runs in."""

    name: str
    model: Any
    precision: Precision


def engine(run_dir: str | Path, backend: str = "auto", max_change: float = 0.005, rows: int | None = None) -> Engine:
    """`torch` (the run's `train.precision` on this machine: bf16 where the CPU has it), `torch-fp32`,
    `torch-compiled` (torch's precision, compiled), `torch-int8` (torchao's dynamic int8, compiled), `onnx` (fused
    fp32), `onnx-int8`, or `auto`: the engine choose_backend measured with `max_change` that finishes a job of
    `rows` soonest (compilation counted), measured when the job scores at least AUTO_MIN_ROWS `rows` (None: a job
    of unknown size, such as a file) or already kept for this budget and machine; a smaller job uses `torch`,
    since measuring would cost more than it could save."""
    int8_search.check_budget(max_change)
    if backend == "auto":
        measure = rows is None or rows >= AUTO_MIN_ROWS or _kept_choice(run_dir, max_change) is not None
        choice = choose_backend(run_dir, max_change, job_rows=rows) if measure else {"chosen": "torch"}
        backend = pick(choice, rows) if measure else "torch"
        if backend != choice["chosen"]:
            print(f"slmtune: backend {backend} for these {rows} rows: {choice['chosen']} runs faster, but its "
                  "compilation would cost more than it saves", flush=True)
    run = load_run(run_dir)
    if backend == "torch":
        return Engine(backend, held_in(run.model, run.precision), run.precision)
    if backend == "torch-fp32":
        return Engine(backend, run.model, resolve_precision("fp32"))
    if backend in COMPILED:
        return _compiled(run, run_dir, backend, max_change)
    if backend in ("onnx", "onnx-int8"):
        return Engine(backend, onnx_for_run(run_dir, int8=backend == "onnx-int8", max_change=max_change),
                      resolve_precision("fp32"))
    raise SlmtuneError(f"unknown backend {backend!r}: use auto, {', '.join(ENGINES)}")


_HELD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def held_in(model: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """A copy of `model` with its weights in `precision`'s dtype where Precision.inference holds them so (a CPU in
    bf16), made once per model and kept while the model lives (a server asks for its engine at every pass), so
    that no call casts the weights again; else `model` itself."""
    if not precision.holds_weights:
        return model
    held = _HELD.get(model)
    if held is None:
        held = _HELD[model] = copy.deepcopy(model).to(precision.dtype).eval()
    return held


def compile_frozen(model: torch.nn.Module) -> torch.nn.Module:
    """`model` compiled by Inductor for inference: dynamic shapes (any batch and length without recompiling) and
    frozen weights (constants folded into the graph, so bf16 casts of the weights happen once, at compilation).
    The model must not be trained afterwards."""
    return torch.compile(model.eval(), dynamic=True, options={"freezing": True})


def _compiled(run, run_dir: str | Path, backend: str, max_change: float) -> Engine:
    """torch-compiled or torch-int8, compiled on two short texts here so that a machine where Inductor cannot
    compile (no C++ compiler, an unsupported CPU) falls back to `torch` with one line instead of failing mid-job."""
    from slmtune.serve.logits import predict_logits

    missing = int8_search.torchao_missing() if backend == "torch-int8" else None
    if missing is None:
        try:
            if backend == "torch-int8":
                model, precision = int8_search.torch_int8(run, run_dir, max_change), resolve_precision("fp32")
            else:
                model, precision = held_in(run.model, run.precision), run.precision
            model = compile_frozen(model)
            with int8_search.quiet_torchao():
                predict_logits(model, run.tokenizer, ["a short text to compile on", "and another one"],
                               max_length=run.config.data.max_length, precision=precision, cache=False)
            return Engine(backend, model, precision)
        except Exception as exc:  # noqa: BLE001 (an optional accelerator: any failure falls back, said in one line)
            missing = f"{backend} could not compile here ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
    print(f"slmtune: {missing}; using torch", flush=True)
    return Engine("torch", run.model, run.precision)


def pick(choice: dict[str, Any], rows: int | None) -> str:
    """The engine of a kept `choice` that finishes `rows` texts soonest among those within its budget, counting
    each process's compilation for the COMPILED engines; the fastest (`chosen`) for a job of unknown size."""
    if rows is None or not choice.get("candidates"):
        return choice["chosen"]
    allowed = [row for row in choice["candidates"] if row["changed"] <= choice["max_change"]]
    return min(allowed, key=lambda row: row.get("compile_s", 0) + rows / row["rows_per_s"])["backend"]


def choose_backend(run_dir: str | Path, max_change: float = 0.005, rows: int = 1000,
                   job_rows: int | None = None) -> dict[str, Any]:
    """The fastest backend whose predictions differ from fp32 torch's on at most `max_change` of the run's own
    rows (up to `rows`; int8.measured_rows: rows it never trained on first, never test rows); a multi-label row
    counts as changed when any label of its set does. The COMPILED engines are measured (with their compilation
    time) only for a job of at least COMPILE_MIN_ROWS `job_rows` (torch-int8 with torchao installed). Measured
    once per run, budget and machine, kept in RUN_DIR/backend.json; the choice and its figures are printed."""
    import importlib.util
    import time

    from slmtune.serve.logits import predict_logits

    compiled = [name for name in COMPILED if job_rows is not None and job_rows >= COMPILE_MIN_ROWS
                and (name != "torch-int8" or int8_search.torchao_missing() is None)]
    before = _kept_choice(run_dir, max_change)
    measured = {row["backend"] for row in before.get("candidates", [])} if before else set()
    if before is not None and set(compiled) <= measured:
        return before
    run = load_run(run_dir)
    path = Path(run_dir) / CHOICE_FILE
    texts = int8_search.measured_rows(run, check_rows=rows)[0]
    names = ["torch-fp32", *(["torch"] if run.precision.name != "fp32" else []),
             *(["onnx", "onnx-int8"] if importlib.util.find_spec("onnxruntime") else []),
             *compiled] if before is None else [name for name in compiled if name not in measured]
    reference, table = None, list(before.get("candidates", [])) if before else []
    for name in names:
        started = time.perf_counter()
        candidate = engine(run_dir, name, max_change)
        kwargs = {"batch_size": run.config.train.eval_batch_size, "max_length": run.config.data.max_length,
                  "precision": candidate.precision, "truncation": run.config.data.truncation, "cache": False}
        predict_logits(candidate.model, run.tokenizer, texts[:64], **kwargs)  # warm-up
        setup = time.perf_counter() - started
        start = time.perf_counter()
        predicted = decisions(run, predict_logits(candidate.model, run.tokenizer, texts, **kwargs))
        speed = len(texts) / (time.perf_counter() - start)
        if name == "torch-fp32":
            reference = predicted
        if candidate.name != name:  # could not run here (said)
            continue
        if reference is None:  # only compiled engines are new: their reference is fp32 torch's again
            reference = decisions(run, predict_logits(run.model, run.tokenizer, texts, **{
                **kwargs, "precision": resolve_precision("fp32")}))
        table.append({"backend": name, "rows_per_s": round(speed, 1),
                      "changed": round(float(np.mean((predicted != reference).any(axis=1))), 5),
                      **({"compile_s": round(setup, 1)} if name in COMPILED else {})})
    allowed = [row for row in table if row["changed"] <= max_change]
    chosen = max(allowed, key=lambda row: row["rows_per_s"])
    choice = kept.save(path, {"chosen": chosen["backend"], "rows": len(texts), "candidates": table}, max_change)
    cells = ", ".join(f"{r['backend']} {r['rows_per_s']:.0f}/s ({r['changed']:.2%} changed"
                      + (f", {r['compile_s']:.0f} s to compile" if "compile_s" in r else "") + ")" for r in table)
    print(f"slmtune: backend {chosen['backend']}: the fastest whose predictions differ from fp32 torch on at most "
          f"{max_change:.2%} of {len(texts)} of the run's rows, never test rows ({cells})", flush=True)
    return choice


def _kept_choice(run_dir: str | Path, max_change: float) -> dict[str, Any] | None:
    """The choice kept in RUN_DIR/backend.json for this budget on this machine, if any."""
    int8_search.check_budget(max_change)
    return kept.load(Path(run_dir) / CHOICE_FILE, max_change)


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


def onnx_for_run(run_dir: str | Path, int8: bool = False, max_change: float = 0.005) -> OnnxClassifier:
    """The run's ONNX model, exported into RUN_DIR/onnx/ on first use; the int8 one is searched for `max_change`
    (slmtune.serve.int8) and searched again for another budget or on another machine (int8 kernels differ
    between CPUs)."""
    run = load_run(run_dir)
    folder = Path(run_dir) / "onnx"
    path = folder / ONNX_FILES[int8]
    if not path.is_file() or int8 and kept.load(folder / int8_search.PLAN_FILE, max_change) is None:
        folder.mkdir(exist_ok=True)
        export_onnx(copy.deepcopy(run.model), folder, int8=int8,
                    quantize_with=int8_search.for_run(run, max_change) if int8 else None)
    return OnnxClassifier(path, len(run.label_names), threads=run.config.train.threads)
