"""A blend against its parts: the encoder alone, TF-IDF + logistic regression alone, and their blend, on one test set.

Trains `slmtune train` with `model.blend=tfidf` (weight chosen on validation log-loss) for each seed, then scores
all three on the same test rows from the run folder: accuracy with a Wilson interval, macro-F1, and McNemar's
exact test of the blend against each part (pooled over seeds). Prints one line per seed and model, then the table.

    python bench/blend.py [--dataset ag_news] [--seeds 42,43,44] [--out runs/bench-blend] [key=value ...]
    python bench/blend.py --runs tuned/best          # score blend run folders already trained (tune's best/)

Column flags as for `slmtune train` go in key=value form (e.g. data.text_column=body data.label_column=team).
Runs already in --out are reused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def score_run(run_dir: Path) -> dict[str, np.ndarray]:
    """Per-example correctness and predictions on the run's own test rows for encoder, TF-IDF and blend."""
    from slmtune.data import load_splits
    from slmtune.serve.loading import load_run
    from slmtune.serve.logits import predict_logits, scores_of

    run = load_run(run_dir)
    test = load_splits(run.config.data, run.config.seed).test
    encoder = scores_of(predict_logits(run.model, run.tokenizer, test.texts, batch_size=64,
                                       max_length=run.config.data.max_length, precision=run.precision,
                                       truncation=run.config.data.truncation), False)
    tfidf = run.blend.tfidf.predict_proba(test.texts)
    gold = np.asarray(test.labels)
    return {"gold": gold, **{name: probs.argmax(axis=1) for name, probs in
                             (("encoder", encoder), ("tfidf", tfidf), ("blend", run.blend.mix(encoder, test.texts)))},
            "weight": float(run.blend.weight), "classes": len(run.label_names)}


def main() -> None:
    from sklearn.metrics import f1_score

    from slmtune.config import load_config
    from slmtune.stats import mcnemar, proportion_interval
    from slmtune.train import train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ag_news")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--out", default="runs/bench-blend")
    parser.add_argument("--runs", help="blend run folders to score instead of training, separated by commas")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    pooled: dict[str, list] = {"gold": [], "encoder": [], "tfidf": [], "blend": []}
    if args.runs:
        folders = {path: Path(path) for path in args.runs.split(",")}
    else:
        seeds = args.seeds.split(",")
        folders = {f"seed {seed}": Path(args.out) / f"{Path(args.dataset).stem}-{seed}" for seed in seeds}
        for seed, run_dir in zip(seeds, folders.values()):
            if not (run_dir / "result.json").is_file() or '"success"' not in (run_dir / "result.json").read_text():
                config = load_config(None, [f"data.dataset={args.dataset}", "model.blend=tfidf", f"seed={seed}",
                                            *args.overrides])
                train(config, run_dir=run_dir, overwrite=True)
    for label, run_dir in folders.items():
        scored = score_run(run_dir)
        for key in pooled:
            pooled[key].append(scored[key])
        line = "  ".join(f"{name} {np.mean(scored[name] == scored['gold']):.4f}" for name in ("encoder", "tfidf",
                                                                                              "blend"))
        print(f"{label}: encoder weight {scored['weight']:.2f}; test accuracy {line}", flush=True)
    gold = np.concatenate(pooled["gold"])
    print(f"\n{args.runs or args.dataset}, {len(pooled['gold'])} run(s), {len(gold)} test predictions pooled")
    print(f"{'model':<10}{'accuracy':>10}{'95% CI':>20}{'macro-F1':>10}   McNemar blend vs it")
    for name in ("encoder", "tfidf", "blend"):
        predicted = np.concatenate(pooled[name])
        correct = predicted == gold
        low, high = proportion_interval(int(correct.sum()), len(gold))
        f1 = np.mean([f1_score(g, p, average="macro") for g, p in zip(pooled["gold"], pooled[name])])
        test = "" if name == "blend" else mcnemar(np.concatenate(pooled["blend"]) == gold, correct)
        versus = (f"   blend right only {test['only_a_correct']}, {name} only {test['only_b_correct']}, "
                  f"p={test['pvalue']:.2g}" if test else "")
        print(f"{name:<10}{correct.mean():>10.4f}   [{low:.4f}, {high:.4f}]{f1:>10.4f}{versus}")


if __name__ == "__main__":
    main()
