"""Use a finished run: load its best model, predict labels and probabilities, re-evaluate a split."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slmtune import runs
from slmtune.config import RunConfig, load_config
from slmtune.errors import SlmtuneError
from slmtune.evaluate import classification_metrics, predict_proba
from slmtune.models import load_classifier, load_tokenizer


@dataclass
class LoadedRun:
    config: RunConfig
    model: Any
    tokenizer: Any
    label_names: list[str]


@functools.lru_cache(maxsize=4)
def _load_cached(run_dir: str, mtime: float) -> LoadedRun:
    path = runs.require_run_dir(run_dir)
    result = runs.read_result(path)
    if result.get("status") != "success":
        raise SlmtuneError(f"{path} did not finish (status {result.get('status')!r}); it has no model to use")
    model_dir = path / "model"
    if not model_dir.is_dir():
        raise SlmtuneError(f"{path} has no model/ folder")
    config = load_config(path / "config.yaml")
    label_names = result["label_names"]
    tokenizer = load_tokenizer(str(model_dir))
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_classifier(config.model.name, label_names, pooling=config.model.pooling)
        model = PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()
    else:
        model = load_classifier(str(model_dir), label_names)
    model.eval()
    return LoadedRun(config, model, tokenizer, label_names)


def load_run(run_dir: str | Path) -> LoadedRun:
    """The run's best model (LoRA merged into plain weights), its tokenizer, config and label names."""
    path = Path(run_dir)
    marker = path / runs.RESULT
    return _load_cached(str(path.resolve()), marker.stat().st_mtime if marker.exists() else 0.0)


def predict(run_dir: str | Path, texts: list[str] | str, clean: bool | None = None,
            backend: str = "torch") -> list[dict[str, Any]]:
    """Label and class probabilities per text, cleaned as the run's training data was."""
    if isinstance(texts, str):
        texts = [texts]
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise SlmtuneError("predict needs non-empty texts")
    run = load_run(run_dir)
    if clean if clean is not None else run.config.data.clean:
        from slmtune.data.clean import clean_texts

        texts = clean_texts(texts)
    probs = predict_proba(runner(run_dir, backend), run.tokenizer, texts, batch_size=run.config.train.eval_batch_size,
                          max_length=run.config.data.max_length, progress=len(texts) > 2000)
    return [
        {"label": run.label_names[int(np.argmax(p))], "score": float(np.max(p)),
         "probabilities": {n: float(v) for n, v in zip(run.label_names, p)}}
        for p in probs
    ]


def runner(run_dir: str | Path, backend: str = "torch"):
    """What runs inference for a run: its torch model, or its ONNX export (`onnx` fused fp32, `onnx-int8`)."""
    if backend == "torch":
        return load_run(run_dir).model
    if backend in ("onnx", "onnx-int8"):
        from slmtune.export import onnx_for_run

        return onnx_for_run(run_dir, int8=backend == "onnx-int8")
    raise SlmtuneError(f"unknown backend {backend!r}: use torch, onnx or onnx-int8")


def evaluate_run(run_dir: str | Path, split: str = "test", backend: str = "torch") -> dict[str, Any]:
    """Re-evaluate the run's best model on its own split (the same rows the run drew)."""
    from slmtune.data import load_splits

    if split not in ("test", "validation", "train"):
        raise SlmtuneError(f"unknown split {split!r}: use test, validation or train")
    run = load_run(run_dir)
    data = getattr(load_splits(run.config.data, run.config.seed), split)
    model = runner(run_dir, backend)
    start = time.perf_counter()
    probs = predict_proba(model, run.tokenizer, data.texts, batch_size=run.config.train.eval_batch_size,
                          max_length=run.config.data.max_length, progress=True)
    seconds = time.perf_counter() - start
    metrics = classification_metrics(data.labels, probs.argmax(axis=1), data.label_names)
    metrics.update(backend=backend, split=split, seconds=round(seconds, 2),
                   samples_per_second=round(len(data) / seconds, 2))
    return metrics
