"""slmtune: fine-tune small language models (full and LoRA) for text classification.

The public API is imported lazily: `import slmtune.config` or `slmtune --help` loads no torch; the first use of
`slmtune.train` (or any name below) imports the module that defines it.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from typing import Any

__version__ = "0.1.0"

# torchao (the torch-int8 engine) is imported by PEFT and transformers whenever it is installed, and its import
# logs a warning per GPU kernel library a CPU build of torch cannot load, and torch one per enum it registers:
# noise in every command, about nothing slmtune uses. Errors still show.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)

_EXPORTS = {
    "slmtune.config": ["DataConfig", "LoraConfig", "ModelConfig", "RunConfig", "TrainConfig", "load_config"],
    "slmtune.data": ["TextDataset", "clean_text", "load_ag_news", "load_splits", "load_table"],
    "slmtune.errors": ["SlmtuneError"],
    "slmtune.serve.logits": ["predict_proba"],
    "slmtune.serve.metrics": ["classification_metrics", "compute_metrics"],
    "slmtune.serve.inference": ["evaluate_run", "predict", "predict_file"],
    "slmtune.serve.loading": ["load_run"],
    "slmtune.models": ["get_model", "load_classifier", "load_tokenizer"],
    "slmtune.resolve": ["DataFacts", "ResolvedRun", "resolve"],
    "slmtune.train": ["RunResult", "train"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'slmtune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


class _Package(types.ModuleType):
    """Keeps `slmtune.train` the function when the module slmtune.train is imported (Python sets a package's
    attribute to each submodule it loads)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _WHERE.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
