"""The labelling loop: the append-only labels file (truncated lines, undo), the loop's choices (cold start aimed
at classes and spread over clusters, no near-duplicates, audit items, a stopping signal), export / import with
every bad input refused whole, status, training a run from the labels, and the simulation against random."""

import json

import numpy as np
import pytest

from conftest import synthetic_rows, tiny_overrides, write_csv
from slmtune.cli import main
from slmtune.label.log import Answer, LabelLog, text_hash
from slmtune.label.loop import Loop, LoopConfig, kappa, stability

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def test_the_labels_file_keeps_a_truncated_line_and_appends_after_it(tmp_path, capsys):
    path = tmp_path / "labels.jsonl"
    log = LabelLog(path)
    log.append([Answer(id="1", kind="label", hash="h1", label="A"), Answer(id="2", kind="label", hash="h2", label="B")])
    with open(path, "ab") as f:
        f.write(b'{"id": "3", "kind": "lab')  # a writer killed mid-line
    before = path.read_bytes()
    reread = LabelLog(path)
    assert "incomplete last line" in capsys.readouterr().err
    assert [a.id for a in reread.answers] == ["1", "2"]
    reread.append([Answer(id="4", kind="label", hash="h4", label="A")])
    assert path.read_bytes().startswith(before)  # never rewritten away
    assert list(LabelLog(path).labels()) == ["1", "2", "4"]


def test_undo_takes_back_the_latest_answer_and_a_new_label_replaces_an_old_one(tmp_path):
    log = LabelLog(tmp_path / "labels.jsonl")
    log.append([Answer(id="1", kind="label", label="A"), Answer(id="2", kind="skip"),
                Answer(id="3", kind="label", label="B")])
    log.append([Answer(id="3", kind="undo")])
    assert list(log.labels()) == ["1"] and log.skipped() == {"2"}
    log.append([Answer(id="", kind="undo"), Answer(id="1", kind="label", label="B")])
    assert {k: a.label for k, a in log.labels().items()} == {"1": "B"} and log.skipped() == set()


