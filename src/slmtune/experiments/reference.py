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
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmtune import runs
from slmtune.config import RunConfig, replace
from slmtune.errors import SlmtuneError
from slmtune.experiments.common import (
    PRIOR_SAMPLES_PER_SECOND,
    Clock,
    Study,
    flat_metrics,
    format_duration,
    load_run_config,
    run_key,
    run_seconds,
    with_min_steps,
)

KINDS = ("train", "seeds", "sweep", "augmentation", "active", "zeroshot", "fewshot", "scaling")
# Disk per finished run of the default model (`du -sh` of run folders: LoRA 3.3 MB, full fine-tuning 90 MB).
DISK_MB = {"lora": 3.3, "full": 90.0}
# What calibrate() below measured on the 2-core reference CPU (mean of three, 2026-11-26, in the same hour as
# PRIOR_SAMPLES_PER_SECOND); a machine twice as fast measures twice these and gets half the estimate.
CALIBRATION_REFERENCE = {"train": 37.6, "eval": 201.3}
EVAL_RATE = PRIOR_SAMPLES_PER_SECOND["lora"]["eval"]
FULL_TRAIN_RATE = PRIOR_SAMPLES_PER_SECOND["full"]["train"]
# SetFit 1.2.0 contrastive pairs per second on the reference CPU (16 rows a class: 3,072 pairs in 189 s a draw).
SETFIT_PAIRS_PER_SECOND = 16.3


