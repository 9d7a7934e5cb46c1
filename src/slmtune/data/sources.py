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
    """Texts with integer labels indexing `label_names`; with `multi_label`, each row's label is the sorted list
    of its label indices (possibly empty)."""

    texts: list[str]
    labels: list
    label_names: list[str]
    multi_label: bool = False

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError("texts and labels differ in length")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> TextDataset:
        return TextDataset([self.texts[i] for i in indices], [self.labels[i] for i in indices], self.label_names,
                           self.multi_label)

    def strata(self) -> list[int]:
        """One class per row to stratify draws by: the label itself, or (multi-label) the row's rarest label
        (-1 for a row without labels), so that rare labels keep their share."""
        if not self.multi_label:
            return list(self.labels)
        counts: dict[int, int] = {}
        for row in self.labels:
            for label in row:
                counts[label] = counts.get(label, 0) + 1
        return [min(row, key=lambda label: (counts[label], label)) if row else -1 for row in self.labels]


def _read_table(path: Path, **csv_kwargs) -> pd.DataFrame:
    """The whole file as one frame of strings (CSV/TSV) or values (JSONL, Parquet); one-line errors."""
    frames = list(iter_table(path, None, **csv_kwargs))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def iter_table(path: str | Path, chunk_rows: int | None = 10_000, **csv_kwargs):
    """Frames of at most `chunk_rows` rows (None: one frame), read as they are needed, so memory stays bounded.

    CSV/TSV cells stay strings (a missing field reads as ""); bad UTF-8 (with its byte offset in the file) and
    parse errors end in one line that says where."""
    path = Path(path)
    if not path.exists():
        raise SlmtuneError(f"data file not found: {path}")
    if not path.is_file():
        raise SlmtuneError(f"data path is not a file: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet"):
        raise SlmtuneError(f"unsupported file type {suffix!r} for {path}: use .csv, .tsv, .jsonl, .json or .parquet")
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            reader = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", encoding="utf-8", dtype=str,
                                 keep_default_na=False, chunksize=chunk_rows, **csv_kwargs)
            yield from ([reader] if chunk_rows is None else reader)
        elif suffix in (".jsonl", ".json"):
            if suffix == ".json" or chunk_rows is None:
                yield pd.read_json(path, lines=suffix == ".jsonl", encoding="utf-8", dtype=False)
            else:
                with pd.read_json(path, lines=True, encoding="utf-8", dtype=False, chunksize=chunk_rows) as reader:
                    yield from reader
        else:
            import pyarrow.parquet as pq

            handle = pq.ParquetFile(path)
            if chunk_rows is None:
                yield handle.read().to_pandas()
            else:
                for batch in handle.iter_batches(batch_size=chunk_rows):
                    yield batch.to_pandas()
    except UnicodeDecodeError:
        offset, line = _first_bad_byte(path)
        raise SlmtuneError(f"{path} is not UTF-8 text (byte {offset}, line {line}); re-save it as UTF-8") from None
    except PermissionError:
        raise SlmtuneError(f"cannot read {path}: permission denied") from None
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SlmtuneError(f"cannot parse {path}: {reason}") from None
    except Exception as exc:  # pyarrow's errors
        if type(exc).__module__.startswith("pyarrow"):
            raise SlmtuneError(f"cannot parse {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
        raise


def text_column_of(frame: pd.DataFrame, column: str | None, path) -> str:
    """The text column of a frame read from `path`: `column`, else `text`; a one-line error when missing."""
    column = column or ("text" if "text" in frame.columns else None)
    if column is None or column not in frame.columns:
        raise SlmtuneError(f"{path}: no text column {column or 'text'!r}; found {', '.join(map(str, frame.columns))} "
                           "(use --text-column)")
    return column


def _first_bad_byte(path: Path) -> tuple[int, int]:
    """(offset in the file, 1-based line) of the first byte that is not UTF-8."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                bad = offset + exc.start
                line += block[: max(0, exc.start)].count(b"\n")
                return bad, line
            offset += len(block)
            line += block.count(b"\n")
    return offset, line


def _check_texts(texts: list[str], where: str, path: Path | None = None) -> None:
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        ragged = short_row(path) if path is not None else None
        if ragged:  # the empty texts come from a broken line, not from the data: say which
            row, found, expected = ragged
            raise SlmtuneError(f"{path}: row {row} has {found} field(s) where the header has {expected} "
                               "(a missing separator, or a quote left open?)")
        raise SlmtuneError(f"{where}: {len(empty)} empty text(s), first at row {empty[0] + 1}")


def short_row(path: Path) -> tuple[int, int, int] | None:
    """(row, fields, header fields) of the first CSV/TSV record with fewer fields than the header, or None."""
    import csv

    if path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        return None
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            expected = len(next(reader, []))
            for row, record in enumerate(reader, start=1):
                if record and len(record) < expected:
                    return row, len(record), expected
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


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
               label_names: list[str] | None = None, separator: str | None = None) -> TextDataset:
    """Rows from a CSV / TSV / JSONL / Parquet file with a text and a label column (see `table_dataset`)."""
    path = Path(path)
    return table_dataset(_read_table(path), str(path), text_column, label_column, label_names, path, separator)


def table_dataset(frame: pd.DataFrame, where: str, text_column: str = "text", label_column: str = "label",
                  label_names: list[str] | None = None, path: Path | None = None,
                  separator: str | None = None) -> TextDataset:
    """A frame's text and label columns as a TextDataset.

    Labels are kept exactly as written, strings or integers alike (integers 1..4 are four classes named "1".."4",
    sorted numerically; strings sorted). `label_names` fixes the set and order (from the training rows): a label
    outside it is a one-line error. With a `separator`, the data is multi-label: a cell holds a list (JSONL,
    Parquet) or text with the labels separated by it (`a,b`); an empty cell is a row without labels."""
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns))
        raise SlmtuneError(f"{where}: missing column(s) {', '.join(missing)}; found {found} "
                           "(use --text-column / --label-column)")
    if frame.empty:
        raise SlmtuneError(f"{where}: no rows")
    texts = ["" if v is None else str(v) for v in frame[text_column]]
    _check_texts(texts, where, path)
    if separator is not None:
        return _label_sets(texts, frame[label_column], where, separator, label_names)
    if any(not isinstance(v, str) and hasattr(v, "__len__") for v in frame[label_column][:1000]):
        raise SlmtuneError(f"{where}: column {label_column!r} holds lists of labels; set data.multi_label=true "
                           "(--multi-label)")
    raw = [_label_text(v) for v in frame[label_column]]
    if any(r == "" or r.lower() in ("nan", "none") for r in raw):
        raise SlmtuneError(f"{where}: empty label in column {label_column!r}")
    if label_names is None:
        found = set(raw)
        numeric = all(_is_int(r) for r in found)
        label_names = sorted(found, key=int) if numeric else sorted(found)
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({r for r in raw if r not in index})
    if unknown:
        raise SlmtuneError(f"{where}: label(s) {', '.join(unknown[:5])} never occur in the training rows "
                           f"(labels: {', '.join(label_names[:10])}{' ...' if len(label_names) > 10 else ''})")
    return TextDataset(texts, [index[r] for r in raw], list(label_names))


def _label_sets(texts: list[str], cells, where: str, separator: str,
                label_names: list[str] | None) -> TextDataset:
    """Multi-label rows: each cell a list / array of labels, or text split at `separator`."""
    sets: list[list[str]] = []
    for cell in cells:
        if isinstance(cell, str):
            parts = cell.split(separator)
        elif cell is None or (isinstance(cell, float) and cell != cell):
            parts = []
        elif hasattr(cell, "__iter__"):
            parts = list(cell)
        else:
            parts = [cell]
        sets.append(sorted({_label_text(p) for p in parts} - {""}))
    if label_names is None and all(isinstance(c, str) for c in cells) and max(map(len, sets), default=0) == 1:
        raise SlmtuneError(f"{where}: the label separator {separator!r} splits no label cell: every row has one "
                           "label; set --label-separator to the one the file uses, or drop --multi-label")
    if label_names is None and sets and all(len(row) == 1 for row in sets):
        raise SlmtuneError(f"{where}: every row holds exactly one label: this is single-label data; drop "
                           "--multi-label (data.multi_label)")
    if label_names is None:
        found = {label for row in sets for label in row}
        if not found:
            raise SlmtuneError(f"{where}: no labels in any row (is data.label_separator right?)")
        label_names = sorted(found, key=int) if all(_is_int(r) for r in found) else sorted(found)
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({label for row in sets for label in row if label not in index})
    if unknown:
        raise SlmtuneError(f"{where}: label(s) {', '.join(unknown[:5])} never occur in the training rows "
                           f"(labels: {', '.join(label_names[:10])}{' ...' if len(label_names) > 10 else ''})")
    return TextDataset(texts, [sorted(index[label] for label in row) for row in sets], list(label_names), True)


def _label_text(value) -> str:
    """A label cell as text: 3, 3.0 and "3" are all "3"; strings are stripped."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


SPLIT_NAMES = {"train": ("train", "training"), "validation": ("validation", "valid", "val", "dev"),
               "test": ("test", "testing")}
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def folder_files(folder: Path) -> dict[str, Path]:
    """The split files of a dataset folder: train.* (required), validation.* / valid.* / dev.*, test.*."""
    found: dict[str, Path] = {}
    for split, names in SPLIT_NAMES.items():
        for name in names:
            matches = [folder / f"{name}{ext}" for ext in TABLE_SUFFIXES if (folder / f"{name}{ext}").is_file()]
            if matches:
                found[split] = matches[0]
                break
    if "train" not in found:
        raise SlmtuneError(f"{folder}: no train.csv / .tsv / .jsonl / .parquet (a dataset folder holds train.* "
                           "and optionally validation.* and test.*)")
    return found


def load_hub_dataset(name: str, config: str | None, text_column: str, label_column: str,
                     split_names: dict[str, str] | None = None,
                     separator: str | None = None) -> dict[str, TextDataset]:
    """The splits of a Hugging Face dataset (`datasets.load_dataset`, which also reads its local cache offline):
    `train`, and `validation` / `test` where the dataset has them. ClassLabel columns keep their names, a
    sequence of ClassLabel (multi-label, with a `separator`) too."""
    import logging

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    try:
        import datasets

        hub_logger.setLevel(logging.ERROR)  # its retry warnings would come before our one line
        loaded = datasets.load_dataset(name, config)
    except Exception as exc:  # offline, unknown id, bad config: one line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SlmtuneError(f"could not load the dataset {name!r}"
                           f"{f' ({config})' if config else ''} with datasets.load_dataset: {reason} (offline? "
                           "give a file or a folder instead, or set HF_DATASETS_OFFLINE=1 to use the cache)") from None
    finally:
        hub_logger.setLevel(level)
    wanted = dict(split_names or {})
    for split, names in SPLIT_NAMES.items():
        wanted.setdefault(split, next((n for n in names if n in loaded), None))
    unknown = [n for n in (split_names or {}).values() if n not in loaded]
    if unknown or wanted["train"] is None:
        raise SlmtuneError(f"dataset {name!r} has splits {', '.join(loaded)}; no split "
                           f"{', '.join(unknown) or 'train'} (set data.splits, e.g. {{train: train, test: test}})")
    out: dict[str, TextDataset] = {}
    label_names = None
    for split in ("train", "validation", "test"):
        if wanted[split] is None:
            continue
        part = loaded[wanted[split]]
        feature = part.features.get(label_column)
        frame = part.select_columns([c for c in (text_column, label_column) if c in part.column_names]).to_pandas()
        inner = getattr(feature, "feature", None)  # Sequence(ClassLabel) / List(ClassLabel): label sets
        if isinstance(inner, datasets.ClassLabel) and label_column in frame:
            label_names = label_names or list(inner.names)
            frame[label_column] = [[inner.names[i] for i in row] for row in frame[label_column]]
        if label_names is None and isinstance(feature, datasets.ClassLabel):
            label_names = list(feature.names)
        if isinstance(feature, datasets.ClassLabel) and label_column in frame:
            if (frame[label_column] < 0).any():  # unlabelled rows (e.g. GLUE test sets): no test split
                continue
            frame[label_column] = [feature.names[i] for i in frame[label_column]]
        out[split] = table_dataset(frame, f"{name}[{wanted[split]}]", text_column, label_column, label_names,
                                   separator=separator)
        label_names = out[split].label_names
    return out
