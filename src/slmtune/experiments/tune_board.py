"""What a tune search scores and leaves: the candidates' validation decisions and standings, the blend of the
best encoder with TF-IDF, best/ (the chosen model as a run folder, following the leader), leaderboard.csv, the
test comparison scored once at the end, summary.json and the printed summary."""

from __future__ import annotations

import csv
import io
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slmtune import runs
from slmtune.config import dump_yaml, load_config, replace
from slmtune.data import Splits, TextDataset
from slmtune.experiments.common import format_duration
from slmtune.experiments.racing import Standing, standing
from slmtune.methods.tfidf import TfidfModel
from slmtune.multilabel import metric_name, multi_hot
from slmtune.stats import row_counts

ENCODER_KINDS = ("probe", "prompt", "lora", "full")
"""Candidates that are encoder run folders (what best/ copies and the blend starts from)."""

if TYPE_CHECKING:
    from slmtune.experiments.tune import Search


def validation_probs(folder: Path, search: Search) -> np.ndarray:
    """A candidate's validation probabilities (label scores on multi-label data) from its predictions file."""
    import pandas as pd

    from slmtune.train import VALIDATION_PREDICTIONS

    frame = pd.read_csv(folder / VALIDATION_PREDICTIONS, keep_default_na=False)
    return frame[[f"p_{n}" for n in search.label_names]].to_numpy(dtype=np.float64)


def decisions_on(probs: np.ndarray, data: TextDataset, search: Search) -> tuple[np.ndarray, Any]:
    """Decisions on the validation rows: the argmax, or (multi-label) scores at thresholds tuned there."""
    if not search.multi_label:
        return probs.argmax(axis=1), None
    from slmtune.multilabel import decide, thresholds_of, tune_thresholds

    tuned = tune_thresholds(probs, multi_hot(data.labels, len(search.label_names)), True)
    return decide(probs, thresholds_of(tuned, len(search.label_names))), tuned


def counts_on(probs: np.ndarray, data: TextDataset, search: Search) -> np.ndarray:
    gold = multi_hot(data.labels, len(search.label_names)) if search.multi_label else np.asarray(data.labels)
    return row_counts(gold, decisions_on(probs, data, search)[0], len(search.label_names))


def validation_score(probs: np.ndarray, data: TextDataset, search: Search) -> float:
    from slmtune.stats import metric_of_counts

    counts = counts_on(probs, data, search)
    return float(metric_of_counts(counts.sum(axis=0, keepdims=True), search.metric, len(counts))[0])


def standing_on(search: Search, entries: dict[str, np.ndarray], data: TextDataset, names: list[str],
              alpha: float) -> Standing:
    return standing({n: counts_on(entries[n], data, search) for n in names}, search.metric, alpha)



def blend_best(search: Search, entries: dict[str, np.ndarray], splits: Splits, tfidf: TfidfModel,
                     progress) -> None:
    """The best encoder so far averaged with TF-IDF, the weight chosen on validation log-loss."""
    from slmtune.blend import choose_weight, mix

    encoders = [n for n in entries if search.candidates[n].kind in ENCODER_KINDS]
    if not encoders:
        return
    from slmtune.experiments.tune_crossfit import preferred

    leader = preferred(search, standing_on(search, entries, splits.validation, encoders, 1.0))
    chosen = choose_weight(entries[leader], entries["tfidf"], splits.validation.labels, search.multi_label)
    entries["blend"] = mix(entries[leader], entries["tfidf"], chosen["weight"])
    cand = search.candidates["blend"]
    cand.status, cand.model, cand.note = "finished", leader, (
        f"{leader} with TF-IDF, encoder weight {np.round(np.mean(chosen['weight']), 2):g}")
    cand.learning_rate = None
    search.blend_weight = chosen["weight"]
    progress(f"tune: blend: {cand.note}: validation {metric_name(search.metric)} "
             f"{validation_score(entries['blend'], splits.validation, search):.4f}")


def follow_leader(search: Search, entries: dict[str, np.ndarray], splits: Splits, tfidf: TfidfModel | None,
                  progress, busy: frozenset[str] | set[str] = frozenset()) -> None:
    """best/ follows the validation leader (an encoder folder, blended when the leader is TF-IDF or a blend) among
    the candidates not `busy` (training in a worker process: a folder being written is not copied)."""
    entries = {name: probs for name, probs in entries.items() if name not in busy}
    encoders = [n for n in entries if search.candidates[n].kind in ENCODER_KINDS]
    if not encoders:
        return
    from slmtune.experiments.tune_crossfit import preferred

    board = standing_on(search, entries, splits.validation, list(entries), 1.0)
    leader = preferred(search, board)
    kind = search.candidates[leader].kind
    if kind == "blend":
        base_name, weight = search.candidates["blend"].model, search.blend_weight
    elif kind == "tfidf":  # TF-IDF alone: the cheapest encoder folder with weight 0 serves it
        base_name = min(encoders, key=lambda n: search.candidates[n].seconds)
        weight = np.zeros(len(search.label_names)) if search.multi_label else 0.0
    else:
        base_name, weight = leader, None
    source = search.root / search.candidates[base_name].folder
    shown = (leader, base_name, (source / "result.json").stat().st_mtime_ns,
             None if weight is None else tuple(np.ravel(weight)))
    if shown != search.shown:  # a full fine-tuning folder is ~90 MB: copied only when best/ changes
        _materialize(search, base_name, weight, tfidf, entries[leader], splits.validation)
        search.shown = shown
    if search.best != leader:
        progress(f"tune: best so far: {leader} (validation {metric_name(search.metric)} "
                 f"{board.scores[leader].value:.4f}) -> {search.root / 'best'}")
    search.best = leader
    search.save()


