"""train(config) -> RunResult, as named phases: resolve, fit_baseline, tokenize, build_model, fit_model, score_model,
write_artifacts. The Trainer it fits with is slmtune.trainer's."""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    TrainerCallback,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from slmtune import runs
from slmtune.allocator import keep_freed_memory
from slmtune.blend import choose_weight, mix, save_blend
from slmtune.config import RunConfig, dump_yaml
from slmtune.data import Splits, TextDataset, load_splits
from slmtune.data.tokenize import count_truncated, encode
from slmtune.errors import SlmtuneError
from slmtune.methods.tfidf import TfidfModel, fit_tfidf, tfidf_scores
from slmtune.models import fast_dropout
from slmtune.models.build import add_lora, load_classifier, load_tokenizer, param_counts
from slmtune.models.head_init import has_output_layer, prior_bias, probe_head
from slmtune.models.pooling import first_token_only
from slmtune.multilabel import metric_name, pos_weights
from slmtune.precision import Precision
from slmtune.precision import resolve as resolve_precision
from slmtune.resolve import EPOCHS, DataFacts, ResolvedRun, balanced_weights, resolve
from slmtune.runs.predictions import write_predictions
from slmtune.runs.recorder import RunRecorder
from slmtune.serve.logits import predict_logits, scores_of
from slmtune.serve.metrics import classification_report_text, score_probs, score_split
from slmtune.trainer import (
    BucketTrainer,
    FinalTestCallback,
    MetricsCallback,
    PauseAt,
    ValidationCurve,
    save_model,
    selection_metrics,
    set_threads,
    step_of,
    trainer_rows,
    training_args,
)


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
    blend: dict[str, Any] | None = None
    """`model.blend`: the encoder's weight and its test scores alone and blended."""
    advice: str | None = None
    """One line when TF-IDF, alone or blended, beats the model on validation (what to run instead)."""


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


@dataclass
class Encoded:
    """Token ids of the training and validation rows (the phases between tokenizing and fitting share them)."""

    train: list[list[int]]
    validation: list[list[int]]


def record_data(result: dict[str, Any], run: ResolvedRun, splits: Splits) -> None:
    """The run's data and every decision taken from it (with its reason) into result.json."""
    data = run.data
    result["label_names"] = splits.label_names
    result["sizes"] = {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)}
    result["data"] = {"train_rows_per_class": dict(zip(splits.label_names, data.counts)),
                      "imbalance": round(data.imbalance, 2), "selection_metric": run.metric,
                      "class_weight": "balanced" if run.class_weighted else "none", "multi_label": data.multi_label}
    result["resolved"] = run.as_record()


def fit_baseline(run: ResolvedRun, splits: Splits, result: dict[str, Any]) -> TfidfModel | None:
    """TF-IDF + logistic regression on the training rows, scored on test (`train.baseline`) and fitted for a
    blend (`model.blend`); None when neither asks for it or the texts hold no word to count."""
    if not (run.config.train.baseline or run.blend):
        return None
    tfidf = fit_tfidf(splits.train.texts, splits.train.labels, len(splits.label_names), run.config.seed)
    if tfidf is None:
        if run.blend:
            raise SlmtuneError("model.blend=tfidf needs texts with words to count; these texts hold none")
        return None
    if run.config.train.baseline:
        result["baseline"] = baseline = {**tfidf_scores(tfidf, splits.test.texts, splits.test.labels),
                                         "seconds": tfidf.seconds}
        first = "micro_f1" if run.data.multi_label else "accuracy"
        print(f"slmtune: TF-IDF + logistic regression baseline: test {metric_name(first)} {baseline[first]:.4f}, "
              f"macro-F1 {baseline['macro_f1']:.4f} ({baseline['seconds']:.1f}s)", flush=True)
    return tfidf


