"""The whole reference study in one resumable command: every part is a study folder under one root.

Parts share runs: a config finished by one part (e.g. seed 42 of the seeds study) is reused by every other
part that needs it, because study folders that are siblings look into each other's runs. Before it starts,
the plan is printed: training runs (new and already done), estimated time from a short calibration on this
machine, and disk use. `--budget` scales seeds and sizes down until the estimate fits, saying what it
dropped; `--only` picks parts.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmtune import runs
from slmtune.config import RunConfig
from slmtune.errors import SlmtuneError
from slmtune.experiments.common import (
    PRIOR_SAMPLES_PER_SECOND,
    REFERENCE_TOKENS,
    Clock,
    DataSizes,
    data_sizes,
    format_duration,
    load_run_config,
    parse_budget,
    run_key,
    run_seconds,
    with_recipes_found,
)
from slmtune.experiments.protocol import Reduction
from slmtune.experiments.registry import STUDIES
from slmtune.experiments.workers import ALONE, Execution

# Disk per finished run of the default model (`du -sh` of run folders: LoRA 3.3 MB, full fine-tuning 90 MB).
DISK_MB = {"lora": 3.3, "full": 90.0}
# What calibrate() below measured on the 2-core reference CPU (AVX512-BF16), in the same hour as the runs behind
# PRIOR_SAMPLES_PER_SECOND; a machine twice as fast measures twice these and gets half the estimate. Training and
# inference are scaled by their own ratios: a CPU's gain from bf16 or wider vectors is not the same for both.
CALIBRATION_REFERENCE = {"train": 56.0, "eval": 209.7}


def speed_ratios(speed: float | dict[str, float]) -> dict[str, float]:
    """This machine's speed against the reference CPU, for training and for inference: the two ratios (as
    calibration_speed reads them), or one number for both."""
    if isinstance(speed, dict):
        return {"train": float(speed["train"]), "eval": float(speed["eval"])}
    return {"train": float(speed), "eval": float(speed)}


def calibration_speed(calibration: dict[str, Any]) -> dict[str, float]:
    """The speed ratios of a calibration.json: its measured samples/s against today's CALIBRATION_REFERENCE (so a
    file kept from an earlier release is read against the current reference); a file with only
    `speed_vs_reference`, written by hand, gives that one number for both."""
    if "train" in calibration and "eval" in calibration:
        return {k: calibration[k] / CALIBRATION_REFERENCE[k] for k in ("train", "eval")}
    return speed_ratios(calibration["speed_vs_reference"])


@dataclass
class ReferenceConfig:
    name: str = "reference"
    recipe: str = "configs/agnews-lora.yaml"
    """Base run recipe of every part (parts may name their own `recipe`)."""
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Part name -> its study settings; `kind` says which study (defaults to the name before a dash)."""


def load_reference_config(path: str, name: str | None = None) -> ReferenceConfig:
    """A whole-study file (`study: reference`, name, recipe, parts); a study file of one kind says which command
    runs it."""
    from slmtune.config import load_yaml

    values = load_yaml(path)
    kind = values.pop("study", "reference")
    if kind != "reference":
        command = STUDIES[kind].cli if kind in STUDIES else kind
        raise SlmtuneError(f"{path} is a {kind!r} study: run it with `slmtune {command}` --config {path}")
    unknown = sorted(set(values) - {"name", "recipe", "parts"})
    if unknown:
        raise SlmtuneError(f"unknown field(s) {', '.join(unknown)} in {path}; known: name, recipe, parts")
    values = with_recipes_found(values, path)
    if isinstance(values.get("parts"), dict):
        values["parts"] = {part: with_recipes_found(settings, path) if isinstance(settings, dict) else settings
                           for part, settings in values["parts"].items()}
    cfg = ReferenceConfig(**values)
    cfg.name = name or cfg.name
    return cfg


def part_kind(name: str, settings: dict[str, Any]) -> str:
    kind = settings.get("kind") or name.split("-")[0]
    if kind not in STUDIES:
        raise SlmtuneError(f"part {name!r}: unknown kind {kind!r}; known: {', '.join(STUDIES)}")
    return kind


