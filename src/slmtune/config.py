"""Typed run configuration: dataclasses with validation, YAML load/dump and ``key=value`` overrides."""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from slmtune.errors import SlmtuneError

METHODS = ("lora", "full")
CLEAN_RULES = ("generic", "agnews")  # slmtune.data.clean
TRUNCATIONS = ("head", "tail", "head+tail")  # slmtune.data.tokenize
# What a dataset brings when the config leaves a field out: the AG News reference recipe's sizes.
DATASET_DEFAULTS = {"ag_news": {"train_size": 2400, "val_size": 240}}
EDA_OPS = ("synonym", "insert", "delete", "swap")  # EDA (Wei & Zou 2019), slmtune.data.augment
AUGMENT_OPS = (*EDA_OPS, "backtranslate")
HEAD_INITS = ("auto", "random", "probe")  # how the classification head starts; `probe` is slmtune.head_init
# head_init=auto fits the probe when a single-label training set has at most this many rows per class: measured
# better than a random head at 23 (Reuters topics, 500 rows), 25 and 100 (AG News, 100 and 400 rows) a class
# (docs/results.md); not measured between 100 and 600 a class, where LP-FT and a random head were level.
PROBE_ROWS_PER_CLASS = 100
POOLINGS = ("cls", "mean")  # what the head reads; `mean` is built by slmtune.pooling
# What the head reads when `model.pooling` is not set; measured, see docs/results.md.
DEFAULT_POOLING = {"lora": "cls", "full": "mean"}
# Learning rates used when `train.learning_rate` is not set; measured, see docs/results.md.
DEFAULT_LR = {"lora": 1e-3, "full": 5e-5}
IMBALANCED = 3.0  # largest class over smallest: above this the data counts as imbalanced (metric, weights, epochs)
# `train.epochs` when null: EPOCHS, but LONG_EPOCHS for LoRA on imbalanced or multi-label data, where the rare
# classes were still being learned at epoch 3 (Reuters topics and topic sets, docs/results.md).
EPOCHS = 3
LONG_EPOCHS = 6
# `slmtune train` flags that set the most used fields (`--model X` is `model.name=X`): flag -> (field, help).
TRAIN_SHORTCUTS = {  # --flag: (config field, help)
    "--model": ("model.name", "minilm-l6 (default), distilbert-base-uncased, a Hub id or a local folder"),
    "--data-dir": ("data.data_dir", "AG News CSV folder (default: $SLMTUNE_DATA_DIR, else the Hub)"),
    "--dataset": ("data.dataset", "ag_news, a CSV/TSV/JSONL/Parquet training file, a folder of train/validation/"
                                  "test files, or a Hugging Face dataset id"),
    "--dataset-config": ("data.dataset_config", "the Hugging Face dataset's configuration, e.g. sst2 of glue"),
    "--test-file": ("data.test_file", "test rows for a dataset file (default: its own test split, else 20%)"),
    "--text-column": ("data.text_column", "the text column of a custom dataset"),
    "--label-column": ("data.label_column", "the label column of a custom dataset"),
    "--output-dir": ("output_dir", "run folder (default runs/<name>-<timestamp>); must be new or empty"),
    "--multi-label": ("data.multi_label", "each row holds a set of labels, separated by --label-separator"),
    "--label-separator": ("data.label_separator", "multi-label: what separates a row's labels (default ,)"),
    "--name": ("name", "run name"),
    "--seed": ("seed", "seed of the data draw, batch order and initialisation"),
}


# The TRAIN_SHORTCUTS that every study command takes too: which data a study runs on.
DATA_SHORTCUTS = ("--dataset", "--dataset-config", "--test-file", "--text-column", "--label-column", "--multi-label",
                  "--label-separator")
# Fields that belong to a recipe's own dataset (AG News' reference sizes, its folder, its epochs): a study or an
# override that names another dataset leaves them out (slmtune.experiments.common.load_run_config), so they follow
# the data.
DATASET_BOUND = ("data.train_size", "data.val_size", "data.test_size", "data.data_dir", "data.test_file",
                 "train.epochs")