def tokenize(config: RunConfig, splits: Splits, tokenizer, result: dict[str, Any]) -> Encoded:
    """Token ids of the training and validation rows; how many texts truncation cut goes to result.json."""
    cut, length = config.data.truncation, config.data.max_length
    encoded = Encoded(encode(tokenizer, splits.train.texts, length, truncation=cut),
                      encode(tokenizer, splits.validation.texts, length, truncation=cut))
    result["data"]["truncated"] = truncated = {
        "max_length": length, "side": cut,
        **{name: count_truncated(tokenizer, part.texts, length) for name, part in (("train", splits.train),
                                                                                  ("test", splits.test))}}
    if truncated["train"] or truncated["test"]:
        print(f"slmtune: {truncated['train']} of {len(splits.train)} training and {truncated['test']} of "
              f"{len(splits.test)} test texts are longer than {length} tokens; kept: their {cut} "
              "(data.truncation, data.max_length)", flush=True)
    return encoded


def build_model(run: ResolvedRun, splits: Splits, tokenizer, encoded: Encoded, result: dict[str, Any]):
    """The classifier to train: the encoder with its head (label priors, or a probe when decided), LoRA-wrapped
    for LoRA, with the fast dropout masks installed."""
    config, data = run.config, run.data
    set_seed(config.seed)  # the head and LoRA init depend on it
    def classifier(source: str):
        return load_classifier(source, splits.label_names, dropout=config.model.dropout,
                               attention_dropout=config.model.attention_dropout, pooling=config.model.pooling,
                               multi_label=data.multi_label)

    if run.head_init == "prompt":  # the encoder first tuned by the few-shot prompt method, then probed
        from slmtune.methods.prompt_head import tune_encoder

        with tempfile.TemporaryDirectory(prefix="slmtune-prompt-") as tuned:
            steps = tune_encoder(config.model.name, splits.train.texts, splits.train.labels, splits.label_names,
                                 config.data.dataset, config.seed, tuned, config.train.batch_size,
                                 config.data.max_length, config.train.precision)
            print(f"slmtune: encoder tuned by the label-prompt head first ({steps} steps of "
                  f"{config.train.batch_size} rows)", flush=True)
            model = classifier(tuned)
    else:
        model = classifier(config.model.name)
    if data.multi_label:
        prior_bias(model, np.asarray(data.counts), len(splits.train))
    result["head_init"] = head_init = run.head_init
    if head_init == "probe" and config.model.head_init == "auto" and not has_output_layer(model):
        result["head_init"] = head_init = "random"  # auto: an architecture without a linear output layer
    if head_init in ("probe", "prompt"):
        fit = probe_head(model, encoded.train, splits.train.labels, tokenizer.pad_token_id or 0, seed=config.seed)
        why = f" ({run.reasons['model.head_init']})" if config.model.head_init == "auto" else ""
        print(f"slmtune: head initialised by a linear probe{why}; training accuracy {fit:.4f}", flush=True)
    if config.model.method == "lora":
        model = add_lora(model, config.lora)
    elif config.model.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    fast_dropout.install(model)  # same dropout, cheaper masks on CPU (a fifth of a step otherwise)
    result["params"] = param_counts(model)
    return model


