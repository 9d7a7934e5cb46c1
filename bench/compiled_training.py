"""A compiled training step against slmtune's eager one: same model, rows, batches, precision and optimizer.

Four pipelines train the same bucketed batches (slmtune's LengthBucketSampler, batch size of the recipe) with
a bf16 autocast forward where the CPU has native bf16 (fp32 elsewhere) and fused AdamW, one after the other
in this process:

- slmtune: eager, with slmtune's cheaper dropout masks and attention (`slmtune.models.fast_dropout`), as
  `slmtune train` runs;
- stock: eager, with torch's own dropout and SDPA;
- compiled: the stock model compiled by Inductor (`torch.compile(dynamic=True)`, so batches of any length
  share one graph; slmtune's dropout draws its mask with `Tensor.random_`, which Dynamo cannot trace, so the
  compiled model uses torch's dropout, which Inductor fuses into its kernels);
- with `--fixed-length N`, every batch padded or cut to N tokens and the stock model compiled for that one
  shape (`dynamic=False`): the best case for a compiler, beside the eager pipelines on the same fixed batches.

    python bench/compiled_training.py [--method lora|full] [--steps 80] [--warmup 10] [--fixed-length 64]

Prints, per pipeline, the seconds of its first `--warmup` steps (compilation included) and the training
samples/s of the steps after them, and its ratio to slmtune's eager step.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import slmtune.precision
from slmtune.config import load_config
from slmtune.data import load_splits
from slmtune.models import fast_dropout
from slmtune.models.build import add_lora, load_classifier, load_tokenizer
from slmtune.trainer import LengthBucketSampler


def batches(ids: list[list[int]], labels: list[int], batch_size: int, seed: int, fixed: int | None):
    order = list(LengthBucketSampler([len(x) for x in ids], batch_size, seed))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = order[start: start + batch_size]
        width = fixed or max(len(ids[i]) for i in rows)
        tokens = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros_like(tokens)
        for r, i in enumerate(rows):
            n = min(len(ids[i]), width)
            tokens[r, :n] = torch.tensor(ids[i][:n])
            mask[r, :n] = 1
        yield tokens, mask, torch.tensor([labels[i] for i in rows])


def pipeline(name: str, config, splits, ids, args, dtype) -> dict[str, float]:
    torch.manual_seed(config.seed)
    pooling = "mean" if config.model.method == "full" else "cls"
    model = load_classifier(config.model.name, splits.label_names, pooling=pooling)
    if config.model.method == "lora":
        model = add_lora(model, config.lora)
    if name == "slmtune":
        fast_dropout.install(model)
    if name.startswith("compiled"):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.compile(dynamic=args.fixed_length is None)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.train.learning_rate, weight_decay=config.train.weight_decay, fused=True)
    start, warm, rows = time.perf_counter(), None, 0
    stream = batches(ids, splits.train.labels, config.train.batch_size, config.seed, args.fixed_length)
    for step, (tokens, mask, labels) in zip(range(args.steps), stream):
        if step == args.warmup:
            warm = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=tokens, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rows += len(labels) if step >= args.warmup else 0
    end = time.perf_counter()
    return {"warmup_s": warm - start, "samples_per_s": rows / (end - warm)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="lora", choices=["lora", "full"])
    parser.add_argument("--steps", type=int, default=80, help="training steps per pipeline, warm-up included")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out of samples/s")
    parser.add_argument("--fixed-length", type=int, help="pad or cut every batch to this many tokens")
    parser.add_argument("--data-dir", default=os.environ.get("SLMTUNE_DATA_DIR"))
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")
    config = load_config(None, [f"model.method={args.method}", "name=bench"]
                         + ([f"data.data_dir={args.data_dir}"] if args.data_dir else []))
    torch.set_num_threads(os.cpu_count() or 1)
    splits = load_splits(config.data, config.seed)
    tokenizer = load_tokenizer(config.model.name)
    ids = tokenizer(splits.train.texts, truncation=True, max_length=config.data.max_length)["input_ids"]
    precision = slmtune.precision.resolve("auto")
    dtype = torch.bfloat16 if precision.name == "bf16" else torch.float32
    names = ["slmtune", "stock", "compiled"]
    print(f"{config.model.name} {args.method}, batch {config.train.batch_size}, {args.steps} steps "
          f"({args.warmup} warm-up), {precision.name}, {torch.get_num_threads()} threads, "
          f"{'every batch ' + str(args.fixed_length) + ' tokens' if args.fixed_length else 'bucketed lengths'}")
    results = {name: pipeline(name, config, splits, ids, args, dtype) for name in names}
    print(f"{'pipeline':<10}{'warm-up s':>11}{'samples/s':>11}{'x slmtune':>11}")
    for name, r in results.items():
        ratio = r["samples_per_s"] / results["slmtune"]["samples_per_s"]
        print(f"{name:<10}{r['warmup_s']:>11.1f}{r['samples_per_s']:>11.1f}{ratio:>11.2f}")


if __name__ == "__main__":
    main()
