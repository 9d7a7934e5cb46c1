"""A project with its loop attached: the state the labels file implies (who is labelled, skipped, what comes
next), answers checked and written, the status a person asks for. The labelling page, export, import and
status all go through it, so they agree on what comes next and on what an answer may be."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slmtune.errors import SlmtuneError
from slmtune.label.log import Answer
from slmtune.label.loop import DEFAULTS, Choice, Loop, LoopConfig, audit_estimate, check_embeddings, stability
from slmtune.label.project import Project


class Stale(SlmtuneError):
    """An answer for an item that is no longer the one to answer (labelled meanwhile, or its text changed)."""


@dataclass
class Item:
    """An item as a person sees it."""

    id: str
    text: str
    hash: str
    how: str
    suggested: str
    confidence: float
    model: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Session:
    """The project's labels file, pool embeddings and loop, kept in step."""

    def __init__(self, folder: str | Path, config: LoopConfig = DEFAULTS, say=print):
        from slmtune.label.encode import pool_embeddings, prompt_embeddings

        self.project = Project(folder)
        cfg = self.project.config
        x = pool_embeddings(cfg.model, self.project.texts, self.project.folder / "cache", say)
        check_embeddings(x, len(self.project.texts))
        prompts = prompt_embeddings(cfg.model, cfg.labels, cfg.descriptions)
        self.loop = Loop(x, prompts, cfg.audit_share, cfg.seed, config)
        self.seen_answers = -1
        self._current: Choice | None = None
        self.sync()

    @property
    def labels(self) -> list[str]:
        return self.project.labels

    def sync(self) -> None:
        """Take in answers appended since the last look (by this process or another) and refit."""
        self.project.log.refresh()
        if len(self.project.log.answers) == self.seen_answers:
            return
        self.seen_answers = len(self.project.log.answers)
        rows, labels, audit = self.project.labelled_rows()
        self.rows, self.label_rows, self.audit = rows, labels, audit
        self.loop.fit(rows, labels, audit)
        taken = np.zeros(len(self.project.ids), bool)
        taken[rows] = True
        skipped = [self.project.row[i] for i in self.project.log.skipped() if i in self.project.row]
        taken[skipped] = True
        self.taken = taken
        self.counts = np.bincount(np.array(labels, dtype=int), minlength=len(self.labels))
        self.answered = len(self.project.log.standing())
        self._current = None

    def recent(self) -> list[int]:
        return [r for r, a in zip(self.rows, self.audit) if not a][-self.loop.config.recent:]

    def current(self) -> Item | None:
        """The item to show now (the same one until an answer changes the state); None when all are answered."""
        self.sync()
        if self._current is None:
            self._current = self.loop.next(self.taken, self.counts, self.answered, self.recent())
        return None if self._current is None else self.item(self._current)

    def item(self, choice: Choice) -> Item:
        p = self.project
        return Item(p.ids[choice.row], p.texts[choice.row], p.hashes[choice.row], choice.how,
                    self.labels[choice.suggested], round(choice.confidence, 4), self.loop.version)

    def answer(self, id_: str, hash_: str, label: str | None, how: str | None = None) -> Answer:
        """Label (or, with `label` None, skip) the item `id_` whose text had fingerprint `hash_` when shown."""
        self.sync()
        if id_ not in self.project.row:
            raise SlmtuneError(f"unknown id {id_!r}")
        row = self.project.row[id_]
        if hash_ != self.project.hashes[row]:
            raise Stale(f"the text of {id_!r} changed since it was shown; reload")
        if label is not None and label not in self.labels:
            raise SlmtuneError(f"unknown label {label!r} (labels: {', '.join(self.labels)})")
        if self.taken[row]:
            raise Stale(f"{id_!r} was answered meanwhile (another tab or process); nothing was changed")
        current = self._current if self._current is not None and self._current.row == row else None
        choice = current or self.loop.choice(row, how or "chosen")
        answer = Answer(id=id_, kind="label" if label is not None else "skip", hash=hash_, label=label,
                        how=how or choice.how, model=self.loop.version, suggested=self.labels[choice.suggested])
        self.project.log.append([answer])
        self.sync()
        return answer

    def undo(self) -> Answer | None:
        """Take back the latest answer still standing; returns it (its item is shown again next)."""
        self.sync()
        standing = self.project.log.standing()
        if not standing:
            return None
        last = standing[-1]
        self.project.log.append([Answer(id=last.id, kind="undo", hash=last.hash)])
        self.sync()
        row = self.project.row.get(last.id)
        if row is not None and not self.taken[row]:
            how = last.how if last.how in ("audit", "cold-start", "uncertain") else "undo"
            self._current = self.loop.choice(row, how)
        return last

    def status(self, with_stability: bool = True) -> dict:
        """Labels per class, the audit estimate, the stopping signal."""
        self.sync()
        counts = {name: int(c) for name, c in zip(self.labels, self.counts)}
        estimate = audit_estimate(self.loop, self.rows, self.label_rows, self.audit)
        points = stability(Loop(self.loop.x, self.loop.prompts, self.loop.audit_share, self.loop.seed,
                                self.loop.config), self.rows, self.label_rows, self.audit) if with_stability else []
        return {"pool": len(self.project.ids), "labelled": len(self.rows), "audit_items": int(sum(self.audit)),
                "skipped": int(self.taken.sum()) - len(self.rows), "per_class": counts, "audit": estimate,
                "stability": points[-3:], "stop": bool(points and points[-1]["stop"]),
                "model_version": self.loop.version, "time": time.time()}


def status_lines(status: dict) -> list[str]:
    """The status as a person reads it."""
    lines = [f"{status['labelled']:,} labelled of {status['pool']:,} texts ({status['audit_items']} audit items, "
             f"{status['skipped']} skipped)",
             "per class: " + ", ".join(f"{k} {v}" for k, v in status["per_class"].items())]
    audit = status["audit"]
    if audit["n"]:
        lines.append(f"estimated accuracy on the pool: {audit['accuracy']:.1%} (95% CI {audit['low']:.1%}-"
                     f"{audit['high']:.1%}, from {audit['n']} audit items the model never trained on)")
    else:
        lines.append("estimated accuracy: not yet (no audit items labelled)")
    points = status["stability"]
    if status["stop"]:
        lines.append(f"stopping signal: UP -- successive models agree (kappa {points[-1]['kappa']:.3f}); more labels "
                     "are unlikely to change the model much (advice only)")
    elif points:
        lines.append(f"stopping signal: not yet (latest kappa between successive models {points[-1]['kappa']:.3f})")
    else:
        lines.append("stopping signal: not yet (too few labels)")
    return lines