def fit_model(run: ResolvedRun, splits: Splits, model, tokenizer, encoded: Encoded, precision: Precision,
              recorder: RunRecorder, callbacks: list[TrainerCallback] | None, pause: PauseAt | None = None,
              resume: bool = False) -> Fitted:
    """Train with the Trainer (length buckets, early stopping, the best checkpoint on the selection metric);
    saves the best model to the run's model folder and returns it, LoRA merged into plain weights.

    `pause` stops training at a rung or deadline and keeps resumable checkpoints; `resume` continues from the
    last of them. No epochs (a linear probe) saves the model as built."""
    config, n_labels = run.config, len(splits.label_names)
    if run.epochs == 0:
        recorder.seconds["train"] = 0.0
        recorder.result["best"] = {"checkpoint_step": None, "validation_select": None, "epochs_run": 0.0}
        save_model(model, tokenizer, recorder.dir / "model")
        return Fitted(model.merge_and_unload() if config.model.method == "lora" else model, 0.0)
    steps_per_epoch = math.ceil(len(encoded.train) / config.train.batch_size)
    final_test = FinalTestCallback(lambda m: {
        k: v for k, v in _evaluate_split(m, tokenizer, splits.test, config, precision)[0].items()
        if k in ("accuracy", "macro_f1", "micro_f1")}) if config.train.final_test else None
    weights = None
    if run.class_weighted:
        weights = torch.from_numpy(pos_weights(splits.train.labels, n_labels) if run.data.multi_label else
                                   balanced_weights(splits.train.labels, n_labels)).float()
    rows = trainer_rows(encoded.validation, splits.validation)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # little padding
    val_rows = [rows[i] for i in order]
    curve = ValidationCurve(recorder.dir / VALIDATION_CURVE, order, splits.validation.multi_label)
    resumable = pause is not None or resume
    checkpoint = None
    if resume and (checkpoint := get_last_checkpoint(str(recorder.dir / "checkpoints"))) is None:
        raise SlmtuneError(f"{recorder.dir} has no checkpoint to resume from")
    trainer = BucketTrainer(
        model=model, args=training_args(config, recorder.dir, steps_per_epoch, precision, resumable),
        train_dataset=trainer_rows(encoded.train, splits.train), eval_dataset=val_rows,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=precision.pad_multiple),
        compute_metrics=selection_metrics(run.metric, curve),
        callbacks=[EarlyStoppingCallback(config.train.patience, config.train.threshold),
                   MetricsCallback(recorder.log), curve, *(callbacks or []), *([final_test] if final_test else []),
                   *([pause] if pause else [])],
        bucket_seed=config.seed, layer_decay=config.train.layer_decay, class_weights=weights)
    t0 = time.perf_counter()
    # LoRA only: full fine-tuning's one frozen part, the mean-pooling layer, was measured in fp32
    with precision.frozen_weights(model) if config.model.method == "lora" else contextlib.nullcontext(), \
            first_token_only(model):  # a mean-pooling layer computes the one token the head reads
        trainer.train(resume_from_checkpoint=checkpoint)
    recorder.seconds["train"] = (time.perf_counter() - t0 - (final_test.seconds if final_test else 0.0)
                                 + recorder.before.get("train", 0.0))
    state = trainer.state
    recorder.result["best"] = {"checkpoint_step": step_of(state.best_model_checkpoint),
                               "validation_select": state.best_metric, "epochs_run": round(state.epoch or 0.0, 3)}
    model = trainer.model  # the best checkpoint, reloaded by the Trainer
    save_model(model, tokenizer, recorder.dir / "model")
    paused = pause is not None and pause.paused
    if not paused:  # a paused run keeps its checkpoints to resume from
        shutil.rmtree(recorder.dir / "checkpoints", ignore_errors=True)
    if config.model.method == "lora":
        model = model.merge_and_unload()  # plain weights: inference without adapter overhead
    return Fitted(model, state.epoch or 0.0, final_test.metrics if final_test else None,
                  round(state.epoch or 0.0, 4) if paused else None)


@dataclass
class Fitted:
    """What the fitting phase leaves: the best model and how training went."""

    model: Any
    epochs_run: float
    test_final: dict[str, Any] | None = None
    """`train.final_test`: the test scores of the model as training left it."""
    paused_at: float | None = None
    """The epoch at which a pause stopped training before its schedule's end (None: it ran to its end)."""


@dataclass
class Scored:
    """What the scoring phase leaves for the writing phase."""

    validation: dict[str, Any]
    test: dict[str, Any] | None
    """None when the run was told not to score test (a candidate of `slmtune tune`)."""
    test_probs: np.ndarray | None
    thresholds: Any
    test_seconds: float
    validation_probs: np.ndarray | None = None


