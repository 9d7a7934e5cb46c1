"""Few-shot: k rows per class, several random draws per k, methods side by side on the same draws.

Methods: `lora` and `full` fine-tune the standard classifier through `Study.run` (so draws are reused
across studies); `probe` is logistic regression on frozen mean-pooled embeddings, whose test embeddings
are computed once per study; `prompt` fine-tunes the mean-pooled encoder with a head that starts as the
zero-shot label-prompt classifier and ends as the class means of the tuned embeddings, the learned
prototypes as a prior (slmtune.prompt_head). Small training sets get more epochs or steps (`min_steps`,
`prompt_epochs`), as is usual in few-shot work.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slmtune import stats
from slmtune.config import RunConfig, replace
from slmtune.errors import SlmtuneError
from slmtune.experiments.common import (
    Clock,
    DataSizes,
    Study,
    every_row,
    flat_metrics,
    format_duration,
    load_run_config,
    run_key,
    single_label_only,
    with_min_steps,
)
from slmtune.experiments.protocol import Reduction, flags_as_given, keeps_runs, trains_to_the_end
from slmtune.serve.metrics import classification_metrics

# Published AG News test accuracy (mean of 10 draws), SetFit paper (Tunstall et al. 2022), shown beside ours on
# AG News only.
ANCHORS = {
    "SetFit (MPNet), published": {8: 0.829, 16: 0.850, 64: 0.880},
    "fine-tuned DistilBERT, published": {8: 0.761, 16: 0.816, 64: 0.868},
}
METHODS = ("probe", "prompt", "lora", "full", "setfit")


@dataclass
class FewShotConfig:
    name: str = "fewshot"
    recipe: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    shots: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100])
    """Training rows per class."""
    draws: int = 5
    """Random draws per size (draw i uses seed base.seed + i)."""
    methods: list[str] = field(default_factory=lambda: ["probe", "prompt", "lora", "full"])
    """probe (frozen embeddings + logistic regression), prompt (mean-pooled encoder whose head starts as the
    zero-shot label-prompt classifier, fine-tuned end to end, then scored against class means), lora, full (the
    standard classifier head), and setfit (SetFit with its defaults, `pip install 'slmtune[setfit]'`), all on
    the same draws."""
    min_steps: int = 100
    """LoRA / full runs get at least this many optimizer steps (more epochs on tiny sets)."""
    prompt_epochs: float = 15
    """The prompt method's passes over the rows (at least `prompt_min_steps` steps): 8 rows a class and batch
    16 give 30 steps, 16 rows 60, 64 rows 240, 100 rows 375."""
    prompt_min_steps: int = 30
    """Fewest steps of the prompt method. Measured, 8 rows a class, 5 draws: 30 steps reach 0.8353 in 16 s of
    training, 100 steps 0.8375 in ~50 s."""
    probe_c: float = 1.0
    """Inverse regularisation strength of the logistic-regression probe."""
    prompt_lr: float = 5e-5
    """Encoder learning rate of the prompt method (its head learns 50x faster)."""
    prompt_scale: float = 20.0
    """Inverse temperature of the prompt method's cosine logits."""
    prompt_prior_rows: float | None = 4.0
    """The prompt method's head after training: each class's mean tuned embedding of its rows, with the learned
    prototype counted as this many more rows (0: the plain class mean; None: the prototypes as trained)."""
    prompt_freeze_word_embeddings: bool = True
    """Keep the prompt method's word-embedding matrix (half of MiniLM's weights) out of training: a fifth less
    training time, the same accuracy (`PromptHeadConfig.freeze_word_embeddings`)."""


def _row(splits, predicted, train_seconds: float, total_seconds: float, params: int) -> dict[str, Any]:
    """The summary row of a method that trains outside `Study.run` (no run folder)."""
    metrics = classification_metrics(splits.test.labels, predicted, splits.test.label_names)
    return {"test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"],
            "train_seconds": round(train_seconds, 2), "total_seconds": round(total_seconds, 2),
            "trainable_params": int(params), "reused": False, "run_dir": None}


def _setfit_model(model_cls, name: str):
    """SetFit's default model (sentence-transformer body, logistic-regression head) built without
    `SetFitModel.from_pretrained`, which joblib-loads any model_head.pkl in the folder or on the Hub: a model
    folder is data, and a pickle can run code. Such a file is ignored, with a note."""
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    if Path(name).is_dir() and any(Path(name).glob("*.pkl")):
        print(f"slmtune: note: ignoring pickle files in {name} (never loaded: they can run code); "
              "SetFit starts from a fresh logistic-regression head", flush=True)
    return model_cls(model_body=SentenceTransformer(name, trust_remote_code=False), model_head=LogisticRegression())


