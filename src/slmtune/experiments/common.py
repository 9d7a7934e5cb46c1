"""What every study shares: a study folder whose runs are keyed by their config, so a run is never trained twice."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slmtune import runs
from slmtune.config import RunConfig, dump_yaml, find_config, from_dict, load_yaml, merge, replace
from slmtune.data import Splits, load_splits
from slmtune.errors import SlmtuneError
from slmtune.precision import resolve as resolve_precision
from slmtune.resolve import EPOCHS, DataFacts, known_facts, resolve, resolve_epochs
from slmtune.train import train

# Measured on the 2-core reference CPU with the default MiniLM, in the same hour as CALIBRATION_REFERENCE
# (slmtune.experiments.reference): the mean of the reference study's first ten runs (`train` and `seeds`: five
# LoRA and five full fine-tuning runs on 2,400 AG News rows, 3 epochs, scoring 240 validation and 7,600 test rows).
# Refined from finished runs of a study.
PRIOR_SAMPLES_PER_SECOND = {"lora": {"train": 70.0, "eval": 225.9}, "full": {"train": 53.3, "eval": 226.6}}
EVAL_RATE = PRIOR_SAMPLES_PER_SECOND["lora"]["eval"]
FULL_TRAIN_RATE = PRIOR_SAMPLES_PER_SECOND["full"]["train"]
# SetFit 1.2.0 contrastive pairs per second on the reference CPU (16 rows a class: 3,072 pairs in 189 s a draw).
SETFIT_PAIRS_PER_SECOND = 16.3


# Mean tokens of a reference-study training text (AG News, 2,400 rows, MiniLM's tokenizer, max_length 128): the
# length at which PRIOR_SAMPLES_PER_SECOND and the calibration were measured. Time per text grows with its tokens
# (Reuters topics: 106 tokens a text, 2.1x the time per text of AG News in training).
REFERENCE_TOKENS = 49.7


@dataclass(frozen=True)
class DataSizes:
    """The rows a dataset gives a run whose config leaves a size to the data (train_size, val_size or test_size
    null), and its texts' mean length; the defaults are AG News' (a 10% training sample, its 7,600 test rows)
    for estimates made without loading it."""

    train: int = 10_000
    validation: int = 240
    test: int = 7600
    classes: int = 4
    tokens: float = REFERENCE_TOKENS
    """Mean tokens per training text after truncation (from up to 1,000 of them)."""
    imbalance: float = 1.0
    """Training rows of the largest class over the smallest (labels on multi-label data)."""
    multi_label: bool = False
    """Rows hold label sets (with imbalance, what a null `train.epochs` is decided by)."""
    smallest_class: int = 2400
    """Training rows of the smallest class present (what caps few-shot shots)."""

    @property
    def facts(self) -> DataFacts:
        """What a run's defaults are decided from (slmtune.resolve)."""
        return DataFacts(self.train, self.classes, self.imbalance, self.multi_label)


NOT_ROWS_FIELDS = ("train_size", "shots_per_class", "augment_ratio", "augment_ops", "augment_rate", "back_translation")
"""Data fields that change neither the rows a dataset holds nor their length (`Study.data_sizes`)."""


def every_row(config: RunConfig) -> RunConfig:
    """`config` with every training row kept (its `data.train_size` and `shots_per_class` set aside)."""
    return replace(config, **{"data.train_size": None, "data.shots_per_class": None})


def all_rows(base: RunConfig) -> Splits:
    """`base`'s dataset with every training row kept: what a study sizes its plan, and decides per-data
    defaults, from."""
    return load_splits(every_row(base).data, base.seed)


