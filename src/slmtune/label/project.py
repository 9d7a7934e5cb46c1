"""A labelling project folder: what it labels (project.json), the pool of texts it was made from (pool.csv, with
each text's fingerprint), the labels given (labels.jsonl, append-only) and caches (embeddings).

    PROJECT/
      project.json   labels, descriptions, model, settings, where the pool came from
      pool.csv       id, text: the texts to label, copied at init so the project stands alone
      labels.jsonl   one line per answer (slmtune.label.log)
      cache/         pool embeddings, keyed by model and texts
      exports.jsonl  the batches exported for labelling elsewhere (ids, fingerprints, audit items)
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from slmtune.errors import SlmtuneError
from slmtune.label.log import LabelLog, text_hash
from slmtune.runs.folder import atomic_write, write_json


@dataclass
class ProjectConfig:
    """What a labelling project labels and how its loop chooses."""

    labels: list[str]
    """The label names, in the order keys 1, 2, 3, ... give them on the page."""
    descriptions: dict[str, str] = field(default_factory=dict)
    """Short descriptions of labels, for a better zero-shot cold start (default: the names themselves)."""
    model: str = "minilm-l6"
    """Encoder whose sentence embeddings the loop's probe and zero-shot scores use."""
    source: str = ""
    """The file the pool was read from (for the record; the pool itself is copied into the project)."""
    text_column: str = "text"
    """The pool file's text column."""
    audit_share: float = 0.1
    """Share of shown items drawn at random as audit items (held out: they estimate the model's accuracy)."""
    seed: int = 0
    """Seed of the audit draw and of the stop set."""

    def __post_init__(self) -> None:
        if len(self.labels) < 2:
            raise SlmtuneError(f"a project needs at least two labels; got {len(self.labels)} ({', '.join(self.labels)})"
                               " -- give them as --labels A,B,C")
        if len(set(self.labels)) != len(self.labels):
            raise SlmtuneError(f"labels repeat: {', '.join(self.labels)}")
        if any(not name.strip() for name in self.labels):
            raise SlmtuneError("a label name is empty")
        unknown = sorted(set(self.descriptions) - set(self.labels))
        if unknown:
            raise SlmtuneError(f"descriptions name unknown label(s) {', '.join(unknown)} "
                               f"(labels: {', '.join(self.labels)})")
        if not 0 <= self.audit_share < 1:
            raise SlmtuneError(f"audit share must be in [0, 1); got {self.audit_share}")


class Project:
    """An opened project: its config, pool and labels file."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / "project.json").is_file():
            raise SlmtuneError(f"{self.folder} is not a labelling project (no project.json); "
                               "make one with slmtune label init")
        try:
            data = json.loads((self.folder / "project.json").read_text())
        except ValueError as exc:
            raise SlmtuneError(f"{self.folder / 'project.json'} is damaged: {exc}") from None
        self.config = ProjectConfig(**{k: v for k, v in data.items() if k in ProjectConfig.__dataclass_fields__})
        self.ids, self.texts = read_pool(self.folder / "pool.csv")
        self.hashes = [text_hash(t) for t in self.texts]
        self.row = {id_: i for i, id_ in enumerate(self.ids)}
        self.log = LabelLog(self.folder / "labels.jsonl")

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    @staticmethod
    def lock_of(folder: str | Path):
        """The project's server lock (filelock: a killed process lets go of it)."""
        from filelock import FileLock

        return FileLock(Path(folder) / "serve.lock")

    def labelled_rows(self) -> tuple[list[int], list[int], list[bool]]:
        """(pool rows, label indices, audit flags) of the labels in force, in the order given."""
        index = {name: i for i, name in enumerate(self.labels)}
        rows, labels, audit = [], [], []
        for id_, answer in self.log.labels().items():
            if id_ in self.row and answer.label in index:
                rows.append(self.row[id_])
                labels.append(index[answer.label])
                audit.append(answer.how == "audit")
        return rows, labels, audit


def read_pool(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        pairs = [(r["id"], r["text"]) for r in reader]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def parse_descriptions(path: str | Path | None) -> dict[str, str]:
    """Label descriptions from a YAML file of `label: description` lines."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SlmtuneError(f"descriptions file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise SlmtuneError(f"{path}: not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise SlmtuneError(f"{path}: write one `label: short description` per line")
    return {str(k): v for k, v in data.items()}


def init_project(folder: str | Path, data: str | Path, labels: list[str], text_column: str | None = None,
                 id_column: str | None = None, descriptions: dict[str, str] | None = None, model: str = "minilm-l6",
                 audit_share: float = 0.1, seed: int = 0) -> Project:
    """Make a project from a file of texts (CSV/TSV/JSONL/Parquet); the folder must be new or empty."""
    from slmtune.data.sources import _check_texts, _read_table, text_column_of

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise SlmtuneError(f"{folder} is not empty: choose a new project folder")
    config = ProjectConfig(labels=list(labels), descriptions=dict(descriptions or {}), model=model,
                           source=str(data), audit_share=audit_share, seed=seed)
    frame = _read_table(Path(data))
    column = text_column_of(frame, text_column, data)
    config.text_column = column
    if frame.empty:
        raise SlmtuneError(f"{data}: no rows")
    texts = ["" if v is None else str(v) for v in frame[column]]
    _check_texts(texts, str(data), Path(data))
    if id_column is not None:
        if id_column not in frame.columns:
            raise SlmtuneError(f"{data}: no id column {id_column!r}; found {', '.join(map(str, frame.columns))}")
        ids = [str(v) for v in frame[id_column]]
        seen: dict[str, int] = {}
        for number, id_ in enumerate(ids, start=2):
            if id_ in seen:
                raise SlmtuneError(f"{data}: row {number}: id {id_!r} repeats row {seen[id_]} (ids must be unique)")
            seen[id_] = number
    else:
        ids = [str(i) for i in range(len(texts))]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "pool.csv.tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows(zip(ids, texts))
    (folder / "pool.csv.tmp").rename(folder / "pool.csv")
    (folder / "labels.jsonl").touch()
    write_json(folder / "project.json", asdict(config))
    atomic_write(folder / ".gitignore", "cache/\nserve.lock\n")
    return Project(folder)