def score_model(run: ResolvedRun, splits: Splits, model, tokenizer, precision: Precision, tfidf: TfidfModel | None,
                result: dict[str, Any], model_dir: Path, score_test: bool = True) -> Scored:
    """Validation and test scores of the best model (blended with TF-IDF when the run blends; multi-label
    thresholds tuned on validation), the blend's weight and what it changes, and the advice line. Without
    `score_test`, the test rows are not looked at."""
    config, multi = run.config, run.data.multi_label
    val_probs = scores_of(_logits(model, tokenizer, splits.validation, config, precision)[0], multi)
    test_probs, test_seconds = None, 0.0
    if score_test:
        test_logits, test_seconds = _logits(model, tokenizer, splits.test, config, precision)
        test_probs = scores_of(test_logits, multi)
    if tfidf is not None:
        tfidf_val = tfidf.predict_proba(splits.validation.texts)
        chosen = choose_weight(val_probs, tfidf_val, splits.validation.labels, multi)
        blended_val = mix(val_probs, tfidf_val, chosen["weight"])
        result["blend_validation"] = {
            **chosen, "n": len(splits.validation), **{name: _headline(probs, splits.validation, multi)
                         for name, probs in (("encoder", val_probs), ("tfidf", tfidf_val), ("blend", blended_val))}}
        if run.blend:
            result["blend"] = {"method": run.blend, "weight": chosen["weight"]}
            save_blend(model_dir, tfidf, chosen["weight"])
            val_probs = blended_val
            if score_test:
                result["blend"]["test_encoder"] = _headline(test_probs, splits.test, multi)
                test_probs = mix(test_probs, tfidf.predict_proba(splits.test.texts), chosen["weight"])
    thresholds = _tune_thresholds(val_probs, splits.validation, config, result) if multi else None
    val_metrics, _ = score_probs(val_probs, splits.validation, thresholds)
    test_metrics = score_probs(test_probs, splits.test, thresholds)[0] if score_test else None
    if run.blend and score_test:
        result["blend"]["test_blend"] = {k: test_metrics[k] for k in _HEADLINE[multi]}
    if run.blend:
        print(f"slmtune: blend with TF-IDF, encoder weight {_weight_text(chosen['weight'])} (validation log-loss "
              f"{chosen['log_loss']['encoder']:.4f} encoder alone, {chosen['log_loss']['blend']:.4f} blended)",
              flush=True)
    return Scored(val_metrics, test_metrics, test_probs, thresholds, test_seconds, val_probs)


_HEADLINE = {False: ("accuracy", "macro_f1"), True: ("micro_f1", "macro_f1")}


def _headline(probs: np.ndarray, data: TextDataset, multi: bool) -> dict[str, float]:
    """The headline metrics of probabilities (multi-label: labels on at 0.5)."""
    metrics, _ = score_probs(probs, data, None)
    return {k: round(metrics[k], 4) for k in _HEADLINE[multi]}


def _weight_text(weight) -> str:
    return f"{weight:.2f}" if np.ndim(weight) == 0 else f"{np.min(weight):.2f}-{np.max(weight):.2f} (per label)"


def _tune_thresholds(val_scores: np.ndarray, data: TextDataset, config: RunConfig, result: dict[str, Any]):
    """Multi-label decision thresholds tuned on the validation scores, recorded and printed."""
    from slmtune.multilabel import multi_hot, thresholds_of, tune_thresholds

    n_labels = len(data.label_names)
    result["thresholds"] = tuned = tune_thresholds(val_scores, multi_hot(data.labels, n_labels),
                                                   config.train.per_label_thresholds)
    print(f"slmtune: decision threshold {tuned['threshold']:.2f}"
          f"{' (and per label where it helps)' if tuned['per_label'] else ''}: validation micro-F1 "
          f"{tuned['validation_micro_f1']['at_0.5']:.4f} at 0.5, {tuned['validation_micro_f1']['tuned']:.4f} tuned",
          flush=True)
    return thresholds_of(tuned, n_labels)


ADVICE_ROWS = 1.5
"""The advice line needs TF-IDF ahead on validation by more than this many rows' worth of the metric."""


