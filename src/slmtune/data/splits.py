"""Seeded, stratified splits: train / validation carved from the training file, a fixed test set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from slmtune.config import DataConfig
from slmtune.data.clean import clean_texts
from slmtune.data.sources import (
    TABLE_SUFFIXES,
    TextDataset,
    folder_files,
    load_ag_news,
    load_hub_dataset,
    load_table,
)
from slmtune.errors import SlmtuneError

TEST_SEED = 0  # the test subsample (when asked for) never moves with the run seed


@dataclass
class Splits:
    train: TextDataset
    validation: TextDataset
    test: TextDataset
    spare: TextDataset | None = None
    """Rows of the training file in neither train nor validation (as read, not cleaned): texts the model never
    saw, for measurements that need no labels (unseen_texts)."""

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


def load_sources(cfg: DataConfig) -> tuple[TextDataset, TextDataset | None, TextDataset | None]:
    """(training rows, the dataset's own validation split or None, its test split or None)."""
    from pathlib import Path

    if cfg.dataset == "ag_news":
        full, test = load_ag_news(cfg.data_dir)
        return full, None, test
    path = Path(cfg.dataset).expanduser()
    columns = (cfg.text_column, cfg.label_column)
    separator = cfg.label_separator if cfg.multi_label else None
    if path.is_dir():
        files = folder_files(path)
    elif path.suffix.lower() in TABLE_SUFFIXES or path.exists():
        files = {"train": path}
    else:  # a Hugging Face dataset id
        parts = load_hub_dataset(cfg.dataset, cfg.dataset_config, *columns, cfg.splits, separator=separator)
        files = {}
        full, validation, test = parts["train"], parts.get("validation"), parts.get("test")
    if files:
        full = load_table(files["train"], *columns, separator=separator)
        validation = load_table(files["validation"], *columns, label_names=full.label_names, separator=separator) \
            if "validation" in files else None
        test = load_table(files["test"], *columns, label_names=full.label_names, separator=separator) \
            if "test" in files else None
    if cfg.validation_file:
        validation = load_table(cfg.validation_file, *columns, label_names=full.label_names, separator=separator)
    if cfg.test_file:
        test = load_table(cfg.test_file, *columns, label_names=full.label_names, separator=separator)
    if full.multi_label != cfg.multi_label:  # ag_news, or a Hub dataset whose labels are sets
        raise SlmtuneError(f"{cfg.dataset}: its labels are {'sets' if full.multi_label else 'single'}; set "
                           f"data.multi_label={'true' if full.multi_label else 'false'}")
    return full, validation, test


def _check_label_sets(full: TextDataset, where: str) -> None:
    counts = np.zeros(len(full.label_names), dtype=int)
    for row in full.labels:
        counts[row] += 1
    if (counts > 0).sum() < 2:
        raise SlmtuneError(f"{where}: multi-label data needs at least two labels; found "
                           f"{', '.join(full.label_names) or 'none'}")


def _check_classes(full: TextDataset, where: str) -> None:
    if full.multi_label:
        return _check_label_sets(full, where)
    counts = np.bincount(full.labels, minlength=len(full.label_names))
    present = [n for n, c in zip(full.label_names, counts) if c]
    if len(present) < 2:
        raise SlmtuneError(f"{where}: every training row has the label {present[0]!r}; a classifier needs at "
                           "least two classes")
    lonely = [n for n, c in zip(full.label_names, counts) if c == 1]
    if lonely:
        raise SlmtuneError(f"{where}: class(es) {', '.join(lonely[:5])} have a single row, too few to split "
                           "stratified; add rows, drop or merge those classes, or give validation and test files")


def default_val_size(n_rows: int, n_classes: int) -> int:
    """10% of the training rows, at least 2 per class, at most 2,000 (and never more than half the rows)."""
    return min(max(2 * n_classes, round(0.1 * n_rows)), 2000, n_rows // 2)


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Read the configured data and draw train / validation (seeded) and test (fixed).

    Test is the dataset's test split (or `test_file`), else a stratified 20% held out with a fixed seed;
    validation is its validation split (or `validation_file`), else `val_size` rows (default 10%) drawn per seed."""
    full, validation, test = load_sources(cfg)
    _check_classes(full, cfg.dataset)
    if test is None:  # carve a fixed 20% test split off the training rows
        n_test = max(len(full.label_names), len(full) // 5)
        test_idx = stratified_indices(full.strata(), n_test, TEST_SEED)
        rest = sorted(set(range(len(full))) - set(test_idx))
        full, test = full.subset(rest), full.subset(test_idx)
    if validation is None:
        val_size = cfg.val_size or default_val_size(len(full), len(full.label_names))
        if val_size >= len(full):
            raise SlmtuneError(f"data.val_size={val_size} leaves no training rows (the file has {len(full)})")
        val_idx = stratified_indices(full.strata(), val_size, seed)
        remaining = sorted(set(range(len(full))) - set(val_idx))
        validation = full.subset(val_idx)
    else:
        remaining = list(range(len(full)))
        if cfg.val_size is not None and cfg.val_size < len(validation):
            validation = validation.subset(stratified_indices(validation.strata(), cfg.val_size, seed))
    if cfg.shots_per_class is not None:
        train_idx = per_class_indices(full.labels, cfg.shots_per_class, seed, pool=remaining)
    else:
        train_size = len(remaining) if cfg.train_size is None else cfg.train_size
        if train_size > len(remaining):
            raise SlmtuneError(
                f"data.train_size={train_size} exceeds the {len(remaining)} rows left after validation"
            )
        train_idx = stratified_indices(full.strata(), train_size, seed, pool=remaining)
    if cfg.test_size is not None and cfg.test_size < len(test):
        test = test.subset(stratified_indices(test.strata(), cfg.test_size, TEST_SEED))
    spare = full.subset(sorted(set(remaining) - set(train_idx)))
    splits = Splits(full.subset(train_idx), validation, test, spare=spare)
    if cfg.clean:
        for part in (splits.train, splits.validation, splits.test):
            part.texts = clean_texts(part.texts, cfg.clean_rules)
    if cfg.augment_ratio > 0:
        splits.train = augment_train(splits.train, cfg, seed)
    return splits


def unseen_texts(splits: Splits, cfg: DataConfig, seed: int, rows: int) -> list[str]:
    """Up to `rows` texts the run never trained on: its validation rows, then a seeded draw of the training file's
    spare rows (cleaned as the run's were; a file sorted by class gives every class its share)."""
    texts = splits.validation.texts[:rows]
    if len(texts) < rows and splits.spare is not None and len(splits.spare):
        order = np.random.default_rng(seed).permutation(len(splits.spare))[: rows - len(texts)]
        drawn = [splits.spare.texts[i] for i in order]
        texts = texts + (clean_texts(drawn, cfg.clean_rules) if cfg.clean else drawn)
    return texts


def augment_train(train: TextDataset, cfg: DataConfig, seed: int) -> TextDataset:
    """The training rows plus `augment_ratio` x as many augmented ones (validation and test never change)."""
    from slmtune.data.augment import DataAugmenter
    from slmtune.data.backtranslate import make_back_translator

    translator = make_back_translator(cfg.back_translation) if "backtranslate" in cfg.augment_ops else None
    augmenter = DataAugmenter(operations=cfg.augment_ops, rate=cfg.augment_rate, back_translator=translator)
    return augmenter.augment_dataset(train, augmentation_ratio=cfg.augment_ratio, seed=seed)
