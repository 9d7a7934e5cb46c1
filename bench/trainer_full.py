"""The plain Hugging Face Trainer recipe for full fine-tuning that the issue's 0.901 came from, on several seeds.

AutoModelForSequenceClassification (the checkpoint's [CLS] + pooler head), dynamic padding,
`train_sampling_strategy="group_by_length"`, lr 5e-5, 3 epochs, batch 16, weight decay 0.01, validation
and a checkpoint each epoch, the best one restored, early stopping (patience 3, threshold 0.001), on the
same seeded splits `slmtune train` draws (2,400 training rows, 240 validation rows). Prints, per seed,
validation accuracy, test accuracy on all test rows and on the stratified 4,960-row subset that
bench/speed.py uses, training seconds; then means and standard deviations.

    python bench/trainer_full.py [--seeds 42,123,456,789,1011] [key=value ...]

Trailing key=value overrides go to the slmtune config the splits come from (e.g. `data.train_size=200
data.test_size=500` for a quick look).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from slmtune.config import load_config
from slmtune.data import load_splits
from slmtune.data.splits import TEST_SEED, stratified_indices
from slmtune.models.build import load_tokenizer, resolve_model


def run_seed(seed: int, overrides: list[str]) -> dict[str, float]:
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
    )

    config = load_config(None, [f"seed={seed}", *overrides])
    splits = load_splits(config.data, config.seed)
    name = resolve_model(config.model.name)
    tokenizer = load_tokenizer(name)
    model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=len(splits.label_names))

    def dataset(part):
        data = Dataset.from_dict({"text": part.texts, "label": part.labels})
        return data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=config.data.max_length),
                        batched=True, remove_columns=["text"])

    def accuracy(p):
        return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}

    train, validation, test = dataset(splits.train), dataset(splits.validation), dataset(splits.test)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, num_train_epochs=3, per_device_train_batch_size=16, per_device_eval_batch_size=64,
            learning_rate=5e-5, weight_decay=0.01, eval_strategy="epoch", save_strategy="epoch",
            save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="accuracy",
            train_sampling_strategy="group_by_length", report_to=[], use_cpu=not torch.cuda.is_available(),
            seed=seed, logging_steps=50, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                          compute_metrics=accuracy, data_collator=DataCollatorWithPadding(tokenizer),
                          callbacks=[EarlyStoppingCallback(early_stopping_patience=3, early_stopping_threshold=0.001)])
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        validation_accuracy = trainer.evaluate()["eval_accuracy"]
        output = trainer.predict(test)
        # transformers 5 length-groups evaluation too under group_by_length: predictions come in sampler order
        order = np.asarray(list(trainer._get_eval_sampler(test)))
    labels = np.asarray(splits.test.labels)
    if not (labels[order] == output.label_ids).all():
        raise RuntimeError("could not reproduce the evaluation sampler's order")
    predicted = np.empty(len(order), dtype=int)
    predicted[order] = output.predictions.argmax(-1)
    subset = stratified_indices(splits.test.labels, min(4960, len(labels)), TEST_SEED)
    return {"seed": seed, "validation": validation_accuracy, "test": float((predicted == labels).mean()),
            "test_4960": float((predicted[subset] == labels[subset]).mean()), "train_seconds": train_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="42,123,456,789,1011")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the slmtune config")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    print(f"{'seed':>6}{'validation':>12}{'test':>9}{'test 4960':>11}{'train s':>9}")
    for seed in (int(s) for s in args.seeds.split(",")):
        rows.append(run_seed(seed, args.overrides))
        r = rows[-1]
        print(f"{seed:>6}{r['validation']:>12.4f}{r['test']:>9.4f}{r['test_4960']:>11.4f}{r['train_seconds']:>9.1f}",
              flush=True)
    for key in ("validation", "test", "test_4960", "train_seconds"):
        values = [r[key] for r in rows]
        spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        print(f"{key}: mean {statistics.mean(values):.4f}{spread}")


if __name__ == "__main__":
    main()
