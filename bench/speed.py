"""Speed: slmtune beside the tutorial pipeline and the best peer, same model, data and settings, in one run.

- tutorial: the usual Hugging Face recipe: `datasets.map` tokenisation with padding="max_length" (128), a plain
  Trainer with random batches, LoRA through PEFT, Trainer.predict for inference, fp32.
- peer: what a good engineer would pick instead: the same stock Trainer with dynamic padding
  (DataCollatorWithPadding), `train_sampling_strategy="group_by_length"`, and `bf16=True` where the hardware
  runs bf16 natively (CUDA, or a CPU with AVX512-BF16 / AMX); fp32 elsewhere.
- slmtune: its public API (`slmtune.train`) with the default `train.precision=auto`.

    python bench/speed.py [--train-rows 2400] [--epochs 1] [--eval-rows 4960] [--method lora] [--precision auto]

Prints the machine's measured matmul peak (fp32 and bf16), samples/s for training and inference, the
useful FLOP/s (real tokens only, no padding) as a share of that peak, then every inference engine of the
slmtune run (samples/s, its ratio to the peer, share of the peak, setup seconds, share of predictions changed
against fp32 torch, test accuracy change with a 95% interval), and ends with the line
`train_ratio=A infer_ratio=B peer_train_ratio=C peer_infer_ratio=D infer_samples_per_s=E`
(ratios: slmtune over the tutorial pipeline, then over the peer).

Each pipeline runs in a fresh process of its own, one after the other: in one process the later pipelines would
find the kernels oneDNN built for the earlier ones' shapes, and the earlier ones' allocator settings. Inference
is timed from texts to predictions in every pipeline: the peer's and the tutorial's tokenisation of the test rows
(`datasets.map`) counts, as slmtune's passes tokenise theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from engines import engines, print_engines

import slmtune
import slmtune.precision
from slmtune.config import load_config
from slmtune.data import load_splits
from slmtune.models.build import add_lora, load_classifier, load_tokenizer
from slmtune.precision import cpu_bf16_support


def matmul_peak(dtype: torch.dtype, size: int = 1024, seconds: float = 2.0) -> float:
    """Best GFLOP/s of a square matmul over about `seconds` (the machine's practical peak at this size)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_params(model) -> int:
    """Weights that take part in a matmul per token: every 2-D parameter except the embeddings."""
    return sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embeddings" not in n)


def peer(config, splits, bf16: bool) -> dict[str, float]:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    tokenizer = load_tokenizer(config.model.name)
    model = load_classifier(config.model.name, splits.label_names)
    if config.model.method == "lora":
        model = add_lora(model, config.lora)

    def dataset(part):
        data = Dataset.from_dict({"text": part.texts, "label": part.labels})
        return data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=config.data.max_length),
                        batched=True, remove_columns=["text"])

    train = dataset(splits.train)
    start = time.perf_counter()
    test = dataset(splits.test)  # timed as inference: slmtune's passes tokenise their texts too
    tokenize_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, num_train_epochs=config.train.epochs, per_device_train_batch_size=config.train.batch_size,
            per_device_eval_batch_size=config.train.eval_batch_size, learning_rate=config.train.learning_rate,
            weight_decay=config.train.weight_decay, save_strategy="no", eval_strategy="no", report_to=[],
            use_cpu=not torch.cuda.is_available(), seed=config.seed, logging_steps=50, bf16=bf16,
            train_sampling_strategy="group_by_length",
        )
        trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer))
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        output = trainer.predict(test)
        infer_seconds = tokenize_seconds + time.perf_counter() - start
        # transformers 5 length-groups evaluation too under group_by_length: predictions come in sampler order
        order = np.asarray(list(trainer._get_eval_sampler(test)))
    labels = np.asarray(splits.test.labels)
    if not (labels[order] == output.label_ids).all():
        raise RuntimeError("could not reproduce the evaluation sampler's order")
    predicted = np.empty(len(order), dtype=int)
    predicted[order] = np.asarray(output.predictions).argmax(-1)
    return {"train": len(train) * config.train.epochs / train_seconds, "infer": len(test) / infer_seconds,
            "accuracy": float((predicted == labels).mean()), "train_seconds": train_seconds,
            "infer_seconds": infer_seconds}


