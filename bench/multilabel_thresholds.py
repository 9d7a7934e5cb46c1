"""Decision thresholds of a finished multi-label run: test micro / macro F1 at 0.5, at one threshold tuned on
validation, and with per-label thresholds where they help on validation (what `train.per_label_thresholds`
does). Scores validation and test once with the run's best model; nothing is retrained.

    python bench/multilabel_thresholds.py RUN_DIR [RUN_DIR ...]

Prints one line per run and setting, then `run=... at_0.5=... shared=... per_label=...` (test micro-F1).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished multi-label run folders")
    args = parser.parse_args()

    from slmtune.data import load_splits
    from slmtune.multilabel import decide, multi_hot, multilabel_metrics, sigmoid, thresholds_of, tune_thresholds
    from slmtune.serve.loading import load_run
    from slmtune.serve.logits import predict_logits

    for run_dir in args.runs:
        run = load_run(run_dir)
        if not run.multi_label:
            raise SystemExit(f"{run_dir} is not a multi-label run")
        splits = load_splits(run.config.data, run.config.seed)
        n = len(run.label_names)
        start = time.perf_counter()
        scores = {}
        for name in ("validation", "test"):
            part = getattr(splits, name)
            logits = predict_logits(run.model, run.tokenizer, part.texts, batch_size=run.config.train.eval_batch_size,
                                    max_length=run.config.data.max_length, precision=run.precision,
                                    truncation=run.config.data.truncation)
            scores[name] = (sigmoid(logits), multi_hot(part.labels, n))
        seconds = time.perf_counter() - start
        settings = {"at_0.5": np.full(n, 0.5),
                    "shared": thresholds_of(tune_thresholds(*scores["validation"]), n),
                    "per_label": thresholds_of(tune_thresholds(*scores["validation"], per_label=True), n)}
        line = {}
        for setting, thresholds in settings.items():
            test_scores, gold = scores["test"]
            m = multilabel_metrics(gold, decide(test_scores, thresholds), run.label_names)
            line[setting] = m["micro_f1"]
            print(f"{run_dir}  {setting:<10} test micro-F1 {m['micro_f1']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
                  f"subset accuracy {m['subset_accuracy']:.4f}  (thresholds {np.unique(thresholds).round(2)})")
        print(f"scored validation + test in {seconds:.0f} s")
        print(f"run={run_dir} " + " ".join(f"{k}={v:.4f}" for k, v in line.items()))


if __name__ == "__main__":
    main()