def data_sizes(base: RunConfig, splits: Splits | None = None) -> DataSizes:
    """What `base`'s dataset holds once every training row is kept (`splits`, loaded when not given), and how
    long its texts are (loads the model's tokenizer)."""
    from slmtune.models.build import load_tokenizer, resolve_model

    splits = splits or all_rows(base)
    texts = splits.train.texts
    sample = np.random.default_rng(0).choice(len(texts), min(len(texts), 1000), replace=False)
    tokenizer = load_tokenizer(resolve_model(base.model.name))
    ids = tokenizer([texts[i] for i in sample], truncation=True, max_length=base.data.max_length)["input_ids"]
    facts = DataFacts.of(splits)
    return DataSizes(len(splits.train), len(splits.validation), len(splits.test), len(splits.label_names),
                     float(np.mean([len(x) for x in ids])) if ids else REFERENCE_TOKENS, facts.imbalance,
                     facts.multi_label, min([c for c in facts.counts if c] or [0]))


def run_seconds(config: RunConfig, rates: dict[str, float], sizes: DataSizes = DataSizes()) -> float:
    """Expected wall time of a run from training and inference samples/s (at REFERENCE_TOKENS a text, scaled to
    the data's mean length): training rows x epochs, validation passes (capped by max_evals) and the test set,
    plus 3 s of start-up (a study process spent 1-2 s a run beyond the runs' own train + eval seconds in the
    seeds, lr-sweep and scaling studies)."""
    data = config.data
    train_rows = (data.shots_per_class * sizes.classes if data.shots_per_class
                  else data.train_size or sizes.train)
    train_rows *= 1 + data.augment_ratio
    epochs, _ = resolve_epochs(config, sizes.facts)
    evals = config.train.evals_per_epoch * epochs
    if config.train.max_evals:
        evals = min(evals, config.train.max_evals)
    eval_rows = (data.val_size or sizes.validation) * evals + (data.test_size or sizes.test)
    rates = {k: v * REFERENCE_TOKENS / sizes.tokens for k, v in rates.items()}  # the rates are per reference text
    return train_rows * epochs / rates["train"] + eval_rows / rates["eval"] + 3.0


KEY_EXCLUDED = ("name", "output_dir", "train.baseline")
"""Fields that never change the trained model (the baseline is an extra figure beside the run)."""
KEY_RESOLVED = ("train.epochs", "model.head_init", "train.metric")
"""Decided fields a run key names as decided, where the config alone decides them (slmtune.resolve.KNOWN_DATA):
an AG News config with a null `train.epochs` keys as the 3 epochs it trains, as every run did before."""
KEY_NEUTRAL = {
    "data.dataset_config": None, "data.splits": None, "data.validation_file": None, "data.truncation": "head",
    "data.clean_rules": "agnews", "data.multi_label": False, "data.label_separator": ",", "data.augment_ratio": 0.0,
    "model.pooling": "cls", "model.head_init": "random", "model.blend": None, "model.freeze_word_embeddings": False,
    "train.max_evals": None, "train.final_test": False, "train.layer_decay": 1.0, "train.class_weight": "none",
    "train.precision": "fp32",
}
"""The frozen baseline of run keys: fields added after runs were first keyed (and `cls`, `random`, `fp32`, what
every early run did) leave the key alone at these values, so those runs stay reusable."""
KEY_INERT = {"data.augment_ops": lambda c: not c.data.augment_ratio,
             "data.augment_rate": lambda c: not c.data.augment_ratio,
             "data.back_translation": lambda c: not c.data.augment_ratio,
             "train.per_label_thresholds": lambda c: not c.data.multi_label,
             "model.freeze_word_embeddings": lambda c: c.model.method != "full" or c.train.epochs == 0}
"""Fields without effect on this config's run (augmentation settings without augmentation, per-label thresholds
on single-label data, frozen word embeddings for LoRA, which never trains them, or for a run that trains nothing)."""


