"""The labels file: an append-only JSON-lines log, one line per answer, flushed and synced as it is given.

Nothing in it is ever rewritten: an undo is a new line, a changed answer is a new line (the latest wins), and a
truncated last line (a process killed mid-write) is skipped with a warning and left where it is. Appends from
several processes are safe (one `write` of one line on a file opened for appending), and a reader picks up what
others appended since it last looked (`refresh`)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ANSWER_KINDS = ("label", "skip", "undo")


def text_hash(text: str) -> str:
    """A short, stable fingerprint of a text: an answer names the text it was given for."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Answer:
    """One line of the labels file."""

    id: str
    """The pool row's id."""
    kind: str
    """label, skip (not shown again) or undo (takes back the latest answer still standing)."""
    hash: str = ""
    """The text's fingerprint when it was answered."""
    label: str | None = None
    """The label given (kind label)."""
    how: str = ""
    """How the item was chosen: cold-start, uncertain, audit, export, import, ..."""
    model: int = 0
    """The model version that made the suggestion: the number of labels it was fitted on."""
    suggested: str | None = None
    """The label the model suggested."""
    time: float = field(default_factory=time.time)
    """When the answer was given (Unix time)."""

    def line(self) -> str:
        kept = {k: v for k, v in self.__dict__.items() if k in ("id", "kind") or v not in (None, "")}
        return json.dumps(kept, ensure_ascii=False) + "\n"


class LabelLog:
    """The labels file of a project, read incrementally and appended to durably."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.answers: list[Answer] = []
        self.offset = 0  # bytes read so far (complete lines only)
        self.warned_at: int | None = None
        self.refresh()

    def refresh(self) -> bool:
        """Read what was appended since the last look; True when something was."""
        if not self.path.exists():
            return False
        size = self.path.stat().st_size
        if size == self.offset:
            return False
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        added = False
        lines = data.split(b"\n")
        for number, raw in enumerate(lines):
            last = number == len(lines) - 1
            if last and raw:  # no newline yet: a line being written, or the remains of a killed writer
                if self._complete(raw):
                    break  # a writer is between its bytes; read it next time
                if self.warned_at != self.offset:
                    print(f"slmtune: warning: {self.path.name}: skipping an incomplete last line "
                          f"({len(raw)} bytes at byte {self.offset}); it is kept as it is", file=sys.stderr)
                    self.warned_at = self.offset
                break
            self.offset += len(raw) + (0 if last else 1)
            if raw.strip():
                answer = self._parse(raw)
                if answer is not None:
                    self.answers.append(answer)
                    added = True
        return added

    @staticmethod
    def _complete(raw: bytes) -> bool:
        try:
            json.loads(raw)
            return True
        except ValueError:
            return False

    def _parse(self, raw: bytes) -> Answer | None:
        try:
            data: dict[str, Any] = json.loads(raw)
            answer = Answer(**{k: v for k, v in data.items() if k in Answer.__dataclass_fields__})
        except (ValueError, TypeError):
            print(f"slmtune: warning: {self.path.name}: skipping a damaged line", file=sys.stderr)
            return None
        return answer if answer.kind in ANSWER_KINDS else None

    def append(self, answers: list[Answer]) -> None:
        """Write answers durably (flushed and synced before this returns), then read them back."""
        if not answers:
            return
        text = "".join(a.line() for a in answers).encode("utf-8")
        if self.warned_at is not None or self._ends_mid_line():
            text = b"\n" + text  # never glue a new answer onto a truncated line
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.warned_at = None
        self.refresh()

    def _ends_mid_line(self) -> bool:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"

    def standing(self) -> list[Answer]:
        """The answers still in force, in the order given: undo takes back the latest one standing."""
        kept: list[Answer] = []
        for answer in self.answers:
            if answer.kind == "undo":
                for i in range(len(kept) - 1, -1, -1):
                    if answer.id in ("", kept[i].id):
                        del kept[i]
                        break
            else:
                kept.append(answer)
        return kept

    def labels(self) -> dict[str, Answer]:
        """Per id, its latest standing label (a later skip does not take a label back)."""
        out: dict[str, Answer] = {}
        for answer in self.standing():
            if answer.kind == "label":
                out.pop(answer.id, None)
                out[answer.id] = answer  # re-inserted: dict order is the order of the latest answers
        return out

    def skipped(self) -> set[str]:
        labelled = self.labels()
        return {a.id for a in self.standing() if a.kind == "skip" and a.id not in labelled}