@dataclass
class ReferenceConfig:
    name: str = "reference"
    recipe: str = "configs/agnews-lora.yaml"
    """Base run recipe of every part (parts may name their own `recipe`)."""
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Part name -> its study settings; `kind` says which study (defaults to the name before a dash)."""


def part_kind(name: str, settings: dict[str, Any]) -> str:
    kind = settings.get("kind") or name.split("-")[0]
    if kind not in KINDS:
        raise SlmtuneError(f"part {name!r}: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    return kind


def _study_cfg(kind: str, name: str, settings: dict[str, Any], recipe: str):
    from slmtune.experiments.active import ActiveConfig
    from slmtune.experiments.augmentation import AugmentStudyConfig
    from slmtune.experiments.fewshot import FewShotConfig
    from slmtune.experiments.scaling import ScalingConfig
    from slmtune.experiments.seeds import SeedsConfig
    from slmtune.experiments.sweep import SweepConfig
    from slmtune.experiments.zeroshot import ZeroShotConfig

    classes = {"train": TrainPartConfig, "seeds": SeedsConfig, "sweep": SweepConfig,
               "augmentation": AugmentStudyConfig, "active": ActiveConfig, "zeroshot": ZeroShotConfig,
               "fewshot": FewShotConfig, "scaling": ScalingConfig}
    values = {k: v for k, v in settings.items() if k != "kind"}
    values.setdefault("name", name)
    values.setdefault("recipe", recipe)
    try:
        return classes[kind](**values)
    except TypeError as exc:
        raise SlmtuneError(f"part {name!r}: {exc}".replace("__init__() ", "")) from None


@dataclass
class TrainPartConfig:
    name: str = "train"
    recipe: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    recipes: list[str] = field(default_factory=lambda: ["configs/agnews-full.yaml", "configs/agnews-lora.yaml"])
    """One run per recipe: the baseline (full fine-tuning) and LoRA."""


def run_train_part(cfg: TrainPartConfig, study_dir: Path, cli_overrides: list[str] | None, progress=print) -> dict:
    study = Study(study_dir)
    rows = []
    for recipe in cfg.recipes:
        config = load_run_config(recipe, cfg.run, cli_overrides)
        row = {"recipe": recipe, "method": config.model.method, **flat_metrics(study.run(config))}
        rows.append(row)
        progress(f"  {recipe}: test accuracy {row['test_accuracy']:.4f}{' (reused)' if row['reused'] else ''}")
    summary = {"study": "train", "rows": rows}
    study.write_summary(rows, summary)
    return summary


# ------------------------------------------------------------------------------------------------ plan


def planned_runs(kind: str, cfg, cli_overrides: list[str] | None, available: int,
                 root: Path | None = None) -> tuple[list[RunConfig], float]:
    """The training runs a part will ask for, and the seconds (on the reference CPU) of the work it does outside
    them: embedding, pool scoring, the prompt method's training. `root` (the part's folder) lets results it
    already keeps (zero-shot and few-shot rows) count as done.

    Active learning's later rounds depend on what is queried, so they are planned by size only."""
    base = load_run_config(cfg.recipe, cfg.run, cli_overrides)
    if kind == "train":
        return [load_run_config(r, cfg.run, cli_overrides) for r in cfg.recipes], 0.0
    if kind == "seeds":
        from slmtune.experiments.seeds import resolve_seeds

        configs = [base] + ([load_run_config(cfg.compare, cfg.compare_run, cli_overrides)] if cfg.compare else [])
        return [replace(c, seed=s) for c in configs for s in resolve_seeds(cfg.seeds, cfg.num_runs)], 0.0
    if kind == "sweep":
        from slmtune.experiments.sweep import grid_points

        if cfg.search:
            return [base] * cfg.search, 0.0
        return [replace(base, **point) for point in grid_points(cfg.resolved_space())], 0.0
    if kind == "augmentation":
        from slmtune.experiments.augmentation import _plan

        return [c for _, c in _plan(cfg, base)], 0.0
    if kind == "active":
        out = []
        for seed in cfg.seeds:
            sizes = cfg.checkpoints[:1] + cfg.checkpoints[1:] * len(cfg.strategies)  # the seed set is shared
            out += [with_min_steps(replace(base, seed=seed, **{"data.train_size": n}), n, cfg.min_steps) for n in sizes]
        scoring = len(cfg.seeds) * len(cfg.strategies) * (len(cfg.checkpoints) - 1) * cfg.pool_size
        return out, scoring / EVAL_RATE
    if kind == "zeroshot":  # one pass over the test set for the untrained head, one for the embeddings
        left = set(cfg.methods) - {"nli"}
        if root is not None and (root / "rows").is_dir():
            from slmtune.data import load_splits
            from slmtune.experiments.common import row_file
            from slmtune.experiments.zeroshot import kept_row, label_descriptions

            descriptions = label_descriptions(cfg, load_splits(base.data, base.seed).test.label_names)
            left = {m for m in left if not row_file(root, *kept_row(cfg, base, m, descriptions)).exists()}
        return [], 7600 / EVAL_RATE * (("untrained-head" in left) + bool(left - {"untrained-head"}))
    if kind == "fewshot":
        from slmtune.experiments.common import row_file
        from slmtune.experiments.fewshot import OWN_LOOP, draw_config, kept_row
        from slmtune.methods.prompt_head import steps_for

        out, extra, probe_left = [], 0.0, False
        for k in cfg.shots:
            for draw in range(cfg.draws):
                for method in cfg.methods:
                    if method in OWN_LOOP and root is not None:
                        if row_file(root, *kept_row(cfg, draw_config(cfg, base, k, draw, method), k, draw,
                                                    method)).exists():
                            continue  # kept from an earlier run of this part
                    probe_left = probe_left or method == "probe"
                    if method == "prompt":
                        steps = steps_for(4 * k, base.train.batch_size, cfg.prompt_min_steps, cfg.prompt_epochs)
                        extra += steps * base.train.batch_size / FULL_TRAIN_RATE + 7600 / EVAL_RATE
                    if method == "setfit":  # SetFit's default oversampling: 2 x max(same-, cross-class) pairs
                        same, cross = 4 * k * (k - 1) // 2, 6 * k * k
                        extra += 2 * max(same, cross) / SETFIT_PAIRS_PER_SECOND + 7600 / EVAL_RATE
                    if method not in ("lora", "full"):
                        continue
                    out.append(with_min_steps(draw_config(cfg, base, k, draw, method), 4 * k, cfg.min_steps))
        return out, extra + (7600 / EVAL_RATE if probe_left else 0.0)  # the probe embeds the test set once
    if kind == "scaling":
        sizes = sorted({s for s in cfg.sizes if 0 < s <= available})
        return [with_min_steps(replace(base, seed=seed, **{"data.train_size": n}), n, cfg.min_steps)
                for n in sizes for seed in cfg.seeds], 0.0
    raise SlmtuneError(f"unknown kind {kind!r}")