def run_identity(config: RunConfig) -> dict[str, Any]:
    """Everything that changes a run's result (not its name or folder): the config with what its known data
    decides resolved, the machine's precision named, and every field at its KEY_NEUTRAL value left out."""
    values = config.to_dict()
    facts = known_facts(config)
    decided = resolve(config, facts).values if facts is not None else {}
    # what the run computes in on this machine (auto differs by CPU)
    computed = {key: decided[key] for key in KEY_RESOLVED if key in decided}
    computed["train.precision"] = resolve_precision(config.train.precision, config.train.device).name
    for key, value in computed.items():
        section, name = key.split(".")
        values[section][name] = value
    for key in (*KEY_EXCLUDED, *[k for k, inert in KEY_INERT.items() if inert(config)],
                *[k for k, neutral in KEY_NEUTRAL.items() if _get(values, k, neutral) == neutral]):
        section, _, name = key.rpartition(".")
        (values[section] if section else values).pop(name, None)
    return values


def _get(values: dict[str, Any], key: str, default: Any) -> Any:
    section, name = key.split(".")
    return values[section].get(name, default)


def digest(values: Any) -> str:
    """A short, stable hash of JSON-able values (names run folders and kept result rows)."""
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def row_file(root: Path, name: str, key: dict[str, Any]) -> Path:
    """Where a study folder keeps the result row `name` computed for `key` (Study.row)."""
    return root / "rows" / f"{name}-{digest(key)}.json"


def run_key(config: RunConfig) -> str:
    """A short hash of `run_identity`: names a run's folder, so a config is never trained twice."""
    return digest(run_identity(config))


def load_run_config(recipe: str | None, run_overrides: dict[str, Any] | None, cli_overrides: list[str] | None = None):
    """The base run config of a study: an optional recipe file, the study's `run:` section, then CLI overrides."""
    from slmtune.config import for_dataset, parse_overrides

    values = load_yaml(recipe) if recipe else {}
    updates = (run_overrides or {}, parse_overrides(cli_overrides) if cli_overrides else {})
    for update in updates:
        values = for_dataset(values, update)  # another dataset: the recipe's sizes and epochs stay behind
    for update in updates:
        values = merge(values, update)
    return from_dict(values)


RECIPE_FIELDS = ("recipe", "compare", "recipes")
"""Study fields that name run recipes: written in a study file, relative to it (see `config.find_config`)."""


