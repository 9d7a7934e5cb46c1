"""Back-translation (English -> pivot language -> English) with pluggable backends and a disk cache.

Backends: `apertium` (Debian `apertium` + `apertium-eng-spa`, rule-based, offline) and `marian`
(Helsinki-NLP opus-mt models through transformers, from the Hub or local folders, batched). Every
translation is stored in an SQLite cache keyed by backend and text, so a study never translates the
same text twice.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
from pathlib import Path

from slmtune.data.wordnet import cache_root
from slmtune.errors import SlmtuneError


class TranslationCache:
    """text -> translation per backend key, in one SQLite file (safe for several processes)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else cache_root() / "backtranslation.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS t (backend TEXT, digest TEXT, result TEXT, "
                       "PRIMARY KEY (backend, digest))")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    @staticmethod
    def _digest(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def get(self, backend: str, texts: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._connect() as db:
            for text in dict.fromkeys(texts):
                row = db.execute("SELECT result FROM t WHERE backend=? AND digest=?",
                                 (backend, self._digest(text))).fetchone()
                if row:
                    found[text] = row[0]
        return found

    def put(self, backend: str, pairs: dict[str, str]) -> None:
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO t VALUES (?, ?, ?)",
                           [(backend, self._digest(k), v) for k, v in pairs.items()])


class BackTranslator:
    """Base class: subclasses implement `_round_trip(texts) -> texts`; caching and batching live here."""

    key = "base"

    def __init__(self, cache: TranslationCache | None = None):
        self.cache = cache or TranslationCache()
        self.translated = 0  # texts actually sent to the backend (not found in the cache)

    def back_translate(self, texts: list[str]) -> list[str]:
        known = self.cache.get(self.key, texts)
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            results = self._round_trip(missing)
            if len(results) != len(missing):
                raise SlmtuneError(f"{self.key}: got {len(results)} translations for {len(missing)} texts")
            fresh = dict(zip(missing, results))
            self.cache.put(self.key, fresh)
            known.update(fresh)
            self.translated += len(missing)
        return [known[t] for t in texts]

    def _round_trip(self, texts: list[str]) -> list[str]:
        raise NotImplementedError


class ApertiumBackTranslator(BackTranslator):
    """English -> Spanish -> English with Apertium (one text per line; unknown words passed through)."""

    def __init__(self, pair: str = "eng-spa", cache: TranslationCache | None = None):
        super().__init__(cache)
        if shutil.which("apertium") is None:
            raise SlmtuneError("back-translation needs apertium: apt-get install apertium apertium-eng-spa")
        source, target = pair.split("-")
        self.forward, self.backward = pair, f"{target}-{source}"
        self.key = f"apertium:{pair}"

    def _translate(self, mode: str, texts: list[str]) -> list[str]:
        lines = [" ".join(t.split()) for t in texts]  # one line per text
        try:
            done = subprocess.run(["apertium", "-u", mode], input="\n".join(lines) + "\n", capture_output=True,
                                  text=True, check=True, timeout=600)
        except subprocess.CalledProcessError as exc:
            message = (exc.stderr or "").strip().splitlines()
            raise SlmtuneError(f"apertium {mode} failed: {message[-1] if message else exc}; "
                               f"is apertium-{mode} installed?") from None
        out = done.stdout.rstrip("\n").split("\n")
        if len(out) != len(lines):  # a line break was lost or added: fall back to one call per text
            out = [self._translate(mode, [t])[0] for t in lines] if len(lines) > 1 else [done.stdout.strip()]
        return out

    def _round_trip(self, texts: list[str]) -> list[str]:
        return self._translate(self.backward, self._translate(self.forward, texts))


class MarianBackTranslator(BackTranslator):
    """English -> German -> English with MarianMT (or any two seq2seq models), batched."""

    def __init__(self, forward: str = "Helsinki-NLP/opus-mt-en-de", backward: str = "Helsinki-NLP/opus-mt-de-en",
                 batch_size: int = 16, max_length: int = 256, cache: TranslationCache | None = None):
        super().__init__(cache)
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.models = []
        for name in (forward, backward):
            try:
                self.models.append((AutoTokenizer.from_pretrained(name), AutoModelForSeq2SeqLM.from_pretrained(name)))
            except OSError as exc:
                raise SlmtuneError(f"cannot load translation model {name}: {str(exc).splitlines()[0]}") from None
        self.batch_size, self.max_length = batch_size, max_length
        self.key = f"marian:{forward}|{backward}"

    def _translate(self, which: int, texts: list[str]) -> list[str]:
        import torch

        tokenizer, model = self.models[which]
        model.eval()
        out: list[str] = []
        for i in range(0, len(texts), self.batch_size):
            batch = tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                              max_length=self.max_length)
            batch.pop("token_type_ids", None)
            with torch.inference_mode():
                generated = model.generate(**batch, max_new_tokens=self.max_length, num_beams=1)
            out.extend(tokenizer.batch_decode(generated, skip_special_tokens=True))
        return out

    def _round_trip(self, texts: list[str]) -> list[str]:
        return self._translate(1, self._translate(0, texts))


def make_back_translator(spec: str = "apertium", cache: TranslationCache | None = None) -> BackTranslator:
    """`apertium`, `apertium:eng-spa`, `marian`, or `marian:<forward model>,<backward model>`."""
    kind, _, arg = spec.partition(":")
    if kind == "apertium":
        return ApertiumBackTranslator(arg or "eng-spa", cache=cache)
    if kind == "marian":
        names = arg.split(",") if arg else []
        if arg and len(names) != 2:
            raise SlmtuneError("marian back-translation takes two models: marian:<forward>,<backward>")
        return MarianBackTranslator(*names, cache=cache)
    raise SlmtuneError(f"unknown back-translation backend {spec!r}; use apertium[:eng-spa] or marian[:fwd,bwd]")
