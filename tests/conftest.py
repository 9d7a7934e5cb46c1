"""Shared fixtures: offline Hub, tiny random models built in-process, small synthetic and real data."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_AG_NEWS = Path(os.environ.get("SLMTUNE_DATA_DIR") or
                      Path(__file__).resolve().parents[2] / "shared" / "data" / "ag_news")

# Four classes with their own words, so a tiny random model can learn them in a few steps.
VOCAB = {
    "World": "president election minister war government embassy treaty parliament".split(),
    "Sports": "match goal team coach season league player championship".split(),
    "Business": "stock market shares profit bank investors earnings merger".split(),
    "Sci/Tech": "software internet computer space research chip network science".split(),
}
FILLER = "the a of in on and to with for after".split()


def synthetic_rows(n_per_class: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label, words in VOCAB.items():
        for _ in range(n_per_class):
            tokens = rng.choices(words, k=rng.randint(4, 9)) + rng.choices(FILLER, k=rng.randint(1, 5))
            rng.shuffle(tokens)
            rows.append((" ".join(tokens), label))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    from slmtune.models.build import resolve_model

    return resolve_model("minilm-l6")


def _tiny(kind: str, folder: Path, tokenizer_dir: str) -> Path:
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if kind == "distilbert":
        config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=37,
                                  max_position_embeddings=128, num_labels=4)
        model = DistilBertForSequenceClassification(config)
    else:
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=37, max_position_embeddings=128, num_labels=4)
        model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, minilm_dir) -> dict[str, str]:
    """Random-weight tiny BERT and DistilBERT folders (with the MiniLM WordPiece tokenizer)."""
    root = tmp_path_factory.mktemp("tiny")
    return {kind: str(_tiny(kind, root / kind, minilm_dir)) for kind in ("bert", "distilbert")}


@pytest.fixture(scope="session")
def synthetic_files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("data")
    return {
        "train": str(write_csv(root / "train.csv", synthetic_rows(40, seed=1))),
        "test": str(write_csv(root / "test.csv", synthetic_rows(15, seed=2))),
    }


def tiny_overrides(model_dir: str, files: dict[str, str], **extra) -> dict:
    """A nested config dict for a fast run on a tiny model and the synthetic files."""
    values = {
        "name": "tiny",
        "data": {"dataset": files["train"], "test_file": files["test"], "train_size": 120, "val_size": 20},
        # 120 rows: auto would fit a probe; a random model's word embeddings hold nothing to keep (both defaults
        # are tested apart)
        "model": {"name": model_dir, "head_init": "random", "freeze_word_embeddings": False},
        "train": {"epochs": 3, "batch_size": 16, "learning_rate": 3e-2, "threads": 2},
    }
    for key, value in extra.items():
        target = values
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return values


@pytest.fixture(scope="session")
def ag_news_dir() -> Path:
    if not (SHARED_AG_NEWS / "test.csv").is_file():
        pytest.skip(f"real AG News not found at {SHARED_AG_NEWS}")
    return SHARED_AG_NEWS


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL server's URL: .ci/run starts a throwaway one on 127.0.0.1 and sets SLMTUNE_TEST_POSTGRES."""
    url = os.environ.get("SLMTUNE_TEST_POSTGRES")
    if not url:
        pytest.skip("no PostgreSQL server (bash .ci/run starts one and sets SLMTUNE_TEST_POSTGRES)")
    pytest.importorskip("psycopg2", reason="the postgres extra: pip install 'slmtune[postgres]'")
    return url


def crashed(output: str) -> bool:
    """A traceback in a command's output other than Python's "Exception ignored in ..." reports (a signal that
    lands inside a weakref callback or __del__ is reported that way by Python itself, and the run goes on)."""
    return output.count("Traceback (most recent call last)") > output.count("Exception ignored")


GATE_DIR = Path(__file__).resolve().parent / "gate"


def gated_env(gate: Path) -> dict[str, str]:
    """The environment of a subprocess whose training runs wait at their first step for the test (tests/gate)."""
    gate.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(GATE_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, "SLMTUNE_TEST_GATE": str(gate)}


def wait_until(predicate, seconds: float = 300, what: str = "the awaited state") -> None:
    """Poll `predicate` (a file a process writes, a state it reaches) until it holds; fail after `seconds`, a bound
    for a hung process only, never a synchronisation."""
    import time

    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached: {what}")
        time.sleep(0.02)


def started(gate: Path, pid: int | None = None) -> list[str]:
    """The gate markers of runs waiting (or let through): `started-<pid>-<k>`, for one process or all."""
    return sorted(p.name for p in gate.glob(f"started-{pid if pid is not None else '*'}-*"))
