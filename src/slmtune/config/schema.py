"""The run configuration's schema: typed dataclasses with a docstring per field, choice fields as `Literal` types
checked in one generic place (`check_choices`), and the defaults that depend on the method."""

from __future__ import annotations

import functools
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from slmtune.errors import SlmtuneError

Method = Literal["lora", "full"]
CleanRules = Literal["auto", "generic", "agnews"]  # slmtune.data.clean; auto: agnews for ag_news
Truncation = Literal["head", "tail", "head+tail"]  # slmtune.data.tokenize
AugmentOp = Literal["synonym", "insert", "delete", "swap", "backtranslate"]  # EDA (Wei & Zou 2019), back-translation
HeadInit = Literal["auto", "random", "probe", "prompt"]  # how the classification head starts (slmtune.resolve)
Pooling = Literal["cls", "mean"]  # what the head reads; `mean` is built by slmtune.models.pooling
BlendWith = Literal["tfidf"]  # what `model.blend` averages an encoder with (slmtune.blend)
Metric = Literal["auto", "accuracy", "macro_f1", "micro_f1"]
ClassWeight = Literal["none", "balanced", "auto"]
Device = Literal["auto", "cpu", "cuda"]
PrecisionChoice = Literal["auto", "fp32", "bf16"]

METHODS = typing.get_args(Method)
CLEAN_RULES = ("generic", "agnews")
TRUNCATIONS = typing.get_args(Truncation)
AUGMENT_OPS = typing.get_args(AugmentOp)
EDA_OPS = AUGMENT_OPS[:4]
HEAD_INITS = typing.get_args(HeadInit)
POOLINGS = typing.get_args(Pooling)
BLENDS = typing.get_args(BlendWith)
# What the head reads when `model.pooling` is not set; measured, see docs/results.md.
DEFAULT_POOLING = {"lora": "cls", "full": "mean"}
# Learning rates used when `train.learning_rate` is not set; measured, see docs/results.md.
DEFAULT_LR = {"lora": 1e-3, "full": 5e-5}
# Fields whose null means "the method's default": cleared when the method changes, so they re-resolve.
METHOD_DEFAULTED = ("train.learning_rate", "model.pooling")



@functools.cache
def _choice_fields(cls: type) -> tuple[tuple[str, tuple, bool, bool], ...]:
    """(field, choices, a list of them, null allowed) for every `Literal` field of a config dataclass."""
    out = []
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint)
        optional = type(None) in args
        if optional:
            hint = next(a for a in args if a is not type(None))
        is_list = typing.get_origin(hint) is list
        if is_list:
            hint = typing.get_args(hint)[0]
        if typing.get_origin(hint) is Literal:
            out.append((name, typing.get_args(hint), is_list, optional))
    return tuple(out)