def with_recipes_found(values: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A study file's `values` with the recipe paths it names resolved beside the file `path`."""
    out, path = dict(values), find_config(path)
    for key in RECIPE_FIELDS:
        if isinstance(out.get(key), str):
            out[key] = str(find_config(out[key], beside=path))
        elif isinstance(out.get(key), list):
            out[key] = [str(find_config(r, beside=path)) if isinstance(r, str) else r for r in out[key]]
    return out


def load_study_config(cls: type, path: str | None, **cli: Any):
    """A study dataclass from an optional YAML file (its `study:` key names the kind) plus CLI values."""
    from dataclasses import fields

    values = with_recipes_found(load_yaml(path), path) if path else {}
    values.pop("study", None)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SlmtuneError(f"unknown study field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values.update({k: v for k, v in cli.items() if v is not None})
    return cls(**values)


class Study:
    """A study folder: runs/<method>-<key>/ per distinct config, plus summary.csv / summary.json / plots/.

    A config finished in a sibling study folder (same parent, e.g. studies/) is reused, not retrained."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            (self.root / "runs").mkdir(parents=True, exist_ok=True)
            (self.root / "plots").mkdir(exist_ok=True)
        except OSError as exc:
            raise SlmtuneError(f"cannot write the study folder {self.root}: {exc.strerror or exc}") from None
        self._splits: dict[tuple[str, int], Splits] = {}
        self._sizes: dict[str, DataSizes] = {}

    def folder(self, config: RunConfig, key: str | None = None) -> Path:
        suffix = f"-{hashlib.sha1(key.encode()).hexdigest()[:8]}" if key else ""
        return self.root / "runs" / f"{config.model.method}-{run_key(config)}{suffix}"

    def splits(self, config: RunConfig) -> Splits:
        key = (json.dumps(config.to_dict()["data"], sort_keys=True), config.seed)
        if key not in self._splits:
            self._splits[key] = load_splits(config.data, config.seed)
        return self._splits[key]

    def run(self, config: RunConfig, callbacks: list | None = None, splits: Splits | None = None,
            key: str | None = None, until: float | None = None) -> dict[str, Any]:
        """result.json of `config`, training it only if no successful run of the same config exists.

        `splits` replaces the rows the config would draw; `key` must then name them (e.g. the labelled
        row ids of an active-learning round), since it becomes part of the run's identity. `until` (a racing
        rung) trains only to that epoch of the schedule, resumably and without looking at the test rows; the
        next call, with a later rung or none (to the end, test scored), resumes it on the same schedule."""
        if (splits is None) != (key is None):
            raise ValueError("pass splits together with a key that identifies them")
        folder = self.folder(config, key)
        with self.lock(folder):  # a run another live process is training is waited for, never deleted under it
            shared = self.finished(config, key)
            reached = runs.paused_at(folder)
            if shared is not None:  # this study's own run, or the same config finished by a sibling study
                folder = shared
                result = runs.read_result(folder)
                result["reused"] = True
            elif until is not None and reached is not None and reached >= until - 1e-6:  # at that rung already
                result = runs.read_result(folder)
                result["reused"] = True
            else:
                if folder.exists() and (reached is None or not runs.has_checkpoint(folder)):
                    # an attempt that was cut off (its process is gone), or a point a race cut (its checkpoints
                    # went with the cut) asked for more: trained from the start, on the same schedule
                    shutil.rmtree(folder)
                    reached = None
                from slmtune.trainer import PauseAt

                train(config, splits=splits or self.splits(config), run_dir=folder, callbacks=callbacks,
                      pause=PauseAt(epoch=until) if until is not None else None, resume=reached is not None,
                      score_test=until is None)
                result = runs.read_result(folder)
                result["reused"] = False
        result["run_dir"] = str(folder)
        return result

    def lock(self, folder: Path):
        """An exclusive lock on a run folder, held while it is trained: the operating system's file lock
        (filelock), which a killed process lets go of, so a worker that takes over a trial judged dead waits
        for a live owner instead of deleting its folder."""
        from filelock import FileLock

        (self.root / "locks").mkdir(exist_ok=True)
        return FileLock(self.root / "locks" / f"{folder.name}.lock")

    def finished(self, config: RunConfig, key: str | None = None) -> Path | None:
        """The finished run folder of `config` in this study or a sibling study folder, or None."""
        name = self.folder(config, key).name
        return next((p for p in self.root.parent.glob(f"*/runs/{name}") if runs.is_complete(p)), None)

    def row(self, name: str, key: dict[str, Any], compute) -> dict[str, Any]:
        """A result computed outside a run folder (e.g. a few-shot method with its own loop), kept as
        rows/<name>-<hash of key>.json, so an interrupted or repeated study does not compute it again."""
        path = row_file(self.root, name, key)
        if path.exists():
            return {**json.loads(path.read_text())["row"], "reused": True}
        row = compute()
        path.parent.mkdir(exist_ok=True)
        runs.write_json(path, {"key": key, "row": row})
        return row

    def data_sizes(self, config: RunConfig) -> DataSizes:
        """`data_sizes` of `config`'s dataset and tokenizer, once per study (sizes, augmentation and the seed are
        not part of the key), from the study's own copy of every training row."""
        data = {k: v for k, v in config.to_dict()["data"].items() if k not in NOT_ROWS_FIELDS}
        key = digest({"model": config.model.name, "data": data})
        if key not in self._sizes:
            self._sizes[key] = data_sizes(config, self.splits(every_row(config)))
        return self._sizes[key]

    def estimate_seconds(self, config: RunConfig) -> float:
        """Expected wall time of one run on its data: at the samples/s of this study's finished runs (measured on
        the data's texts), else at the reference CPU's, scaled to the texts' length."""
        from dataclasses import replace as replace_fields

        rates = dict(PRIOR_SAMPLES_PER_SECOND[config.model.method])
        sizes = self.data_sizes(config)
        done = [r for r in (runs.read_result(p) for p in (self.root / "runs").glob(f"{config.model.method}-*")
                            if runs.is_complete(p)) if r.get("samples_per_second", {}).get("eval")]
        if done:
            rates = {k: sum(r["samples_per_second"][k] for r in done) / len(done) for k in ("train", "eval")}
            sizes = replace_fields(sizes, tokens=REFERENCE_TOKENS)  # measured on these texts already
        return run_seconds(config, rates, sizes)

    def write_summary(self, rows: list[dict[str, Any]], extra: dict[str, Any]) -> pd.DataFrame:
        frame = pd.DataFrame(rows)
        runs.atomic_write(self.root / "summary.csv", frame.to_csv(index=False))
        runs.write_json(self.root / "summary.json", {**extra, "rows": rows})
        return frame

    def write_study_yaml(self, values: dict[str, Any]) -> None:
        import yaml

        runs.atomic_write(self.root / "study.yaml", yaml.safe_dump(values, sort_keys=False))

    def write_config(self, name: str, config: RunConfig) -> Path:
        path = self.root / name
        runs.atomic_write(path, dump_yaml(config))
        return path