def _setfit(study: Study, config: RunConfig, cfg: FewShotConfig) -> dict[str, Any]:
    """SetFit 1.x with its default settings (batch 16, one epoch of contrastive pairs, logistic-regression head)."""
    try:
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError:
        raise SlmtuneError("the setfit method needs SetFit: pip install 'slmtune[setfit]'") from None
    from datasets import Dataset

    from slmtune.models.build import resolve_model

    clock = Clock()
    splits = study.splits(config)
    model = _setfit_model(SetFitModel, resolve_model(config.model.name))
    with tempfile.TemporaryDirectory(prefix="setfit-", dir=study.root) as scratch:  # not SetFit's ./checkpoints
        args = TrainingArguments(output_dir=scratch, save_strategy="no", batch_size=config.train.batch_size,
                                 num_epochs=1, seed=config.seed, report_to="none", show_progress_bar=False)
        data = Dataset.from_dict({"text": splits.train.texts, "label": splits.train.labels})
        Trainer(model=model, args=args, train_dataset=data).train()
    train_seconds = clock.elapsed
    predicted = np.asarray(model.predict(splits.test.texts, batch_size=config.train.eval_batch_size,
                                         show_progress_bar=False)).astype(int)
    return _row(splits, predicted, train_seconds, clock.elapsed, sum(p.numel() for p in model.model_body.parameters()))


def _prompt(study: Study, config: RunConfig, cfg: FewShotConfig) -> dict[str, Any]:
    from slmtune.methods import prompt_head
    from slmtune.methods.embeddings import load_encoder
    from slmtune.models.build import resolve_model

    clock = Clock()
    splits = study.splits(config)
    name = resolve_model(config.model.name)
    prototypes = prompt_head.label_prototypes(load_encoder(name), splits.label_names, config.data.dataset)
    settings = prompt_head.PromptHeadConfig(
        steps=prompt_head.steps_for(len(splits.train), config.train.batch_size, cfg.prompt_min_steps,
                                    cfg.prompt_epochs),
        batch_size=config.train.batch_size, learning_rate=cfg.prompt_lr, scale=cfg.prompt_scale,
        max_length=config.data.max_length, prior_rows=cfg.prompt_prior_rows,
        freeze_word_embeddings=cfg.prompt_freeze_word_embeddings, precision=config.train.precision)
    model, tokenizer = prompt_head.fine_tune(name, splits.train.texts, splits.train.labels, prototypes,
                                             config.seed, settings)
    train_seconds = clock.elapsed
    logits = prompt_head.predict_logits(model, tokenizer, splits.test.texts, max_length=config.data.max_length)
    return _row(splits, logits.argmax(axis=1), train_seconds, clock.elapsed, sum(p.numel() for p in model.parameters()))


def _probe(study: Study, config: RunConfig, cfg: FewShotConfig) -> dict[str, Any]:
    from slmtune.methods.embeddings import embed, load_encoder
    from slmtune.models.head_init import logistic_probe

    clock = Clock()
    splits = study.splits(config)
    encoder = load_encoder(config.model.name)
    cache = study.root / "cache"
    train_x = embed(encoder, splits.train.texts, max_length=config.data.max_length, cache_dir=cache)
    test_x = embed(encoder, splits.test.texts, max_length=config.data.max_length, cache_dir=cache)
    probe = logistic_probe(train_x, splits.train.labels, cfg.probe_c, seed=0)
    return _row(splits, probe.predict(test_x), clock.elapsed, clock.elapsed, probe.coef_.size + probe.intercept_.size)


# Methods that train outside Study.run: their function, the study settings that change their result, and the
# version of their code; settings and a version above 1 are part of the key of the row kept for them, so a
# resumed study recomputes rows that older code left. prompt 2: each batch as two length-sorted passes;
# 3: class-mean prototypes (with the learned ones as a prior) after training; since 2026-11-27 the key also
# holds prompt_freeze_word_embeddings (rows kept before it are recomputed).
OWN_LOOP = {"probe": (_probe, ("probe_c",), 1), "setfit": (_setfit, (), 1),
            "prompt": (_prompt, ("prompt_epochs", "prompt_min_steps", "prompt_lr", "prompt_scale",
                                 "prompt_prior_rows", "prompt_freeze_word_embeddings"), 3)}


