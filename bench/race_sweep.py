"""A raced sweep against the same sweep trained exhaustively: the same conclusions, for how much of the time.

For each dataset, one after the other (never side by side: two torch processes on 2 cores slow each other several
times), `slmtune sweep` runs the grid twice in separate roots (so that neither reuses the other's runs): raced
(the default) and `--exhaustive`. It prints, per dataset: wall time of each, points cut, runs scored on test, the
best point of each with its validation and test score, the points tied with it, and whether the conclusions agree:
the raced best is tied with the exhaustive best (the exhaustive study's own paired test on validation says so), and
the regret, the exhaustive best's validation score minus the raced best's (both read from the exhaustive rows).

    python bench/race_sweep.py --data ag=train.csv:test.csv --data reuters=train.csv:test.csv \\
        --space lr --out bench-runs/race-sweep [key=value ...]

key=value pairs are run-config overrides for both (e.g. data.train_size=2000 train.epochs=3).

It also replays the racing rules on the exhaustive sweep's recorded curves (each run's validation decisions at
every evaluation): which point a race would have picked from the same runs, and the regret. `--replay DIR` does
only that, on a finished exhaustive sweep folder (a reference study's sweep part, for instance), e.g.

    python bench/race_sweep.py --replay studies/reference/sweep-grid [--first-rung 1] [--alpha 0.05]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def _sweep(name: str, train: str, test: str, space: str, folder: Path, overrides: list[str], exhaustive: bool):
    argv = [sys.executable, "-m", "slmtune.cli", "sweep", "--space", space, "--name", name, "--study-dir",
            str(folder), f"data.dataset={train}", f"data.test_file={test}", *overrides]
    if exhaustive:
        argv.append("--exhaustive")
    folder.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (folder.parent / f"{folder.name}.log").open("w") as log:
        code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"sweep {name} ({'exhaustive' if exhaustive else 'raced'}) failed ({code}); see "
                         f"{folder.parent / f'{folder.name}.log'}")
    return time.perf_counter() - start, json.loads((folder / "summary.json").read_text())


def _point(row: dict, keys: list[str]) -> tuple:
    return tuple(row[k] for k in keys)


def replay_sweep(summary: dict, first_rung: float = 1.0, alpha: float = 0.05) -> dict:
    """The racing rules replayed on an exhaustive sweep's runs: each point's validation decisions at each rung of
    its schedule (its best evaluation up to that epoch), then successive halving with paired tests."""
    from slmtune.config import load_config
    from slmtune.errors import SlmtuneError
    from slmtune.experiments.racing import replay, rung_counts, rungs_of

    keys = list(summary["space"])
    curves, missing = {}, []
    for row in summary["rows"]:
        folder = Path(row["run_dir"])
        epochs = load_config(folder / "config.yaml").train.epochs
        try:
            curves[str(_point(row, keys))] = rung_counts(folder, rungs_of(epochs, first_rung))
        except SlmtuneError as exc:
            missing.append(str(exc))
    if missing:
        return {"missing": missing}
    return replay(curves, summary.get("metric", "accuracy"), alpha=alpha)


def _replay_line(replayed: dict) -> str:
    if "missing" in replayed:
        return (f"  no replay: {len(replayed['missing'])} run(s) cannot be read as curves, e.g. "
                f"{replayed['missing'][0]}")
    return (f"  replay of the racing rules on the exhaustive curves: racing picks {replayed['racing_best']}, "
            f"exhaustive best {replayed['exhaustive_best']} (kept to the end: {replayed['exhaustive_best_kept']}), "
            f"regret (validation) {replayed['regret']:+.4f}; alive after each rung: "
            f"{', '.join(str(len(s)) for s in replayed['survivors'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", default=[], help="NAME=TRAIN.csv:TEST.csv (repeatable)")
    parser.add_argument("--space", default="lr", help="a named sweep space (lr, wd, grid, ...)")
    parser.add_argument("--out", default="bench-runs/race-sweep")
    parser.add_argument("--replay", help="only replay the racing rules on this finished exhaustive sweep folder")
    parser.add_argument("--first-rung", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=0.05)
    args, overrides = parser.parse_known_args()
    if args.replay:
        summary = json.loads((Path(args.replay) / "summary.json").read_text())
        print(f"{args.replay}: {len(summary['rows'])} points\n"
              + _replay_line(replay_sweep(summary, args.first_rung, args.alpha)))
        return
    lines = []
    for spec in args.data:
        name, _, files = spec.partition("=")
        train, _, test = files.partition(":")
        out = Path(args.out) / name
        raced_s, raced = _sweep(name, train, test, args.space, out / "raced" / name, overrides, False)
        full_s, full = _sweep(name, train, test, args.space, out / "exhaustive" / name, overrides, True)
        keys = list(full["space"])
        metric = full.get("metric", "accuracy")
        rows = {_point(r, keys): r for r in full["rows"]}
        best_raced, best_full = tuple(raced["best"]["params"][k] for k in keys), tuple(
            full["best"]["params"][k] for k in keys)
        tied_full = {best_full} | {tuple(p[k] for k in keys) for p in full.get("tied_with_best") or []}
        regret = rows[best_full][f"validation_{metric}"] - rows[best_raced][f"validation_{metric}"]
        tested = sum(r.get(f"test_{metric}") is not None for r in raced["rows"])
        lines += [
            f"{name}: {len(rows)} points, metric {metric}",
            f"  exhaustive  {full_s:7.0f}s  best {best_full}  validation {full['best'][f'validation_{metric}']:.4f}"
            f"  test {full['best'][f'test_{metric}']:.4f}  tied with it: {len(tied_full) - 1}  scored on test: "
            f"{len(rows)}",
            f"  raced       {raced_s:7.0f}s  best {best_raced}  validation {raced['best'][f'validation_{metric}']:.4f}"
            f"  test {raced['best'][f'test_{metric}']:.4f}  tied with it: {len(raced.get('tied_with_best') or [])}"
            f"  cut: {raced.get('raced', {}).get('cut', 0)}  scored on test: {tested}",
            f"  time ratio raced/exhaustive {raced_s / full_s:.2f}; raced best in the exhaustive tie set: "
            f"{best_raced in tied_full}; same best: {best_raced == best_full}; regret (validation) {regret:+.4f}",
            _replay_line(replay_sweep(full, args.first_rung, args.alpha)),
        ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