def check_choices(config: Any, section: str) -> None:
    """Every `Literal` field of `config` holds one of its choices (each item of a list field): else a one-line
    error naming the field, the choices and the value."""
    for name, choices, is_list, optional in _choice_fields(type(config)):
        value = getattr(config, name)
        if value is None and optional:
            continue
        for item in (value if is_list and isinstance(value, list) else [value]):
            if item not in choices:
                raise SlmtuneError(f"{section}.{name} must be one of {', '.join(choices)}"
                                   f"{' or null' if optional else ''}, got {item!r}")


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
    clean_rules: CleanRules = "auto"
    """`generic` (HTML entities, whitespace), `agnews` (also AG News scraping debris: bare entities,
    Windows-1252 codes, stray tags, backslashes), or `auto`: agnews for `dataset: ag_news`, generic otherwise."""
    max_length: int = 128
    """Tokens per text after truncation."""
    truncation: Truncation = "head"
    """What a longer text keeps: `head` (its first tokens), `tail` (its last) or `head+tail` (a quarter of
    `max_length` from the start, the rest from the end). The run reports how many texts were cut."""
    augment_ratio: float = 0.0
    """Augmented training rows added per training row (0 = none; 0.5 adds half as many again)."""
    augment_ops: list[AugmentOp] = field(default_factory=lambda: list(EDA_OPS))
    """Augmentation operations, one drawn per augmented row: synonym, insert, delete, swap, backtranslate."""
    augment_rate: float = 0.1
    """EDA's alpha: the share of a text's words an operation touches."""
    back_translation: str = "apertium"
    """Back-translation backend: `apertium[:eng-spa]` or `marian[:<forward model>,<backward model>]`."""

    def __post_init__(self) -> None:
        check_choices(self, "data")
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
        if self.clean_rules == "auto":
            self.clean_rules = "agnews" if self.dataset == "ag_news" else "generic"
        if self.augment_ratio < 0:
            raise SlmtuneError(f"data.augment_ratio must be non-negative, got {self.augment_ratio}")
        if not self.augment_ops:
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
    method: Method = "lora"
    """`lora` (adapters + classifier head) or `full` (every weight but the word-embedding matrix, which
    `model.freeze_word_embeddings=false` trains too)."""
    dropout: float | None = None
    """Encoder hidden dropout while training; null keeps the checkpoint's (0.1 for MiniLM)."""
    attention_dropout: float | None = None
    """Dropout on attention probabilities while training; null keeps the checkpoint's (0.1 for MiniLM).
    `dropout=0 attention_dropout=0` trains about 27% faster on CPU (docs/results.md)."""
    pooling: Pooling | None = None
    """What the classifier head reads: `cls` (the first token, the architecture's own head) or `mean` (the
    masked mean of the last hidden states, as sentence encoders like all-MiniLM-L6-v2 were trained; done by
    one frozen extra layer, so saved and exported models stay stock transformers classes). Null uses the
    method's default (LoRA cls, full mean)."""
    head_init: HeadInit = "auto"
    """How the classification head starts: `random` (the architecture's init), `probe` (a logistic regression
    fitted on the frozen model's head features over the training rows, then fine-tuned: LP-FT), `prompt` (full
    fine-tuning only: the encoder first tuned by the few-shot prompt method, its head starting as the zero-shot
    label-prompt classifier, slmtune.methods.prompt_head; then the probe on the tuned features; with
    `train.epochs=0` this is the few-shot prompt model as a run), or `auto`:
    probe for single-label data with at most 100 training rows per class on average, random otherwise
    (slmtune.resolve)."""
    freeze_word_embeddings: bool = True
    """Full fine-tuning: keep the word-embedding matrix (half of MiniLM's weights) as pretrained; position
    embeddings, LayerNorms and every other weight still train. It then gets no gradient and no AdamW update: full
    fine-tuning trained faster, with test accuracy no lower on 5 seeds of AG News and of Reuters (docs/speed.md).
    `false` trains it too (as the reference study's recipe does). LoRA never trains it."""
    blend: BlendWith | None = None
    """`tfidf`: average the encoder's class probabilities with a TF-IDF + logistic regression model's, with a weight
    chosen on the validation rows' log-loss (per label on multi-label data); `predict`, `evaluate` and `export` serve
    the blend. Null: the encoder alone."""

    def __post_init__(self) -> None:
        check_choices(self, "model")
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
        check_choices(self, "lora")
        if self.r < 1:
            raise SlmtuneError(f"lora.r must be positive, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise SlmtuneError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    epochs: float | None = None
    """Passes over the training rows; null: 3, or 6 for LoRA on imbalanced data (largest class over 3x the
    smallest) and on multi-label data, where rare classes were still being learned at epoch 3 (docs/results.md).
    The run prints and records the number it trained. 0: no fine-tuning, a linear probe on the frozen encoder's
    features (the head fitted as a logistic regression; single-label data)."""
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
    metric: Metric = "auto"
    """Validation metric that picks the best checkpoint: `accuracy`, `macro_f1`, `micro_f1` (multi-label), or
    `auto`: micro-F1 on multi-label data, else macro-F1 when the largest class has more than 3x the training
    rows of the smallest, else accuracy."""
    per_label_thresholds: bool = True
    """Multi-label: besides the one decision threshold tuned on validation, each label takes its own where that
    raises its validation F1 by more than one row's worth (on Reuters topic sets: test macro-F1 0.577 -> 0.730,
    micro-F1 0.874 -> 0.879; docs/results.md); false keeps the one shared threshold."""
    class_weight: ClassWeight = "none"
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
    device: Device = "auto"
    """`auto` (CUDA when present, else CPU), `cpu` or `cuda`."""
    precision: PrecisionChoice = "auto"
    """`auto` (bf16 autocast on CUDA and on CPUs with native bf16, AVX512-BF16 or AMX; fp32 elsewhere), `fp32` or
    `bf16`. Weights and optimizer state stay fp32; training, validation and test passes all use it (on a CPU, the
    passes after training hold the weights in bf16 and run the whole forward in it). The choice and why are printed
    and recorded in env.json."""

    def __post_init__(self) -> None:
        check_choices(self, "train")
        if self.epochs is not None and self.epochs < 0:
            raise SlmtuneError(f"train.epochs must be positive (or 0: a linear probe), got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise SlmtuneError("train.batch_size and train.eval_batch_size must be positive")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise SlmtuneError(f"train.learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.weight_decay < 1:
            raise SlmtuneError(f"train.weight_decay must be in [0, 1), got {self.weight_decay}")
        if not 0 < self.layer_decay <= 1:
            raise SlmtuneError(f"train.layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.max_evals is not None and self.max_evals < 1:
            raise SlmtuneError(f"train.max_evals must be positive or null, got {self.max_evals}")


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
        if self.data.multi_label and self.model.head_init in ("probe", "prompt"):
            raise SlmtuneError(f"model.head_init={self.model.head_init} fits a single-label head; use "
                               "head_init=random with data.multi_label")
        if self.model.head_init == "prompt" and self.model.method != "full":
            raise SlmtuneError("model.head_init=prompt tunes every encoder weight first, which a LoRA run does not "
                               "save; use model.method=full")

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