def tutorial(config, splits) -> dict[str, float]:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    tokenizer = load_tokenizer(config.model.name)
    model = load_classifier(config.model.name, splits.label_names)
    if config.model.method == "lora":
        model = add_lora(model, config.lora)

    def tokenize(batch):
        return tokenizer(batch["text"], padding="max_length", truncation=True, max_length=config.data.max_length)

    train = Dataset.from_dict({"text": splits.train.texts, "label": splits.train.labels}).map(tokenize, batched=True)
    start = time.perf_counter()
    test = Dataset.from_dict({"text": splits.test.texts, "label": splits.test.labels}).map(tokenize, batched=True)
    tokenize_seconds = time.perf_counter() - start  # timed as inference, as in the peer
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, num_train_epochs=config.train.epochs, per_device_train_batch_size=config.train.batch_size,
            per_device_eval_batch_size=config.train.eval_batch_size, learning_rate=config.train.learning_rate,
            weight_decay=config.train.weight_decay, save_strategy="no", eval_strategy="no", report_to=[],
            use_cpu=not torch.cuda.is_available(), seed=config.seed, logging_steps=50,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train)
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        logits = trainer.predict(test).predictions
        infer_seconds = tokenize_seconds + time.perf_counter() - start
    accuracy = float((np.asarray(logits).argmax(-1) == np.asarray(splits.test.labels)).mean())
    return {"train": len(train) * config.train.epochs / train_seconds, "infer": len(test) / infer_seconds,
            "accuracy": accuracy, "train_seconds": train_seconds, "infer_seconds": infer_seconds}


def ours(config, splits) -> tuple[dict[str, float], dict, list[dict]]:
    """slmtune's training and in-run test inference (the run's precision), `slmtune evaluate`'s default
    (`--backend auto`: the fastest engine within the default budget) on the same test rows, then every engine."""
    from slmtune.serve.backends import choose_backend
    from slmtune.serve.inference import evaluate_run

    with tempfile.TemporaryDirectory() as out:
        result = slmtune.train(config, splits=splits, run_dir=Path(out) / "run")
        saved = slmtune.runs.read_result(result.run_dir)
        choose_backend(result.run_dir)  # what evaluate's default measures for jobs of 5,000 rows or more
        auto = evaluate_run(result.run_dir, "test")
        table = engines(result.run_dir, splits)
    return {"train": saved["samples_per_second"]["train"], "infer": saved["samples_per_second"]["eval"],
            "accuracy": saved["metrics"]["test"]["accuracy"], "train_seconds": saved["seconds"]["train"],
            "infer_seconds": len(splits.test) / saved["samples_per_second"]["eval"]}, auto, table