def _materialize(search: Search, base_name: str, weight, tfidf: TfidfModel | None, val_probs: np.ndarray,
                 validation: TextDataset) -> None:
    """Write best/ as a run folder: the encoder candidate's, with the blend's TF-IDF part when `weight` is given."""
    from slmtune.blend import save_blend

    source = search.root / search.candidates[base_name].folder
    staging = search.root / ".best-new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("checkpoints"))
    result = runs.read_result(staging)
    result.pop("paused_at", None)
    if weight is not None:
        save_blend(staging / "model", tfidf, np.asarray(weight).tolist())
        config = load_config(staging / "config.yaml")
        runs.atomic_write(staging / "config.yaml", dump_yaml(replace(config, **{"model.blend": "tfidf"})))
        result["blend"] = {"method": "tfidf", "weight": np.asarray(weight).tolist()}
    if search.multi_label:
        result["thresholds"] = decisions_on(val_probs, validation, search)[1]
    result["tune"] = {"candidate": base_name if weight is None else ("tfidf" if not np.any(weight) else "blend"),
                      "encoder": base_name}
    runs.write_json(staging / "result.json", result)
    best = search.root / "best"
    old = search.root / ".best-old"
    shutil.rmtree(old, ignore_errors=True)
    if best.exists():
        best.rename(old)
    staging.rename(best)  # the swap leaves a complete best/ at every moment but this rename
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ results


LEADERBOARD = ["candidate", "kind", "model", "learning_rate", "epochs", "rows", "status", "metric", "validation",
               "low", "high", "tied_with_best", "seconds", "note"]


def _leaderboard(search: Search, entries: dict[str, np.ndarray], splits: Splits) -> tuple[list[dict], Standing]:
    board = standing_on(search, entries, splits.validation, list(entries), search.alpha)
    tied = set(board.tied)
    rows = []
    for cand in search.candidates.values():
        row = {"candidate": cand.name, "kind": cand.kind, "model": cand.model or "", "learning_rate":
               cand.learning_rate or "", "epochs": round(cand.reached, 3), "rows": cand.rows, "status": cand.status,
               "metric": search.metric, "validation": "", "low": "", "high": "", "tied_with_best": "",
               "seconds": round(cand.seconds, 1), "note": cand.note}
        if cand.name in board.scores:
            score = board.scores[cand.name]
            row.update(validation=round(score.value, 4), low=round(score.low, 4), high=round(score.high, 4),
                       tied_with_best=int(cand.name in tied))
        rows.append(row)
    rows.sort(key=lambda r: -(r["validation"] if r["validation"] != "" else -1))
    return rows, board


def write_leaderboard(search: Search, entries: dict[str, np.ndarray], splits: Splits) -> list[dict]:
    rows, _ = _leaderboard(search, entries, splits)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LEADERBOARD)
    writer.writeheader()
    writer.writerows(rows)
    runs.atomic_write(search.root / "leaderboard.csv", buffer.getvalue())
    return rows


