"""Every inference engine of a finished run, side by side on its test rows, each alone on the machine.

    python bench/engines.py RUN_DIR [--rows 7600] [--engines torch,torch-int8]

For each engine `slmtune evaluate --backend` offers (torch in the run's precision, torch-fp32, torch-compiled,
torch-int8, onnx, onnx-int8; those whose package is missing are left out): setup seconds (ONNX export, the int8 layer
search, compilation), samples/s, the share of the matmul peak of its precision (int8 against the bf16 peak, or
the fp32 one where bf16 is emulated), the share of test predictions that differ from fp32 torch's, the test
accuracy and its change against fp32 torch with a paired bootstrap 95% interval. bench/speed.py prints the
same table for the run it trains.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np


def engines(run_dir: Path, splits, only: list[str] | None = None) -> list[dict]:
    """Every inference engine of the run on the test rows, each alone: samples/s (after its setup: export,
    int8 search, compilation, timed apart), the share of predictions that differ from fp32 torch's, and the test
    accuracy change against fp32 torch with a paired bootstrap 95% interval; `only`: those engines (fp32 torch,
    the reference, always)."""
    import importlib.util

    from slmtune.serve import ENGINES
    from slmtune.serve.backends import engine
    from slmtune.serve.loading import load_run
    from slmtune.serve.logits import predict_logits
    from slmtune.stats import bootstrap_interval

    run = load_run(run_dir)
    gold = np.asarray(splits.test.labels)
    rows, reference = [], None
    for name in sorted(ENGINES, key=lambda name: name != "torch-fp32"):  # the reference first
        needs = {"onnx": "onnxruntime", "onnx-int8": "onnxruntime", "torch-int8": "torchao"}.get(name)
        if name == "torch" and run.precision.name == "fp32" or needs and importlib.util.find_spec(needs) is None:
            continue
        if only and name not in only and name != "torch-fp32":
            continue
        start = time.perf_counter()
        used = engine(run_dir, name)
        kwargs = {"batch_size": run.config.train.eval_batch_size, "max_length": run.config.data.max_length,
                  "precision": used.precision, "truncation": run.config.data.truncation, "cache": False}
        predict_logits(used.model, run.tokenizer, splits.test.texts[:64], **kwargs)  # warm-up (compiles)
        setup = time.perf_counter() - start
        start = time.perf_counter()
        predicted = predict_logits(used.model, run.tokenizer, splits.test.texts, **kwargs).argmax(1)
        seconds = time.perf_counter() - start
        reference = predicted if reference is None else reference
        correct, exact = (predicted == gold).astype(float), (reference == gold).astype(float)
        rows.append({"engine": used.name if used.name == name else f"{name}->{used.name}",
                     "precision": {"torch": run.precision.name, "torch-compiled": run.precision.name,
                                   "torch-int8": "int8",
                                   "onnx-int8": "int8"}.get(name, "fp32"),
                     "infer": len(gold) / seconds, "infer_seconds": seconds, "setup_seconds": setup,
                     "changed": float(np.mean(predicted != reference)), "accuracy": float(correct.mean()),
                     "change": float(correct.mean() - exact.mean()),
                     "change_ci": bootstrap_interval(correct - exact, resamples=2000)})
    return rows


def print_engines(table: list[dict], peaks: dict[str, float] | None = None, flops: float | None = None,
                  peer: float | None = None) -> None:
    """The table; `flops` (useful FLOPs of one pass over the rows) and `peaks` (GFLOP/s) give %peak, `peer` (its
    samples/s) the ratio to it."""
    print(f"\n{'engine':<18}{'precision':>10}{'infer/s':>10}{'x peer':>8}{'%peak':>8}{'setup s':>9}{'changed':>9}"
          f"{'test acc':>10}  change vs fp32 torch [95% CI]")
    fast = "bf16" if peaks and peaks["bf16"] > peaks["fp32"] else "fp32"  # an emulated bf16 peak is no reference
    for r in table:
        peak = peaks[fast if r["precision"] in ("bf16", "int8") else "fp32"] * 1e9 if peaks else None
        share = f"{flops / r['infer_seconds'] / peak:.1%}" if flops and peak else "-"
        ratio = f"{r['infer'] / peer:.2f}" if peer else "-"
        low, high = r["change_ci"]
        print(f"{r['engine']:<18}{r['precision']:>10}{r['infer']:>10.1f}{ratio:>8}{share:>8}{r['setup_seconds']:>9.1f}"
              f"{r['changed']:>8.2%}{r['accuracy']:>10.4f}  {r['change']:+.4f} [{low:+.4f}, {high:+.4f}]")
    print(f"(each engine alone; int8 %peak against the {fast} peak; setup: export, int8 search, compilation)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rows", type=int, default=None, help="the first N test rows (default all)")
    parser.add_argument("--engines", help="only these engines, separated by commas (default all)")
    args = parser.parse_args()

    from slmtune.data import load_splits
    from slmtune.serve.loading import load_run

    run = load_run(args.run_dir)
    splits = load_splits(run.config.data, run.config.seed)
    if args.rows:
        splits = dataclasses.replace(splits, test=splits.test.subset(range(min(args.rows, len(splits.test)))))
    print(f"run {args.run_dir.name}: {run.config.model.name}, {run.config.model.method}, {len(splits.test)} test rows")
    print_engines(engines(args.run_dir, splits, args.engines.split(",") if args.engines else None))


if __name__ == "__main__":
    main()