def in_own_process(pipeline: str) -> list:
    """What `pipeline` returns, run in a fresh process with this one's arguments."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.json"
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--pipeline", pipeline, "--out", str(out)], check=True)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=2400)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--eval-rows", type=int, default=4960)
    parser.add_argument("--method", default="lora", choices=["lora", "full"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="slmtune's")
    parser.add_argument("--data-dir", default=os.environ.get("SLMTUNE_DATA_DIR"))
    parser.add_argument("--skip-tutorial", action="store_true", help="only time slmtune and the peer")
    parser.add_argument("--pipeline", choices=["slmtune", "peer", "tutorial"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    config = load_config(None, [f"model.method={args.method}", f"data.train_size={args.train_rows}",
                                f"data.test_size={args.eval_rows}", f"train.epochs={args.epochs}",
                                f"train.precision={args.precision}", "name=bench"]
                         + ([f"data.data_dir={args.data_dir}"] if args.data_dir else []))
    torch.set_num_threads(os.cpu_count() or 1)
    splits = load_splits(config.data, config.seed)
    native_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported() or bool(cpu_bf16_support())
    if args.pipeline:  # one pipeline, in this fresh process
        run = {"slmtune": lambda: ours(config, splits), "peer": lambda: (peer(config, splits, native_bf16),),
               "tutorial": lambda: (tutorial(config, splits),)}[args.pipeline]
        Path(args.out).write_text(json.dumps(run(), default=float))
        return
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"model {config.model.name}, method {config.model.method}, lr {config.train.learning_rate}, "
          f"{len(splits.train)} train rows x {config.train.epochs} epochs, {len(splits.test)} inference rows, "
          f"{torch.get_num_threads()} threads, device {'cuda' if torch.cuda.is_available() else 'cpu'}, "
          f"native bf16: {cpu_bf16_support() or ('cuda' if native_bf16 else 'no')}")
    print(f"matmul peak (1024x1024): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    rows = {}
    rows["slmtune"], auto, table = in_own_process("slmtune")
    rows["peer"], = in_own_process("peer")
    if not args.skip_tutorial:
        rows["tutorial"], = in_own_process("tutorial")
    precision = {"slmtune": slmtune.precision.resolve(args.precision).name,
                 "peer": "bf16" if native_bf16 else "fp32", "tutorial": "fp32"}

    tokenizer = load_tokenizer(config.model.name)
    tokens = {k: sum(len(ids) for ids in tokenizer(part.texts, truncation=True,
                                                   max_length=config.data.max_length)["input_ids"])
              for k, part in (("train", splits.train), ("infer", splits.test))}
    n = matmul_params(load_classifier(config.model.name, splits.label_names))
    per_token = {"train": (6 if config.model.method == "full" else 4) * n, "infer": 2 * n}

    print(f"\n{'pipeline':<10}{'precision':>10}{'train/s':>10}{'infer/s':>10}{'train s':>10}{'infer s':>10}"
          f"{'test acc':>10}{'train %peak':>13}{'infer %peak':>13}")
    for name, r in rows.items():
        peak = peaks[precision[name]] * 1e9
        share = {k: per_token[k] * tokens[k] * (config.train.epochs if k == "train" else 1)
                 / r[f"{k}_seconds"] / peak for k in ("train", "infer")}
        print(f"{name:<10}{precision[name]:>10}{r['train']:>10.1f}{r['infer']:>10.1f}{r['train_seconds']:>10.1f}"
              f"{r['infer_seconds']:>10.1f}{r['accuracy']:>10.4f}{share['train']:>12.1%}{share['infer']:>12.1%}")
    print("(%peak: useful FLOP/s, real tokens only, against the matmul peak of the pipeline's precision)")
    print_engines(table, peaks, per_token["infer"] * tokens["infer"], rows["peer"]["infer"])
    ours_row, peer_row = rows["slmtune"], rows["peer"]
    tutorial_row = rows.get("tutorial")
    train_ratio = f"{ours_row['train'] / tutorial_row['train']:.2f}" if tutorial_row else "na"
    infer_ratio = f"{ours_row['infer'] / tutorial_row['infer']:.2f}" if tutorial_row else "na"
    print(f"slmtune evaluate (default --backend auto) chose {auto['backend']} ({auto['precision']}): "
          f"{auto['samples_per_second']:.1f} samples/s, {auto['samples_per_second'] / peer_row['infer']:.2f}x the "
          f"peer, test accuracy change vs the run {auto.get('accuracy_change_vs_run', 0):+.4f}")
    print(f"train_ratio={train_ratio} infer_ratio={infer_ratio} "
          f"peer_train_ratio={ours_row['train'] / peer_row['train']:.2f} "
          f"peer_infer_ratio={ours_row['infer'] / peer_row['infer']:.2f} "
          f"infer_samples_per_s={ours_row['infer']:.1f}")


if __name__ == "__main__":
    main()
