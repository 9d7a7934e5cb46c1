"""The Hugging Face Trainer as slmtune trains with it: length-bucketed batches, class-weighted losses, layer-wise
learning rates, the selection metric, metrics logging, thread counts and training arguments. `slmtune.train`
runs the phases around it."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers import Trainer, TrainerCallback, TrainingArguments

from slmtune import runs
from slmtune.config import RunConfig
from slmtune.data import TextDataset
from slmtune.models.pooling import first_token_only, is_mean_pooled
from slmtune.precision import Precision
from slmtune.serve.metrics import compute_metrics


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


class BucketTrainer(Trainer):
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


def selection_metrics(metric: str, curve: ValidationCurve | None = None):
    """compute_metrics plus `select`: the chosen metric with ties (common on small validation sets)
    broken by the mean gold-class probability, which moves it by less than one row's worth. The logits go to
    `curve`, which records each evaluation's decisions."""

    def compute(eval_pred) -> dict[str, float]:
        values = compute_metrics(eval_pred)
        values["select"] = values[metric] + 1e-5 * values["gold_prob"]
        if curve is not None:
            curve.latest = eval_pred.predictions
        return values

    return compute


class ValidationCurve(TrainerCallback):
    """Each evaluation's validation decisions (the predicted class; on multi-label data the labels scored above
    0.5), in the validation split's order, appended to RUN/validation-curve.jsonl with the step, epoch and
    selection metric: from a run trained to the end, what a race would have seen at each rung
    (slmtune.experiments.racing.rung_counts), so the racing rules can be replayed on exhaustive runs. `order[j]`
    is the split index of the j-th row the Trainer evaluates (they are sorted by length)."""

    def __init__(self, path: Path, order: list[int], multi_label: bool = False):
        self.path, self.order, self.multi_label, self.latest = path, order, multi_label, None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.latest is None:
            return
        logits = np.asarray(self.latest[0] if isinstance(self.latest, tuple) else self.latest)
        self.latest = None
        decided: list[Any] = [None] * len(self.order)
        rows = ([np.flatnonzero(row > 0).tolist() for row in logits] if self.multi_label  # sigmoid > 0.5
                else logits.argmax(axis=-1).tolist())
        for j, index in enumerate(self.order):
            decided[index] = rows[j]
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                  "select": (metrics or {}).get("eval_select"), "predicted": decided}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class MetricsCallback(TrainerCallback):
    def __init__(self, log: runs.MetricsLog):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            record.update({k.replace("eval_", "validation_"): v for k, v in logs.items()})
            self.log.append(record)


class FinalTestCallback(TrainerCallback):
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


class PauseAt(TrainerCallback):
    """Stops training at the end of epoch `epoch` (a racing rung) or at the first step past `deadline` (a
    time.monotonic() value), evaluating and saving there, so that training resumed from that checkpoint goes on
    as if it had never stopped. `paused` says whether it stopped training before the schedule's last step."""

    def __init__(self, epoch: float | None = None, deadline: float | None = None):
        self.epoch, self.deadline = epoch, deadline
        self.paused = False

    def _stop(self, state, control) -> None:
        if state.global_step < state.max_steps:
            self.paused = True
            control.should_training_stop = control.should_evaluate = control.should_save = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.deadline is not None and time.monotonic() > self.deadline:
            self._stop(state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.epoch is not None and (state.epoch or 0.0) >= self.epoch - 1e-6:
            self._stop(state, control)


def trainer_rows(ids: list[list[int]], data: TextDataset) -> list[dict[str, Any]]:
    """Trainer rows; multi-label rows carry their multi-hot float vector (transformers then trains with BCE)."""
    if data.multi_label:
        from slmtune.multilabel import multi_hot

        targets = multi_hot(data.labels, len(data.label_names)).tolist()
        return [{"input_ids": seq, "labels": y} for seq, y in zip(ids, targets)]
    return [{"input_ids": seq, "labels": y} for seq, y in zip(ids, data.labels)]


def device_args(precision: Precision) -> dict[str, Any]:
    """TrainingArguments for the device and precision: the Trainer autocasts (CPU too), weights stay fp32."""
    args: dict[str, Any] = {"use_cpu": True} if precision.device == "cpu" else {}
    if precision.name in ("bf16", "fp16"):
        args[precision.name] = True
    return args


_THREAD_BUDGET: list[int] = []


@contextlib.contextmanager
def thread_budget(threads: int):
    """Runs trained inside take `threads` CPU threads unless their config sets `train.threads`: a study's worker
    processes share the CPU. Restored on the way out."""
    _THREAD_BUDGET.append(threads)
    try:
        yield
    finally:
        _THREAD_BUDGET.pop()


def set_threads(threads: int | None) -> None:
    """`threads`, else the innermost thread_budget, else $SLMTUNE_THREADS (what a worker process is started with),
    else every core."""
    budget = _THREAD_BUDGET[-1] if _THREAD_BUDGET else int(os.environ.get("SLMTUNE_THREADS") or 0)
    torch.set_num_threads(threads or budget or os.cpu_count() or 1)


def training_args(config: RunConfig, run_dir: Path, steps_per_epoch: int, precision: Precision,
                  resumable: bool = False) -> TrainingArguments:
    """The run's TrainingArguments; `resumable` checkpoints keep the optimizer, scheduler, random and callback
    states, so that training resumed from one ends where an uninterrupted run ends."""
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
        save_only_model=not resumable,
        restore_callback_states_from_checkpoint=resumable,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="select",
        greater_is_better=True,
        report_to=[] if t.report_to in ("none", "", None) else t.report_to,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=0,
        **schedule,
        **device_args(precision),
    )


def save_model(model, tokenizer, path: Path) -> None:
    """Best model in safetensors: for LoRA the PEFT adapter folder (adapters + trained head)."""
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))


def step_of(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    try:
        return int(Path(checkpoint).name.rsplit("-", 1)[-1])
    except ValueError:
        return None
