"""`slmtune tune` against TF-IDF, the default `slmtune train` and the exhaustive search, on one dataset.

Runs, one after the other (never side by side: two torch processes on 2 cores slow each other several times):
1. `slmtune tune --time T` (one per --time): its chosen model's test accuracy and macro-F1 with 95% bootstrap
   intervals, TF-IDF's on the same rows, the paired difference, and the seconds it took against the budget;
2. `slmtune train` with every default (--default-train);
3. the exhaustive search (--exhaustive): the same portfolio with nothing cut (alpha 1e-9), no time limit and the
   choice on validation alone (--no-cross-fit), each fine-tuning candidate trained to the end of its schedule;
   then the racing rules replayed on its recorded per-rung validation predictions: the racing winner, the
   exhaustive best, and the regret (validation metric of the exhaustive best minus the racing winner's).

    python bench/tune.py --dataset train.csv --test-file test.csv --time 10m,30m --default-train --exhaustive \\
        --out bench-runs/tune-mydata [key=value ...]

`--workers 1,2` runs each budget once per value of tune's `--workers` (one after the other), to compare them.
`--score-candidates` scores every encoder candidate of the exhaustive search on test too (tune itself scores only
the chosen one): what each choice would have given, beside its validation score.

AG News at reference sizes: --dataset ag_news. Prints one table; everything stays under --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _run(argv: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run([sys.executable, "-m", "slmtune.cli", *argv], stdout=handle,
                              stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"{' '.join(argv[:2])} failed ({code}); see {log}")
    return time.perf_counter() - start


def _data_args(args) -> list[str]:
    out = ["--dataset", args.dataset]
    for flag in ("test_file", "text_column", "label_column"):
        if getattr(args, flag):
            out += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
    return out + (["--multi-label"] if args.multi_label else [])


def _cell(value: dict) -> str:
    return f"{value['value']:.4f} [{value['low']:.4f}, {value['high']:.4f}]"


def _multi_hot(column, index: dict[str, int]) -> np.ndarray:
    out = np.zeros((len(column), len(index)), dtype=int)
    for row, value in enumerate(column):
        for name in filter(None, str(value).split("|")):
            out[row, index[name]] = 1
    return out


def replay_search(folder: Path) -> dict:
    """The racing rules replayed on the exhaustive search's per-rung validation predictions."""
    import pandas as pd

    from slmtune.experiments.racing import replay
    from slmtune.stats import row_counts

    state = json.loads((folder / "tune.json").read_text())
    names, multi = state["label_names"], state["multi_label"]
    index = {n: i for i, n in enumerate(names)}
    curves = {}
    for cand in state["candidates"]:
        if cand["kind"] not in ("lora", "full"):
            continue
        files = sorted((folder / "candidates" / cand["name"]).glob("predictions-validation-epoch*.csv"),
                       key=lambda p: float(p.stem.rsplit("epoch", 1)[1]))
        curve = []
        for path in files:
            frame = pd.read_csv(path, keep_default_na=False)
            if multi:
                gold, predicted = (_multi_hot(frame[c], index) for c in ("gold", "predicted"))
            else:
                gold = frame["gold"].astype(str).map(index).to_numpy()
                predicted = frame["predicted"].astype(str).map(index).to_numpy()
            curve.append(row_counts(gold, predicted, len(names)))
        if curve:
            curves[cand["name"]] = curve
    return replay(curves, state["metric"], alpha=0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--test-file")
    parser.add_argument("--text-column")
    parser.add_argument("--label-column")
    parser.add_argument("--multi-label", action="store_true")
    parser.add_argument("--time", default="10m", help="budgets, separated by commas")
    parser.add_argument("--workers", default="1", help="tune's --workers values to run each budget with, e.g. 1,2")
    parser.add_argument("--default-train", action="store_true")
    parser.add_argument("--exhaustive", action="store_true")
    parser.add_argument("--score-candidates", action="store_true")
    parser.add_argument("--out", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _data_args(args)
    rows = []
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    for budget, workers in [(b.strip(), w) for b in args.time.split(",") if b.strip() for w in counts]:
        label = budget if counts == [1] else f"{budget} --workers {workers}"
        name = budget if counts == [1] else f"{budget}-w{workers}"
        folder = out / f"tune-{name}"
        seconds = _run(["tune", *data, "--time", budget, "--workers", str(workers), "--output-dir", str(folder),
                        *args.overrides], out / f"tune-{name}.log")
        summary = json.loads((folder / "summary.json").read_text())
        test = summary["test"]
        first = "micro_f1" if "micro_f1" in test["best"] else "accuracy"
        if not rows:
            rows.append(("TF-IDF + logistic regression", _cell(test["tfidf"][first]),
                         _cell(test["tfidf"]["macro_f1"]), "", ""))
        diff = test["best_minus_tfidf"][first]
        rows.append((f"tune --time {label} ({summary['best']})", _cell(test["best"][first]),
                     _cell(test["best"]["macro_f1"]), f"{seconds:.0f}",
                     f"vs TF-IDF {diff['difference']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]"))
    if args.default_train:
        folder = out / "train-default"
        seconds = _run(["train", *data, "--output-dir", str(folder), "--overwrite", *args.overrides],
                       out / "train-default.log")
        test = json.loads((folder / "result.json").read_text())["metrics"]["test"]
        first = "micro_f1" if "micro_f1" in test else "accuracy"
        rows.append(("slmtune train (defaults)", f"{test[first]:.4f}", f"{test['macro_f1']:.4f}", f"{seconds:.0f}",
                     ""))
    if args.exhaustive:
        folder = out / "exhaustive"
        seconds = _run(["tune", *data, "--time", "100h", "--alpha", "1e-9", "--no-cross-fit", "--output-dir",
                        str(folder), *args.overrides], out / "exhaustive.log")
        summary = json.loads((folder / "summary.json").read_text())
        test = summary["test"]
        first = "micro_f1" if "micro_f1" in test["best"] else "accuracy"
        replayed = replay_search(folder)
        rows.append((f"exhaustive ({summary['best']})", _cell(test["best"][first]), _cell(test["best"]["macro_f1"]),
                     f"{seconds:.0f}", f"replay: racing picks {replayed['racing_best']}, exhaustive best "
                     f"{replayed['exhaustive_best']}, regret {replayed['regret']:+.4f}"))
    print(f"\n{'':<44}{'test ' + first:<28}{'test macro-F1':<28}{'seconds':>8}  note")
    for name, a, b, s, note in rows:
        print(f"{name:<44}{a:<28}{b:<28}{s:>8}  {note}")
    if args.exhaustive and args.score_candidates:
        score_candidates(out / "exhaustive")


def score_candidates(folder: Path) -> None:
    """Every encoder candidate of a finished search scored on test (torch, the run's own precision)."""
    import csv

    from slmtune.experiments.tune_board import ENCODER_KINDS
    from slmtune.serve.inference import evaluate_run

    board = list(csv.DictReader((folder / "leaderboard.csv").open()))
    print(f"\n{'candidate':<36}{'validation ' + board[0]['metric']:<28}{'test accuracy':<16}{'test macro-F1':<16}"
          f"{'seconds':>8}")
    for row in board:
        if row["kind"] not in ENCODER_KINDS or not row["validation"]:
            continue
        test = evaluate_run(folder / "candidates" / row["candidate"], "test", backend="torch")
        print(f"{row['candidate']:<36}{row['validation'] + ' [' + row['low'] + ', ' + row['high'] + ']':<28}"
              f"{test['accuracy']:<16.4f}{test['macro_f1']:<16.4f}{row['seconds']:>8}")


if __name__ == "__main__":
    main()
