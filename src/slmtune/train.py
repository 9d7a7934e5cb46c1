"""train(config) -> RunResult: Trainer with length-bucketed batches, early stopping, best checkpoint, test metrics."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from slmtune import runs
from slmtune.config import EPOCHS, IMBALANCED, PROBE_ROWS_PER_CLASS, RunConfig, dump_yaml, replace
from slmtune.data import Splits, TextDataset, load_splits
from slmtune.data.tokenize import count_truncated
from slmtune.evaluate import (
    classification_report_text,
    compute_metrics,
    encode,
    predict_logits,
    score_split,
)
from slmtune.methods.tfidf import class_balance, tfidf_baseline
from slmtune.models import fast_dropout
from slmtune.models.build import add_lora, load_classifier, load_tokenizer, param_counts
from slmtune.models.head_init import has_output_layer, prior_bias, probe_head
from slmtune.models.pooling import first_token_only, is_mean_pooled
from slmtune.multilabel import label_balance, metric_name, pos_weights
from slmtune.precision import Precision
from slmtune.precision import resolve as resolve_precision
from slmtune.runs.predictions import write_predictions
from slmtune.runs.recorder import RunRecorder


@dataclass
class RunResult:
    run_dir: Path
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    params: dict[str, float] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)
    """The trained model in memory (LoRA merged), for in-process follow-up work."""
    tokenizer: Any = field(default=None, repr=False)
    baseline: dict[str, Any] | None = None
    """The TF-IDF + logistic regression baseline on the same split (`train.baseline`), with the model's margin."""


class LengthBucketSampler(Sampler[int]):
    """Batches of near-equal length in random order: sort by length plus noise, cut, shuffle the batches.

    Unlike the Trainer's LengthGroupedSampler this groups small sets too, so a batch pads almost nothing.
    The partial batch, if any, goes last so that the DataLoader's batches line up with the buckets.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        order = np.argsort(self.lengths + rng.uniform(-2.0, 2.0, len(self.lengths)), kind="stable")
        batches = [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        tail = batches.pop() if len(batches[-1]) < self.batch_size else None
        rng.shuffle(batches)
        if tail is not None:
            batches.append(tail)
        self.epoch += 1  # a fresh order next time even when nobody calls set_epoch
        return iter(int(i) for batch in batches for i in batch)


def layer_depth(name: str, num_layers: int) -> int:
    """0 for embeddings, i + 1 for encoder layer i, num_layers + 1 for anything above (pooler, head)."""
    match = re.search(r"\.(?:layer|layers)\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embeddings" in name else num_layers + 1


def data_balance(splits: Splits) -> dict[str, Any]:
    """Training rows per class (or label) and the imbalance ratio: largest over the smallest present one."""
    balance = label_balance if splits.train.multi_label else class_balance
    return balance(splits.train.labels, len(splits.label_names))


def selection_metric(metric: str, imbalance: float, multi_label: bool = False) -> str:
    """The validation metric that picks the checkpoint: `auto` is micro-F1 on multi-label data, macro-F1 on
    imbalanced data, else accuracy."""
    if metric != "auto":
        return metric
    return "micro_f1" if multi_label else "macro_f1" if imbalance > IMBALANCED else "accuracy"


def balanced_weights(labels: list[int], n_classes: int) -> torch.Tensor:
    """scikit-learn's `balanced` class weights: n_rows / (n_classes x rows of the class)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return torch.tensor(len(labels) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


