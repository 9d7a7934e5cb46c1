"""`slmtune label simulate`: the labelling loop with an oracle that answers from gold labels, against random
labelling with the same probe, so that every choice of the loop is measured: accuracy against labels, labels to
reach a share of the full-data probe's accuracy, where the stopping signal fires, whether the audit interval
covers the true pool accuracy, and the time per answer."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slmtune.label.loop import DEFAULTS, Loop, LoopConfig, StopSignal, audit_estimate


@dataclass(frozen=True)
class SimulateConfig:
    """What one simulation runs."""

    budget: int = 500
    """Labels each simulated person gives."""
    seeds: int = 5
    """Repetitions (audit draw, stop set, random order) per strategy."""
    step: int = 10
    """Labels between two measurements of the curve."""
    pool: int = 0
    """Pool rows drawn from the training rows (0: all of them)."""
    audit_share: float = 0.1
    """The loop's share of audit items (random labelling has none)."""
    target: float = 0.95
    """The share of the full-data probe's test accuracy whose labels-to-reach the summary reports."""


SIMULATE_DEFAULTS = SimulateConfig()


def _run(strategy: str, x: np.ndarray, gold: np.ndarray, x_test: np.ndarray, gold_test: np.ndarray,
         prompts: np.ndarray, seed: int, sim: SimulateConfig, config: LoopConfig) -> tuple[list[dict], list[float]]:
    n = len(x)
    loop = Loop(x, prompts, sim.audit_share if strategy == "loop" else 0.0, seed, config)
    loop.fit([], [])
    rng = np.random.default_rng([seed, 11])
    order = rng.permutation(n)
    taken = np.zeros(n, bool)
    counts = np.zeros(loop.n_classes, int)
    rows: list[int] = []
    labels: list[int] = []
    audit: list[bool] = []
    curve, seconds, signal = [], [], StopSignal(config)
    for answered in range(min(sim.budget, n)):
        start = time.perf_counter()
        if strategy == "loop":
            choice = loop.next(taken, counts, answered, [r for r, a in zip(rows, audit) if not a][-config.recent:])
            row, is_audit = choice.row, choice.how == "audit"
        else:
            row, is_audit = int(order[answered]), False
        taken[row] = True
        rows.append(row)
        labels.append(int(gold[row]))
        audit.append(is_audit)
        counts[gold[row]] += 1
        loop.fit(rows, labels, audit)
        seconds.append(time.perf_counter() - start)
        if (answered + 1) % sim.step == 0:
            point = {"strategy": strategy, "seed": seed, "labels": answered + 1,
                     "test_accuracy": float((loop.scores(x_test).argmax(1) == gold_test).mean()),
                     "unseen_accuracy": _unseen_accuracy(loop, gold, rows, audit)}
            estimate = audit_estimate(loop, rows, labels, audit)
            point.update({"audit_n": estimate["n"], "audit_accuracy": estimate.get("accuracy"),
                          "audit_low": estimate.get("low"), "audit_high": estimate.get("high")})
            if (answered + 1) % config.stop_every == 0:
                k = signal.update(loop.stop_predictions())
                if k is not None:
                    point["kappa"] = round(k, 4)
            point["stop"] = signal.up
            curve.append(point)
    return curve, seconds


def _unseen_accuracy(loop: Loop, gold: np.ndarray, rows: list[int], audit: list[bool]) -> float:
    """The probe's accuracy on the pool rows it did not train on: what the audit items estimate."""
    seen = np.zeros(len(gold), bool)
    seen[[r for r, a in zip(rows, audit) if not a]] = True
    return float((loop.predict(~seen).argmax(1) == gold[~seen]).mean())


def compare_curves(curves: list[dict]) -> dict:
    """Loop against random, paired by seed: accuracy at the budget, the mean gap over the whole curve (the area
    between the learning curves), and the labels the loop needed to match random labelling's accuracy at the
    budget; one-sided paired t-tests across seeds."""
    from scipy.stats import ttest_rel

    def curve(strategy: str, seed: int) -> list[dict]:
        return sorted((c for c in curves if c["strategy"] == strategy and c["seed"] == seed), key=lambda c: c["labels"])

    seeds = sorted({c["seed"] for c in curves})
    loop = [curve("loop", s) for s in seeds]
    rand = [curve("random", s) for s in seeds]
    at_budget = {"loop": [c[-1]["test_accuracy"] for c in loop], "random": [c[-1]["test_accuracy"] for c in rand]}
    gaps = [float(np.mean([a["test_accuracy"] - b["test_accuracy"] for a, b in zip(lc, rc)]))
            for lc, rc in zip(loop, rand)]
    matched = [labels_to_reach(lc, rc[-1]["test_accuracy"]) for lc, rc in zip(loop, rand)]

    def p(a, b) -> float | None:
        if len(a) < 2 or np.allclose(np.subtract(a, b), 0):
            return None
        return float(ttest_rel(a, b, alternative="greater").pvalue)

    return {"accuracy_at_budget": at_budget, "accuracy_at_budget_p": p(at_budget["loop"], at_budget["random"]),
            "mean_curve_gap": gaps, "mean_curve_gap_p": p(gaps, [0.0] * len(gaps)),
            "labels_to_random_budget_accuracy": matched}


def labels_to_reach(curve: list[dict], accuracy: float) -> int | None:
    return next((p["labels"] for p in curve if p["test_accuracy"] >= accuracy), None)


