"""Labelling elsewhere: `label export` writes a batch (id, text, suggested, confidence, label) chosen as the
page would choose, `label import` takes the filled-in file back. An import is checked whole before anything is
written: an unknown label, an unknown id, a text that differs from the project's, or one id given two labels
ends it in one line naming the row, and the labels file is left as it was."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from slmtune.errors import SlmtuneError
from slmtune.label.log import Answer, text_hash
from slmtune.label.session import Session


def export_batch(session: Session, n: int, output: str | Path) -> int:
    """Write `n` items to label to `output` (CSV) and record the batch; returns the rows written."""
    if n < 1:
        raise SlmtuneError(f"-n must be at least 1; got {n}")
    output = Path(output)
    if output.suffix.lower() != ".csv":
        raise SlmtuneError(f"export writes CSV: give a file ending in .csv, not {output.name}")
    choices = session.loop.batch(session.taken, session.counts, n, session.answered)
    project = session.project
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "suggested", "confidence", "label"])
        for c in choices:
            writer.writerow([project.ids[c.row], project.texts[c.row], session.labels[c.suggested],
                             f"{c.confidence:.3f}", ""])
    tmp.replace(output)
    record = {"time": time.time(), "file": str(output), "model": session.loop.version,
              "items": {project.ids[c.row]: c.how for c in choices}}
    with open(project.folder / "exports.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
    return len(choices)


def _exported_how(folder: Path) -> dict[str, str]:
    how: dict[str, str] = {}
    path = folder / "exports.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                how.update(json.loads(line).get("items", {}))
            except ValueError:
                continue
    return how


def import_batch(session: Session, path: str | Path) -> dict[str, int]:
    """Take labels from a filled-in export (columns id and label; text, when present, is checked)."""
    from slmtune.data.sources import _read_table

    project = session.project
    frame = _read_table(Path(path))
    missing = [c for c in ("id", "label") if c not in frame.columns]
    if missing:
        raise SlmtuneError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}"
                           " (an export's columns are id, text, suggested, confidence, label)")
    session.sync()
    labelled = project.log.labels()
    exported = _exported_how(project.folder)
    given: dict[str, tuple[str, int]] = {}
    answers: list[Answer] = []
    unchanged = empty = 0
    has_text = "text" in frame.columns
    for number, record in enumerate(frame.to_dict("records"), start=2):
        id_ = str(record["id"]).strip()
        label = "" if record["label"] is None else str(record["label"]).strip()
        if id_ not in project.row:
            raise SlmtuneError(f"{path}: row {number}: unknown id {id_!r} (not in the project's pool)")
        row = project.row[id_]
        if has_text and text_hash(str(record["text"])) != project.hashes[row]:
            raise SlmtuneError(f"{path}: row {number}: the text of id {id_!r} differs from the project's "
                               "(changed since it was exported?)")
        if not label:
            empty += 1
            continue
        if label not in project.labels:
            raise SlmtuneError(f"{path}: row {number}: unknown label {label!r} (labels: {', '.join(project.labels)})")
        if id_ in given and given[id_][0] != label:
            raise SlmtuneError(f"{path}: row {number}: id {id_!r} is labelled {label!r} here and "
                               f"{given[id_][0]!r} at row {given[id_][1]}")
        if id_ in given:
            continue
        given[id_] = (label, number)
        if id_ in labelled and labelled[id_].label == label:
            unchanged += 1
            continue
        how = "import" if id_ in labelled else exported.get(id_, "import")
        suggested = str(record.get("suggested") or "")
        if suggested not in project.labels:  # not from an export: what the model says now
            suggested = project.labels[int(session.loop.probs([row])[0].argmax())]
        answers.append(Answer(id=id_, kind="label", hash=project.hashes[row], label=label, how=how,
                              model=session.loop.version, suggested=suggested))
    project.log.append(answers)
    session.sync()
    return {"labelled": len(answers), "unchanged": unchanged, "empty": empty}
