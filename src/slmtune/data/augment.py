"""Text augmentation: EDA (Wei & Zou 2019) with WordNet synonyms, and back-translation.

Operations: `synonym` (replace n words by a WordNet synonym), `insert` (insert n synonyms of words of
the text at random places), `delete` (drop each word with probability `rate`), `swap` (swap two words,
n times), with n = max(1, rate * words); `backtranslate` (English -> pivot -> English through a
pluggable translator whose results are cached on disk).

`DataAugmenter(...).augment_dataset(data, augmentation_ratio=0.5, seed=42)` returns the original rows
followed by round(ratio * n) augmented rows (labels kept). Every augmented row depends only on
(seed, source row, copy number), so results are reproducible and do not move when the ratio changes:
the rows added at ratio 0.5 are a subset of those added at ratio 1.0.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from slmtune.config import AUGMENT_OPS as OPERATIONS  # the operation names live with the config
from slmtune.config import EDA_OPS as EDA_OPERATIONS
from slmtune.data.sources import TextDataset
from slmtune.errors import SlmtuneError

# EDA's stop-word list (Wei & Zou's code, from NLTK's): never replaced by synonyms.
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself
it its itself they them their theirs themselves what which who whom this that these those am is are was were be
been being have has had having do does did doing a an the and but if or because as until while of at by for with
about against between into through during before after above below to from up down in out on off over under again
further then once here there when where why how all any both each few more most other some such no nor not only
own same so than too very s t can will just don should now
""".split())
_WORD = re.compile(r"^(\W*)([A-Za-z][A-Za-z'-]*?)(\W*)$")


def _split(text: str) -> list[str]:
    return text.split()


def _core(token: str) -> tuple[str, str, str] | None:
    """(leading punctuation, word, trailing punctuation) of a token made of letters, else None."""
    match = _WORD.match(token)
    return (match.group(1), match.group(2), match.group(3)) if match else None


def _match_case(replacement: str, original: str) -> str:
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _candidates(words: list[str], synonyms) -> list[tuple[int, tuple[str, ...]]]:
    """Positions of words (not stop words) that have synonyms, with those synonyms."""
    found = []
    for i, token in enumerate(words):
        parts = _core(token)
        if parts and parts[1].lower() not in STOP_WORDS:
            options = synonyms(parts[1])
            if options:
                found.append((i, options))
    return found


def synonym_replacement(text: str, n: int, rng: random.Random, synonyms) -> str:
    words = _split(text)
    candidates = _candidates(words, synonyms)
    rng.shuffle(candidates)
    for i, options in candidates[:n]:
        lead, word, trail = _core(words[i])
        words[i] = lead + _match_case(rng.choice(options), word) + trail
    return " ".join(words)


def random_insertion(text: str, n: int, rng: random.Random, synonyms) -> str:
    words = _split(text)
    candidates = _candidates(words, synonyms)
    if not candidates:
        return text
    for _ in range(n):
        _, options = rng.choice(candidates)
        words.insert(rng.randint(0, len(words)), rng.choice(options))
    return " ".join(words)


def random_deletion(text: str, p: float, rng: random.Random) -> str:
    words = _split(text)
    if len(words) <= 1:
        return text
    kept = [w for w in words if rng.random() > p]
    return " ".join(kept) if kept else rng.choice(words)


def random_swap(text: str, n: int, rng: random.Random) -> str:
    words = _split(text)
    if len(words) < 2:
        return text
    for _ in range(n):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