def _study_cfg(kind: str, name: str, settings: dict[str, Any], recipe: str):
    values = {k: v for k, v in settings.items() if k != "kind"}
    values.setdefault("name", name)
    values.setdefault("recipe", recipe)
    try:
        return STUDIES[kind].load().CONFIG(**values)
    except TypeError as exc:
        raise SlmtuneError(f"part {name!r}: {exc}".replace("__init__() ", "")) from None


# ------------------------------------------------------------------------------------------------ plan


def planned_runs(kind: str, cfg, cli_overrides: list[str] | None, data: DataSizes,
                 root: Path | None = None) -> tuple[list[RunConfig], float]:
    """The training runs a part will ask for, and the seconds (on the reference CPU, at REFERENCE_TOKENS a text)
    of the work it does outside them: each study's own `plan` (slmtune.experiments.registry). `root` (the
    part's folder) lets results it already keeps count as done."""
    return STUDIES[kind].load().plan(cfg, load_run_config(cfg.recipe, cfg.run, cli_overrides), cli_overrides,
                                     data, root)


def calibrate(root: Path, base: RunConfig, progress=print) -> dict[str, float]:
    """Samples/s of 30 LoRA training steps and of length-sorted inference on 1,024 of the study's own training
    texts, with the study's model and precision, on this machine, counted per text of REFERENCE_TOKENS tokens
    (the texts' mean length scales them), and against what the reference CPU measured with the default model:
    a slower encoder or machine plans longer. Cached in `calibration.json`; measured again when the model or the
    precision changes (a file without them, written by hand, is taken as it is)."""
    from slmtune.precision import resolve as resolve_precision

    compute = resolve_precision(base.train.precision)
    model = base.model.name
    path = root / "calibration.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("precision", compute.name) == compute.name and cached.get("model", model) == model:
            return cached
    import numpy as np
    import torch

    from slmtune.experiments.common import all_rows
    from slmtune.models import fast_dropout
    from slmtune.models.build import get_model, load_tokenizer, resolve_model
    from slmtune.serve.logits import predict_proba

    clock = Clock()
    splits = all_rows(base)
    train = splits.train
    picked = np.random.default_rng(0).choice(len(train.texts), 1024, replace=len(train.texts) < 1024)
    texts = [train.texts[i] for i in picked]
    max_length = base.data.max_length
    tokenizer = load_tokenizer(resolve_model(model))
    per_reference = data_sizes(base, splits).tokens / REFERENCE_TOKENS  # reference-length texts in one of these
    net = get_model(model, label_names=train.label_names, use_lora=True)
    fast_dropout.install(net)  # as training does
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    net.train()
    batches = [texts[i:i + 16] for i in range(0, 512, 16)]
    with compute.frozen_weights(net):  # as LoRA training does
        for i, batch in enumerate(batches):
            if i == 2:  # two steps warm up
                start = time.perf_counter()
            encoded = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            with compute.autocast():
                loss = net(**encoded, labels=torch.zeros(len(batch), dtype=torch.long)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    train_rate = 16 * (len(batches) - 2) / (time.perf_counter() - start) * per_reference
    net.eval()
    start = time.perf_counter()
    predict_proba(net, tokenizer, texts, batch_size=64, max_length=max_length, precision=compute)
    eval_rate = len(texts) / (time.perf_counter() - start) * per_reference
    ratios = {"train": round(train_rate / CALIBRATION_REFERENCE["train"], 3),
              "eval": round(eval_rate / CALIBRATION_REFERENCE["eval"], 3)}
    result = {"train": round(train_rate, 1), "eval": round(eval_rate, 1), "seconds": round(clock.elapsed, 1),
              "precision": compute.name, "model": model, "vs_reference": ratios,
              "speed_vs_reference": round((ratios["train"] + ratios["eval"]) / 2, 3)}
    runs.write_json(path, result)
    progress(f"calibration ({model}): LoRA training {result['train']} samples/s, inference {result['eval']} "
             f"samples/s a {REFERENCE_TOKENS:.0f}-token text ({ratios['train']}x and {ratios['eval']}x the "
             f"reference CPU with the default model) in {result['seconds']}s")
    return result


@dataclass
class Plan:
    parts: dict[str, dict[str, Any]]
    """Per part: kind, cfg, runs, done (finished already), seconds and disk_mb (of the runs still to train), new
    (the configs still to train)."""
    total_runs: int
    new_runs: int
    seconds: float
    disk_mb: float
    dropped: list[str]
    sizes: DataSizes
    """The data the estimates are for: rows, classes, mean tokens per text."""
    config: ReferenceConfig | None = None
    """The study the plan is for (after any budget reductions)."""

    def lines(self) -> list[str]:
        out = [f"  {'part':<16}{'kind':<14}{'runs':>6}{'done':>6}{'estimate':>11}{'disk':>9}"]
        for name, p in self.parts.items():
            out.append(f"  {name:<16}{p['kind']:<14}{p['runs']:>6}{p['done']:>6}{format_duration(p['seconds']):>11}"
                       f"{p['disk_mb']:>7.0f}MB")
        out.append(f"  {'total':<30}{self.total_runs:>6}{self.total_runs - self.new_runs:>6}"
                   f"{format_duration(self.seconds):>11}{self.disk_mb:>7.0f}MB")
        return out


def make_plan(cfg: ReferenceConfig, root: Path, cli_overrides: list[str] | None, speed: float | dict[str, float],
              only: list[str] | None = None, sizes: DataSizes | None = None) -> Plan:
    """The runs of every part and their estimated seconds at `speed` x the reference CPU (training and inference
    ratios, speed_ratios), for the study's data (`sizes`: its rows and text length, loaded when not given)."""
    ratio = speed_ratios(speed)
    rates = {m: {k: v * ratio[k] for k, v in r.items()} for m, r in PRIOR_SAMPLES_PER_SECOND.items()}
    # the work outside runs (SetFit's pairs, zero-shot and active learning's passes over the rows) mixes both
    outside_ratio = (ratio["train"] + ratio["eval"]) / 2
    kinds = {n: part_kind(n, settings) for n, settings in cfg.parts.items()}
    if only:
        kinds = {n: k for n, k in kinds.items() if any(n == o or n.startswith(f"{o}-") or k == o for o in only)}
        if not kinds:
            raise SlmtuneError(f"--only {','.join(only)} matches no part; parts: {', '.join(cfg.parts)}")
    names = list(kinds)
    study_cfgs = {n: _study_cfg(kinds[n], n, cfg.parts[n], cfg.recipe) for n in names}
    sizes = sizes or data_sizes(load_run_config(cfg.recipe, {}, cli_overrides))
    seen: set[str] = set()
    folders = list(root.glob("*/runs/*"))
    # a run paused at a racing rung counts as done only for a raced sweep, which never resumes it; every other part
    # (an unraced sweep trains it to the end, the other studies reuse only complete runs) still has work there
    finished = {p.name for p in folders if runs.is_finished(p)}
    complete = {p.name for p in folders if runs.is_complete(p)}
    parts, total, new, seconds, disk = {}, 0, 0, 0.0, 0.0
    for name in names:
        kind, study_cfg = kinds[name], study_cfgs[name]
        configs, extra_seconds = planned_runs(kind, study_cfg, cli_overrides, sizes, root / name)
        share = STUDIES[kind].load().planned_share(study_cfg, configs, sizes)
        outside_runs = extra_seconds / outside_ratio * sizes.tokens / REFERENCE_TOKENS  # at the reference length
        p = {"kind": kind, "cfg": study_cfg, "runs": 0, "done": 0, "seconds": outside_runs, "disk_mb": 0.0, "new": []}
        shareable = STUDIES[kind].load().shares_runs(study_cfg)  # configs that name their runs: shared by parts
        for config in configs:
            key = f"{config.model.method}-{run_key(config)}"
            if shareable:
                if key in seen:
                    continue
                seen.add(key)
            p["runs"] += 1
            if key in (finished if getattr(study_cfg, "race", False) else complete):
                p["done"] += 1
                continue
            p["seconds"] += run_seconds(config, rates[config.model.method], sizes) * share  # raced: a share
            p["disk_mb"] += DISK_MB[config.model.method]
            p["new"].append(config)
        parts[name] = p
        total += p["runs"]
        new += p["runs"] - p["done"]
        seconds += p["seconds"]
        disk += p["disk_mb"]
    return Plan(parts, total, new, seconds, disk, [], sizes, cfg)


def reductions() -> list[tuple[str, Reduction]]:
    """Every kind's budget reductions (its module's REDUCTIONS), cheapest loss of evidence first."""
    found = [(kind.name, r) for kind in STUDIES.values() for r in kind.load().REDUCTIONS]
    return sorted(found, key=lambda item: item[1].rank)


def fit_budget(cfg: ReferenceConfig, root: Path, cli_overrides, speed: float | dict[str, float], budget_s: float,
               only: list[str] | None) -> Plan:
    """The plan, shrunk step by step (REDUCTIONS) until its estimate fits the budget; says what it dropped."""
    cfg = copy.deepcopy(cfg)
    dropped: list[str] = []
    plan = make_plan(cfg, root, cli_overrides, speed, only)
    sizes = plan.sizes
    for kind, reduction in reductions():
        key, change, message = reduction.field, reduction.change, reduction.message
        if plan.seconds <= budget_s:
            break
        touched = False
        for name, settings in list(cfg.parts.items()):
            if part_kind(name, settings) != kind:
                continue
            current = getattr(plan.parts[name]["cfg"], key) if name in plan.parts else None
            if current is None:
                continue
            value = change(current)
            if value is None:
                cfg.parts.pop(name)
                touched = True
            elif value != current:
                cfg.parts[name] = {**settings, key: value}
                touched = True
        if touched:
            dropped.append(message)
            plan = make_plan(cfg, root, cli_overrides, speed, only, sizes)
    plan.dropped = dropped
    if plan.seconds > budget_s:
        plan.dropped.append(f"still ~{format_duration(plan.seconds)} after every reduction: pick parts with --only")
    return plan


def exhaustive(cfg: ReferenceConfig) -> ReferenceConfig:
    """The study with every part in full: sweeps train every point to the end, seeds run every seed (each kind's
    adaptive fields off, slmtune.experiments.registry). Its runs are the adaptive study's and more, so both can
    share one folder: an exhaustive rerun of an adaptive study trains only what the adaptive one left out."""
    parts = {name: {**settings, **{f: False for f in STUDIES[part_kind(name, settings)].adaptive_fields}}
             for name, settings in cfg.parts.items()}
    return ReferenceConfig(cfg.name, cfg.recipe, parts)


def announce(name: str, root: Path, plan: Plan, upper: float, progress) -> None:
    """Print the plan: runs, estimated time (and `upper`, the most it can take, where that is more), data, the
    parts' table, who scores the test rows, what a budget dropped."""
    at_most = f" (at most ~{format_duration(upper)} if no race cuts a point and the comparisons need every seed)"
    progress(f"reference study {name} in {root}: {plan.total_runs} training runs, {plan.new_runs} to train; "
             f"~{format_duration(plan.seconds)} on this machine{at_most if upper > plan.seconds * 1.02 else ''}; "
             f"~{plan.disk_mb:.0f} MB of new run folders")
    progress(f"  data: {plan.sizes.train:,} training rows (before each part's own sizes), {plan.sizes.validation:,} "
             f"validation, {plan.sizes.test:,} test, {plan.sizes.classes} classes; {plan.sizes.tokens:.0f} tokens a "
             f"text (time per text scaled from the calibration's {REFERENCE_TOKENS:.0f})")
    for line in plan.lines():
        progress(line)
    if any(getattr(p["cfg"], "race", False) for p in plan.parts.values()):
        progress("  test rows: scored by every run trained to the end, never by a sweep point the race cut (its "
                 "validation score is kept; `slmtune evaluate` scores it later if wanted)")
    for message in plan.dropped:
        progress(f"  budget: {message}")


def run_reference(cfg: ReferenceConfig, root: str | Path | None = None, cli_overrides: list[str] | None = None,
                  only: list[str] | None = None, budget: str | None = None, dry_run: bool = False,
                  progress=print, execution: Execution = ALONE) -> dict[str, Any]:
    """Plan the study (calibrated on this machine, fitted to `budget`), then run its parts in order.

    Several workers (or a shared storage URL) in `execution` first train every planned run through the run queue
    (slmtune.experiments.workers); a worker only takes runs from the queue of a study started elsewhere."""
    if execution.worker:
        from slmtune.experiments.queue import queue_url, work

        url = queue_url(root or Path("studies") / cfg.name, execution.storage)
        return {"worker_trained": work(url, progress=progress)}
    if not cfg.parts:
        raise SlmtuneError("the reference study names no parts")
    for name, settings in cfg.parts.items():
        part_kind(name, settings)
    budget_s = parse_budget(budget) if budget else None  # a bad --budget fails before the calibration run
    root = Path(root or Path("studies") / cfg.name)
    root.mkdir(parents=True, exist_ok=True)
    base = load_run_config(cfg.recipe, None, cli_overrides)
    speed = calibration_speed(calibrate(root, base, progress=progress))
    if budget_s is not None:
        plan = fit_budget(cfg, root, cli_overrides, speed, budget_s, only)
    else:
        plan = make_plan(cfg, root, cli_overrides, speed, only)
    adaptive = any(getattr(p["cfg"], f) for p in plan.parts.values() for f in STUDIES[p["kind"]].adaptive_fields)
    upper = make_plan(exhaustive(plan.config), root, cli_overrides, speed, only, plan.sizes).seconds if adaptive \
        else plan.seconds  # the most it can take: no race cutting a point, every comparison needing every seed
    announce(cfg.name, root, plan, upper, progress)
    record = {"study": "reference", "name": cfg.name, "only": only, "budget": budget, "dropped": plan.dropped,
              "estimate_seconds": round(plan.seconds), "estimate_seconds_at_most": round(upper),
              "runs": plan.total_runs, "new_runs": plan.new_runs,
              "parts": {n: {"kind": p["kind"], "runs": p["runs"], "done": p["done"],
                            "estimate_seconds": round(p["seconds"]),
                            **{f: getattr(p["cfg"], f) for f in STUDIES[p["kind"]].adaptive_fields}}
                        for n, p in plan.parts.items()}}
    if dry_run:
        return record
    clock = Clock()
    seconds: dict[str, float] = {}
    earlier = earlier_segments(root)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    if execution.queued:
        from slmtune.experiments.workers import run_workers

        items = [(root / name, config) for name, p in plan.parts.items() for config in p["new"]]
        run_workers(items, root, execution, progress=progress)
        seconds["queued runs"] = round(clock.elapsed, 1)
    for name, p in plan.parts.items():
        progress(f"\n== {name} ({p['kind']}): {p['runs'] - p['done']} runs to train, ~{format_duration(p['seconds'])}")
        start = clock.elapsed
        STUDIES[p["kind"]].load().run(p["cfg"], root / name, cli_overrides, progress=progress)
        seconds[name] = round(clock.elapsed - start, 1)
        runs.write_json(root / "reference.json", with_segments(
            {**record, "seconds": seconds, "total_seconds": sum(seconds.values())}, earlier, started))
    from slmtune.report.html import build_report

    record.update(seconds=seconds, total_seconds=round(clock.elapsed, 1), report=str(build_report(root)))
    record = with_segments(record, earlier, started)
    runs.write_json(root / "reference.json", record)
    return record


def earlier_segments(root: Path) -> list[dict[str, Any]]:
    """The segments an interrupted and resumed study ran before this one, from its reference.json (a file of an
    earlier release, without `segments`, is one segment)."""
    try:
        values = runs.read_json(root / "reference.json")
    except (OSError, ValueError):
        return []
    if "segments" in values:
        return list(values["segments"])
    return [{"started": None, "seconds": values["seconds"]}] if values.get("seconds") else []


def with_segments(record: dict[str, Any], earlier: list[dict[str, Any]], started: str) -> dict[str, Any]:
    """`record` with every segment's seconds a part (`segments`: this one last, with its plan and whether each
    part raced) and `part_seconds`, each part's time summed over them: what it took, however often it was stopped."""
    parts = record["parts"]
    segment = {"started": started, "seconds": record.get("seconds", {}),
               "estimate_seconds": {n: p["estimate_seconds"] for n, p in parts.items()},
               "adaptive": {n: {f: p[f] for f in STUDIES[p["kind"]].adaptive_fields} for n, p in parts.items()}}
    segments = [*earlier, segment]
    totals: dict[str, float] = {}
    for seg in segments:
        for part, value in seg.get("seconds", {}).items():
            totals[part] = round(totals.get(part, 0.0) + value, 1)
    return {**record, "segments": segments, "part_seconds": totals}
