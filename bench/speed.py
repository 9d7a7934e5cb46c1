"""Speed: the tutorial pipeline and slmtune side by side, same model, data and settings, in one process.

The tutorial pipeline is the usual Hugging Face recipe: `datasets.map` tokenisation with
padding="max_length" (128), a plain Trainer with random batches, LoRA through PEFT, and
Trainer.predict for inference. slmtune runs through its public API (`slmtune.train`).

    python bench/speed.py [--train-rows 2400] [--epochs 1] [--eval-rows 4960] [--method lora]

Prints samples/s for training and inference and their ratios, ending with the line
`train_ratio=<x> infer_ratio=<y> infer_samples_per_s=<z>` (slmtune's fp32 default path).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import slmtune
from slmtune.config import load_config
from slmtune.data import load_splits
from slmtune.models import add_lora, load_classifier, load_tokenizer


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
    test = Dataset.from_dict({"text": splits.test.texts, "label": splits.test.labels}).map(tokenize, batched=True)
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
        infer_seconds = time.perf_counter() - start
    accuracy = float((np.asarray(logits).argmax(-1) == np.asarray(splits.test.labels)).mean())
    return {"train": len(train) * config.train.epochs / train_seconds, "infer": len(test) / infer_seconds,
            "accuracy": accuracy, "train_seconds": train_seconds, "infer_seconds": infer_seconds}


def ours(config, splits) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        result = slmtune.train(config, splits=splits, run_dir=Path(out) / "run")
        saved = slmtune.runs.read_result(result.run_dir)
    return {"train": saved["samples_per_second"]["train"], "infer": saved["samples_per_second"]["eval"],
            "accuracy": saved["metrics"]["test"]["accuracy"], "train_seconds": saved["seconds"]["train"],
            "infer_seconds": len(splits.test) / saved["samples_per_second"]["eval"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=2400)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--eval-rows", type=int, default=4960)
    parser.add_argument("--method", default="lora", choices=["lora", "full"])
    parser.add_argument("--data-dir", default=os.environ.get("SLMTUNE_DATA_DIR"))
    parser.add_argument("--skip-tutorial", action="store_true", help="only time slmtune")
    args = parser.parse_args()

    config = load_config(None, [f"model.method={args.method}", f"data.train_size={args.train_rows}",
                                f"data.test_size={args.eval_rows}", f"train.epochs={args.epochs}",
                                "name=bench"] + ([f"data.data_dir={args.data_dir}"] if args.data_dir else []))
    torch.set_num_threads(os.cpu_count() or 1)
    splits = load_splits(config.data, config.seed)
    print(f"model {config.model.name}, method {config.model.method}, lr {config.train.learning_rate}, "
          f"{len(splits.train)} train rows x {config.train.epochs} epochs, {len(splits.test)} inference rows, "
          f"{torch.get_num_threads()} threads, device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    rows = {"slmtune": ours(config, splits)}
    if not args.skip_tutorial:
        rows["tutorial"] = tutorial(config, splits)
    print(f"\n{'pipeline':<10}{'train/s':>10}{'infer/s':>10}{'train s':>10}{'infer s':>10}{'test acc':>10}")
    for name, r in rows.items():
        print(f"{name:<10}{r['train']:>10.1f}{r['infer']:>10.1f}{r['train_seconds']:>10.1f}"
              f"{r['infer_seconds']:>10.1f}{r['accuracy']:>10.4f}")
    ours_row = rows["slmtune"]
    if "tutorial" in rows:
        train_ratio = ours_row["train"] / rows["tutorial"]["train"]
        infer_ratio = ours_row["infer"] / rows["tutorial"]["infer"]
        print(f"train_ratio={train_ratio:.2f} infer_ratio={infer_ratio:.2f} "
              f"infer_samples_per_s={ours_row['infer']:.1f}")
    else:
        print(f"infer_samples_per_s={ours_row['infer']:.1f} train_samples_per_s={ours_row['train']:.1f}")


if __name__ == "__main__":
    main()