class _BucketTrainer(Trainer):
    def __init__(self, *args, bucket_seed: int = 0, layer_decay: float = 1.0, class_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._bucket_seed = bucket_seed
        self._layer_decay = layer_decay
        self._class_weights = class_weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The Trainer's loss; with class weights, cross-entropy weighted per class (multi-label: BCE with each
        label's positives weighted)."""
        if self._class_weights is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits.float()
        weights = self._class_weights.to(logits.device)
        if labels.dim() == 2:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=weights)
        else:
            loss = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with layer-wise learning rates when `layer_decay` < 1."""
        if self.optimizer is not None or self._layer_decay >= 1.0:
            return super().create_optimizer(*([] if model is None else [model]))  # transformers < 5.2: no argument
        model = self.model if model is None else model
        # the frozen pooling layer is not a layer to tune (frozen weights never reach the optimizer)
        layers = model.config.num_hidden_layers - int(is_mean_pooled(model.config))
        decay_names = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[int, bool], list] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups.setdefault((layer_depth(name, layers), name in decay_names), []).append(param)
        param_groups = [{"params": params, "weight_decay": self.args.weight_decay if decays else 0.0,
                         "lr": self.args.learning_rate * self._layer_decay ** (layers + 1 - depth)}
                        for (depth, decays), params in sorted(groups.items())]
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, **kwargs)
        return self.optimizer

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The Trainer's validation step; a mean-pooling layer computes only the token the head reads."""
        with first_token_only(model):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = [len(row["input_ids"]) for row in dataset]
        return LengthBucketSampler(lengths, self.args.train_batch_size, self._bucket_seed)


def _selection_metrics(metric: str):
    """compute_metrics plus `select`: the chosen metric with ties (common on small validation sets)
    broken by the mean gold-class probability, which moves it by less than one row's worth."""

    def compute(eval_pred) -> dict[str, float]:
        values = compute_metrics(eval_pred)
        values["select"] = values[metric] + 1e-5 * values["gold_prob"]
        return values

    return compute


class _MetricsCallback(TrainerCallback):
    def __init__(self, log: runs.MetricsLog):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            record.update({k.replace("eval_", "validation_"): v for k, v in logs.items()})
            self.log.append(record)


class _FinalTestCallback(TrainerCallback):
    """Scores the test set with the model as training leaves it, before the Trainer restores the best checkpoint."""

    def __init__(self, score):
        self.score = score
        self.metrics: dict | None = None
        self.seconds = 0.0  # not training time: subtracted from it

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.metrics is None and state.global_step >= state.max_steps:
            start = time.perf_counter()
            self.metrics = {"step": state.global_step, **self.score(model)}  # scoring sets eval mode, then restores it
            self.seconds = time.perf_counter() - start


def _rows(ids: list[list[int]], data: TextDataset) -> list[dict[str, Any]]:
    """Trainer rows; multi-label rows carry their multi-hot float vector (transformers then trains with BCE)."""
    if data.multi_label:
        from slmtune.multilabel import multi_hot

        targets = multi_hot(data.labels, len(data.label_names)).tolist()
        return [{"input_ids": seq, "labels": y} for seq, y in zip(ids, targets)]
    return [{"input_ids": seq, "labels": y} for seq, y in zip(ids, data.labels)]


def _device_args(precision: Precision) -> dict[str, Any]:
    """TrainingArguments for the device and precision: the Trainer autocasts (CPU too), weights stay fp32."""
    args: dict[str, Any] = {"use_cpu": True} if precision.device == "cpu" else {}
    if precision.name in ("bf16", "fp16"):
        args[precision.name] = True
    return args


def set_threads(threads: int | None) -> None:
    """`threads`, else $SLMTUNE_THREADS (set for study workers, which share the CPU), else every core."""
    torch.set_num_threads(threads or int(os.environ.get("SLMTUNE_THREADS") or 0) or os.cpu_count() or 1)


