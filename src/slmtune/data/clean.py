"""Text cleaning: `generic` (HTML entities, whitespace) for any data; `agnews` also removes AG News scraping
debris (bare entities, Windows-1252 codes, stray tags, backslashes)."""

from __future__ import annotations

import html
import re
from pathlib import Path

from slmtune.config import CLEAN_RULES

# AG News turned the "&" of many entities into a space (" #36;" is "$", " quot;" is '"'); restore it.
_BARE_NUMERIC = re.compile(r" ?(?<![&\w;])#(\d{2,4});")
_BARE_NAMED = re.compile(r" ?(?<![&\w;])(quot|amp|lt|gt|nbsp|hellip|apos);")
# Numeric references 128-159 are Windows-1252 code points in this corpus (#151; is an em dash).
_CP1252 = re.compile(r"&#(1[2-5]\d);")
# Real markup only: "<TXN.N>" style ticker symbols must survive.
_TAGS = re.compile(r"</?(?:b|i|u|a|p|br|em|strong|font|span|div|img|sup|sub|nobr)\b[^<>]*>", re.IGNORECASE)
_BACKSLASHES = re.compile(r"\\+")
_SPACES = re.compile(r"\s+")


def _cp1252(match: re.Match) -> str:
    try:
        return bytes([int(match.group(1))]).decode("cp1252")
    except UnicodeDecodeError:
        return " "


def clean_text(text: str, rules: str = "generic") -> str:
    """Clean one text by `rules` (`generic` or `agnews`); idempotent, and a text without entities (or debris)
    only has its whitespace normalised."""
    if rules not in CLEAN_RULES:
        raise ValueError(f"unknown cleaning rules {rules!r}")
    agnews = rules == "agnews"
    if agnews:
        text = _BARE_NUMERIC.sub(r"&#\1;", text)
        text = _BARE_NAMED.sub(r"&\1;", text)
        text = _CP1252.sub(_cp1252, text)
    for _ in range(3):  # "&amp;lt;" needs two rounds
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    if agnews:
        text = _TAGS.sub(" ", text)
        text = _BACKSLASHES.sub(" ", text)  # AG News joins lines with backslashes
    return _SPACES.sub(" ", text).strip()


def clean_texts(texts: list[str], rules: str = "generic") -> list[str]:
    return [clean_text(t, rules) for t in texts]


def clean_file(input_path: str | Path, output_path: str | Path | None = None,
               text_column: str | None = None, rules: str = "generic") -> list[tuple[str, str]]:
    """(before, after) for every text of a CSV / TSV / JSONL / Parquet file; with `output_path`, also written
    there as a CSV of `text,clean_text`."""
    import csv

    from slmtune.data.sources import iter_table, text_column_of
    from slmtune.errors import SlmtuneError

    pairs = []
    for frame in iter_table(input_path):
        column = text_column_of(frame, text_column, input_path)
        pairs += [(str(t), clean_text(str(t), rules)) for t in frame[column]]
    if output_path:
        try:
            with Path(output_path).open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["text", "clean_text"])
                writer.writerows(pairs)
        except OSError as exc:
            raise SlmtuneError(f"cannot write {output_path}: {exc.strerror or exc}") from None
    return pairs
