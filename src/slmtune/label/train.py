"""`slmtune label train`: a normal run folder from a project's labels. The labels the loop chose train it; the
audit items, drawn at random from the pool and never trained on, are its test split, so the run's test score
estimates its accuracy on the pool without bias (with fewer than `MIN_AUDIT` of them, 20% of the labels are
held out instead, as for any dataset file)."""

from __future__ import annotations

import csv
from pathlib import Path

from slmtune.errors import SlmtuneError
from slmtune.label.project import Project

MIN_AUDIT = 30


def write_training_files(project: Project) -> tuple[Path, Path | None, dict[str, int]]:
    """PROJECT/training/train.csv (and audit.csv when there are enough audit items); checks every class has labels."""
    rows, labels, audit = project.labelled_rows()
    use_audit = sum(audit) >= MIN_AUDIT
    train = [(r, y) for r, y, a in zip(rows, labels, audit) if not (a and use_audit)]
    per_class = {name: 0 for name in project.labels}
    for _, y in train:
        per_class[project.labels[y]] += 1
    empty = [name for name, n in per_class.items() if n == 0]
    if empty:
        raise SlmtuneError(f"class(es) {', '.join(empty)} have no labels to train on; label some first "
                           f"(labels per class: {', '.join(f'{k} {v}' for k, v in per_class.items())})")
    folder = project.folder / "training"
    folder.mkdir(exist_ok=True)

    def write(path: Path, pairs) -> Path:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text", "label"])
            writer.writerows((project.ids[r], project.texts[r], project.labels[y]) for r, y in pairs)
        tmp.replace(path)
        return path

    train_file = write(folder / "train.csv", train)
    audit_file = write(folder / "audit.csv", [(r, y) for r, y, a in zip(rows, labels, audit) if a]) if use_audit \
        else None
    return train_file, audit_file, per_class


def data_overrides(project: Project) -> tuple[list[str], str]:
    """`key=value` data settings of a run on the project's labels, and a line that says what it trains on."""
    train_file, audit_file, per_class = write_training_files(project)
    overrides = [f"data.dataset={train_file}", "data.text_column=text", "data.label_column=label",
                 f"model.name={project.config.model}"]
    if audit_file is not None:
        overrides.append(f"data.test_file={audit_file}")
        test = f"tested on the {sum(1 for _ in open(audit_file)) - 1} audit items"
    else:
        test = f"fewer than {MIN_AUDIT} audit items, so 20% of the labels are held out for testing"
    counts = ", ".join(f"{k} {v}" for k, v in per_class.items())
    return overrides, f"{sum(per_class.values())} labels ({counts}); {test}"
