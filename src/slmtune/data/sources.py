"""Where rows come from: AG News (local original CSVs or the Hub) and generic CSV / JSONL / Parquet files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from slmtune.errors import SlmtuneError

AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
DATA_DIR_ENV = "SLMTUNE_DATA_DIR"


@dataclass
class TextDataset:
    """Texts with integer labels indexing `label_names`."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError("texts and labels differ in length")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> TextDataset:
        return TextDataset([self.texts[i] for i in indices], [self.labels[i] for i in indices], self.label_names)


def _read_table(path: Path, **csv_kwargs) -> pd.DataFrame:
    if not path.exists():
        raise SlmtuneError(f"data file not found: {path}")
    if not path.is_file():
        raise SlmtuneError(f"data path is not a file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", encoding="utf-8", dtype=str,
                               keep_default_na=False, **csv_kwargs)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl", encoding="utf-8", dtype=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise SlmtuneError(f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    except PermissionError:
        raise SlmtuneError(f"cannot read {path}: permission denied") from None
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SlmtuneError(f"cannot parse {path}: {reason}") from None
    raise SlmtuneError(f"unsupported file type {suffix!r} for {path}: use .csv, .tsv, .jsonl, .json or .parquet")


def _check_texts(texts: list[str], where: str) -> None:
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise SlmtuneError(f"{where}: {len(empty)} empty text(s), first at row {empty[0] + 1}")


def load_ag_news_csv(path: str | Path) -> TextDataset:
    """One AG News file in the original layout: no header, fields label (1-4), title, description."""
    path = Path(path)
    frame = _read_table(path, header=None)
    if frame.shape[1] != 3:
        raise SlmtuneError(f"{path}: expected 3 columns (label, title, description), found {frame.shape[1]}")
    try:
        labels = [int(v) - 1 for v in frame[0]]
    except ValueError:
        raise SlmtuneError(f"{path}: first column must be the class index 1-4 (is there a header row?)") from None
    bad = [i for i, y in enumerate(labels) if not 0 <= y < len(AG_NEWS_LABELS)]
    if bad:
        raise SlmtuneError(f"{path}: label {labels[bad[0]] + 1} at row {bad[0] + 1} is outside 1-4")
    texts = [f"{title} {desc}".strip() for title, desc in zip(frame[1], frame[2])]
    _check_texts(texts, str(path))
    return TextDataset(texts, labels, list(AG_NEWS_LABELS))


def resolve_data_dir(data_dir: str | None) -> Path | None:
    value = data_dir or os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise SlmtuneError(f"AG News data folder not found: {path}")
    return path


def load_ag_news(data_dir: str | None = None) -> tuple[TextDataset, TextDataset]:
    """(train, test). From `data_dir` / $SLMTUNE_DATA_DIR if given, else from the Hugging Face Hub."""
    folder = resolve_data_dir(data_dir)
    if folder is None:
        return _ag_news_from_hub()
    test = folder / "test.csv"
    train = folder / "train.csv"
    if not train.is_file():
        subsets = sorted(folder.glob("train_subset_*.csv"))
        if not subsets:
            raise SlmtuneError(f"{folder} holds neither train.csv nor train_subset_*.csv")
        train = subsets[-1]
    return load_ag_news_csv(train), load_ag_news_csv(test)


def _ag_news_from_hub() -> tuple[TextDataset, TextDataset]:
    try:
        import datasets

        ds = datasets.load_dataset("ag_news")
    except Exception as exc:  # offline, hub down, auth: all end the same way for the user
        raise SlmtuneError(
            f"could not get AG News from the Hugging Face Hub ({type(exc).__name__}); offline? point "
            f"--data-dir or ${DATA_DIR_ENV} at a folder with the original train.csv/test.csv"
        ) from None
    names = ds["train"].features["label"].names
    return tuple(TextDataset(list(ds[s]["text"]), list(ds[s]["label"]), list(names)) for s in ("train", "test"))


def load_table(path: str | Path, text_column: str = "text", label_column: str = "label",
               label_names: list[str] | None = None) -> TextDataset:
    """Rows from a CSV / TSV / JSONL / Parquet file with a text and a label column.

    String labels are kept as names (sorted, unless `label_names` fixes the order, e.g. from a training file);
    integer labels index `label_names` when given, else become names "0", "1", ...
    """
    path = Path(path)
    frame = _read_table(path)
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns))
        raise SlmtuneError(f"{path}: missing column(s) {', '.join(missing)}; found {found}")
    if frame.empty:
        raise SlmtuneError(f"{path}: no rows")
    texts = ["" if v is None else str(v) for v in frame[text_column]]
    _check_texts(texts, str(path))
    raw = [str(v).strip() for v in frame[label_column]]
    if any(r == "" or r.lower() in ("nan", "none") for r in raw):
        raise SlmtuneError(f"{path}: empty label in column {label_column!r}")
    integers = all(r.lstrip("-").isdigit() for r in raw)
    if label_names is None:
        if integers:
            label_names = [str(i) for i in range(max(int(r) for r in raw) + 1)]
        else:
            label_names = sorted(set(raw))
    if integers and not set(raw) <= set(label_names):
        index = {str(i): i for i in range(len(label_names))}
    else:
        index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({r for r in raw if r not in index})
    if unknown:
        raise SlmtuneError(f"{path}: label(s) {', '.join(unknown[:5])} outside the label set {label_names}")
    return TextDataset(texts, [index[r] for r in raw], list(label_names))