def _row_rng(seed: int, row: int, copy: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{row}:{copy}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


@dataclass
class DataAugmenter:
    """EDA operations with WordNet synonyms plus optional back-translation, applied reproducibly.

    `operations`: any of synonym, insert, delete, swap, backtranslate (each augmented row uses one,
    drawn uniformly). `rate`: EDA's alpha, the share of words an operation touches. `back_translator`:
    a `slmtune.data.backtranslate.BackTranslator`, needed only for `backtranslate`."""

    use_wordnet: bool = True
    operations: Sequence[str] | None = None
    rate: float = 0.1
    back_translator: object | None = None

    def __post_init__(self) -> None:
        ops = list(self.operations) if self.operations else [
            op for op in EDA_OPERATIONS if self.use_wordnet or op not in ("synonym", "insert")]
        unknown = [op for op in ops if op not in OPERATIONS]
        if unknown:
            raise SlmtuneError(f"unknown augmentation operation(s) {', '.join(unknown)}; "
                               f"known: {', '.join(OPERATIONS)}")
        if not self.use_wordnet and {"synonym", "insert"} & set(ops):
            raise SlmtuneError("synonym and insert need WordNet (use_wordnet=True)")
        if not 0 < self.rate <= 1:
            raise SlmtuneError(f"augmentation rate must be in (0, 1], got {self.rate}")
        self.operations = ops
        if self.use_wordnet and {"synonym", "insert"} & set(ops):
            from slmtune.data.wordnet import synonyms, wordnet_reader

            wordnet_reader()  # fail now, with the install hint, rather than mid-study
            self._synonyms = synonyms
        if "backtranslate" in ops and self.back_translator is None:
            from slmtune.data.backtranslate import make_back_translator

            self.back_translator = make_back_translator("apertium")

    def apply(self, text: str, operation: str, rng: random.Random) -> str:
        """One EDA operation on one text (back-translation goes through `augment_texts`, batched)."""
        n = max(1, round(self.rate * len(_split(text))))
        if operation == "synonym":
            return synonym_replacement(text, n, rng, self._synonyms)
        if operation == "insert":
            return random_insertion(text, n, rng, self._synonyms)
        if operation == "delete":
            return random_deletion(text, self.rate, rng)
        if operation == "swap":
            return random_swap(text, n, rng)
        raise SlmtuneError(f"operation {operation!r} is not an EDA operation")

    def augment_texts(self, texts: Sequence[str], sources: Sequence[tuple[int, int]], seed: int) -> list[str]:
        """Augmented versions of texts[row] for each (row, copy) in `sources`."""
        out: list[str | None] = [None] * len(sources)
        pending: list[int] = []
        for k, (row, copy) in enumerate(sources):
            rng = _row_rng(seed, row, copy)
            operation = rng.choice(self.operations)
            if operation == "backtranslate":
                pending.append(k)
                continue
            text = texts[row]
            new = self.apply(text, operation, rng)
            tries = 0
            while (new == text or not new.strip()) and tries < 3:  # nothing to replace: try another operation
                tries += 1
                others = [op for op in self.operations if op != "backtranslate"] or ["swap"]
                new = self.apply(text, rng.choice(others), rng)
            out[k] = new if new.strip() else text
        if pending:
            translated = self.back_translator.back_translate([texts[sources[k][0]] for k in pending])
            for k, new in zip(pending, translated):
                out[k] = new if new.strip() else texts[sources[k][0]]
        return out  # type: ignore[return-value]

    def augment_dataset(self, dataset, augmentation_ratio: float = 0.5, seed: int = 42):
        """The original rows followed by round(ratio * n) augmented rows, labels kept.

        `dataset` is a `TextDataset` or a Hugging Face `datasets.Dataset` with `text` and `label` columns;
        the result has the same type."""
        if augmentation_ratio < 0:
            raise SlmtuneError(f"augmentation ratio must be non-negative, got {augmentation_ratio}")
        hf = not isinstance(dataset, TextDataset)
        data = _as_text_dataset(dataset) if hf else dataset
        n_new = round(augmentation_ratio * len(data))
        sources = augmentation_sources(len(data), n_new, seed)
        new_texts = self.augment_texts(data.texts, sources, seed)
        result = TextDataset(list(data.texts) + new_texts, list(data.labels) + [data.labels[r] for r, _ in sources],
                             data.label_names, data.multi_label)
        return _to_hf(result, dataset) if hf else result


def augmentation_sources(n_rows: int, n_new: int, seed: int) -> list[tuple[int, int]]:
    """Which rows get augmented, as (row, copy): every row once per full pass, then a seeded sample.

    The order of rows in a pass is fixed per seed, so a smaller ratio takes a prefix of a larger one."""
    if n_rows == 0 or n_new == 0:
        return []
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    return [(order[k % n_rows], k // n_rows) for k in range(n_new)]


def _as_text_dataset(dataset) -> TextDataset:
    columns = getattr(dataset, "column_names", None)
    if columns is None or "text" not in columns or "label" not in columns:
        raise SlmtuneError("augment_dataset takes a TextDataset or a datasets.Dataset with text and label columns")
    names = getattr(dataset.features["label"], "names", None)
    labels = [int(x) for x in dataset["label"]]
    return TextDataset(list(dataset["text"]), labels, names or [str(i) for i in range(max(labels) + 1)])


def _to_hf(result: TextDataset, original):
    from datasets import Dataset, Features

    features = Features({k: original.features[k] for k in ("text", "label")})
    return Dataset.from_dict({"text": result.texts, "label": result.labels}, features=features)