def advice(run: ResolvedRun, result: dict[str, Any]) -> str | None:
    """One line when TF-IDF, alone or blended, beats the trained model on validation (the selection metric) by more
    than one row's worth (ADVICE_ROWS: less is noise, and the blend's weight was chosen on those rows), naming what
    gets the better model; None otherwise (or when the run already blends)."""
    seen = result.get("blend_validation")
    if run.blend or not seen:
        return None
    metric = "micro_f1" if run.data.multi_label else run.metric
    metric = metric if metric in seen["encoder"] else _HEADLINE[run.data.multi_label][0]
    own, best = seen["encoder"][metric], max(seen["tfidf"][metric], seen["blend"][metric])
    if best - own <= ADVICE_ROWS / max(seen["n"], 1):
        return None
    return (f"on validation, TF-IDF + logistic regression scores {metric_name(metric)} {seen['tfidf'][metric]:.4f} "
            f"alone and {seen['blend'][metric]:.4f} blended with this model (weight chosen there), against its "
            f"{own:.4f}: the same command with --blend tfidf (model.blend=tfidf) trains the blend; slmtune tune "
            "(same data flags, --time, --output-dir) races every method and picks on validation")


def write_artifacts(run: ResolvedRun, splits: Splits, fitted: Fitted, scored: Scored, recorder: RunRecorder) -> None:
    """predictions.csv (test) and predictions-validation.csv, the classification report, the baseline comparison,
    figures and the finished result.json."""
    result, test = recorder.result, scored.test
    if test is None:  # not scored on test: the validation predictions are what its user (tune) compares
        return _write_untested(run, splits, fitted, scored, recorder)
    write_predictions(recorder.dir / "predictions.csv", splits.test, scored.test_probs, scored.thresholds)
    write_predictions(recorder.dir / VALIDATION_PREDICTIONS, splits.validation, scored.validation_probs,
                      scored.thresholds)  # what racing and the tie set of a sweep compare runs on
    runs.atomic_write(recorder.dir / "classification_report.txt", classification_report_text(test) + "\n")
    metrics = {"validation": scored.validation, "test": test}
    if fitted.test_final:
        metrics["test_final"] = fitted.test_final
    headline = _HEADLINE[run.data.multi_label]
    if "baseline" in result:
        gap = {k: round(test[k] - result["baseline"][k], 4) for k in headline}
        result["baseline"]["model_minus_baseline"] = gap
    if line := advice(run, result):
        result["advice"] = line
        print(f"slmtune: note: {line}", flush=True)
    recorder.log.append({"split": "test", **{k: test[k] for k in ("accuracy", *headline)}})
    from slmtune.runs.figures import plot_run  # matplotlib: loaded only once a run has figures to draw

    plot_run(recorder.dir, recorder.log.read(), test, splits.label_names, len(splits.validation))
    recorder.finish(metrics=metrics, samples_per_second={
        "train": _rate(len(splits.train) * fitted.epochs_run, recorder.seconds["train"]),
        "eval": _rate(len(splits.test), scored.test_seconds)})


def _rate(rows: float, seconds: float) -> float | None:
    return round(rows / seconds, 2) if seconds > 0 else None


def _write_untested(run: ResolvedRun, splits: Splits, fitted: Fitted, scored: Scored, recorder: RunRecorder) -> None:
    """A run not scored on test: predictions-validation.csv, the training curves and result.json (with
    `paused_at` when a pause stopped it, so that it can be resumed)."""
    write_predictions(recorder.dir / VALIDATION_PREDICTIONS, splits.validation, scored.validation_probs,
                      scored.thresholds)
    from slmtune.runs.figures import training_curves_png

    records = recorder.log.read()
    if any("validation_loss" in r or "loss" in r for r in records):
        training_curves_png(records, recorder.dir / "training_curves.png", len(splits.validation))
    extra = {"paused_at": fitted.paused_at} if fitted.paused_at is not None else {}
    recorder.finish(metrics={"validation": scored.validation}, **extra, samples_per_second={
        "train": _rate(len(splits.train) * fitted.epochs_run, recorder.seconds["train"])})