def shortcut_kwargs(flag: str) -> dict[str, Any]:
    """argparse settings of a TRAIN_SHORTCUTS flag: a switch for a boolean field, else a typed value."""
    help_text = TRAIN_SHORTCUTS[flag][1].replace("%", "%%")  # argparse formats help with %
    if flag == "--multi-label":
        return {"action": "store_const", "const": "true", "help": help_text}
    return {"help": help_text, "type": int if flag == "--seed" else str}


# Fields whose null means "the method's default": cleared when the method changes, so they re-resolve.
METHOD_DEFAULTED = ("train.learning_rate", "model.pooling")


@dataclass
class DataConfig:
    dataset: str = "ag_news"
    """`ag_news`; a CSV / TSV / JSONL / Parquet file of training rows; a folder holding `train.*` and optionally
    `validation.*` (or `valid.*`, `dev.*`) and `test.*`; or a Hugging Face dataset id (`datasets.load_dataset`)."""
    dataset_config: str | None = None
    """Hugging Face datasets: the configuration (subset) name, e.g. `sst2` of `glue`."""
    splits: dict[str, str] | None = None
    """Hugging Face datasets: split names when they differ, e.g. `{train: train, validation: dev, test: test}`."""
    data_dir: str | None = None
    """Folder with AG News in its original CSVs (train.csv or train_subset_*.csv, test.csv).
    Falls back to $SLMTUNE_DATA_DIR, then to the Hugging Face Hub."""
    test_file: str | None = None
    """Test rows for a `dataset` file; without it the dataset's own test split, else a stratified 20% is held out."""
    validation_file: str | None = None
    """Validation rows for a `dataset` file; without it the dataset's own validation split, else `val_size`."""
    text_column: str = "text"
    """Column holding the text (files and Hub datasets)."""
    label_column: str = "label"
    """Column holding the label: strings, or integers (which are labels too: 1..4 makes 4 classes)."""
    multi_label: bool = False
    """Each row holds a set of labels (zero or more): the label column lists them, separated by `label_separator`
    (a JSON list in JSONL / Parquet). Trains one sigmoid output per label with BCE; a decision threshold is tuned
    on validation (`train.per_label_thresholds`); runs report micro / macro F1 and subset accuracy."""
    label_separator: str = ","
    """Multi-label: what separates the labels of a row in a text cell (`a,b`; `|` for `a|b`)."""
    train_size: int | None = None
    """Training rows drawn stratified from the training split; null takes every row (the AG News recipes: 2,400)."""
    val_size: int | None = None
    """Validation rows drawn stratified from the training split when the dataset has no validation split;
    null takes 10% of it (at least 2 per class, at most 2,000)."""
    shots_per_class: int | None = None
    """Few-shot: exactly this many training rows per class (replaces train_size)."""
    test_size: int | None = None
    """Test rows (stratified subsample); null keeps the whole test set."""
    clean: bool = True
    """Clean text before tokenising (rules: `clean_rules`)."""
    clean_rules: str = "auto"
    """`generic` (HTML entities, whitespace), `agnews` (also AG News scraping debris: bare entities,
    Windows-1252 codes, stray tags, backslashes), or `auto`: agnews for `dataset: ag_news`, generic otherwise."""
    max_length: int = 128
    """Tokens per text after truncation."""
    truncation: str = "head"
    """What a longer text keeps: `head` (its first tokens), `tail` (its last) or `head+tail` (a quarter of
    `max_length` from the start, the rest from the end). The run reports how many texts were cut."""
    augment_ratio: float = 0.0
    """Augmented training rows added per training row (0 = none; 0.5 adds half as many again)."""
    augment_ops: list[str] = field(default_factory=lambda: list(EDA_OPS))
    """Augmentation operations, one drawn per augmented row: synonym, insert, delete, swap, backtranslate."""
    augment_rate: float = 0.1
    """EDA's alpha: the share of a text's words an operation touches."""
    back_translation: str = "apertium"
    """Back-translation backend: `apertium[:eng-spa]` or `marian[:<forward model>,<backward model>]`."""

    def __post_init__(self) -> None:
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SlmtuneError(f"data.{name} must be a positive integer or null, got {value}")
        if self.shots_per_class is not None and self.shots_per_class < 1:
            raise SlmtuneError(f"data.shots_per_class must be positive, got {self.shots_per_class}")
        if self.val_size is not None and self.val_size < 1:
            raise SlmtuneError(f"data.val_size must be positive or null, got {self.val_size}")
        if self.splits is not None and (not isinstance(self.splits, dict) or
                                        not set(self.splits) <= {"train", "validation", "test"}):
            raise SlmtuneError(f"data.splits maps train / validation / test to the dataset's split names, e.g. "
                               f"{{train: train, validation: dev}}; got {self.splits!r}")
        if self.truncation not in TRUNCATIONS:
            raise SlmtuneError(f"data.truncation must be one of {', '.join(TRUNCATIONS)}, got {self.truncation!r}")
        if self.clean_rules == "auto":
            self.clean_rules = "agnews" if self.dataset == "ag_news" else "generic"
        if self.clean_rules not in CLEAN_RULES:
            raise SlmtuneError(f"data.clean_rules must be one of {', '.join(CLEAN_RULES)}, got {self.clean_rules!r}")
        if self.augment_ratio < 0:
            raise SlmtuneError(f"data.augment_ratio must be non-negative, got {self.augment_ratio}")
        unknown = [op for op in self.augment_ops if op not in AUGMENT_OPS]
        if unknown or not self.augment_ops:
            raise SlmtuneError(f"data.augment_ops takes a non-empty list of {', '.join(AUGMENT_OPS)}; "
                               f"got {self.augment_ops!r}")
        if not 0 < self.augment_rate <= 1:
            raise SlmtuneError(f"data.augment_rate must be in (0, 1], got {self.augment_rate}")
        if self.multi_label and not self.label_separator:
            raise SlmtuneError("data.label_separator must not be empty")
        if self.multi_label and self.shots_per_class is not None:
            raise SlmtuneError("data.shots_per_class needs single-label data (a row of several labels counts for "
                               "each); use data.train_size with data.multi_label")
        if self.max_length < 8:
            raise SlmtuneError(f"data.max_length must be at least 8, got {self.max_length}")