def _training_args(config: RunConfig, run_dir: Path, steps_per_epoch: int, precision: Precision) -> TrainingArguments:
    t = config.train
    every = None
    if t.max_evals and t.evals_per_epoch * t.epochs > t.max_evals:
        every = max(1, math.ceil(steps_per_epoch * t.epochs / t.max_evals))
    elif t.evals_per_epoch > 1:
        every = max(1, steps_per_epoch // t.evals_per_epoch)
    if every:
        schedule = {"eval_strategy": "steps", "eval_steps": every, "save_strategy": "steps", "save_steps": every}
    else:
        schedule = {"eval_strategy": "epoch", "save_strategy": "epoch"}
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.scheduler,
        logging_steps=max(1, steps_per_epoch // 10),
        save_only_model=True,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="select",
        greater_is_better=True,
        report_to=[] if t.report_to in ("none", "", None) else t.report_to,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=0,
        **schedule,
        **_device_args(precision),
    )


def _logits(model, tokenizer, data: TextDataset, config: RunConfig,
            precision: Precision | None = None) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    logits = predict_logits(model, tokenizer, data.texts, batch_size=config.train.eval_batch_size,
                            max_length=config.data.max_length, progress=len(data) > 2000, precision=precision,
                            truncation=config.data.truncation)
    return logits, time.perf_counter() - start


def _evaluate_split(model, tokenizer, data: TextDataset, config: RunConfig, precision: Precision | None = None,
                    thresholds=None) -> tuple[dict, np.ndarray, float]:
    """(metrics, probabilities, seconds); multi-label data is decided at `thresholds` (default 0.5)."""
    logits, seconds = _logits(model, tokenizer, data, config, precision)
    metrics, probs = score_split(logits, data, thresholds)
    return metrics, probs, seconds


def save_model(model, tokenizer, path: Path) -> None:
    """Best model in safetensors: for LoRA the PEFT adapter folder (adapters + trained head)."""
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))