VALIDATION_PREDICTIONS = "predictions-validation.csv"
"""A run not scored on test writes its validation predictions here (gold, predicted, probabilities)."""
VALIDATION_CURVE = "validation-curve.jsonl"
"""Each evaluation's validation decisions while training (slmtune.trainer.ValidationCurve)."""


def announce(run: ResolvedRun, config: RunConfig) -> None:
    """Say the epochs when the data decided more than the usual number."""
    if config.train.epochs is None and run.epochs != EPOCHS:
        print(f"slmtune: {run.epochs:g} epochs ({run.reasons['train.epochs']})", flush=True)


def train(config: RunConfig, splits: Splits | None = None, run_dir: str | Path | None = None,
          keep_model: bool = False, callbacks: list[TrainerCallback] | None = None,
          overwrite: bool = False, pause: PauseAt | None = None, resume: bool = False,
          score_test: bool = True) -> RunResult:
    """Fine-tune as `config` says, write the run folder, and return its result.

    `splits` lets studies pass data already loaded; `run_dir` overrides `config.output_dir`;
    `callbacks` are extra Trainer callbacks (e.g. a sweep's pruning); `keep_model` returns the model;
    `overwrite` empties a run folder that already holds a run (else such a folder is refused).
    Racing (slmtune.experiments.racing) uses the rest: `pause` stops training at a rung or deadline with
    resumable checkpoints (result.json then says `paused_at`); `resume` continues the paused run in `run_dir`
    on the same schedule; without `score_test` the test rows are never looked at and the validation
    predictions are written instead.
    Phases: resolve, fit the baseline, tokenize, build, fit, score, write.
    """
    splits = splits or load_splits(config.data, config.seed)  # bad data fails before any folder is made
    run = resolve(config, DataFacts.of(splits))
    announce(run, config)
    config = run.config
    precision = resolve_precision(config.train.precision, config.train.device)
    recorder = RunRecorder(config.name, run_dir or config.output_dir, dump_yaml(config), overwrite=overwrite,
                           compute=precision.as_dict(), resume=resume,
                           result={"name": config.name, "method": config.model.method, "model": config.model.name,
                                   "seed": config.seed, "precision": precision.name})
    set_threads(config.train.threads)
    keep_freed_memory()
    with recorder:
        record_data(recorder.result, run, splits)
        tfidf = fit_baseline(run, splits, recorder.result)
        tokenizer = load_tokenizer(config.model.name)
        encoded = tokenize(config, splits, tokenizer, recorder.result)
        model = build_model(run, splits, tokenizer, encoded, recorder.result)
        counts = recorder.result["params"]
        frozen = config.model.method == "full" and config.model.freeze_word_embeddings  # as build_model decides
        note = ", word embeddings kept as pretrained" if frozen else ""
        print(f"slmtune: {config.model.name} ({config.model.method}), trainable params {counts['trainable']:,} of "
              f"{counts['total']:,} ({counts['percent']:.2f}%{note}); rows: {len(splits.train)} train, "
              f"{len(splits.validation)} validation, {len(splits.test)} test; {precision.name} on {precision.device} "
              f"({precision.reason}); run folder {recorder.dir}", flush=True)
        fitted = fit_model(run, splits, model, tokenizer, encoded, precision, recorder, callbacks, pause, resume)
        t0 = time.perf_counter()
        scored = score_model(run, splits, fitted.model, tokenizer, precision, tfidf, recorder.result,
                             recorder.dir / "model", score_test)
        recorder.seconds["eval"] = time.perf_counter() - t0
        write_artifacts(run, splits, fitted, scored, recorder)
        result = recorder.result
        return RunResult(recorder.dir, "success", result["metrics"], result["seconds"], result["params"],
                         fitted.model if keep_model else None, tokenizer if keep_model else None,
                         result.get("baseline"), result.get("blend"), result.get("advice"))
