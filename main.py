"""The reference workflow's commands, mapped onto slmtune (nothing more): `python main.py --mode train` etc.

Each mode prints the slmtune command it runs; docs/studies.md "Coming from the reference project" has the table.
"""

from __future__ import annotations

import argparse
import shlex
import sys

CLEAN_SAMPLES = [
    "Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers, Wall Street's dwindling\\band of "
    "ultra-cynics, are seeing green again.",
    "Oil prices soar to all-time record, posing new menace to US economy (AFP) AFP - Tearaway world oil prices, "
    "toppling records and straining wallets, present a new economic menace barely three months before the US "
    "presidential elections.",
    "Stocks rise &lt;b&gt;...&lt;/b&gt; as  quot;bargain hunters quot; return; the dollar fell to  #36;1.2 a euro.",
]


def commands(args: argparse.Namespace) -> list[list[str]]:
    seed = [f"seed={args.seed}"] if args.seed is not None else []
    if args.mode == "train":  # the reference trains the baseline (full fine-tuning) and LoRA
        return [["train", "--method", "full", *seed], ["train", "--method", "lora", *seed]]
    if args.mode == "multi_seed":
        chosen = ["--seeds", args.seeds] if args.seeds else ["--num-runs", str(args.num_runs)] if args.num_runs else []
        return [["seeds", "--config", "configs/studies/seeds.yaml", *chosen]]
    if args.mode == "hyperparam":
        space = {"lr": "lr", "wd": "wd", "combined": "grid"}[args.sweep_type]
        return [["sweep", "--config", f"configs/studies/sweep-{space}.yaml", *seed]]
    if args.mode == "data_centric":
        return [["augment", "--config", "configs/studies/augmentation.yaml", *seed],
                ["active", "--config", "configs/studies/active.yaml", *seed]]
    if args.mode == "generalization":
        return [["zeroshot", "--config", "configs/studies/zeroshot.yaml"],
                ["fewshot", "--config", "configs/studies/fewshot.yaml", *seed],
                ["scaling", "--config", "configs/studies/scaling.yaml"]]
    if args.mode == "clean_test":
        return [["clean", "--rules", "agnews", *[x for text in CLEAN_SAMPLES for x in ("--text", text)]]]
    raise AssertionError(args.mode)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", required=True,
                        choices=["train", "multi_seed", "hyperparam", "data_centric", "generalization", "clean_test"])
    parser.add_argument("--seed", type=int, help="run seed (train, hyperparam, data_centric, fewshot)")
    parser.add_argument("--seeds", help='multi_seed: comma-separated seeds, e.g. "42,123"')
    parser.add_argument("--num_runs", type=int, help="multi_seed: draw this many seeds")
    parser.add_argument("--sweep_type", choices=["lr", "wd", "combined"], default="lr", help="hyperparam: which sweep")
    parser.add_argument("--dry_run", action="store_true", help="print the slmtune commands without running them")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from slmtune.cli import main as slmtune

    for command in commands(args):
        print("$ slmtune " + shlex.join(command), flush=True)
        if not args.dry_run:
            code = slmtune(command)
            if code:
                return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