def draw_config(cfg: FewShotConfig, base: RunConfig, k: int, draw: int, method: str) -> RunConfig:
    """The run config of one draw of k shots per class (probe, prompt and SetFit use its data and seed)."""
    fine_tuned = method if method in ("lora", "full") else "lora"
    return replace(base, seed=base.seed + draw, name=f"{cfg.name}-{method}-{k}shot-{draw}",
                   **{"data.shots_per_class": k, "model.method": fine_tuned})


def kept_row(cfg: FewShotConfig, config: RunConfig, k: int, draw: int, method: str) -> tuple[str, dict[str, Any]]:
    """Name and key of the row a method with its own loop keeps in the study's rows/ (Study.row)."""
    _, settings, version = OWN_LOOP[method]
    key = {"method": method, "run": run_key(config), **{name: getattr(cfg, name) for name in settings}}
    if version > 1:
        key["code"] = version
    return f"{method}-{k}shot-{draw}", key


def run_fewshot(cfg: FewShotConfig, study_dir: str | Path | None = None, cli_overrides: list[str] | None = None,
                progress=print) -> dict[str, Any]:
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise SlmtuneError(f"unknown few-shot method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if not cfg.shots or any(k < 1 for k in cfg.shots):
        raise SlmtuneError("shots must be a non-empty list of positive integers")
    if cfg.draws < 1:
        raise SlmtuneError("draws must be at least 1")
    if cfg.prompt_prior_rows is not None and not cfg.prompt_prior_rows >= 0:
        raise SlmtuneError(f"prompt_prior_rows must be null or a number >= 0, not {cfg.prompt_prior_rows!r}")
    base = load_run_config(cfg.recipe, cfg.run, cli_overrides)
    single_label_only(base, "few-shot", "k shots per class are not defined when a row holds several labels")
    study = Study(study_dir or Path("studies") / cfg.name)
    study.write_study_yaml({"study": "fewshot", **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                            "cli_overrides": cli_overrides or []})
    pool = study.splits(every_row(base)).train
    smallest = int(min(c for c in np.bincount(pool.labels, minlength=len(pool.label_names)) if c))
    shots = sorted(k for k in set(cfg.shots) if k <= smallest)
    if not shots:
        raise SlmtuneError(f"every shot count exceeds the {smallest} training rows of the smallest class")
    if len(shots) < len(set(cfg.shots)):
        progress(f"dropped shots {sorted(set(cfg.shots) - set(shots))}: the smallest class has {smallest} "
                 "training rows")
    plan = [(k, d, m) for k in shots for d in range(cfg.draws) for m in cfg.methods]
    progress(f"fewshot {cfg.name}: {len(plan)} runs ({len(shots)} sizes x {cfg.draws} draws x "
             f"{', '.join(cfg.methods)}); folder {study.root}")
    clock = Clock()
    rows = []
    for i, (k, draw, method) in enumerate(plan, 1):
        config = draw_config(cfg, base, k, draw, method)
        if method in OWN_LOOP:
            name, key = kept_row(cfg, config, k, draw, method)
            result = study.row(name, key, functools.partial(OWN_LOOP[method][0], study, config, cfg))
        else:
            n_labels = len(study.splits(config).label_names)
            result = flat_metrics(study.run(with_min_steps(config, k * n_labels, cfg.min_steps)))
        rows.append({"method": method, "shots": k, "draw": draw, "seed": config.seed, **result})
        progress(f"  {i}/{len(plan)} {method} {k}-shot draw {draw}: test accuracy {result['test_accuracy']:.4f}; "
                 f"{format_duration(clock.elapsed)} elapsed")
    return summarize_fewshot(study, rows, ANCHORS if base.data.dataset == "ag_news" else {})


def summarize_fewshot(study: Study, rows: list[dict[str, Any]], anchors: dict[str, dict[int, float]]) -> dict[str, Any]:
    """Curves over draws per method and shot count; `anchors` (published results on the same data) are drawn
    beside them."""
    curves: dict[str, dict[int, dict[str, float]]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        curves[method] = {}
        for k in sorted({r["shots"] for r in rows if r["method"] == method}):
            values = [r["test_accuracy"] for r in rows if r["method"] == method and r["shots"] == k]
            summary = stats.summarize(values).to_dict()
            summary["seconds"] = float(np.mean([r["total_seconds"] for r in rows
                                                if r["method"] == method and r["shots"] == k]))
            curves[method][k] = summary
    summary = {"study": "fewshot", "curves": curves, "anchors": anchors,
               "selection": "mean, std and 95% t / bootstrap intervals over draws; test rows fixed"}
    from slmtune.report.plots import fewshot_plot

    summary["plots"] = [fewshot_plot(curves, anchors, study.root / "plots" / "fewshot.png")]
    study.write_summary(rows, summary)
    return summary


# ---------------------------------------------------------------------------------------- study protocol

CONFIG = FewShotConfig
run = run_fewshot
shares_runs = keeps_runs
planned_share = trains_to_the_end
from_cli = flags_as_given
OWN_QUEUE = False
REDUCTIONS = (
    Reduction(2, "draws", lambda v: min(v, 3), "fewshot: 3 draws per size"),
    Reduction(9, "shots", lambda v: [k for k in v if k <= 20], "fewshot: shots above 20 per class dropped"),
)


def plan(cfg: FewShotConfig, base: RunConfig, cli_overrides: list[str] | None, data: DataSizes,
         root: Path):
    """Runs of the lora and full methods; seconds of the methods with their own loops (kept rows count as done),
    for shots up to the smallest class's rows, as `run` takes them."""
    from slmtune.experiments.common import EVAL_RATE, FULL_TRAIN_RATE, SETFIT_PAIRS_PER_SECOND, row_file
    from slmtune.methods.prompt_head import steps_for

    out, extra, probe_left = [], 0.0, False
    classes = data.classes
    for k in sorted(k for k in set(cfg.shots) if k <= data.smallest_class):
        for draw in range(cfg.draws):
            for method in cfg.methods:
                if method in OWN_LOOP and root is not None:
                    if row_file(root, *kept_row(cfg, draw_config(cfg, base, k, draw, method), k, draw,
                                                method)).exists():
                        continue  # kept from an earlier run of this part
                probe_left = probe_left or method == "probe"
                if method == "prompt":
                    steps = steps_for(classes * k, base.train.batch_size, cfg.prompt_min_steps, cfg.prompt_epochs)
                    extra += steps * base.train.batch_size / FULL_TRAIN_RATE + data.test / EVAL_RATE
                if method == "setfit":  # SetFit's default oversampling: 2 x max(same-, cross-class) pairs
                    same, cross = classes * k * (k - 1) // 2, classes * (classes - 1) // 2 * k * k
                    extra += 2 * max(same, cross) / SETFIT_PAIRS_PER_SECOND + data.test / EVAL_RATE
                if method not in ("lora", "full"):
                    continue
                out.append(with_min_steps(draw_config(cfg, base, k, draw, method), classes * k, cfg.min_steps))
    return out, extra + (data.test / EVAL_RATE if probe_left else 0.0)  # the probe embeds the test set once


def report(summary: dict[str, Any]) -> list[str]:
    lines = ["  test accuracy, mean ± std over draws"]
    for method, points in summary["curves"].items():
        cells = "  ".join(f"{k}: {p['mean']:.3f}±{p['std']:.3f}" for k, p in points.items())
        lines.append(f"  {method:<8}{cells}")
    return lines


def report_section(page, folder: Path, summary: dict) -> str:
    """This study's section of report.html (`page`: slmtune.report.html.Report, whose key findings it adds to)."""
    from slmtune.report.cells import ci, escape, num, table

    rows = []
    for method, points in summary["curves"].items():
        for k, p in points.items():
            rows.append([escape(method), k, ci(p), f"± {p['std']:.4f}", p["n"], num(p.get("seconds", 0.0), 1)])
    anchors = "; ".join(f"{escape(n)}: " + ", ".join(f"{k}-shot {v:.3f}" for k, v in pts.items())
                        for n, pts in summary.get("anchors", {}).items())
    for method, points in summary["curves"].items():
        k = max(points, key=lambda s: int(s))
        p = points[k]
        page.findings.append([f"few-shot {escape(method)} at {k} per class", f"{p['mean']:.4f}",
                              f"{p['n']} draws", f"[{p['ci_low']:.4f}, {p['ci_high']:.4f}]"])
    return table(["method", "shots/class", "accuracy [95% CI]", "sd", "draws", "seconds"], rows) + (
        f"<p class='muted'>anchors: {anchors}</p>" if anchors else "")


def figure_caption(summary: dict) -> str:
    """What the captions of this study's figures in report.html say."""
    return "mean over seeds/draws with 95% t interval bands (n in the legend)"
