"""Load a finished run: its best model (LoRA merged), tokenizer, config, labels, precision."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmtune import runs
from slmtune.blend import Blend, load_blend
from slmtune.config import RunConfig, load_config
from slmtune.errors import SlmtuneError
from slmtune.models.build import load_classifier, load_tokenizer, quiet_peft
from slmtune.precision import Precision
from slmtune.precision import resolve as resolve_precision
from slmtune.serve.logits import scores_of


@dataclass
class LoadedRun:
    config: RunConfig
    model: Any
    tokenizer: Any
    label_names: list[str]
    precision: Precision
    """What inference computes in on this machine: the run's `train.precision`, resolved for the CPU."""
    thresholds: Any = None
    """Multi-label runs: each label's decision threshold (tuned on validation); None for single-label runs."""
    blend: Blend | None = None
    """`model.blend` runs: the TF-IDF part and the encoder's weight, applied to the encoder's probabilities."""

    def probabilities(self, logits, texts: list[str]):
        """The run's probabilities (multi-label: label scores) for `texts` given the encoder's logits on them:
        softmax or sigmoid, then the blend where the run has one."""
        probs = scores_of(logits, self.multi_label)
        return self.blend.mix(probs, texts) if self.blend is not None else probs

    @property
    def multi_label(self) -> bool:
        return self.thresholds is not None


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
    try:
        if (model_dir / "adapter_config.json").is_file():
            from peft import PeftModel

            base = load_classifier(config.model.name, label_names, pooling=config.model.pooling,
                                   multi_label=config.data.multi_label)
            with quiet_peft():
                model = PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()
        else:
            model = load_classifier(str(model_dir), label_names)
    except SlmtuneError:
        raise
    except Exception as exc:  # a truncated or damaged safetensors file, a config that does not match the weights
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise SlmtuneError(f"cannot load the model in {model_dir}: its files are damaged or incomplete ({reason}); "
                           "retrain the run or restore the folder") from None
    model.eval()
    thresholds = None
    if config.data.multi_label:
        from slmtune.multilabel import thresholds_of

        thresholds = thresholds_of(result.get("thresholds"), len(label_names))
    return LoadedRun(config, model, tokenizer, label_names, resolve_precision(config.train.precision, "cpu"),
                     thresholds, load_blend(model_dir, expected=config.model.blend is not None))


def load_run(run_dir: str | Path) -> LoadedRun:
    """The run's best model (LoRA merged into plain weights), its tokenizer, config and label names."""
    path = Path(run_dir)
    marker = path / runs.RESULT
    return _load_cached(str(path.resolve()), marker.stat().st_mtime if marker.exists() else 0.0)
