"""`slmtune tune`: the best classifier for a dataset within a time budget, chosen on validation by evidence.

A portfolio, cheapest first: TF-IDF + logistic regression, a linear probe on each encoder's frozen features, the
few-shot prompt model where classes have few rows (slmtune.methods.prompt_head, as `model.head_init=prompt`), then
LoRA and full fine-tuning at a few learning rates, raced (slmtune.experiments.racing): each trains to a rung of its
own schedule, candidates significantly behind the leader on the validation rows are cut, ties go on, resuming
from their checkpoints. When the encoders trained on a sample of the rows, the time the race leaves trains the
leading fine-tuning configuration again on more rows. Last, the best encoder blended with TF-IDF. The plan is
printed first, from this machine's measured speed on these texts; no rung starts that the remaining time cannot
hold, and a rung that runs over stops at the deadline. Test rows are scored once, for the chosen model and for TF-IDF.
With `workers`, a rung's candidates train side by side in processes of their own; with `storage`, through a run queue
that worker processes on other machines take from too (slmtune.experiments.tune_workers).

The folder holds one run folder per candidate (candidates/, their output in logs/), tune.json (the state a rerun
continues from), leaderboard.csv, summary.json and best/: the chosen model as a run folder that predict,
evaluate, export, serve and report take. best/ is written as soon as the first encoder candidate finishes and
replaced whenever the leader changes, so a stopped or timed-out search always leaves a usable model.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slmtune import runs
from slmtune.config import RunConfig, replace
from slmtune.data import Splits, load_splits
from slmtune.errors import SlmtuneError
from slmtune.experiments.common import format_duration, parse_budget
from slmtune.experiments.racing import ALPHA, cut, cut_note, rungs_of
from slmtune.experiments.tune_board import (
    blend_best,
    finish,
    follow_leader,
    standing_on,
    validation_probs,
    validation_score,
    write_leaderboard,
)
from slmtune.experiments.tune_crossfit import applies as cross_fit_applies
from slmtune.experiments.tune_crossfit import cross_fit
from slmtune.experiments.tune_workers import Job, last_line, run_jobs, sample, train_job
from slmtune.methods.tfidf import TfidfModel, fit_tfidf
from slmtune.multilabel import metric_name
from slmtune.resolve import DataFacts, resolve

TRAIN_OVER_EVAL = {"lora": 64.0 / 221.0, "full": 47.5 / 218.0}
"""Training samples/s over inference samples/s of the default MiniLM on the 2-core reference CPU (a default run of
each method): what turns the inference speed measured on the user's texts into a training estimate."""
OVERHEAD_S = 6.0
"""Seconds a candidate's run spends outside training and validation (model load, tokenizing, files), measured
again from each finished run."""
ENCODER_SHARE = 0.3
"""A default LoRA schedule on the encoder candidates' rows may take at most this share of the budget; bigger
datasets give the encoder candidates a sample of their training rows (TF-IDF keeps them all)."""
MIN_ROWS_PER_CLASS = 8
PROMPT_ROWS_PER_CLASS = 64
"""The few-shot prompt model joins the portfolio when the encoder candidates' training rows hold at most this many a
class on average (single-label data): the range where it was the best few-shot method measured on AG News, 8-64
rows a class (docs/studies.md). Its schedule is 15 passes over the rows, so above that it costs more than the
fine-tuning candidates that then have the rows they need."""
REFIT_GAIN = 1.5
"""When the encoder candidates trained on a sample of the rows and the race leaves time (cuts, short schedules), the
leading fine-tuning candidate trains again on more rows if the time left holds at least this many times the
sample, or every row: more rows are what the freed time buys first."""


