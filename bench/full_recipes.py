"""Full fine-tuning recipes on several seeds: which one reaches the 0.90 bar, with which checkpoint?

Runs `slmtune train --config configs/agnews-full.yaml` for each recipe below and each seed, with
`train.final_test=true` (so each run reports its best checkpoint and its final model), several runs at a
time, and prints one line per run and a table of means at the end. Meant for a GPU (40 runs of 3 min each
on a 2-core CPU would take two hours); on a CPU pass fewer recipes.

    python bench/full_recipes.py [--model minilm-l6] [--workers 6] [--seeds 42,123,456,789,1011]
                                 [--recipes default,lr1e-4] [--out runs/full-recipes] [key=value ...]

Trailing key=value overrides go to every run (e.g. `data.test_size=500` for a quick look). The README's
GPU screen predates mean pooling as the full fine-tuning default: add `model.pooling=cls` to repeat it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RECIPES = {
    "default": [],
    "lr1e-4": ["train.learning_rate=1e-4"],
    "lr3e-5": ["train.learning_rate=3e-5"],
    "ep5": ["train.epochs=5"],
    "lr1e-4_ep5": ["train.learning_rate=1e-4", "train.epochs=5"],
    "lr1e-4_wu": ["train.learning_rate=1e-4", "train.warmup_ratio=0.1"],
    "lr2e-4_b32": ["train.learning_rate=2e-4", "train.batch_size=32"],
    "wd0.1": ["train.weight_decay=0.1"],
}


def run_one(model: str, out: Path, overrides: list[str], recipe: str, seed: int) -> dict:
    run_dir = out / f"{recipe}-{seed}"
    if not (run_dir / "result.json").exists():
        command = [sys.executable, "-m", "slmtune.cli", "train", "--config", "configs/agnews-full.yaml",
                   "--model", model, "--seed", str(seed), "--output-dir", str(run_dir), "train.final_test=true",
                   *RECIPES[recipe], *overrides]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            return {"recipe": recipe, "seed": seed, "error": (done.stdout + done.stderr)[-600:]}
    result = json.loads((run_dir / "result.json").read_text())
    metrics = result["metrics"]
    return {"recipe": recipe, "seed": seed, "test": metrics["test"]["accuracy"],
            "final": metrics.get("test_final", {}).get("accuracy"), "validation": metrics["validation"]["accuracy"],
            "best_step": result["best"]["checkpoint_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seeds", default="42,123,456,789,1011")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--out", default="runs/full-recipes")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        sys.exit(f"full_recipes: unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.time()
    jobs = [(recipe, seed) for seed in seeds for recipe in recipes]
    with ThreadPoolExecutor(args.workers) as pool:
        rows = list(pool.map(lambda job: run_one(args.model, Path(args.out), args.overrides, *job), jobs))
    for row in rows:
        print(json.dumps(row))
    print(f"\n{len(rows)} runs in {time.time() - started:.0f} s")
    print(f"{'recipe':12s} {'n':>2s} {'best ckpt':>10s} {'std':>7s} {'final':>7s} {'n final':>7s} {'max':>7s}")
    for recipe in recipes:
        done = [r for r in rows if r["recipe"] == recipe and "test" in r]
        if not done:
            continue
        tests = [r["test"] for r in done]
        finals = [r["final"] for r in done if r["final"] is not None]
        spread = statistics.stdev(tests) if len(tests) > 1 else float("nan")
        final = statistics.mean(finals) if finals else float("nan")
        print(f"{recipe:12s} {len(done):2d} {statistics.mean(tests):10.4f} {spread:7.4f} {final:7.4f} "
              f"{len(finals):7d} {max(tests):7.4f}")


if __name__ == "__main__":
    main()