def calibrate(root: Path, model: str = "minilm-l6", progress=print, precision: str = "auto") -> dict[str, float]:
    """Samples/s of 30 LoRA training steps and of length-sorted inference on 1,024 rows on this machine, in the
    study's precision (cached; measured again when the precision changes)."""
    from slmtune.precision import resolve as resolve_precision

    compute = resolve_precision(precision)
    path = root / "calibration.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("precision", compute.name) == compute.name:
            return cached
    import torch

    from slmtune.data import load_ag_news
    from slmtune.evaluate import predict_proba
    from slmtune.models import fast_dropout
    from slmtune.models.build import get_model, load_tokenizer, resolve_model

    clock = Clock()
    _, test = load_ag_news(None)
    texts = test.texts[:1024]
    tokenizer = load_tokenizer(resolve_model(model))
    net = get_model(model, label_names=test.label_names, use_lora=True)
    fast_dropout.install(net)  # as training does
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    net.train()
    batches = [texts[i:i + 16] for i in range(0, 512, 16)]
    for i, batch in enumerate(batches):
        if i == 2:  # two steps warm up
            start = time.perf_counter()
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with compute.autocast():
            loss = net(**encoded, labels=torch.tensor(test.labels[16 * i:16 * i + len(batch)])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    train_rate = 16 * (len(batches) - 2) / (time.perf_counter() - start)
    net.eval()
    start = time.perf_counter()
    predict_proba(net, tokenizer, texts, batch_size=64, max_length=128, precision=compute)
    eval_rate = len(texts) / (time.perf_counter() - start)
    result = {"train": round(train_rate, 1), "eval": round(eval_rate, 1), "seconds": round(clock.elapsed, 1),
              "precision": compute.name,
              "speed_vs_reference": round((train_rate / CALIBRATION_REFERENCE["train"]
                                           + eval_rate / CALIBRATION_REFERENCE["eval"]) / 2, 3)}
    runs.write_json(path, result)
    progress(f"calibration: LoRA training {result['train']} samples/s, inference {result['eval']} samples/s "
             f"({result['speed_vs_reference']}x the reference CPU) in {result['seconds']}s")
    return result


@dataclass
class Plan:
    parts: dict[str, dict[str, Any]]
    """Per part: kind, cfg, runs, done (finished already), seconds and disk_mb (of the runs still to train)."""
    total_runs: int
    new_runs: int
    seconds: float
    disk_mb: float
    dropped: list[str]

    def lines(self) -> list[str]:
        out = [f"  {'part':<16}{'kind':<14}{'runs':>6}{'done':>6}{'estimate':>11}{'disk':>9}"]
        for name, p in self.parts.items():
            out.append(f"  {name:<16}{p['kind']:<14}{p['runs']:>6}{p['done']:>6}{format_duration(p['seconds']):>11}"
                       f"{p['disk_mb']:>7.0f}MB")
        out.append(f"  {'total':<30}{self.total_runs:>6}{self.total_runs - self.new_runs:>6}"
                   f"{format_duration(self.seconds):>11}{self.disk_mb:>7.0f}MB")
        return out


def make_plan(cfg: ReferenceConfig, root: Path, cli_overrides: list[str] | None, speed: float,
              only: list[str] | None = None) -> Plan:
    rates = {m: {k: v * speed for k, v in r.items()} for m, r in PRIOR_SAMPLES_PER_SECOND.items()}
    kinds = {n: part_kind(n, settings) for n, settings in cfg.parts.items()}
    if only:
        kinds = {n: k for n, k in kinds.items() if any(n == o or n.startswith(f"{o}-") or k == o for o in only)}
        if not kinds:
            raise SlmtuneError(f"--only {','.join(only)} matches no part; parts: {', '.join(cfg.parts)}")
    names = list(kinds)
    study_cfgs = {n: _study_cfg(kinds[n], n, cfg.parts[n], cfg.recipe) for n in names}
    available = _available_rows(cfg, cli_overrides) if "scaling" in kinds.values() else 0
    seen: set[str] = set()
    finished = {p.name for p in root.glob("*/runs/*") if runs.is_finished(p)}
    parts, total, new, seconds, disk = {}, 0, 0, 0.0, 0.0
    for name in names:
        kind, study_cfg = kinds[name], study_cfgs[name]
        configs, extra_seconds = planned_runs(kind, study_cfg, cli_overrides, available, root / name)
        p = {"kind": kind, "cfg": study_cfg, "runs": 0, "done": 0, "seconds": extra_seconds / speed, "disk_mb": 0.0}
        # Active rounds train on queried rows and search trials on sampled values: their configs do not name
        # their runs, so they are neither shared nor found done by key.
        shareable = kind != "active" and not (kind == "sweep" and study_cfg.search)
        for config in configs:
            key = f"{config.model.method}-{run_key(config)}"
            if shareable:
                if key in seen:
                    continue
                seen.add(key)
            p["runs"] += 1
            if key in finished:
                p["done"] += 1
                continue
            p["seconds"] += run_seconds(config, rates[config.model.method])
            p["disk_mb"] += DISK_MB[config.model.method]
        if kind == "active":
            summary = root / name / "summary.json"
            if summary.is_file():
                p["done"], p["seconds"], p["disk_mb"] = p["runs"], 0.0, 0.0
        parts[name] = p
        total += p["runs"]
        new += p["runs"] - p["done"]
        seconds += p["seconds"]
        disk += p["disk_mb"]
    return Plan(parts, total, new, seconds, disk, [])


def _available_rows(cfg: ReferenceConfig, cli_overrides: list[str] | None) -> int:
    from slmtune.data import load_splits

    base = load_run_config(cfg.recipe, {}, cli_overrides)
    return len(load_splits(replace(base, **{"data.train_size": None}).data, base.seed).train)


# Ways to shrink the study, cheapest loss first: (part kind, field, new value or callable, message).
REDUCTIONS = [
    ("scaling", "sizes", lambda v: [s for s in v if s <= 2400], "scaling: sizes above 2,400 rows dropped"),
    ("fewshot", "draws", lambda v: min(v, 3), "fewshot: 3 draws per size"),
    ("active", "seeds", lambda v: v[:2], "active learning: 2 seeds"),
    ("augmentation", "seeds", lambda v: v[:2], "augmentation: 2 seeds"),
    ("scaling", "seeds", lambda v: v[:2], "scaling: 2 seeds"),
    ("augmentation", "ratios", lambda v: [r for r in v if r in (0, 0.5, 1.0)], "augmentation: ratios 0, 0.5, 1"),
    ("sweep", "space", lambda v: None if v == "grid" else v, "sweep: the 5x5 grid dropped (lr and wd lines kept)"),
    ("seeds", "seeds", lambda v: (v or [])[:3] or None, "seeds: 3 seeds"),
    ("fewshot", "shots", lambda v: [k for k in v if k <= 20], "fewshot: shots above 20 per class dropped"),
]


def fit_budget(cfg: ReferenceConfig, root: Path, cli_overrides, speed: float, budget_s: float,
               only: list[str] | None) -> Plan:
    """The plan, shrunk step by step (REDUCTIONS) until its estimate fits the budget; says what it dropped."""
    cfg = copy.deepcopy(cfg)
    dropped: list[str] = []
    plan = make_plan(cfg, root, cli_overrides, speed, only)
    for kind, key, change, message in REDUCTIONS:
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
            plan = make_plan(cfg, root, cli_overrides, speed, only)
    plan.dropped = dropped
    if plan.seconds > budget_s:
        plan.dropped.append(f"still ~{format_duration(plan.seconds)} after every reduction: pick parts with --only")
    return plan


def parse_budget(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(h|m|min|s)?\s*", text or "")
    if not match:
        raise SlmtuneError(f"--budget takes a duration like 2h, 90m or 5400s, got {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"h": 3600, "m": 60, "min": 60, "s": 1}[unit]


def run_reference(cfg: ReferenceConfig, root: str | Path | None = None, cli_overrides: list[str] | None = None,
                  only: list[str] | None = None, budget: str | None = None, dry_run: bool = False,
                  progress=print) -> dict[str, Any]:
    from slmtune.experiments.active import run_active
    from slmtune.experiments.augmentation import run_augmentation
    from slmtune.experiments.fewshot import run_fewshot
    from slmtune.experiments.scaling import run_scaling
    from slmtune.experiments.seeds import run_seeds
    from slmtune.experiments.sweep import run_sweep
    from slmtune.experiments.zeroshot import run_zeroshot

    if not cfg.parts:
        raise SlmtuneError("the reference study names no parts")
    for name, settings in cfg.parts.items():
        part_kind(name, settings)
    budget_s = parse_budget(budget) if budget else None  # a bad --budget fails before the calibration run
    root = Path(root or Path("studies") / cfg.name)
    root.mkdir(parents=True, exist_ok=True)
    base = load_run_config(cfg.recipe, None, cli_overrides)
    speed = calibrate(root, progress=progress, precision=base.train.precision)["speed_vs_reference"]
    if budget_s is not None:
        plan = fit_budget(cfg, root, cli_overrides, speed, budget_s, only)
    else:
        plan = make_plan(cfg, root, cli_overrides, speed, only)
    progress(f"reference study {cfg.name} in {root}: {plan.total_runs} training runs, {plan.new_runs} to train; "
             f"~{format_duration(plan.seconds)} on this machine; ~{plan.disk_mb:.0f} MB of new run folders")
    for line in plan.lines():
        progress(line)
    for message in plan.dropped:
        progress(f"  budget: {message}")
    record = {"study": "reference", "name": cfg.name, "only": only, "budget": budget, "dropped": plan.dropped,
              "estimate_seconds": round(plan.seconds), "runs": plan.total_runs, "new_runs": plan.new_runs,
              "parts": {n: {"kind": p["kind"], "runs": p["runs"], "done": p["done"],
                            "estimate_seconds": round(p["seconds"])} for n, p in plan.parts.items()}}
    if dry_run:
        return record
    runners = {"train": run_train_part, "seeds": run_seeds, "sweep": run_sweep, "augmentation": run_augmentation,
               "active": run_active, "zeroshot": run_zeroshot, "fewshot": run_fewshot, "scaling": run_scaling}
    clock = Clock()
    seconds = {}
    for name, p in plan.parts.items():
        progress(f"\n== {name} ({p['kind']}): {p['runs'] - p['done']} runs to train, ~{format_duration(p['seconds'])}")
        start = clock.elapsed
        runners[p["kind"]](p["cfg"], root / name, cli_overrides, progress=progress)
        seconds[name] = round(clock.elapsed - start, 1)
        runs.write_json(root / "reference.json", {**record, "seconds": seconds, "total_seconds": sum(seconds.values())})
    from slmtune.report.html import build_report

    record.update(seconds=seconds, total_seconds=round(clock.elapsed, 1), report=str(build_report(root)))
    runs.write_json(root / "reference.json", record)
    return record
