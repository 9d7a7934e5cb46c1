"""The labelling loop against random labelling, with an oracle answering from gold labels (`slmtune label
simulate` on each dataset), side by side in one table.

    python bench/label.py --data ag=DIR/ag/train.csv:DIR/ag/test.csv --data reuters=DIR/reuters/train.csv:... \
        --budget 500 --seeds 5 --out bench-runs/label

Each --data is NAME=TRAIN[:TEST] (files with text and label columns). Prints per dataset: the full-data probe's
test accuracy, labels to 95% of it (per seed, loop and random, and a one-sided paired t-test), accuracy at the
budget, where the stopping signal fired and the accuracy there, how often the audit interval covered the true
pool accuracy, and the time per answer (p50/p95). Everything stays under --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from slmtune.label.simulate import SimulateConfig, simulate_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=[], help="NAME=TRAIN[:TEST]")
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--step", type=int, default=10)
    parser.add_argument("--pool", type=int, default=0)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--out", default="bench-runs/label")
    parser.add_argument("--timing", metavar="NAME=TRAIN:TEST",
                        help="instead: time the answers of one loop (1 seed) on a pool of TRAIN and TEST rows together "
                             "(AG News: 19,600 texts), accuracy on TEST (not held out: timing only)")
    args = parser.parse_args()
    if args.timing:
        return timing(args)
    rows = []
    for spec in args.data:
        name, files = spec.split("=", 1)
        train, _, test = files.partition(":")
        sim = SimulateConfig(budget=args.budget, seeds=args.seeds, step=args.step, pool=args.pool)
        s = simulate_data(train, test_file=test or None, model=args.model, sim=sim, out_dir=Path(args.out) / name,
                          say=lambda line, name=name: print(f"[{name}] {line}", flush=True))
        stops = [p for p in s["stops"] if p["labels"] is not None]
        rows.append({
            "data": name, "pool": s["pool_rows"], "full": s["full_data_accuracy"],
            "to95_loop": s["labels_to_target"]["loop"], "to95_random": s["labels_to_target"]["random"],
            "p": s["labels_to_target_p"],
            "acc_budget_loop": float(np.mean(s["accuracy_at_budget"]["loop"])),
            "acc_budget_random": float(np.mean(s["accuracy_at_budget"]["random"])),
            "stop_labels": [p["labels"] for p in s["stops"]],
            "acc_at_stop": float(np.mean([p["accuracy"] for p in stops])) if stops else None,
            "audit_coverage": s["audit_coverage"], "audit_checks": s["audit_checks"],
            "audit_covers_at_budget": s["audit_covers_at_budget"],
            "p50_ms": 1000 * s["answer_seconds_p50"], "p95_ms": 1000 * s["answer_seconds_p95"],
            "acc_budget_p": s["accuracy_at_budget_p"], "gap": float(np.mean(s["mean_curve_gap"])),
            "gap_p": s["mean_curve_gap_p"], "to_random_budget": s["labels_to_random_budget_accuracy"]})
    print(json.dumps(rows, indent=1))
    print(f"\n{'data':10s} {'pool':>6s} {'full':>6s} {'loop@95%':>10s} {'rand@95%':>10s} {'p':>6s} "
          f"{'acc@B loop':>10s} {'rand':>6s} {'stop at':>16s} {'acc@stop':>8s} {'cover':>6s} {'p95 ms':>7s}")
    for r in rows:
        mean = lambda v: "never" if any(x is None for x in v) else f"{np.mean(v):.0f}"  # noqa: E731
        print(f"{r['data']:10s} {r['pool']:6d} {r['full']:6.4f} {mean(r['to95_loop']):>10s} "
              f"{mean(r['to95_random']):>10s} {r['p'] if r['p'] is None else round(r['p'], 4)!s:>6s} "
              f"{r['acc_budget_loop']:10.4f} {r['acc_budget_random']:6.4f} {str(r['stop_labels']):>16s} "
              f"{r['acc_at_stop'] or float('nan'):8.4f} {r['audit_coverage'] or float('nan'):6.3f} {r['p95_ms']:7.0f}")
    print(f"\n{'data':10s} {'acc@B p':>8s} {'curve gap':>9s} {'gap p':>8s}  loop labels to random's accuracy at B")
    for r in rows:
        print(f"{r['data']:10s} {r['acc_budget_p'] or float('nan'):8.4f} {r['gap']:+9.4f} "
              f"{r['gap_p'] or float('nan'):8.4f}  {r['to_random_budget']}")


def timing(args) -> None:
    from slmtune.data.sources import load_table
    from slmtune.label.encode import pool_embeddings, prompt_embeddings
    from slmtune.label.simulate import simulate

    name, files = args.timing.split("=", 1)
    train, test = (load_table(f) for f in files.split(":"))
    cache = Path(args.out) / name / "cache"
    x = np.concatenate([pool_embeddings(args.model, d.texts, cache) for d in (train, test)])
    gold = np.array(train.labels + [train.label_names.index(test.label_names[y]) for y in test.labels])
    x_test = x[len(train):]
    prompts = prompt_embeddings(args.model, train.label_names, None)
    s = simulate(x, gold, x_test, gold[len(train):], prompts, SimulateConfig(budget=args.budget, seeds=1),
                 say=print)
    print(f"{name}: pool {len(x):,} texts, {args.budget} answers: time per answer p50 "
          f"{1000 * s['answer_seconds_p50']:.0f} ms, p95 {1000 * s['answer_seconds_p95']:.0f} ms "
          "(refit of the probe + choice of the next text)")


if __name__ == "__main__":
    main()