def simulate(x: np.ndarray, gold: np.ndarray, x_test: np.ndarray, gold_test: np.ndarray, prompts: np.ndarray,
             sim: SimulateConfig = SIMULATE_DEFAULTS, config: LoopConfig = DEFAULTS, out_dir: Path | None = None,
             say=print) -> dict:
    """Curves and a summary for the loop and for random labelling on embedded rows (pool and test)."""
    from scipy.stats import ttest_rel

    full = Loop(x, prompts, 0.0, 0, config)
    full.fit(list(range(len(x))), [int(g) for g in gold])
    full_accuracy = float((full.scores(x_test).argmax(1) == gold_test).mean())
    target = sim.target * full_accuracy
    say(f"full-data probe: test accuracy {full_accuracy:.4f} on {len(x_test)} rows; target {sim.target:.0%} of it "
        f"= {target:.4f}")
    curves: list[dict] = []
    seconds: list[float] = []
    reached: dict[str, list] = {"loop": [], "random": []}
    stops, coverage, final_cover = [], [], []
    for seed in range(sim.seeds):
        for strategy in ("loop", "random"):
            curve, took = _run(strategy, x, gold, x_test, gold_test, prompts, seed, sim, config)
            curves += curve
            reached[strategy].append(labels_to_reach(curve, target))
            if strategy == "loop":
                seconds += took
                fired = next((p for p in curve if p["stop"]), None)
                stops.append({"seed": seed, "labels": fired["labels"] if fired else None,
                              "accuracy": fired["test_accuracy"] if fired else None,
                              "accuracy_at_budget": curve[-1]["test_accuracy"]})
                coverage += [p["audit_low"] <= p["unseen_accuracy"] <= p["audit_high"] for p in curve
                             if p["audit_n"] >= 30]
                final_cover.append(curve[-1]["audit_low"] <= curve[-1]["unseen_accuracy"] <= curve[-1]["audit_high"]
                                   if curve[-1]["audit_n"] else None)
            say(f"seed {seed} {strategy:6s}: test accuracy {curve[-1]['test_accuracy']:.4f} at {curve[-1]['labels']} "
                f"labels; {target:.4f} reached at {reached[strategy][-1] or 'never'}")
    both = [(a, b) for a, b in zip(reached["loop"], reached["random"]) if a is not None and b is not None]
    never = sim.budget + sim.step  # a run that never reached the target counts as one step past the budget
    capped = [(a or never, b or never) for a, b in zip(reached["loop"], reached["random"])]
    test = ttest_rel([a for a, _ in capped], [b for _, b in capped], alternative="less") if len(capped) > 1 else None
    summary = {
        "pool_rows": len(x), "test_rows": len(x_test), "budget": sim.budget, "seeds": sim.seeds,
        "full_data_accuracy": full_accuracy, "target_accuracy": target,
        "labels_to_target": reached, "reached_by_both": len(both),
        "labels_to_target_p": None if test is None or np.isnan(test.pvalue) else float(test.pvalue),
        "stops": stops, "audit_coverage": float(np.mean(coverage)) if coverage else None,
        "audit_checks": len(coverage), "audit_covers_at_budget": final_cover,
        "answer_seconds_p50": float(np.percentile(seconds, 50)),
        "answer_seconds_p95": float(np.percentile(seconds, 95)),
        **compare_curves(curves),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        fields = ["strategy", "seed", "labels", "test_accuracy", "unseen_accuracy", "audit_n", "audit_accuracy",
                  "audit_low", "audit_high", "kappa", "stop"]
        with open(out_dir / "curve.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(curves)
        from slmtune.runs.folder import write_json

        write_json(out_dir / "summary.json", summary)
    return summary


def simulate_data(data: str, text_column: str = "text", label_column: str = "label", test_file: str | None = None,
                  model: str = "minilm-l6", descriptions: dict[str, str] | None = None,
                  sim: SimulateConfig = SIMULATE_DEFAULTS, config: LoopConfig = DEFAULTS,
                  out_dir: str | Path | None = None, say=print) -> dict:
    """Simulate on a labelled file: its rows (or `sim.pool` of them) are the pool, `test_file` (else a fixed,
    stratified 20% of the rows) measures accuracy."""
    from slmtune.data.sources import load_table
    from slmtune.data.splits import TEST_SEED, stratified_indices
    from slmtune.errors import SlmtuneError
    from slmtune.label.encode import pool_embeddings, prompt_embeddings

    rows = load_table(data, text_column, label_column)
    if test_file:
        test = load_table(test_file, text_column, label_column, label_names=rows.label_names)
    else:
        test_idx = stratified_indices(rows.labels, max(len(rows.label_names), len(rows) // 5), TEST_SEED)
        rest = sorted(set(range(len(rows))) - set(test_idx))
        rows, test = rows.subset(rest), rows.subset(test_idx)
    if sim.pool and sim.pool < len(rows):
        rows = rows.subset(sorted(np.random.default_rng(0).choice(len(rows), sim.pool, replace=False)))
    if len(rows) < sim.budget:
        raise SlmtuneError(f"the pool holds {len(rows)} rows, fewer than the budget of {sim.budget} labels")
    cache = Path(out_dir) / "cache" if out_dir is not None else None
    x = pool_embeddings(model, rows.texts, cache, say)
    x_test = pool_embeddings(model, test.texts, cache, say)
    prompts = prompt_embeddings(model, rows.label_names, descriptions)
    summary = simulate(x, np.array(rows.labels), x_test, np.array(test.labels), prompts, sim, config,
                       Path(out_dir) if out_dir is not None else None, say)
    summary.update({"data": str(data), "model": model, "labels": rows.label_names})
    if out_dir is not None:
        from slmtune.runs.folder import write_json

        write_json(Path(out_dir) / "summary.json", summary)
    return summary