@dataclass
class TuneConfig:
    time: str = "20m"
    """The budget: 90s, 20m, 1.5h. The search ends within it (and 10%), test scoring of the chosen model included."""
    models: list[str] = field(default_factory=list)
    """Encoders to try (names, Hub ids or local folders); empty: the run config's `model.name`."""
    lora_rates: list[float] = field(default_factory=lambda: [5e-4, 1e-3, 2e-3])
    """LoRA learning rates raced for each encoder."""
    full_rates: list[float] = field(default_factory=lambda: [5e-5])
    """Full fine-tuning learning rates raced for each encoder."""
    first_rung: float = 1.0
    """Epochs of a fine-tuning candidate's schedule before its first comparison (then doubling to the end)."""
    alpha: float = ALPHA
    """Cut a candidate when a paired permutation test on validation puts it behind the leader at this level (Holm)."""
    probe: bool = True
    """Try a linear probe on each encoder's frozen features (single-label data)."""
    prompt: bool = True
    """Try the few-shot prompt model of each encoder (its head starts as the zero-shot label-prompt classifier,
    then encoder and head are tuned; served with a probe head on the tuned features) where classes have few rows:
    single-label data with at most PROMPT_ROWS_PER_CLASS training rows a class on average."""
    blend: bool = True
    """Try the best encoder blended with TF-IDF (weight chosen on validation log-loss)."""
    cross_fit: bool = True
    """Where the validation rows are few (under tune_crossfit.CROSS_FIT_ROWS, single-label data), train the encoder
    candidates tied with the best again with the folds swapped, as the time left allows, and choose among them on
    every labelled row."""
    workers: int = 1
    """Fine-tuning candidates trained side by side at each rung of the race, each in a process of its own with
    this machine's CPU threads divided between them; 1 trains them one after another in this process."""
    storage: str | None = None
    """A run queue's URL (Optuna RDB storage: `sqlite:///F`, `postgresql://host/db`) through which each rung's
    candidates are trained: by this process, by `workers - 1` worker processes it starts, and by any
    `slmtune tune --worker --storage URL --output-dir DIR` on machines that see the same search folder (one search
    per storage). None: no queue."""

    def __post_init__(self) -> None:
        if not self.lora_rates and not self.full_rates and not self.probe and not self.prompt:
            raise SlmtuneError("tune: no encoder candidate (lora_rates, full_rates, probe and prompt all empty)")
        for rate in [*self.lora_rates, *self.full_rates]:
            if not 0 < float(rate) < 1:
                raise SlmtuneError(f"tune: learning rates must be in (0, 1), got {rate}")
        if not self.first_rung > 0:
            raise SlmtuneError(f"tune: first_rung must be a positive number of epochs, got {self.first_rung}")
        if not 0 < self.alpha < 1:
            raise SlmtuneError(f"tune: alpha must be in (0, 1), got {self.alpha}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise SlmtuneError(f"--workers must be at least 1, got {self.workers}")


@dataclass
class Candidate:
    """One entry of the portfolio and where it stands."""

    name: str
    kind: str
    """tfidf, probe, prompt, lora, full or blend."""
    model: str | None = None
    learning_rate: float | None = None
    epochs: float = 0.0
    """Its schedule's epochs (0: nothing to train)."""
    reached: float = 0.0
    """Epochs trained so far."""
    status: str = "waiting"
    """waiting, racing (paused at a rung), finished, cut, left out (no time), failed."""
    note: str = ""
    seconds: float = 0.0
    rows: int = 0
    refit_of: str | None = None
    """The candidate whose configuration this one trains again on more rows, with the time the race left."""

    @property
    def folder(self) -> str | None:
        return None if self.kind in ("tfidf", "blend") else f"candidates/{self.name}"


# ------------------------------------------------------------------------------------------------ machine speed


def measure_speed(model_name: str, texts: list[str], label_names: list[str], config: RunConfig) -> float:
    """Inference samples/s of `model_name` on up to 256 of these texts on this machine, in the run's precision."""
    from slmtune.models.build import load_classifier, load_tokenizer
    from slmtune.precision import resolve as resolve_precision
    from slmtune.serve.logits import predict_logits
    from slmtune.trainer import set_threads

    set_threads(config.train.threads)
    model = load_classifier(model_name, label_names)
    tokenizer = load_tokenizer(model_name)
    model.eval()
    sample = texts[:256]
    precision = resolve_precision(config.train.precision, config.train.device)
    predict_logits(model, tokenizer, sample[:16], max_length=config.data.max_length, precision=precision)  # warm-up
    start = time.perf_counter()
    predict_logits(model, tokenizer, sample, batch_size=config.train.eval_batch_size,
                   max_length=config.data.max_length, precision=precision, truncation=config.data.truncation)
    return len(sample) / max(time.perf_counter() - start, 1e-6)


# ------------------------------------------------------------------------------------------------ the search


@dataclass
class Search:
    """A tune folder and its state: candidates, speeds, decisions; saved to tune.json after every step."""

    root: Path
    metric: str
    multi_label: bool
    label_names: list[str]
    candidates: dict[str, Candidate] = field(default_factory=dict)
    speed: dict[str, float] = field(default_factory=dict)
    """model -> inference samples/s; `train:<method>:<model>` -> measured training samples/s (`...@N`: of one of N
    jobs training side by side)."""
    overhead: float = OVERHEAD_S
    standings: list[dict[str, Any]] = field(default_factory=list)
    best: str | None = None
    alpha: float = ALPHA
    blend_weight: Any = None
    """The blend's encoder weight (one per label on multi-label data), once chosen."""
    shown: tuple | None = None
    """What best/ holds now (leader, encoder folder and its last write, weight): unchanged, it is not copied again."""
    queue: Any = None
    """The run queue the rungs' jobs go through (TuneConfig.storage), while the search runs; not saved."""
    cross_fit: dict[str, Any] | None = None
    """The tied candidates' standing on every labelled row, folds swapped (tune_crossfit), once made; recomputed by
    each start of the search from the folds' run folders."""

    def save(self) -> None:
        runs.write_json(self.root / "tune.json", {
            "metric": self.metric, "multi_label": self.multi_label, "label_names": self.label_names,
            "candidates": [asdict(c) for c in self.candidates.values()], "speed": self.speed,
            "overhead": self.overhead, "standings": self.standings, "best": self.best, "alpha": self.alpha,
            "blend_weight": np.asarray(self.blend_weight).tolist() if self.blend_weight is not None else None,
            "cross_fit": self.cross_fit})

    @classmethod
    def load(cls, root: Path) -> dict[str, Any] | None:
        path = root / "tune.json"
        return runs.read_json(path) if path.is_file() else None


def run_tune(base: RunConfig, cfg: TuneConfig, out: str | Path, progress=print) -> dict[str, Any]:
    """Search the portfolio within `cfg.time` on `base`'s data; returns the summary (also DIR/summary.json)."""
    budget = parse_budget(cfg.time, "--time")  # a bad --time fails before anything loads
    started = time.monotonic()
    deadline = started + budget
    root = Path(out)
    if root.is_file():
        raise SlmtuneError(f"--output-dir {root} is a file; give a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / "tune.json").is_file():
        raise SlmtuneError(f"{root} is not empty and holds no tune search: choose an empty or new folder")
    models = cfg.models or [base.model.name]
    from slmtune.models.build import resolve_model

    for name in models:
        try:
            resolve_model(name)
        except SlmtuneError as exc:
            raise SlmtuneError(f"--models: {exc}") from None
    splits = load_splits(base.data, base.seed)
    facts = DataFacts.of(splits)
    resolved = resolve(base, facts)
    root.mkdir(parents=True, exist_ok=True)
    search = Search(root, resolved.metric, facts.multi_label, splits.label_names, alpha=cfg.alpha)
    previous = Search.load(root)
    if previous:
        if previous["label_names"] != splits.label_names or previous["metric"] != resolved.metric:
            raise SlmtuneError(f"{root} holds a search of other data (labels or metric differ): choose a new folder")
        search.speed, search.overhead = previous["speed"], previous["overhead"]
        search.candidates = {c["name"]: Candidate(**c) for c in previous["candidates"]}
        search.standings, search.best = previous["standings"], previous["best"]
        for cand in search.candidates.values():  # what the last budget left out gets this one's time
            if cand.status == "left out" or cand.note.startswith("no time"):
                cand.status, cand.note = ("waiting" if cand.status == "left out" else cand.status), ""
        settled = sum(c.status in ("finished", "cut") for c in search.candidates.values())
        progress(f"tune: continuing the search in {root} ({settled} candidates settled)")
    from slmtune.runs.recorder import stop_on_signals

    with stop_on_signals(("SIGTERM", "SIGHUP")):  # a killed search ends like a Ctrl-C: best/ and tune.json kept
        if cfg.storage is None:
            return _search(search, base, cfg, splits, models, budget, deadline, progress)
        from slmtune.experiments.tune_workers import end_queue, local_workers, open_search_queue

        search.queue = open_search_queue(cfg.storage)
        with local_workers(cfg.workers - 1, cfg.storage, root):
            try:
                return _search(search, base, cfg, splits, models, budget, deadline, progress)
            finally:
                end_queue(search.queue)  # the workers exit once idle


def _search(search: Search, base: RunConfig, cfg: TuneConfig, splits: Splits, models: list[str],
            budget: float, deadline: float, progress) -> dict[str, Any]:
    start = time.monotonic()
    tfidf = fit_tfidf(splits.train.texts, splits.train.labels, len(splits.label_names), base.seed)
    for name in models:
        if name not in search.speed:
            search.speed[name] = measure_speed(name, splits.train.texts, splits.label_names, base)
    rate = search.speed[models[0]]
    # the end: best/ scored on test (and the validation passes and run overheads of a rung stopped at the deadline)
    reserve = len(splits.test) / rate + 2 * len(splits.validation) / rate + 2 * search.overhead
    lora_rate = rate * TRAIN_OVER_EVAL["lora"]
    lora_epochs = resolve(replace(base, **{"model.method": "lora"}), DataFacts.of(splits)).epochs
    cap = int(ENCODER_SHARE * budget * lora_rate / max(lora_epochs, 1))
    floor = MIN_ROWS_PER_CLASS * len(splits.label_names)
    rows = min(len(splits.train), max(cap, floor))
    encoder_splits = sample(splits, rows, base.seed)
    _portfolio(search, cfg, models, base, encoder_splits, rows)
    plan = _plan(search, encoder_splits, budget, reserve, tfidf, base.train.batch_size)
    for line in plan["lines"]:
        progress(line)
    if cfg.cross_fit and cross_fit_applies(search, len(splits.validation)):
        progress(f"tune: {len(splits.validation)} validation rows are few: with the time the race leaves, the "
                 "candidates tied with the best train on the other fold too and are compared on every row")
    if cfg.workers > 1:
        from slmtune.experiments.workers import Execution

        progress(f"tune: {cfg.workers} worker processes train each rung's candidates side by side, "
                 f"{Execution(workers=cfg.workers).threads} CPU thread(s) each")
    cheapest = plan["cheapest"] + reserve + (tfidf.seconds if tfidf else 0.0)
    if cheapest > budget:
        raise SlmtuneError(f"--time {cfg.time} is too small for even the cheapest candidate on this machine (a "
                           f"linear probe with test scoring needs ~{format_duration(cheapest)}); give at least "
                           f"{format_duration(math.ceil(cheapest * 1.2))}")
    search.save()
    entries: dict[str, np.ndarray] = {}  # candidate -> validation probabilities (or scores)
    tfidf_val = tfidf.predict_proba(splits.validation.texts) if tfidf is not None else None
    if tfidf is not None:
        entries["tfidf"] = tfidf_val
        search.candidates["tfidf"].status, search.candidates["tfidf"].seconds = "finished", tfidf.seconds
    else:
        search.candidates["tfidf"].status, search.candidates["tfidf"].note = "failed", "the texts hold no word to count"
    hard = deadline - reserve
    try:
        for cand in [c for c in search.candidates.values() if c.kind in ("probe", "prompt")]:
            if cand.kind == "prompt" and cand.status == "waiting" and not _prompt_fits(search, cand, encoder_splits,
                                                                                        base, budget, progress):
                continue
            _step(search, cand, base, encoder_splits, 0.0, hard, entries, progress)
            follow_leader(search, entries, splits, tfidf, progress)
        _race(search, cfg, base, encoder_splits, hard, entries, splits, tfidf, progress)
        _refit(search, base, encoder_splits, hard, entries, splits, tfidf, progress)
        for cand in [c for c in search.candidates.values() if c.kind == "prompt" and c.status == "waiting"]:
            _step(search, cand, base, encoder_splits, 0.0, hard, entries, progress)  # left out if time is short
            follow_leader(search, entries, splits, tfidf, progress)
        if cfg.cross_fit:
            cross_fit(search, base, encoder_splits, hard, entries, progress)
        if cfg.blend and tfidf is not None:
            blend_best(search, entries, splits, tfidf, progress)
        follow_leader(search, entries, splits, tfidf, progress)
    finally:
        search.save()
        if entries:
            write_leaderboard(search, entries, splits)
    if search.best is None:
        raise SlmtuneError("no encoder candidate finished within the budget; give more --time")
    summary = finish(search, splits, tfidf, budget, start, progress)
    return summary


def _short(model: str) -> str:
    return Path(model.rstrip("/")).name or model


def _portfolio(search: Search, cfg: TuneConfig, models: list[str], base: RunConfig, splits: Splits,
               rows: int) -> None:
    """The candidates, cheapest first (kept as they are when a rerun continues the search)."""
    wanted: list[Candidate] = [Candidate("tfidf", "tfidf", rows=len(splits.train))]
    for model in models:
        if cfg.probe and not search.multi_label:
            wanted.append(Candidate(f"probe-{_short(model)}", "probe", model, rows=rows))
    for model in models:
        if cfg.prompt and not search.multi_label and rows <= PROMPT_ROWS_PER_CLASS * len(splits.label_names):
            wanted.append(Candidate(f"prompt-{_short(model)}", "prompt", model, rows=rows))
    for method, rates in (("lora", cfg.lora_rates), ("full", cfg.full_rates)):
        for model in models:
            for lr in rates:
                config = _config(base, model, method, float(lr), None)
                epochs = resolve(config, DataFacts.of(splits)).epochs
                wanted.append(Candidate(f"{method}-{_short(model)}-lr{float(lr):g}", method, model, float(lr),
                                        epochs, rows=rows))
    if cfg.blend:
        wanted.append(Candidate("blend", "blend"))
    for cand in wanted:
        search.candidates.setdefault(cand.name, cand)


def _config(base: RunConfig, model: str, method: str, lr: float | None, epochs: float | None,
            head: str | None = None) -> RunConfig:
    """A candidate's run config: validation once an epoch (the rungs' checkpoints), test and baseline left to tune.
    On single-label data the head starts as a linear probe (LP-FT) unless `model.head_init` is set: the race
    decides from the first epochs, where a random head's slow start hides what a candidate reaches (Reuters
    topics, docs/results.md: a random head put full fine-tuning at 0.19 validation macro-F1 after one epoch on
    2,233 rows and the race cut it; started as the probe, on 1,679 rows, it led from epoch 1 at 0.91). `head` sets
    it outright (the probe and prompt candidates); `model.head_init=prompt` is the prompt candidate's, the others
    start as the probe."""
    head = head or ("probe" if base.model.head_init in ("auto", "prompt") and not base.data.multi_label
                    else base.model.head_init)
    return replace(base, **{"model.name": model, "model.method": method, "train.learning_rate": lr,
                            "train.epochs": epochs, "model.blend": None, "train.baseline": False,
                            "train.evals_per_epoch": 1, "train.max_evals": None, "train.final_test": False,
                            "model.head_init": head, "output_dir": None})


def _speed_key(cand: Candidate, concurrency: int = 1) -> str:
    """Where a measured training speed is kept: per method and model, and per number of jobs sharing the machine."""
    return f"train:{cand.kind}:{cand.model}" + (f"@{concurrency}" if concurrency > 1 else "")


def _train_speed(search: Search, cand: Candidate, concurrency: int = 1) -> float:
    """Training rows/s of `cand`'s method and model with `concurrency` jobs sharing the machine: measured on this
    machine by an earlier rung at that concurrency; else measured alone (or the inference speed scaled by
    TRAIN_OVER_EVAL) and divided by the jobs sharing the machine."""
    if _speed_key(cand, concurrency) in search.speed:
        return search.speed[_speed_key(cand, concurrency)]
    alone = search.speed.get(_speed_key(cand), search.speed[cand.model] * TRAIN_OVER_EVAL[cand.kind])
    return alone / concurrency


def _prompt_fits(search: Search, cand: Candidate, splits: Splits, base: RunConfig, budget: float, progress) -> bool:
    """Whether the prompt candidate can train before the race and leave the race its time: at most ENCODER_SHARE
    of the budget, as one default LoRA schedule; else it waits for the time the race leaves, and says so."""
    cost = _prompt_seconds(search, cand, splits, base.train.batch_size) + search.overhead
    if cost <= ENCODER_SHARE * budget:
        return True
    cand.note = (f"~{format_duration(cost)}, more than {ENCODER_SHARE:.0%} of the budget: it trains after the race, "
                 "if the time the race leaves holds it")
    progress(f"tune: {cand.name}: {cand.note}")
    search.save()
    return False


def _prompt_seconds(search: Search, cand: Candidate, splits: Splits, batch_size: int) -> float:
    """Seconds the prompt phase of a prompt candidate is expected to take: its steps at full fine-tuning's
    training speed (the label prompts' embedding is a few dozen texts), then the probe's pass over the rows."""
    from slmtune.methods.prompt_head import EPOCHS, MIN_STEPS, steps_for

    rows = steps_for(len(splits.train), batch_size, MIN_STEPS, EPOCHS) * batch_size
    full = Candidate(cand.name, "full", cand.model)
    return rows / _train_speed(search, full) + len(splits.train) / search.speed[cand.model]


def _epoch_seconds(search: Search, cand: Candidate, splits: Splits, concurrency: int = 1) -> float:
    """Seconds one epoch of `cand` is expected to take, plus one validation pass, with `concurrency` jobs sharing
    the machine."""
    return (len(splits.train) / _train_speed(search, cand, concurrency)
            + concurrency * len(splits.validation) / search.speed[cand.model])


def _plan(search: Search, splits: Splits, budget: float, reserve: float, tfidf: TfidfModel | None,
          batch_size: int) -> dict:
    """What the search will try and what it would cost trained to the end, against the budget."""
    lines = [f"tune: budget {format_duration(budget)}; {len(splits.train)} training rows for the encoders, "
             f"{len(splits.validation)} validation rows pick the model (metric {metric_name(search.metric)}), "
             f"test scored once at the end (~{format_duration(reserve)})"]
    cheapest, total = math.inf, 0.0
    for cand in search.candidates.values():
        if cand.kind == "tfidf":
            seconds = tfidf.seconds if tfidf else 0.0
            what = "TF-IDF + logistic regression on every training row"
        elif cand.kind == "probe":
            seconds = len(splits.train) / search.speed[cand.model] + len(splits.validation) / search.speed[
                cand.model] + search.overhead
            cheapest = min(cheapest, seconds)
            what = f"a linear probe on {cand.model}'s frozen features"
        elif cand.kind == "prompt":
            seconds = _prompt_seconds(search, cand, splits, batch_size) + len(splits.validation) / search.speed[
                cand.model] + search.overhead
            what = f"the few-shot prompt model of {cand.model} (label-prompt head, then a probe)"
        elif cand.kind == "blend":
            seconds, what = 0.0, "the best encoder averaged with TF-IDF, weight chosen on validation"
        else:
            seconds = cand.epochs * _epoch_seconds(search, cand, splits) + search.overhead * len(
                rungs_of(cand.epochs, 1.0))
            cheapest = min(cheapest, _epoch_seconds(search, cand, splits) + search.overhead)
            method = "LoRA" if cand.kind == "lora" else "full fine-tuning"
            what = f"{method} of {cand.model} at lr {cand.learning_rate:g}, {cand.epochs:g} epochs"
        total += seconds
        lines.append(f"  {cand.name:<34} ~{format_duration(seconds):>8}  {what}"
                     + (f" [{cand.status}]" if cand.status not in ("waiting",) else ""))
    lines.append(f"tune: everything trained to the end would take ~{format_duration(total + reserve)}; racing cuts "
                 f"candidates behind the leader after each rung, and no rung starts that the time left cannot hold")
    return {"lines": lines, "cheapest": cheapest if cheapest < math.inf else 0.0}


def _step(search: Search, cand: Candidate, base: RunConfig, splits: Splits, rung: float, hard: float,
          entries: dict[str, np.ndarray], progress) -> bool:
    """Train `cand` to epoch `rung` of its schedule (0: the probe) here, unless the time left cannot hold it; True
    when it trained. Its validation probabilities go to `entries`."""
    job = _prepare(search, cand, base, splits, rung, hard, entries, progress)
    if job is None:
        return False
    try:
        train_job(job, splits)
    except SlmtuneError as exc:
        _fail(search, cand, str(exc), progress)
        return False
    _collect(search, cand, rung, splits, entries, progress)
    return True


def _prepare(search: Search, cand: Candidate, base: RunConfig, splits: Splits, rung: float, hard: float,
             entries: dict[str, np.ndarray], progress, concurrency: int = 1) -> Job | None:
    """The job that trains `cand` to epoch `rung` (0: the probe), or None when nothing needs training (its
    validation probabilities are then in `entries`) or the time left cannot hold it, `concurrency` jobs training
    side by side (each that many times slower)."""
    folder = search.root / cand.folder
    if cand.status in ("finished", "cut") or (cand.status == "racing" and cand.reached >= rung - 1e-6):
        if (folder / "result.json").is_file() and runs.is_finished(folder):
            entries[cand.name] = validation_probs(folder, search)
            return None
    fixed = cand.kind in ("probe", "prompt")  # no schedule: built and fitted, not trained by epochs
    config = _config(base, cand.model, "full" if fixed else cand.kind, cand.learning_rate, 0.0 if fixed else
                     cand.epochs, head=cand.kind if fixed else None)
    resume = cand.status == "racing" and runs.paused_at(folder) is not None  # paused, or its resume cut off
    if cand.kind == "prompt":
        need = _prompt_seconds(search, cand, splits, base.train.batch_size) + search.overhead
    elif cand.kind == "probe":
        need = len(splits.train) / search.speed[cand.model] + search.overhead
    else:
        need = (rung - (cand.reached if resume else 0.0)) * _epoch_seconds(search, cand, splits, concurrency) + (
            search.overhead)
    need += concurrency * len(splits.validation) / search.speed[cand.model]
    left = hard - time.monotonic()
    if need > left:
        cand.status, cand.note = ("left out" if not cand.reached else cand.status), (
            f"no time for {'it' if fixed else f'epoch {rung:g}'} (needs ~{format_duration(need)}, "
            f"{format_duration(max(left, 0))} left)")
        progress(f"tune: {cand.name}: {cand.note}")
        search.save()
        if cand.reached and folder.is_dir() and runs.is_finished(folder):
            entries[cand.name] = validation_probs(folder, search)
        return None
    if folder.exists() and not resume:
        shutil.rmtree(folder)  # an attempt cut off mid-way: start it over
    # a rung stopped at the deadline still validates twice (the Trainer, then the scoring) and writes its folder
    stop_by = hard - 2 * concurrency * len(splits.validation) / search.speed[cand.model] - search.overhead
    doing = {"probe": "fitting the probe", "prompt": "tuning with the label-prompt head, then fitting the probe"}.get(
        cand.kind, f"training to epoch {rung:g} of {cand.epochs:g}")
    progress(f"tune: {cand.name}: {doing} (~{format_duration(need)}, {format_duration(left)} left)")
    return Job(cand.name, config.to_dict(), folder, len(splits.train),
               None if fixed or rung >= cand.epochs - 1e-6 else rung,
               None if fixed else stop_by, bool(resume),
               search.root / "logs" / f"{cand.name}.log")  # the run's own output (progress bars, Trainer logs)


def _fail(search: Search, cand: Candidate, message: str, progress) -> None:
    cand.status, cand.note = "failed", message
    progress(f"tune: {cand.name} failed: {message}")
    search.save()


def _collect(search: Search, cand: Candidate, rung: float, splits: Splits, entries: dict[str, np.ndarray], progress,
             concurrency: int = 1) -> None:
    """What training `cand` to epoch `rung` left in its folder: its state, the training speed measured (kept for
    `concurrency` jobs sharing the machine), its validation probabilities in `entries`, the curve's copy for a
    replay."""
    folder = search.root / cand.folder
    result = runs.read_result(folder)
    seconds = result.get("seconds", {})
    cand.seconds = float(seconds.get("total", 0.0))
    paused_at = result.get("paused_at")
    cand.reached = float(paused_at if paused_at is not None else result["best"]["epochs_run"] or 0.0)
    cand.status = "racing" if paused_at is not None else "finished"
    early = paused_at is not None and paused_at < rung - 1e-6
    cand.note = f"stopped at epoch {cand.reached:g} by the deadline" if early else ""
    if cand.kind != "probe" and seconds.get("train") and cand.reached > 0:  # seconds and epochs since the start
        search.speed[_speed_key(cand, concurrency)] = len(splits.train) * cand.reached / float(seconds["train"])
    if cand.kind != "prompt":  # a prompt run's time outside training is its prompt phase, not overhead
        search.overhead = max(1.0, float(seconds.get("total", 0.0)) - float(seconds.get("train", 0.0))
                              - concurrency * len(splits.validation) / search.speed[cand.model])
    entries[cand.name] = validation_probs(folder, search)
    from slmtune.train import VALIDATION_PREDICTIONS

    shutil.copyfile(folder / VALIDATION_PREDICTIONS,  # the curve a replay of the racing rules reads
                    folder / VALIDATION_PREDICTIONS.replace(".csv", f"-epoch{cand.reached:g}.csv"))
    score = validation_score(entries[cand.name], splits.validation, search)
    progress(f"tune: {cand.name}: validation {metric_name(search.metric)} {score:.4f} at epoch {cand.reached:g} "
             f"({cand.seconds:.0f}s)")
    search.save()


def _race(search: Search, cfg: TuneConfig, base: RunConfig, splits: Splits, hard: float,
          entries: dict[str, np.ndarray], full_splits: Splits, tfidf, progress) -> None:
    """Successive halving over the fine-tuning candidates: every one to its first rung, then the survivors of each
    paired comparison to the next, best first, while the time holds."""
    racers = [c for c in search.candidates.values() if c.kind in ("lora", "full") and not c.refit_of]
    if not racers:
        return
    ladders = {c.name: rungs_of(c.epochs, cfg.first_rung) for c in racers}
    for level in range(max(len(v) for v in ladders.values())):
        alive = [c for c in racers if c.status not in ("cut", "failed", "left out")]
        if level:
            alive.sort(key=lambda c: -validation_score(entries[c.name], splits.validation, search)
                       if c.name in entries else 0)
            _leader_first(search, alive, base, splits, hard, entries, full_splits, tfidf, progress)
        todo = []
        for cand in alive:
            ladder = ladders[cand.name]
            if level < len(ladder) and cand.status != "finished":
                todo.append((cand, ladder[level]))
            elif cand.name not in entries and cand.status == "finished":
                entries[cand.name] = validation_probs(search.root / cand.folder, search)
        _train_all(search, cfg.workers, todo, base, splits, hard, entries, full_splits, tfidf, progress)
        present = [c.name for c in racers if c.name in entries and c.status not in ("cut", "failed")]
        if len(present) < 2:
            continue
        board = standing_on(search, entries, splits.validation, present, cfg.alpha)
        search.standings.append({"level": level, "leader": board.leader, **{
            n: {"score": round(board.scores[n].value, 4), **{k: round(v, 4) for k, v in c.items()}}
            for n, c in board.against_leader.items()}})
        def record(stopped: dict[str, float], leader=board.leader) -> None:
            for name, p in stopped.items():
                cand = search.candidates[name]
                cand.status, cand.note = "cut", cut_note(cand.reached, leader, p)
                progress(f"tune: {name}: {cand.note}")
            search.save()

        if not cut(board, lambda name: search.candidates[name].status == "racing", record,
                   lambda name: search.root / search.candidates[name].folder):
            search.save()  # the standing alone (record saved it with the cuts)


def _train_all(search: Search, workers: int, todo: list[tuple[Candidate, float]], base: RunConfig, splits: Splits,
               hard: float, entries: dict[str, np.ndarray], full_splits: Splits, tfidf, progress) -> None:
    """Each (candidate, rung) of `todo` trained to its rung, in turn in this process, or with `workers` processes
    side by side (slmtune.experiments.tune_workers); best/ follows the leader as each ends."""
    if search.queue is not None and len(todo) > 1:
        _train_queued(search, workers, todo, base, splits, hard, entries, full_splits, tfidf, progress)
        return
    if workers <= 1 or len(todo) < 2:
        for cand, rung in todo:
            _step(search, cand, base, splits, rung, hard, entries, progress)
            follow_leader(search, entries, full_splits, tfidf, progress)
        return
    from slmtune.experiments.workers import Execution

    asked: dict[str, tuple[Candidate, float]] = {}

    def prepare(item: tuple[Candidate, float], concurrency: int) -> Job | None:
        job = _prepare(search, item[0], base, splits, item[1], hard, entries, progress, concurrency)
        if job is not None:
            asked[job.name] = item
        return job

    def ended(job: Job, code: int, concurrency: int) -> None:
        cand, rung = asked.pop(job.name)
        if code == 0:
            _collect(search, cand, rung, splits, entries, progress, concurrency)
            follow_leader(search, entries, full_splits, tfidf, progress, busy=set(asked))
        elif code in (1, 2):  # 2: the one-line error a worker prints; 1: anything else (the log has it)
            said = last_line(job.log)
            _fail(search, cand, said.removeprefix("slmtune: error: ") if code == 2 else
                  f"its worker process failed ({said}; the whole output is in {job.log})", progress)
        else:  # stopped by a signal: its folder is kept as a stopped run, which a rerun resumes
            cand.note = f"its worker process was stopped (exit {code})"
            progress(f"tune: {cand.name}: {cand.note}")
            search.save()

    run_jobs(todo, prepare, ended, workers, Execution(workers=workers).threads)
    follow_leader(search, entries, full_splits, tfidf, progress)  # the rung is in: every candidate counts again


def _train_queued(search: Search, workers: int, todo: list[tuple[Candidate, float]], base: RunConfig,
                  splits: Splits, hard: float, entries: dict[str, np.ndarray], full_splits: Splits, tfidf,
                  progress) -> None:
    """Each (candidate, rung) of `todo` trained to its rung through the search's run queue, by this process and
    every worker that takes from it; `workers` of them share this machine (what the time estimates assume)."""
    from slmtune.experiments.tune_workers import queue_jobs

    concurrency = min(workers, len(todo))
    asked: dict[str, tuple[Candidate, float]] = {}
    jobs = []
    for cand, rung in todo:
        job = _prepare(search, cand, base, splits, rung, hard, entries, progress, concurrency)
        if job is not None:
            jobs.append(job)
            asked[job.name] = (cand, rung)
    for name, error in queue_jobs(search.queue, jobs, progress).items():
        cand, rung = asked[name]
        if error is None:
            _collect(search, cand, rung, splits, entries, progress, concurrency)
        else:
            _fail(search, cand, error, progress)
    follow_leader(search, entries, full_splits, tfidf, progress)


def _refit(search: Search, base: RunConfig, splits: Splits, hard: float, entries: dict[str, np.ndarray],
           full_splits: Splits, tfidf, progress) -> None:
    """The time the race left, given back: when the encoder candidates trained on a sample of the training rows,
    the leading finished fine-tuning candidate's configuration (model, method, learning rate, epochs) trains again
    on as many rows as the time left holds, if that is at least REFIT_GAIN times the sample or every row. It is
    one more candidate, chosen or not on the same validation rows as every other."""
    refits = [c for c in search.candidates.values() if c.refit_of]
    if not refits:
        tuned = [n for n in entries if search.candidates[n].kind in ("lora", "full")
                 and search.candidates[n].status == "finished"]
        if len(splits.train) >= len(full_splits.train) or not tuned:
            return
        source = search.candidates[standing_on(search, entries, splits.validation, tuned, 1.0).leader]
        left = hard - time.monotonic()
        # what the retrained run spends outside training: its overhead, and validation twice (a deadline stop)
        spare = left - search.overhead - 2 * len(splits.validation) / search.speed[source.model]
        rows = min(len(full_splits.train), int(0.9 * spare * _train_speed(search, source) / max(source.epochs, 1e-9)))
        if rows < REFIT_GAIN * len(splits.train) and rows < len(full_splits.train):
            progress(f"tune: {format_duration(max(left, 0))} left: too little to train {source.name} again on "
                     f"more rows (~{REFIT_GAIN:g}x its {len(splits.train)}, or all {len(full_splits.train)})")
            return
        refits = [Candidate(f"{source.name}-rows{rows}", source.kind, source.model, source.learning_rate,
                            source.epochs, rows=rows, refit_of=source.name)]
        search.candidates[refits[0].name] = refits[0]
        progress(f"tune: {format_duration(left)} left: {source.name}, the leading fine-tuning candidate, trains "
                 f"again on {rows} of the {len(full_splits.train)} training rows")
        search.save()
    for cand in refits:
        if cand.status not in ("cut", "failed", "left out"):
            _step(search, cand, base, sample(full_splits, cand.rows, base.seed), cand.epochs, hard, entries,
                  progress)
            follow_leader(search, entries, full_splits, tfidf, progress)


def _leader_first(search: Search, alive: list[Candidate], base: RunConfig, splits: Splits, hard: float,
                  entries: dict[str, np.ndarray], full_splits: Splits, tfidf, progress) -> None:
    """When the time left cannot hold every survivor's remaining schedule, the leader (first of `alive`) trains to
    the end of its own first, so that the budget ends with the best candidate fully trained rather than every
    candidate half way."""
    unfinished = [c for c in alive if c.status != "finished"]
    if not unfinished or alive[0].status == "finished":
        return
    needed = sum((c.epochs - c.reached) * _epoch_seconds(search, c, splits) + search.overhead for c in unfinished)
    if needed > hard - time.monotonic():
        leader = alive[0]
        progress(f"tune: not enough time for every survivor's schedule (~{format_duration(needed)}): "
                 f"{leader.name}, the leader, trains to its end first")
        _step(search, leader, base, splits, leader.epochs, hard, entries, progress)
        follow_leader(search, entries, full_splits, tfidf, progress)
