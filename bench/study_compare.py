"""Two runs of the reference study side by side: the conclusions each reached, and each part's time.

    python bench/study_compare.py ADAPTIVE_DIR EXHAUSTIVE_DIR [--names adaptive,exhaustive]

Reads each folder's parts (their summary.json) and reference.json, and prints one line per conclusion with both
folders' figures: every sweep's best point and the points tied with it, the paired seeds comparison (verdict,
interval, seeds used and why it stopped), each augmentation setting against its controls, each active-learning
strategy against random, the scaling fit and its predictions with their bands, the few-shot and zero-shot
figures, then each part's wall time and the runs that scored the test rows. It ends with the racing rules
replayed on the second folder's sweeps (their recorded validation curves; bench/race_sweep.py): how often and
by how much a race would have lost the best point.

The usual pair: `slmtune study configs/studies/reference.yaml --study-dir A` (adaptive), then a copy of A run
with `--exhaustive` (it trains only what the adaptive study left out: the raced-out points to the end and the
seeds it did not need), and `python bench/study_compare.py A B`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from race_sweep import replay_sweep


def _summary(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _params(point: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def _interval(c: dict) -> str:
    return f"{c['mean_difference']:+.4f} [{c['boot_low']:+.4f}, {c['boot_high']:+.4f}] p={c['t_pvalue']:.3g}"


def sweep_lines(s: dict) -> dict[str, str]:
    metric = s.get("metric", "accuracy")
    best = s["best"]
    tied = s.get("tied_with_best")
    scored = sum(1 for r in s.get("rows", []) if r.get(f"test_{metric}") is not None)
    return {"best point": f"{_params(best['params'])} (val {best[f'validation_{metric}']:.4f}, "
                          f"test {best[f'test_{metric}']:.4f})",
            "tied with it": "not computed" if tied is None else ("; ".join(_params(t) for t in tied) or "none"),
            "points scored on test": f"{scored} of {s['trials']}"}


def seeds_lines(s: dict) -> dict[str, str]:
    metric = s.get("metric", "accuracy")
    out = {f"{r['model']} test {metric}": f"{r[metric]} {r[f'{metric}_ci95'][0]:.4f}-{r[f'{metric}_ci95'][1]:.4f}"
           for r in s["table"]}
    comparison = s.get("comparison")
    if comparison:
        out["difference, paired by seed"] = _interval(comparison[f"test_{metric}"])
        out["verdict"] = comparison["verdict"]
    seq = s.get("sequential")
    out["seeds"] = (f"{seq['seeds_used']} of {seq['max_seeds']}, stopped {seq['stopped']}" if seq
                    else f"{len(s['seeds'])}, every seed")
    return out


def augmentation_lines(s: dict) -> dict[str, str]:
    return {f"{f['operations']} x{f['ratio']:g} at {f['size']} rows vs {f['against']}":
            f"{f['difference']:+.4f} [{f['ci'][0]:+.4f}, {f['ci'][1]:+.4f}] p={f['p_value']:.3g} Holm {f['p_holm']:.3g}"
            for f in s["vs_control"]}


def active_lines(s: dict) -> dict[str, str]:
    out = {}
    for row in s["aulc"]:
        v = row["vs_random"]
        out[f"{row['strategy']} area under curve"] = f"{row['aulc']['mean']:.4f}" + (
            f", vs random {_interval(v)}" if v else "")
    for strategy, curve in s["curves"].items():
        out[f"{strategy} test accuracy by labels"] = ", ".join(f"{n}: {p['mean']:.4f}" for n, p in curve.items())
    return out


def scaling_lines(s: dict) -> dict[str, str]:
    fit = s["fit"]
    out = {"fit": f"error = {fit['a']:.3f} n^-{fit['b']:.3f} + {fit['c']:.4f}, R2 {fit['r2']:.3f}"}
    for p in s["predictions"]:
        out[f"predicted at {p['n']:,} rows"] = f"{p['accuracy']:.4f} [{p['low']:.4f}, {p['high']:.4f}]"
    return out


def fewshot_lines(s: dict) -> dict[str, str]:
    out = {}
    for method, curve in s.get("curves", {}).items():
        out[f"few-shot {method}"] = ", ".join(f"{k}: {p['mean']:.4f}" for k, p in curve.items())
    return out


def zeroshot_lines(s: dict) -> dict[str, str]:
    return {f"zero-shot {r['method']}": f"{r['accuracy']:.4f}" for r in s.get("rows", []) if "accuracy" in r}


def train_lines(s: dict) -> dict[str, str]:
    return {f"{r.get('recipe', r.get('config', '?'))}": f"test {r.get('test_accuracy', float('nan')):.4f}"
            for r in s.get("rows", [])}


LINES = {"sweep": sweep_lines, "seeds": seeds_lines, "augmentation": augmentation_lines, "active": active_lines,
         "scaling": scaling_lines, "fewshot": fewshot_lines, "zeroshot": zeroshot_lines, "train": train_lines}


def conclusions(root: Path) -> dict[str, dict[str, str]]:
    out = {}
    for part in sorted(p for p in root.iterdir() if p.is_dir()):
        summary = _summary(part)
        if summary is None:
            continue
        kind = summary.get("study", part.name.split("-")[0])
        try:
            out[part.name] = LINES[kind](summary) if kind in LINES else {}
        except (KeyError, TypeError) as exc:
            out[part.name] = {"(unreadable)": f"{type(exc).__name__}: {exc}"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--names", default="adaptive,exhaustive")
    args = parser.parse_args()
    names = args.names.split(",")
    found = [conclusions(args.first), conclusions(args.second)]
    for part in dict.fromkeys([*found[0], *found[1]]):
        print(f"\n== {part}")
        a, b = found[0].get(part, {}), found[1].get(part, {})
        for line in dict.fromkeys([*a, *b]):
            left, right = a.get(line, "-"), b.get(line, "-")
            same = "same" if left == right else "DIFFERS"
            print(f"  {line}\n    {names[0]}: {left}\n    {names[1]}: {right}\n    -> {same}")
    print("\n== wall time a part, every segment of each folder (reference.json)")
    records = [json.loads((r / "reference.json").read_text()) if (r / "reference.json").is_file() else {}
               for r in (args.first, args.second)]
    times = [rec.get("part_seconds", rec.get("seconds", {})) for rec in records]
    for part in dict.fromkeys([*times[0], *times[1]]):
        cells = [f"{t.get(part, 0) / 60:7.1f} min" for t in times]
        print(f"  {part:<16}{names[0]} {cells[0]}   {names[1]} {cells[1]}")
    print(f"  {'total':<16}" + "   ".join(f"{n} {sum(t.values()) / 60:7.1f} min" for n, t in zip(names, times)))
    if len(records[1].get("segments", [])) > len(records[0].get("segments", [])):
        print(f"  ({names[1]} ran in a copy of {names[0]}'s folder: its times include {names[0]}'s segments, and "
              f"its last segment ({records[1]['segments'][-1]['started']}) is what it added)")
    print(f"\n== racing rules replayed on {names[1]}'s sweeps")
    for part in sorted(p for p in args.second.iterdir() if p.is_dir() and p.name.startswith("sweep")):
        summary = _summary(part)
        if not summary:
            continue
        replayed = replay_sweep(summary)
        if "missing" in replayed:
            print(f"  {part.name}: no replay ({len(replayed['missing'])} runs without curves)")
            continue
        print(f"  {part.name}: racing picks {replayed['racing_best']}, exhaustive best {replayed['exhaustive_best']}"
              f" (kept to the end: {replayed['exhaustive_best_kept']}), regret {replayed['regret']:+.4f} on "
              f"validation; alive after each rung: {', '.join(str(len(s)) for s in replayed['survivors'])}")


if __name__ == "__main__":
    main()