@dataclass
class ModelConfig:
    name: str = "minilm-l6"
    """Alias (`minilm-l6`, `distilbert-base-uncased`), Hugging Face id, or local model folder."""
    method: str = "lora"
    """`lora` (adapters + classifier head) or `full` (every weight)."""
    dropout: float | None = None
    """Encoder hidden dropout while training; null keeps the checkpoint's (0.1 for MiniLM)."""
    attention_dropout: float | None = None
    """Dropout on attention probabilities while training; null keeps the checkpoint's (0.1 for MiniLM).
    `dropout=0 attention_dropout=0` trains about 27% faster on CPU (docs/results.md)."""
    pooling: str | None = None
    """What the classifier head reads: `cls` (the first token, the architecture's own head) or `mean` (the
    masked mean of the last hidden states, as sentence encoders like all-MiniLM-L6-v2 were trained; done by
    one frozen extra layer, so saved and exported models stay stock transformers classes). Null uses the
    method's default (LoRA cls, full mean)."""
    head_init: str = "auto"
    """How the classification head starts: `random` (the architecture's init), `probe` (a logistic regression
    fitted on the frozen model's head features over the training rows, then fine-tuned: LP-FT), or `auto`:
    probe for single-label data with at most 100 training rows per class on average, random otherwise."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SlmtuneError(f"model.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.head_init not in HEAD_INITS:
            raise SlmtuneError(f"model.head_init must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise SlmtuneError(f"model.pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise SlmtuneError(f"model.{name} must be in [0, 1) or null, got {value}")


@dataclass
class LoraConfig:
    r: int = 8
    """Rank of the adapter matrices."""
    alpha: int = 16
    """Scaling numerator (scale = alpha / r)."""
    dropout: float = 0.1
    """Dropout on the adapter input."""
    target_modules: list[str] | None = None
    """Linear layers to adapt: module names, `all-linear` (every linear layer but the head, as PEFT defines it), or
    null: the attention query and value projections from PEFT's mapping per architecture (BERT query,value),
    completed by slmtune for those PEFT lacks (DistilBERT q_lin,v_lin; MPNet q,v; ModernBERT Wqkv)."""
    modules_to_save: list[str] | None = None
    """Modules trained in full and saved with the adapter; null is the architecture's classification head."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise SlmtuneError(f"lora.r must be positive, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise SlmtuneError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    epochs: float | None = None
    """Passes over the training rows; null: 3, or 6 for LoRA on imbalanced data (largest class over 3x the
    smallest) and on multi-label data, where rare classes were still being learned at epoch 3 (docs/results.md).
    The run prints and records the number it trained."""
    batch_size: int = 16
    """Training batch size."""
    eval_batch_size: int = 64
    """Inference batch size (rows are sorted by length, so large batches waste nothing)."""
    learning_rate: float | None = None
    """Peak learning rate; null uses the method's default (LoRA 1e-3, full 5e-5)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    layer_decay: float = 1.0
    """Layer-wise learning-rate decay: the head and pooler train at the learning rate, encoder layer i (of L)
    at lr x layer_decay^(L - i), the embeddings at lr x layer_decay^(L + 1); 1 trains every layer alike."""
    warmup_ratio: float = 0.0
    """Share of steps with linear warm-up."""
    scheduler: str = "linear"
    """Learning-rate schedule (any transformers `lr_scheduler_type`)."""
    patience: int = 3
    """Early stopping: evaluations without improvement before stopping."""
    threshold: float = 0.001
    """Early stopping: smallest improvement that counts."""
    metric: str = "auto"
    """Validation metric that picks the best checkpoint: `accuracy`, `macro_f1`, `micro_f1` (multi-label), or
    `auto`: micro-F1 on multi-label data, else macro-F1 when the largest class has more than 3x the training
    rows of the smallest, else accuracy."""
    per_label_thresholds: bool = True
    """Multi-label: besides the one decision threshold tuned on validation, each label takes its own where that
    raises its validation F1 by more than one row's worth (on Reuters topic sets: test macro-F1 0.577 -> 0.730,
    micro-F1 0.874 -> 0.879; docs/results.md); false keeps the one shared threshold."""
    class_weight: str = "none"
    """`none`; `balanced`: the loss weighs each class by n_rows / (n_classes x its rows); `auto`: balanced when
    the largest class has more than 3x the training rows of the smallest, else none."""
    baseline: bool = True
    """Also fit TF-IDF + logistic regression on the same split (seconds) and report it beside the model."""
    evals_per_epoch: int = 1
    """Validation evaluations per epoch."""
    max_evals: int | None = None
    """At most this many validation evaluations (evenly spaced) per run; null keeps `evals_per_epoch`.
    Studies set it when tiny training sets get many epochs, where evaluating every epoch would cost more
    than training."""
    final_test: bool = False
    """Also score the test set with the final model, before the best checkpoint is restored (result.json
    `metrics.test_final`): for studying checkpoint selection; one more test pass. A run that early stopping
    ends before its last step has none."""
    report_to: str = "none"
    """Trainer integrations (`tensorboard`, `mlflow`, `wandb`, `all`), passed through."""
    threads: int | None = None
    """CPU threads for torch; null uses every core."""
    device: str = "auto"
    """`auto` (CUDA when present, else CPU), `cpu` or `cuda`."""
    precision: str = "auto"
    """`auto` (bf16 autocast on CUDA and on CPUs with native bf16, AVX512-BF16 or AMX; fp32 elsewhere), `fp32` or
    `bf16`. Weights and optimizer state stay fp32; training, validation and test passes all use it. The choice and
    why are printed and recorded in env.json."""

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs <= 0:
            raise SlmtuneError(f"train.epochs must be positive, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise SlmtuneError("train.batch_size and train.eval_batch_size must be positive")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise SlmtuneError(f"train.learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.weight_decay < 1:
            raise SlmtuneError(f"train.weight_decay must be in [0, 1), got {self.weight_decay}")
        if not 0 < self.layer_decay <= 1:
            raise SlmtuneError(f"train.layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.metric not in ("auto", "accuracy", "macro_f1", "micro_f1"):
            raise SlmtuneError(f"train.metric must be auto, accuracy, macro_f1 or micro_f1, got {self.metric!r}")
        if self.class_weight not in ("none", "balanced", "auto"):
            raise SlmtuneError(f"train.class_weight must be none, balanced or auto, got {self.class_weight!r}")
        if self.max_evals is not None and self.max_evals < 1:
            raise SlmtuneError(f"train.max_evals must be positive or null, got {self.max_evals}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise SlmtuneError(f"train.device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise SlmtuneError(f"train.precision must be auto, fp32 or bf16, got {self.precision!r}")


@dataclass
class RunConfig:
    name: str | None = None
    """Run name; the run folder is runs/<name>-<timestamp> unless `output_dir` is set. Null: the dataset's
    name and the method, e.g. `agnews-lora`."""
    output_dir: str | None = None
    """Run folder to write; null makes runs/<name>-<timestamp>."""
    seed: int = 42
    """Seeds the train/validation draw, data order, model head and LoRA init."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.train.learning_rate is None:
            self.train.learning_rate = DEFAULT_LR[self.model.method]
        if self.model.pooling is None:
            self.model.pooling = DEFAULT_POOLING[self.model.method]
        if self.name is None:
            self.name = f"{dataset_slug(self.data.dataset)}-{self.model.method}"
        if self.data.multi_label and self.model.head_init == "probe":
            raise SlmtuneError("model.head_init=probe fits a single-label probe; use head_init=random with "
                               "data.multi_label")

    def head_init_for(self, rows: int, classes: int) -> str:
        """`model.head_init` resolved for a training set of `rows` rows and `classes` classes."""
        if self.model.head_init != "auto":
            return self.model.head_init
        few = rows <= PROBE_ROWS_PER_CLASS * classes
        return "probe" if few and not self.data.multi_label else "random"

    def epochs_for(self, imbalance: float, multi_label: bool) -> float:
        """`train.epochs` resolved for training data with this imbalance (largest class over smallest)."""
        if self.train.epochs is not None:
            return self.train.epochs
        long = self.model.method == "lora" and (multi_label or imbalance > IMBALANCED)
        return LONG_EPOCHS if long else EPOCHS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_slug(dataset: str) -> str:
    """A short name for a dataset: `agnews`, a file's stem (its folder's name for train.csv), a Hub id's last part."""
    import re

    path = Path(dataset)
    stem = "agnews" if dataset == "ag_news" else path.stem if path.suffix else path.name
    if stem.lower() in ("train", "training", "data") and path.suffix:
        stem = path.resolve().parent.name or stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "data"


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "lora": LoraConfig, "train": TrainConfig}