def finish(search: Search, splits: Splits, tfidf: TfidfModel | None, budget: float, start: float,
            progress) -> dict[str, Any]:
    """Score test once for best/ and TF-IDF (intervals and a paired test), write the summary and print it."""
    from slmtune.runs.predictions import write_predictions
    from slmtune.serve.inference import load_run
    from slmtune.serve.logits import predict_logits
    from slmtune.serve.metrics import classification_report_text, score_probs
    from slmtune.stats import bootstrap_weights, mcnemar, metric_interval, paired_test

    best = search.root / "best"
    run = load_run(best)
    clock = time.perf_counter()
    logits = predict_logits(run.model, run.tokenizer, splits.test.texts, batch_size=run.config.train.eval_batch_size,
                            max_length=run.config.data.max_length, precision=run.precision,
                            truncation=run.config.data.truncation)
    probs = run.probabilities(logits, splits.test.texts)
    test_seconds = time.perf_counter() - clock
    metrics, _ = score_probs(probs, splits.test, run.thresholds)
    write_predictions(best / "predictions.csv", splits.test, probs, run.thresholds)
    runs.atomic_write(best / "classification_report.txt", classification_report_text(metrics) + "\n")
    n_labels = len(search.label_names)
    gold = multi_hot(splits.test.labels, n_labels) if search.multi_label else np.asarray(splits.test.labels)
    from slmtune.multilabel import decide

    chosen = decide(probs, run.thresholds) if search.multi_label else probs.argmax(axis=1)
    weights = bootstrap_weights(len(splits.test), 1000, 0)
    headline = ("micro_f1", "macro_f1") if search.multi_label else ("accuracy", "macro_f1")
    test: dict[str, Any] = {"best": {}, "tfidf": {}}
    best_counts = row_counts(gold, chosen, n_labels)
    for key in headline:
        test["best"][key] = asdict(metric_interval(best_counts, key, weights))
    if tfidf is not None:
        tfidf_probs = tfidf.predict_proba(splits.test.texts)
        if search.multi_label:  # at the thresholds tuned on validation, as every candidate
            from slmtune.multilabel import thresholds_of

            tuned = decisions_on(tfidf.predict_proba(splits.validation.texts), splits.validation, search)[1]
            tfidf_chosen = decide(tfidf_probs, thresholds_of(tuned, n_labels))
        else:
            tfidf_chosen = tfidf_probs.argmax(axis=1)
        tfidf_counts = row_counts(gold, tfidf_chosen, n_labels)
        for key in headline:
            test["tfidf"][key] = asdict(metric_interval(tfidf_counts, key, weights))
            test.setdefault("best_minus_tfidf", {})[key] = paired_test(best_counts, tfidf_counts, key, weights)
        if not search.multi_label:
            test["mcnemar"] = mcnemar(chosen == gold, tfidf_chosen == gold)
    result = runs.read_result(best)
    result.setdefault("metrics", {})["test"] = metrics
    result.setdefault("samples_per_second", {})["eval"] = round(len(splits.test) / max(test_seconds, 1e-9), 2)
    result.setdefault("seconds", {})["eval"] = round(test_seconds, 2)
    from slmtune.runs.figures import plot_run

    plot_run(best, runs.MetricsLog(best / "metrics.jsonl").read(), metrics, search.label_names,
             len(splits.validation))
    runs.write_json(best / "result.json", result)
    rows = [dict(r) for r in _read_leaderboard(search.root)]
    summary = {"command": "tune", "budget_seconds": budget, "seconds": round(time.monotonic() - start, 1),
               "metric": search.metric, "best": search.best, "best_dir": str(best), "test": test,
               "leaderboard": rows,
               "left_out": [r["candidate"] for r in rows if r["status"] == "left out"],
               "tied_with_best": [r["candidate"] for r in rows if str(r["tied_with_best"]) == "1"]}
    runs.write_json(search.root / "summary.json", summary)
    for line in summary_lines(summary):
        progress(line)
    return summary


def _read_leaderboard(root: Path) -> list[dict]:
    with (root / "leaderboard.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The leaderboard and the test comparison, as the command prints them."""
    metric = metric_name(summary["metric"])
    lines = [f"tune: done in {format_duration(summary['seconds'])} of {format_duration(summary['budget_seconds'])}; "
             f"validation {metric} with 95% bootstrap intervals (* tied with the best: not significantly behind it)",
             f"  {'candidate':<34}{'status':<12}{'epochs':>7}{metric:>10}  {'interval':<17}{'seconds':>8}"]
    for row in summary["leaderboard"]:
        if row["validation"] == "":
            lines.append(f"  {row['candidate']:<34}{row['status']:<12}{'':>7}{'-':>10}  {'':<17}{'':>8}  {row['note']}")
            continue
        mark = "*" if str(row["tied_with_best"]) == "1" else " "
        lines.append(f"{mark} {row['candidate']:<34}{row['status']:<12}{float(row['epochs']):>7g}"
                     f"{float(row['validation']):>10.4f}  [{float(row['low']):.4f}, {float(row['high']):.4f}]"
                     f"{float(row['seconds']):>8.0f}" + (f"  {row['note']}" if row["note"] else ""))
    test = summary["test"]
    for key, value in test["best"].items():
        line = (f"tune: test {metric_name(key)}: best ({summary['best']}) {value['value']:.4f} "
                f"[{value['low']:.4f}, {value['high']:.4f}]")
        if key in test["tfidf"]:
            other, diff = test["tfidf"][key], test["best_minus_tfidf"][key]
            line += (f", TF-IDF {other['value']:.4f} [{other['low']:.4f}, {other['high']:.4f}]; difference "
                     f"{diff['difference']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]")
        lines.append(line)
    if "mcnemar" in test:
        lines.append(f"tune: McNemar's test, best vs TF-IDF on test: p = {test['mcnemar']['pvalue']:.3g}")
    lines.append(f"tune: the chosen model is {summary['best_dir']} (predict, evaluate, export, serve and report "
                 "take it)")
    return lines