def _blobs(per_class: int = 60, classes: int = 4, dim: int = 16, seed: int = 0):
    """Unit vectors around one centre per class, and the centres as the label prompts."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    x = np.concatenate([c + 0.9 * rng.normal(size=(per_class, dim)) for c in centres])
    y = np.repeat(np.arange(classes), per_class)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, y, centres / np.linalg.norm(centres, axis=1, keepdims=True)


def test_cold_start_aims_at_the_classes_and_spreads_over_clusters():
    x, y, prompts = _blobs()
    loop = Loop(x, prompts, audit_share=0.0)
    loop.fit([], [])
    taken, counts, rows = np.zeros(len(x), bool), np.zeros(4, int), []
    for answered in range(8):
        choice = loop.next(taken, counts, answered, rows)
        assert choice.how == "cold-start"
        taken[choice.row] = True
        counts[y[choice.row]] += 1
        rows.append(choice.row)
    assert counts.tolist() == [2, 2, 2, 2]  # zero-shot scores found every class at once
    assert len(set(loop.clusters()[rows])) == 8  # no two from one cluster


def test_no_near_duplicate_follows_a_labelled_text_and_batches_hold_none():
    x, y, prompts = _blobs()
    x = np.concatenate([x, x[:40]])  # every one of the first 40 texts twice
    y = np.concatenate([y, y[:40]])
    loop = Loop(x, prompts, audit_share=0.0, config=LoopConfig(cold_start_labels=0))
    taken, counts, rows = np.zeros(len(x), bool), np.zeros(4, int), []
    for answered in range(30):
        loop.fit(rows, y[rows].tolist())
        choice = loop.next(taken, counts, answered, rows)
        assert choice.how == "uncertain"
        assert not rows or (x[rows] @ x[choice.row]).max() < 0.95, "a near-duplicate of a labelled text came next"
        taken[choice.row] = True
        counts[y[choice.row]] += 1
        rows.append(choice.row)
    batch = loop.batch(taken, counts, 20, 30)
    picked = np.array([c.row for c in batch])
    sims = x[picked] @ x[picked].T - 2 * np.eye(len(picked))
    assert len(batch) == 20 and len(set(picked)) == 20 and sims.max() < 0.95
    assert not taken[picked].any()


def test_audit_items_come_at_their_share_and_are_held_out_of_the_probe():
    x, y, prompts = _blobs()
    loop = Loop(x, prompts, audit_share=0.2, seed=3)
    turns = [loop.is_audit_turn(i) for i in range(2000)]
    assert 0.17 < np.mean(turns) < 0.23 and turns == [Loop(x, prompts, 0.2, 3).is_audit_turn(i) for i in range(2000)]
    rows = list(range(0, 240, 3))
    loop.fit(rows, y[rows].tolist(), [True] * len(rows))
    assert loop.version == 0  # audit labels never train the probe


def test_kappa_and_the_stopping_signal():
    assert kappa(np.array([0, 1, 2, 1]), np.array([0, 1, 2, 1])) == 1.0
    assert kappa(np.array([2, 2, 2]), np.array([2, 2, 2])) == 1.0  # one class in both: agreement, not nan
    assert kappa(np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0])) < 0
    x, y, prompts = _blobs(per_class=100)
    order = np.random.default_rng(0).permutation(len(x)).tolist()
    points = stability(Loop(x, prompts, config=LoopConfig(stop_every=20, stop_kappa=0.95)), order, y[order].tolist(),
                       [False] * len(order))
    assert points[0]["labels"] == 40 and any(p["stop"] for p in points)
    first = next(i for i, p in enumerate(points) if p["stop"])
    assert all(p["kappa"] >= 0.95 for p in points[first - 2: first + 1])


def test_simulation_writes_curves_and_its_summary(tmp_path):
    from slmtune.label.simulate import SimulateConfig, simulate

    x, y, prompts = _blobs(per_class=80)
    xt, yt, _ = _blobs(per_class=30, seed=0)
    summary = simulate(x, y, xt, yt, prompts, SimulateConfig(budget=60, seeds=2, step=10, audit_share=0.2),
                       out_dir=tmp_path, say=lambda line: None)
    assert summary["full_data_accuracy"] > 0.8
    assert set(summary["labels_to_target"]) == {"loop", "random"} and len(summary["stops"]) == 2
    assert 0 < summary["answer_seconds_p95"] < 5
    lines = (tmp_path / "curve.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * 6 and lines[0].startswith("strategy,seed,labels,test_accuracy")


# -- the project on the command line --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    rows = synthetic_rows(15, seed=5)
    folder = tmp_path_factory.mktemp("pool")
    path = write_csv(folder / "pool.csv", [(f"r{i}", t, label) for i, (t, label) in enumerate(rows)],
                     header=("key", "body", "gold"))
    return path, {f"r{i}": label for i, (_, label) in enumerate(rows)}


def _init(tmp_path, pool, tiny_models, *extra) -> str:
    project = str(tmp_path / "project")
    assert main(["label", "init", project, "--data", str(pool[0]), "--text-column", "body", "--id-column", "key",
                 "--labels", ",".join(LABELS), "--model", tiny_models["bert"], *extra]) == 0
    return project


def _fill(batch, gold, path, **changes):
    import csv

    with open(batch, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["label"] = gold[row["id"]]
    for value in changes.values():
        value(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def test_export_import_status_and_train(tmp_path, pool, tiny_models, synthetic_files, capsys):
    project = _init(tmp_path, pool, tiny_models, "--audit-share", "0.25")
    batch = tmp_path / "batch.csv"
    assert main(["label", "export", project, "-n", "40", "-o", str(batch)]) == 0
    filled = _fill(batch, pool[1], tmp_path / "filled.csv")
    assert main(["label", "import", project, filled]) == 0
    assert "imported 40 labels" in capsys.readouterr().out
    answers = [json.loads(line) for line in open(f"{project}/labels.jsonl")]
    assert len(answers) == 40 and {a["how"] for a in answers} <= {"audit", "cold-start", "uncertain"}
    assert 5 <= sum(a["how"] == "audit" for a in answers) <= 18
    assert main(["label", "import", project, filled]) == 0  # the same file again changes nothing
    assert "imported 0 labels (40 already given" in capsys.readouterr().out
    assert len(open(f"{project}/labels.jsonl").readlines()) == 40
    assert main(["label", "status", project, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["labelled"] == 40 and sum(status["per_class"].values()) == 40
    assert status["audit"]["n"] == sum(a["how"] == "audit" for a in answers) and 0 <= status["audit"]["low"] <= 1
    run = tmp_path / "run"
    values = tiny_overrides(tiny_models["bert"], synthetic_files)
    overrides = [f"train.{k}={v}" for k, v in values["train"].items()] + ["model.head_init=random",
                                                                         "data.val_size=4"]
    assert main(["label", "train", project, "--output-dir", str(run), *overrides]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "success"
    assert main(["predict", str(run), "--text", "goal match team"]) == 0
    assert "label" in capsys.readouterr().out.lower()


@pytest.mark.parametrize("case, message", [
    ("unknown-label", "row 2: unknown label 'Weather' (labels: World, Sports, Business, Sci/Tech)"),
    ("unknown-id", "row 3: unknown id 'nope'"),
    ("changed-text", "row 2: the text of id"),
    ("conflict", "is labelled"),
])
def test_a_bad_import_is_one_line_and_writes_nothing(tmp_path, pool, tiny_models, capsys, case, message):
    project = _init(tmp_path, pool, tiny_models)
    batch = tmp_path / "batch.csv"
    assert main(["label", "export", project, "-n", "6", "-o", str(batch)]) == 0
    change = {"unknown-label": lambda rows: rows[0].update(label="Weather"),
              "unknown-id": lambda rows: rows[1].update(id="nope"),
              "changed-text": lambda rows: rows[0].update(text=rows[0]["text"] + " edited"),
              "conflict": lambda rows: rows.append({**rows[0], "label": next(x for x in LABELS
                                                                             if x != rows[0]["label"])})}[case]
    filled = _fill(batch, pool[1], tmp_path / "filled.csv", change=change)
    capsys.readouterr()
    assert main(["label", "import", project, filled]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert open(f"{project}/labels.jsonl").read() == ""


@pytest.mark.parametrize("args, message", [
    (["--labels", "Only"], "at least two labels"),
    (["--text-column", "missing"], "no text column 'missing'"),
    (["--id-column", "gold"], "repeats row"),
    (["--labels", "A,B,A"], "labels repeat"),
    (["--describe", "missing.yaml"], "descriptions file not found"),
    (["non-empty"], "is not empty"),
])
def test_bad_init_is_one_line(tmp_path, pool, tiny_models, capsys, args, message):
    base = {"--labels": ",".join(LABELS), "--text-column": "body"}
    if args == ["non-empty"]:
        (tmp_path / "p").mkdir()
        (tmp_path / "p" / "notes.txt").write_text("mine")
        args = []
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ["label", "init", str(tmp_path / "p"), "--data", str(pool[0]), "--model", tiny_models["bert"]]
    assert main(argv + [x for kv in base.items() for x in kv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_training_with_a_class_without_labels_is_refused(tmp_path, pool, tiny_models, capsys):
    project = _init(tmp_path, pool, tiny_models, "--audit-share", "0")
    rows = [(i, pool[1][i]) for i in pool[1] if pool[1][i] != "World"][:12]
    from slmtune.label.project import Project

    p = Project(project)
    p.log.append([Answer(id=i, kind="label", hash=p.hashes[p.row[i]], label=label) for i, label in rows])
    assert main(["label", "train", project]) == 2
    assert "World have no labels to train on" in capsys.readouterr().err


def test_a_project_folder_that_is_not_one_is_one_line(tmp_path, capsys):
    assert main(["label", "status", str(tmp_path)]) == 2
    assert "not a labelling project" in capsys.readouterr().err


def test_text_hash_is_stable():
    assert text_hash("a text") == text_hash("a text") != text_hash("a text ")


def test_simulate_on_the_command_line(tmp_path, tiny_models, synthetic_files, capsys):
    out = tmp_path / "sim"
    assert main(["label", "simulate", "--data", synthetic_files["train"], "--test-file", synthetic_files["test"],
                 "--model", tiny_models["bert"], "--budget", "20", "--seeds", "2", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "labels to 95% of the full-data probe" in printed and "time per answer" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pool_rows"] == 160 and summary["budget"] == 20 and len(summary["mean_curve_gap"]) == 2
    assert main(["label", "simulate", "--data", synthetic_files["test"], "--budget", "100000",
                 "--model", tiny_models["bert"]]) == 2
    assert "fewer than the budget" in capsys.readouterr().err


def test_serving_on_a_port_in_use_is_one_line(tmp_path, pool, tiny_models, capsys):
    import socket

    pytest.importorskip("fastapi")
    project = _init(tmp_path, pool, tiny_models)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["label", "serve", project, "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot listen on 127.0.0.1:{port}" in err and len(err.splitlines()) == 1
    from slmtune.label.project import Project

    lock = Project.lock_of(project)
    lock.acquire(timeout=0)  # the refused server let go of the project
    lock.release()
