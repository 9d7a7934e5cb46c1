"""Seeded, stratified splits: train / validation carved from the training file, a fixed test set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from slmtune.config import DataConfig
from slmtune.data.clean import clean_texts
from slmtune.data.sources import TextDataset, load_ag_news, load_table
from slmtune.errors import SlmtuneError

TEST_SEED = 0  # the test subsample (when asked for) never moves with the run seed


@dataclass
class Splits:
    train: TextDataset
    validation: TextDataset
    test: TextDataset

    @property
    def label_names(self) -> list[str]:
        return self.train.label_names


def stratified_indices(labels: list[int], size: int, seed: int, pool: list[int] | None = None) -> list[int]:
    """`size` indices from `pool` (default: all rows) with class shares kept, reproducible per seed."""
    pool = list(range(len(labels))) if pool is None else list(pool)
    if size > len(pool):
        raise SlmtuneError(f"asked for {size} rows but only {len(pool)} are available")
    if size == len(pool):
        return pool
    strata = [labels[i] for i in pool]
    try:
        chosen, _ = train_test_split(pool, train_size=size, stratify=strata, random_state=seed)
    except ValueError:  # too few rows per class to stratify: fall back to a plain seeded draw
        chosen = list(np.random.default_rng(seed).choice(pool, size=size, replace=False))
    return sorted(int(i) for i in chosen)


def per_class_indices(labels: list[int], k: int, seed: int, pool: list[int] | None = None) -> list[int]:
    """Exactly `k` rows of every class from `pool`, reproducible per seed."""
    pool = list(range(len(labels))) if pool is None else list(pool)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in sorted(set(labels)):
        members = [i for i in pool if labels[i] == label]
        if len(members) < k:
            raise SlmtuneError(f"class {label} has {len(members)} rows, fewer than the {k} asked for")
        chosen.extend(int(i) for i in rng.choice(members, size=k, replace=False))
    return sorted(chosen)


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Read the configured data and draw train / validation (seeded) and test (fixed)."""
    if cfg.dataset == "ag_news":
        full, test = load_ag_news(cfg.data_dir)
    else:
        full = load_table(cfg.dataset, cfg.text_column, cfg.label_column)
        if cfg.test_file:
            test = load_table(cfg.test_file, cfg.text_column, cfg.label_column, label_names=full.label_names)
        else:  # carve a fixed 20% test split off the file
            n_test = max(len(full.label_names), len(full) // 5)
            test_idx = stratified_indices(full.labels, n_test, TEST_SEED)
            rest = sorted(set(range(len(full))) - set(test_idx))
            full, test = full.subset(rest), full.subset(test_idx)
    if cfg.val_size >= len(full):
        raise SlmtuneError(f"data.val_size={cfg.val_size} leaves no training rows (the file has {len(full)})")
    val_idx = stratified_indices(full.labels, cfg.val_size, seed)
    remaining = sorted(set(range(len(full))) - set(val_idx))
    if cfg.shots_per_class is not None:
        train_idx = per_class_indices(full.labels, cfg.shots_per_class, seed, pool=remaining)
    else:
        train_size = len(remaining) if cfg.train_size is None else cfg.train_size
        if train_size > len(remaining):
            raise SlmtuneError(
                f"data.train_size={train_size} exceeds the {len(remaining)} rows left after validation"
            )
        train_idx = stratified_indices(full.labels, train_size, seed, pool=remaining)
    if cfg.test_size is not None and cfg.test_size < len(test):
        test = test.subset(stratified_indices(test.labels, cfg.test_size, TEST_SEED))
    splits = Splits(full.subset(train_idx), full.subset(val_idx), test)
    if cfg.clean:
        for part in (splits.train, splits.validation, splits.test):
            part.texts = clean_texts(part.texts)
    if cfg.augment_ratio > 0:
        splits.train = augment_train(splits.train, cfg, seed)
    return splits


def augment_train(train: TextDataset, cfg: DataConfig, seed: int) -> TextDataset:
    """The training rows plus `augment_ratio` x as many augmented ones (validation and test never change)."""
    from slmtune.data.augment import DataAugmenter
    from slmtune.data.backtranslate import make_back_translator

    translator = make_back_translator(cfg.back_translation) if "backtranslate" in cfg.augment_ops else None
    augmenter = DataAugmenter(operations=cfg.augment_ops, rate=cfg.augment_rate, back_translator=translator)
    return augmenter.augment_dataset(train, augmentation_ratio=cfg.augment_ratio, seed=seed)