def _check_keys(cls: type, values: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            raise SlmtuneError(f"unknown config field {where}{key!r}; known: {', '.join(sorted(known))}")


def _coerce(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Each value checked against its field's type: numbers written as strings ("5e-4" is a string to YAML 1.1)
    become numbers, "a,b" becomes a list, 3.0 an int; anything else of the wrong type is a one-line error."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for key, value in values.items():
        if key in _SECTIONS and cls is RunConfig:
            continue
        hint = hints.get(key)
        if hint is not None:
            out[key] = _coerce_value(hint, value, f"{where}{key}")
    return out


def _coerce_value(hint: Any, value: Any, name: str) -> Any:
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is list:
        if isinstance(value, str):  # "a,b" from the command line
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise SlmtuneError(f"config field {name} expects a list, got {value!r}")
        return [_coerce_value(args[0], item, name) for item in value] if args else value
    if hint is bool:
        if not isinstance(value, bool):
            raise SlmtuneError(f"config field {name} expects true or false, got {value!r}")
        return value
    if hint in (int, float):
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise SlmtuneError(f"config field {name} expects a number, got {value!r}") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise SlmtuneError(f"config field {name} expects a {'whole ' if hint is int else ''}number, "
                               f"got {value!r}")
        if hint is int:
            if not float(number).is_integer():
                raise SlmtuneError(f"config field {name} expects a whole number, got {value!r}")
            return int(number)
        return number
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `name: 2024` in YAML
        if not isinstance(value, str):
            raise SlmtuneError(f"config field {name} expects text, got {value!r}")
        return value
    return value


def from_dict(values: dict[str, Any]) -> RunConfig:
    """Build a validated RunConfig from a nested dict (as read from YAML)."""
    if not isinstance(values, dict):
        raise SlmtuneError("a config must be a mapping of fields to values")
    _check_keys(RunConfig, values, "")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise SlmtuneError(f"config section {key!r} must be a mapping")
            _check_keys(_SECTIONS[key], value, f"{key}.")
            try:
                kwargs[key] = _SECTIONS[key](**_coerce(_SECTIONS[key], value, f"{key}."))
            except TypeError as exc:
                raise SlmtuneError(f"bad value in config section {key!r}: {exc}") from None
        else:
            kwargs[key] = value
    kwargs = _coerce(RunConfig, kwargs, "")
    try:
        return RunConfig(**kwargs)
    except TypeError as exc:
        raise SlmtuneError(f"bad config value: {exc}") from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=1", "lora.r=16"]`` into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SlmtuneError(f"override {item!r} is not key=value (e.g. train.epochs=1)")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        if raw.strip() in ("|", ">", "-", "?", "|-", ">-"):
            value = raw  # YAML syntax alone, not a value (`|` would read as an empty block): a separator
        target = nested
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SlmtuneError(f"override {item!r} conflicts with another override")
        target[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


PACKAGED_CONFIGS = Path(__file__).parent / "configs"
"""The recipes and study configs shipped with slmtune; `configs/<name>` names one from any folder."""


def find_config(path: str | Path, beside: str | Path | None = None) -> Path:
    """The config file `path` names: as given (from the working folder) when it exists; else, for a path written
    inside the config file `beside`, relative to that file's folder or a folder above it; else, for
    `configs/...`, the copy shipped with slmtune. Unresolved paths come back as given."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    folder = Path(beside).resolve().parent if beside else None
    candidates = [f / given for f in (folder, *folder.parents)] if folder else []
    if given.parts and given.parts[0] == "configs":
        candidates.append(PACKAGED_CONFIGS.joinpath(*given.parts[1:]))
    return next((c for c in candidates if c.is_file()), given)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = find_config(path)
    if path.is_dir():
        raise SlmtuneError(f"{path} is a folder; give a config file (YAML) inside it")
    if not path.is_file():
        raise SlmtuneError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SlmtuneError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise SlmtuneError(f"config file {path} must hold a mapping of fields")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
                method: str | None = None) -> RunConfig:
    """Config from an optional YAML file plus overrides (``key=value`` strings or a nested dict).

    `method` (`--method`) switches the method: where it differs from the file's, the file's method-defaulted
    values (learning rate, pooling) give way to the new method's defaults unless an override sets them."""
    values = load_yaml(path) if path else {}
    given = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    if method is not None:
        if method != values.get("model", {}).get("method", ModelConfig.method):
            for key in METHOD_DEFAULTED:
                section, name = key.split(".")
                if name not in given.get(section, {}):
                    values.get(section, {}).pop(name, None)
        given = merge(given, {"model": {"method": method}})
    return from_dict(with_dataset_defaults(merge(for_dataset(values, given), given)))


def for_dataset(values: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`values` (a recipe) without its DATASET_BOUND fields when `update` names another dataset: AG News'
    2,400 / 240 rows and 3 epochs do not carry over to someone's own file; `update`'s own fields still apply."""
    new = (update.get("data") or {}).get("dataset")
    if new is None or new == (values.get("data") or {}).get("dataset", DataConfig.dataset):
        return values
    values = dict(values)
    for key in DATASET_BOUND:
        section, name = key.split(".")
        if name in (values.get(section) or {}):
            values[section] = {k: v for k, v in values[section].items() if k != name}
    return values


def with_dataset_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the fields its dataset brings (DATASET_DEFAULTS) where they are left out."""
    data = values.get("data") or {}
    defaults = DATASET_DEFAULTS.get(data.get("dataset", DataConfig.dataset), {})
    return merge(values, {"data": {k: v for k, v in defaults.items() if k not in data}}) if defaults else values


def replace(config: RunConfig, **changes: Any) -> RunConfig:
    """A copy of `config` with dotted-key changes, e.g. ``replace(cfg, **{"train.epochs": 1})``."""
    base = config.to_dict()
    if changes.get("model.method", config.model.method) != config.model.method:  # the new method's defaults
        for key in METHOD_DEFAULTED:
            if key not in changes:
                section, name = key.split(".")
                base[section][name] = None
    nested: dict[str, Any] = {}
    for key, value in changes.items():
        target = nested
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return from_dict(merge(base, nested))


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (read from its source: Python keeps no attribute docs)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def reference_rows() -> list[tuple[str, str, str]]:
    """(dotted field, default, help) for every run-config field, in declaration order. The method-defaulted
    fields show null: they take the method's value when the config is loaded."""
    defaults = RunConfig().to_dict()
    for key in METHOD_DEFAULTED:
        section, name = key.split(".")
        defaults[section][name] = None
    rows = [(f.name, _shown(defaults[f.name]), field_docs(RunConfig).get(f.name, ""))
            for f in fields(RunConfig) if f.name not in _SECTIONS]
    for section, cls in _SECTIONS.items():
        docs = field_docs(cls)
        rows += [(f"{section}.{f.name}", _shown(defaults[section][f.name]), docs.get(f.name, "")) for f in fields(cls)]
    return rows


def _shown(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def reference_text(prefix: str = "") -> str:
    """`slmtune config`: each field starting with `prefix` as `key = default` and its help on the next line."""
    return "".join(f"{key} = {default}\n    {help_text}\n" for key, default, help_text in reference_rows()
                   if key.startswith(prefix))


def reference_markdown() -> str:
    """docs/config.md: every field with its default and help, generated from the dataclasses (a test keeps the
    file equal to this)."""
    lines = ["# Config reference", "",
             "Every field of a run config, as `slmtune config` prints it; generated from the field docstrings in",
             "`src/slmtune/config.py` (regenerate with `slmtune config --markdown > docs/config.md`). Set a field",
             "in a YAML recipe (`train:` / `epochs: 1`) or on the command line (`train.epochs=1`).", ""]
    section = None
    for key, default, help_text in reference_rows():
        name = key.split(".")[0] if "." in key else "run"
        if name != section:
            section = name
            lines += ["", f"## {name}", "", "| field | default | meaning |", "|---|---|---|"]
        lines.append(f"| `{key}` | `{default}` | {help_text.replace('|', '/')} |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


__all__ = [
    "DataConfig", "ModelConfig", "LoraConfig", "TrainConfig", "RunConfig",
    "load_config", "from_dict", "parse_overrides", "dump_yaml", "replace",
]