def train(config: RunConfig, splits: Splits | None = None, run_dir: str | Path | None = None,
          keep_model: bool = False, callbacks: list[TrainerCallback] | None = None,
          overwrite: bool = False) -> RunResult:
    """Fine-tune as `config` says, write the run folder, and return its result.

    `splits` lets studies pass data already loaded; `run_dir` overrides `config.output_dir`;
    `callbacks` are extra Trainer callbacks (e.g. a sweep's pruning); `keep_model` returns the model;
    `overwrite` empties a run folder that already holds a run (else such a folder is refused).
    """
    splits = splits or load_splits(config.data, config.seed)  # bad data fails before any folder is made
    multi = splits.train.multi_label
    n_labels = len(splits.label_names)
    balance = data_balance(splits)
    if config.train.epochs is None:  # the run folder's config names the number trained
        config = replace(config, **{"train.epochs": config.epochs_for(balance["imbalance"], multi)})
        if config.train.epochs != EPOCHS:
            why = "multi-label" if multi else f"imbalanced: largest class {balance['imbalance']:.0f}x the smallest"
            print(f"slmtune: {config.train.epochs:g} epochs (train.epochs=null: LoRA on {why} data)", flush=True)
    precision = resolve_precision(config.train.precision, config.train.device)
    recorder = RunRecorder(config.name, run_dir or config.output_dir, dump_yaml(config), overwrite=overwrite,
                           compute=precision.as_dict(),
                           result={"name": config.name, "method": config.model.method, "model": config.model.name,
                                   "seed": config.seed, "precision": precision.name})
    set_threads(config.train.threads)
    run_dir, result, seconds = recorder.dir, recorder.result, recorder.seconds
    with recorder:
        result["label_names"] = splits.label_names
        result["sizes"] = {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)}
        metric = selection_metric(config.train.metric, balance["imbalance"], multi)
        weighted = config.train.class_weight == "balanced" or (
            config.train.class_weight == "auto" and balance["imbalance"] > IMBALANCED)
        result["data"] = {"train_rows_per_class": dict(zip(splits.label_names, balance["counts"])),
                          "imbalance": round(balance["imbalance"], 2), "selection_metric": metric,
                          "class_weight": "balanced" if weighted else "none", "multi_label": multi}
        baseline = config.train.baseline and tfidf_baseline(
            splits.train.texts, splits.train.labels, splits.test.texts, splits.test.labels, len(splits.label_names),
            config.seed)
        if baseline:
            result["baseline"] = baseline
            first = f"micro-F1 {baseline['micro_f1']:.4f}" if multi else f"accuracy {baseline['accuracy']:.4f}"
            print(f"slmtune: TF-IDF + logistic regression baseline: test {first}, "
                  f"macro-F1 {baseline['macro_f1']:.4f} ({baseline['seconds']:.1f}s)", flush=True)
        tokenizer = load_tokenizer(config.model.name)
        cut = config.data.truncation
        train_ids = encode(tokenizer, splits.train.texts, config.data.max_length, truncation=cut)
        val_ids = encode(tokenizer, splits.validation.texts, config.data.max_length, truncation=cut)
        result["data"]["truncated"] = truncated = {
            "max_length": config.data.max_length, "side": cut,
            **{name: count_truncated(tokenizer, part.texts, config.data.max_length)
               for name, part in (("train", splits.train), ("test", splits.test))}}
        if truncated["train"] or truncated["test"]:
            print(f"slmtune: {truncated['train']} of {len(splits.train)} training and {truncated['test']} of "
                  f"{len(splits.test)} test texts are longer than {config.data.max_length} tokens; kept: their "
                  f"{cut} (data.truncation, data.max_length)", flush=True)
        val_rows = _rows(val_ids, splits.validation)
        val_rows.sort(key=lambda r: len(r["input_ids"]))  # the Trainer evaluates in order: sorted = little padding

        set_seed(config.seed)  # the head and LoRA init depend on it
        model = load_classifier(config.model.name, splits.label_names, dropout=config.model.dropout,
                                attention_dropout=config.model.attention_dropout, pooling=config.model.pooling,
                                multi_label=multi)
        if multi:
            prior_bias(model, np.asarray(balance["counts"]), len(splits.train))
        result["head_init"] = head_init = config.head_init_for(len(splits.train), len(splits.label_names))
        if head_init == "probe" and config.model.head_init == "auto" and not has_output_layer(model):
            result["head_init"] = head_init = "random"  # auto: an architecture without a linear output layer
        if head_init == "probe":
            fit = probe_head(model, train_ids, splits.train.labels, tokenizer.pad_token_id or 0, seed=config.seed)
            why = (f" (head_init=auto: {len(splits.train)} training rows for {len(splits.label_names)} classes, "
                   f"at most {PROBE_ROWS_PER_CLASS} a class)" if config.model.head_init == "auto" else "")
            print(f"slmtune: head initialised by a linear probe{why}; training accuracy {fit:.4f}", flush=True)
        if config.model.method == "lora":
            model = add_lora(model, config.lora)
        fast_dropout.install(model)  # same dropout, cheaper masks on CPU (a fifth of a step otherwise)
        result["params"] = counts = param_counts(model)
        print(f"slmtune: {config.model.name} ({config.model.method}), trainable params {counts['trainable']:,} of "
              f"{counts['total']:,} ({counts['percent']:.2f}%); rows: {len(splits.train)} train, "
              f"{len(splits.validation)} validation, {len(splits.test)} test; {precision.name} on {precision.device} "
              f"({precision.reason}); run folder {run_dir}", flush=True)
        steps_per_epoch = math.ceil(len(train_ids) / config.train.batch_size)
        final_test = _FinalTestCallback(lambda m: {
            k: v for k, v in _evaluate_split(m, tokenizer, splits.test, config, precision)[0].items()
            if k in ("accuracy", "macro_f1", "micro_f1")}) if config.train.final_test else None
        trainer = _BucketTrainer(
            model=model,
            args=_training_args(config, run_dir, steps_per_epoch, precision),
            train_dataset=_rows(train_ids, splits.train),
            eval_dataset=val_rows,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=_selection_metrics(metric),
            callbacks=[
                EarlyStoppingCallback(config.train.patience, config.train.threshold),
                _MetricsCallback(recorder.log),
                *(callbacks or []),
                *([final_test] if final_test else []),
            ],
            bucket_seed=config.seed,
            layer_decay=config.train.layer_decay,
            class_weights=(torch.from_numpy(pos_weights(splits.train.labels, n_labels)) if multi else
                           balanced_weights(splits.train.labels, n_labels)) if weighted else None,
        )
        t0 = time.perf_counter()
        # LoRA only: full fine-tuning's one frozen part, the mean-pooling layer, was measured in fp32
        with precision.frozen_weights(model) if config.model.method == "lora" else contextlib.nullcontext(), \
                first_token_only(model):  # a mean-pooling layer computes the one token the head reads
            trainer.train()
        seconds["train"] = time.perf_counter() - t0 - (final_test.seconds if final_test else 0.0)
        state = trainer.state
        result["best"] = {"checkpoint_step": _step_of(state.best_model_checkpoint),
                          "validation_select": state.best_metric,
                          "epochs_run": round(state.epoch or 0.0, 3)}
        model = trainer.model  # the best checkpoint, reloaded by the Trainer
        save_model(model, tokenizer, run_dir / "model")
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)

        if config.model.method == "lora":
            model = model.merge_and_unload()  # plain weights: inference without adapter overhead
        t0 = time.perf_counter()
        thresholds = None
        if multi:  # decision thresholds tuned on validation, then used on test
            from slmtune.multilabel import multi_hot, sigmoid, thresholds_of, tune_thresholds

            val_logits, _ = _logits(model, tokenizer, splits.validation, config, precision)
            result["thresholds"] = tuned = tune_thresholds(
                sigmoid(val_logits), multi_hot(splits.validation.labels, n_labels), config.train.per_label_thresholds)
            thresholds = thresholds_of(tuned, n_labels)
            val_metrics, _ = score_split(val_logits, splits.validation, thresholds)
            print(f"slmtune: decision threshold {tuned['threshold']:.2f}"
                  f"{' (and per label where it helps)' if tuned['per_label'] else ''}: validation micro-F1 "
                  f"{tuned['validation_micro_f1']['at_0.5']:.4f} at 0.5, {tuned['validation_micro_f1']['tuned']:.4f} "
                  "tuned", flush=True)
        else:
            val_metrics, _, _ = _evaluate_split(model, tokenizer, splits.validation, config, precision)
        test_metrics, test_probs, test_seconds = _evaluate_split(model, tokenizer, splits.test, config, precision,
                                                                 thresholds)
        seconds["eval"] = time.perf_counter() - t0
        write_predictions(run_dir / "predictions.csv", splits.test, test_probs, thresholds)
        runs.atomic_write(run_dir / "classification_report.txt", classification_report_text(test_metrics) + "\n")
        metrics = {"validation": val_metrics, "test": test_metrics}
        headline = ("micro_f1", "macro_f1") if multi else ("accuracy", "macro_f1")
        if "baseline" in result:
            gap = {k: round(test_metrics[k] - result["baseline"][k], 4) for k in headline}
            result["baseline"]["model_minus_baseline"] = gap
            if min(gap.values()) < 0:
                print(f"slmtune: note: below the TF-IDF baseline on the test set ("
                      f"{', '.join(f'{metric_name(k)} {v:+.4f}' for k, v in gap.items())}): more "
                      "epochs, another learning rate or full fine-tuning may help", flush=True)
        if final_test and final_test.metrics:
            metrics["test_final"] = final_test.metrics
        recorder.log.append({"split": "test", **{k: test_metrics[k] for k in ("accuracy", *headline)}})
        from slmtune.runs.figures import plot_run  # matplotlib: loaded only once a run has figures to draw

        plot_run(run_dir, recorder.log.read(), test_metrics, splits.label_names, len(splits.validation))
        recorder.finish(metrics=metrics,
                        samples_per_second={"train": round(len(train_ids) * (state.epoch or 0) / seconds["train"], 2),
                                            "eval": round(len(splits.test) / test_seconds, 2)})
        return RunResult(run_dir, "success", result["metrics"], result["seconds"], result["params"],
                         model if keep_model else None, tokenizer if keep_model else None, result.get("baseline"))


def _step_of(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    try:
        return int(Path(checkpoint).name.rsplit("-", 1)[-1])
    except ValueError:
        return None