def with_min_steps(config: RunConfig, rows: int, min_steps: int) -> RunConfig:
    """`config` with enough epochs for at least `min_steps` optimizer steps on `rows` training rows."""
    steps_per_epoch = max(1, math.ceil(rows / config.train.batch_size))
    at_least = config.train.epochs or EPOCHS  # null: the run decides from its data, 3 epochs or more
    epochs = max(at_least, math.ceil(min_steps / steps_per_epoch))
    if epochs == at_least:
        return config
    return replace(config, **{"train.epochs": epochs, "train.max_evals": config.train.max_evals or 10})


def flat_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """One summary row of a run's result.json."""
    metrics = result.get("metrics", {})
    return {
        "validation_accuracy": metrics.get("validation", {}).get("accuracy"),
        "validation_macro_f1": metrics.get("validation", {}).get("macro_f1"),
        "test_accuracy": metrics.get("test", {}).get("accuracy"),
        "test_macro_f1": metrics.get("test", {}).get("macro_f1"),
        **({"validation_micro_f1": metrics["validation"]["micro_f1"],
            "test_micro_f1": metrics.get("test", {}).get("micro_f1")}
           if "micro_f1" in metrics.get("validation", {}) else {}),
        "train_seconds": result.get("seconds", {}).get("train"),
        "total_seconds": result.get("seconds", {}).get("total"),
        "trainable_params": result.get("params", {}).get("trainable"),
        "trainable_percent": result.get("params", {}).get("percent"),
        "reused": result.get("reused"),
        "run_dir": result.get("run_dir"),
    }


def single_label_only(config: RunConfig, study: str, why: str) -> None:
    """A one-line error for a study that has no multi-label form."""
    if config.data.multi_label:
        raise SlmtuneError(f"the {study} study needs single-label data ({why}); seeds, sweep, scaling and "
                           "augmentation run on multi-label data")


def study_metric(rows: list[dict[str, Any]]) -> str:
    """What a study compares its runs on: micro-F1 for multi-label runs (their `accuracy` is the strict subset
    accuracy), else accuracy."""
    return "micro_f1" if rows and rows[0].get("validation_micro_f1") is not None else "accuracy"


def parse_budget(text: str, flag: str = "--budget") -> float:
    """Seconds of a duration written 2h, 1.5h, 90m, 90min or 5400s (a bare number is seconds); `flag` names the
    option in the one-line error."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(h|m|min|s)?\s*", str(text or ""))
    if not match or float(match.group(1)) <= 0:
        raise SlmtuneError(f"{flag} takes a duration like 2h, 90m or 5400s, got {text!r}")
    return float(match.group(1)) * {"h": 3600, "m": 60, "min": 60, "s": 1}[match.group(2) or "s"]


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Clock:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start
