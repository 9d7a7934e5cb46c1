"""Multi-label data end to end: label sets read from CSV / JSONL / the Hub, thresholds tuned on validation,
set metrics, a tiny model trained with BCE, predict, evaluate, export and pipeline()."""

import json
import random

import numpy as np
import pytest

from conftest import FILLER, VOCAB, tiny_overrides, write_csv
from slmtune import runs
from slmtune.config import DataConfig, from_dict
from slmtune.data import load_splits, load_table
from slmtune.errors import SlmtuneError
from slmtune.multilabel import (
    decide,
    label_sets,
    multi_hot,
    multilabel_metrics,
    pos_weights,
    thresholds_of,
    tune_thresholds,
)

TOPICS = list(VOCAB)


def multilabel_rows(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """Texts holding the words of one or two topics, labelled with exactly those topics."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = sorted(rng.sample(TOPICS, rng.choice([1, 1, 2])))
        tokens = [w for label in labels for w in rng.choices(VOCAB[label], k=rng.randint(3, 5))]
        tokens += rng.choices(FILLER, k=rng.randint(1, 3))
        rng.shuffle(tokens)
        rows.append((" ".join(tokens), labels))
    return rows


@pytest.fixture(scope="module")
def multilabel_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multilabel")
    train = write_csv(folder / "train.csv", [(t, "|".join(ls)) for t, ls in multilabel_rows(240, seed=1)])
    test = folder / "test.jsonl"
    test.write_text("".join(json.dumps({"text": t, "label": ls}) + "\n" for t, ls in multilabel_rows(80, seed=2)))
    return {"train": str(train), "test": str(test)}


def test_label_sets_from_text_cells_and_json_lists(tmp_path):
    csv_path = write_csv(tmp_path / "t.csv", [("a b", "x, y"), ("c d", "y"), ("e f", ""), ("g h", "z,x")])
    data = load_table(csv_path, separator=",")
    assert data.multi_label and data.label_names == ["x", "y", "z"]
    assert data.labels == [[0, 1], [1], [], [0, 2]]  # spaces stripped; an empty cell is a row without labels
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "a", "label": ["y", "w"]}\n{"text": "b", "label": []}\n')
    with pytest.raises(SlmtuneError, match="label.s. w never occur in the training rows"):
        load_table(jsonl, label_names=data.label_names, separator=",")
    numbers = load_table(write_csv(tmp_path / "n.csv", [("a", "10|2"), ("b", "2")]), separator="|")
    assert numbers.label_names == ["2", "10"] and numbers.labels == [[0, 1], [0]]  # integers sorted as numbers
    with pytest.raises(SlmtuneError, match="separator ',' splits no label cell"):  # the file uses |
        load_table(write_csv(tmp_path / "p.csv", [("a", "x|y"), ("b", "y")]), separator=",")
    with pytest.raises(SlmtuneError, match="no labels in any row"):
        load_table(write_csv(tmp_path / "e.csv", [("a", ""), ("b", "")]), separator=",")


def test_splits_keep_rare_labels_and_refuse_a_mismatch(multilabel_files, tmp_path):
    cfg = DataConfig(dataset=multilabel_files["train"], test_file=multilabel_files["test"], multi_label=True,
                     label_separator="|")
    splits = load_splits(cfg, seed=3)
    assert splits.train.multi_label and splits.test.multi_label and splits.label_names == sorted(TOPICS)
    assert len(splits.validation) == 24 and len(splits.train) == 216 and len(splits.test) == 80
    assert all(ls for ls in splits.validation.labels)
    counts = multi_hot(splits.validation.labels, 4).sum(axis=0)
    assert counts.min() >= 3  # stratified on each row's rarest label: every label reaches validation
    with pytest.raises(SlmtuneError, match="lists of labels; set data.multi_label=true"):
        load_splits(DataConfig(dataset=multilabel_files["test"]), seed=0)  # JSON lists read as single labels
    with pytest.raises(SlmtuneError, match="shots_per_class needs single-label data"):
        DataConfig(dataset=multilabel_files["train"], multi_label=True, shots_per_class=4)


def test_hub_sequence_of_class_labels(monkeypatch):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "labels": datasets.Sequence(datasets.ClassLabel(names=sorted(TOPICS)))})
    rows = multilabel_rows(60)
    ids = [[sorted(TOPICS).index(label) for label in ls] for _, ls in rows]
    loaded = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"text": [t for t, _ in rows], "labels": ids}, features=features)})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None: loaded)
    splits = load_splits(DataConfig(dataset="someone/tags", label_column="labels", multi_label=True), seed=0)
    assert splits.label_names == sorted(TOPICS) and splits.train.multi_label
    everything = splits.train.labels + splits.validation.labels + splits.test.labels
    assert sorted(map(tuple, everything)) == sorted(map(tuple, ids))
    with pytest.raises(SlmtuneError, match="data.multi_label=true"):
        load_splits(DataConfig(dataset="someone/tags", label_column="labels"), seed=0)


def test_thresholds_tuned_on_validation():
    rng = np.random.default_rng(0)
    gold = (rng.random((400, 3)) < 0.3).astype(int)
    # label 0 and 1 score high when on; label 2's scores are all shifted down, so it needs a low threshold
    scores = np.clip(gold * 0.5 + rng.random((400, 3)) * 0.45, 0, 1)
    scores[:, 2] *= 0.4
    shared = tune_thresholds(scores, gold)
    assert shared["per_label"] is None
    assert shared["validation_micro_f1"]["tuned"] >= shared["validation_micro_f1"]["at_0.5"]
    per_label = tune_thresholds(scores, gold, per_label=True)
    assert per_label["per_label"][2] < 0.4 < per_label["per_label"][0]
    assert per_label["validation_micro_f1"]["tuned"] == 1.0 > shared["validation_micro_f1"]["tuned"]
    assert thresholds_of(shared, 3).tolist() == [shared["threshold"]] * 3
    assert thresholds_of(None, 2).tolist() == [0.5, 0.5]


def test_set_metrics():
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    predicted = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 0]])
    m = multilabel_metrics(gold, predicted, ["a", "b", "c"])
    assert m["subset_accuracy"] == m["accuracy"] == 0.5
    assert m["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 2))  # 4 true positives, 1 false positive, 1 missed
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["macro_f1"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["co_occurrence"] == [[2, 1, 1], [1, 2, 0], [1, 0, 1]]
    assert decide(np.array([[0.2, 0.7]]), [0.1, 0.8]).tolist() == [[1, 0]]
    assert label_sets(np.array([[0.2, 0.7], [0.05, 0.9]]), [0.1, 0.8], ["a", "b"]) == [["a"], ["b"]]
    assert pos_weights([[0], [0], [0, 1], []], 2).tolist() == [1.0, 3.0]  # negatives over positives, at least 1


@pytest.mark.parametrize("method", ["lora", "full"])
def test_tiny_model_learns_label_sets_predicts_and_exports(tiny_models, multilabel_files, tmp_path, method):
    from transformers import pipeline

    from slmtune import predict, train
    from slmtune.serve.export import export_run
    from slmtune.serve.inference import evaluate_run, predict_file

    # the words say the labels: a tiny random model learns them (measured: full 0.97, LoRA 0.76 micro-F1;
    # predicting every label for every row would score 0.5)
    epochs, lr, floor = {"full": (6, 1e-2, 0.85), "lora": (10, 5e-2, 0.6)}[method]
    values = tiny_overrides(tiny_models["bert"], multilabel_files, **{
        "model.method": method, "train.epochs": epochs, "train.learning_rate": lr, "train.precision": "fp32",
        "data.multi_label": True, "data.label_separator": "|"})
    values["data"].update(train_size=None, val_size=None)
    result = train(from_dict(values), run_dir=tmp_path / "run")
    test = result.metrics["test"]
    assert test["micro_f1"] > floor and test["n"] == 80, test
    assert 0 < test["subset_accuracy"] <= test["micro_f1"] + 0.2
    saved = json.loads((result.run_dir / "result.json").read_text())
    assert saved["data"]["selection_metric"] == "micro_f1" and saved["data"]["multi_label"]
    assert 0.05 <= saved["thresholds"]["threshold"] <= 0.95 and "micro_f1" in saved["baseline"]
    assert (result.run_dir / "label_cooccurrence.png").stat().st_size > 5000
    import pandas as pd

    written = pd.read_csv(result.run_dir / "predictions.csv", keep_default_na=False)
    assert list(written.columns[:5]) == ["id", "gold", "predicted", "exact", "p_Business"]
    assert written["exact"].tolist() == (written["gold"] == written["predicted"]).astype(int).tolist()
    assert written["exact"].mean() == pytest.approx(test["subset_accuracy"])
    assert (result.run_dir / "training_curves.png").stat().st_size > 5000
    texts = ["stocks fell as the team won the match", "new chip doubles network speed"]
    ours = predict(result.run_dir, texts, backend="torch-fp32")
    per_label = dict(zip(saved["label_names"], thresholds_of(saved["thresholds"], 4)))
    assert saved["thresholds"]["per_label"] is not None  # the default: per label where it helps on validation
    for p in ours:
        assert p["labels"] == [n for n, v in p["probabilities"].items() if v >= per_label[n]]
        assert p["label"] == "|".join(p["labels"])
    assert "Sci/Tech" in ours[1]["labels"]
    again = evaluate_run(result.run_dir, "test", backend="torch-fp32")
    assert again["micro_f1"] == pytest.approx(test["micro_f1"], abs=1e-6)
    out = export_run(result.run_dir, tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["problem_type"] == "multi_label_classification"
    assert json.loads((out / "slmtune.json").read_text())["thresholds"]["World"] == per_label["World"]
    assert "micro-F1" in (out / "README.md").read_text()
    pipe = pipeline("text-classification", model=str(out), top_k=None)
    for mine, theirs in zip(ours, pipe(texts)):  # sigmoid scores, not a softmax: they need not sum to 1
        theirs = {row["label"]: row["score"] for row in theirs}
        assert all(abs(theirs[name] - v) < 1e-4 for name, v in mine["probabilities"].items())
    from slmtune.report.html import build_report

    page = build_report(result.run_dir).read_text()
    assert "test micro-F1" in page and "test subset accuracy" in page and "label cooccurrence" in page
    path, n = predict_file(result.run_dir, multilabel_files["test"], tmp_path / "p.csv", backend="torch-fp32",
                           progress=False)
    frame = pd.read_csv(path, keep_default_na=False)
    assert n == 80 and set(frame["predicted"].str.split("|").explode()) <= set(TOPICS) | {""}


def test_backends_are_compared_on_label_sets():
    from types import SimpleNamespace

    from slmtune.serve.int8 import decisions as _decisions

    run = SimpleNamespace(multi_label=True, thresholds=np.array([0.5, 0.5, 0.9]))
    logits = np.array([[3.0, -3.0, 2.0], [-3.0, -3.0, -3.0]])  # sigmoid(2) = 0.88: the third label is off
    nudged = logits + np.array([[0.0, 0.0, 0.3], [0.0, 0.0, 0.0]])  # 0.91: on; the argmax does not move
    a, b = _decisions(run, logits), _decisions(run, nudged)
    assert a.tolist() == [[1, 0, 0], [0, 0, 0]] and (a != b).any(axis=1).tolist() == [True, False]
    single = SimpleNamespace(multi_label=False)
    assert (_decisions(single, logits) == _decisions(single, nudged)).all()


def test_cli_multi_label_flag_and_class_weights(tiny_models, multilabel_files, tmp_path, capsys):
    from slmtune.cli import main

    code = main(["train", "--model", tiny_models["bert"], "--dataset", multilabel_files["train"],
                 "--test-file", multilabel_files["test"], "--multi-label", "--label-separator", "|",
                 "--output-dir", str(tmp_path / "cli"), "train.epochs=2", "train.class_weight=balanced",
                 "train.per_label_thresholds=false", "train.precision=fp32", "train.learning_rate=0.03"])
    out = capsys.readouterr().out
    assert code == 0 and "test micro-F1" in out and "TF-IDF baseline micro / macro-F1" in out
    saved = json.loads((tmp_path / "cli" / "result.json").read_text())
    assert saved["data"]["class_weight"] == "balanced" and saved["thresholds"]["per_label"] is None


def test_studies_compare_multi_label_runs_on_micro_f1(tiny_models, multilabel_files, tmp_path):
    """Seeds (with a paired comparison and McNemar on exact label sets), a sweep and a scaling curve on
    multi-label data, all on micro-F1."""
    import yaml

    from slmtune.experiments.scaling import ScalingConfig, run_scaling
    from slmtune.experiments.seeds import SeedsConfig, report, run_seeds
    from slmtune.experiments.sweep import SweepConfig, run_sweep

    run = tiny_overrides(tiny_models["bert"], multilabel_files, **{
        "model.method": "full", "train.epochs": 2, "train.learning_rate": 1e-2, "train.precision": "fp32",
        "train.baseline": False, "data.multi_label": True, "data.label_separator": "|"})
    run["data"].update(train_size=120, val_size=24)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**run, "train": {**run["train"], "learning_rate": 3e-3}}))
    summary = run_seeds(SeedsConfig(name="s", run=run, seeds=[1, 2], compare=str(other)), tmp_path / "s",
                        progress=lambda *_: None)
    assert summary["metric"] == "micro_f1" and "micro_f1" in summary["table"][0]
    micro = summary["per_config"][summary["table"][0]["model"]]["test_micro_f1"]
    assert micro["n"] == 2 and 0 < micro["mean"] <= 1
    comparison = summary["comparison"]
    assert comparison["verdict"] == comparison["test_micro_f1"]["verdict"]
    assert comparison["mcnemar_pooled_test"]["only_a_correct"] + comparison["mcnemar_pooled_test"]["only_b_correct"] \
        <= 2 * 80
    assert "micro-F1" in report(summary)[0]
    sweep = run_sweep(SweepConfig(name="g", run=run, space={"train.learning_rate": [3e-3, 1e-2]}), tmp_path / "g",
                      progress=lambda *_: None)
    rows = json.loads((tmp_path / "g" / "summary.json").read_text())["rows"]
    assert sweep["metric"] == "micro_f1"
    assert sweep["best"]["validation_micro_f1"] == max(r["validation_micro_f1"] for r in rows)
    scaling = run_scaling(ScalingConfig(name="c", run=run, sizes=[40, 80, 160], seeds=[1], min_steps=1),
                          tmp_path / "c", progress=lambda *_: None)
    assert scaling["metric"] == "micro_f1" and set(scaling["per_size"]) == {40, 80, 160}
    from slmtune.experiments.augmentation import AugmentStudyConfig, run_augmentation

    augment = run_augmentation(AugmentStudyConfig(name="a", run=run, ratios=[0.0, 0.5], sizes=[80], seeds=[1, 2],
                                                  operations={"swap": ["swap"]}, steps_matched_control=False),
                               tmp_path / "a", progress=lambda *_: None)
    assert augment["metric"] == "micro_f1" and augment["vs_control"][0]["operations"] == "swap"
    from slmtune.report.html import build_report

    page = build_report(tmp_path).read_text()
    assert "micro-F1 − control" in page
    assert "micro-F1 (mean ± sd)" in page and "validation micro-F1" in page and "predicted micro-F1" in page


@pytest.mark.parametrize("study", ["active", "fewshot", "zeroshot"])
def test_studies_without_a_multi_label_form_say_so(tiny_models, multilabel_files, tmp_path, capsys, study):
    import yaml

    from slmtune.cli import main

    run = tiny_overrides(tiny_models["bert"], multilabel_files, **{"data.multi_label": True,
                                                                   "data.label_separator": "|"})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(run))
    code = main([study, "--recipe", str(recipe), "--study-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "study needs single-label data" in err and "Traceback" not in err


def test_multi_label_head_starts_at_the_label_priors(tiny_models):
    import torch

    from slmtune.models.build import load_classifier
    from slmtune.models.head_init import output_layer, prior_bias

    model = load_classifier(tiny_models["bert"], ["a", "b", "c"], multi_label=True)
    assert model.config.problem_type == "multi_label_classification"
    prior_bias(model, np.array([50, 5, 0]), rows=100)
    bias = output_layer(model).bias
    expected = torch.log(torch.tensor([0.5, 0.05, 1e-4]) / (1 - torch.tensor([0.5, 0.05, 1e-4])))
    assert torch.allclose(bias, expected, atol=1e-5)  # sigmoid(bias) = each label's share (a floor for none)


def test_a_multi_label_blend_weighs_each_label_and_serves_label_sets(tiny_models, multilabel_files, tmp_path):
    import pandas as pd

    from slmtune import predict, train

    values = tiny_overrides(tiny_models["bert"], multilabel_files, **{
        "train.epochs": 2, "train.precision": "fp32", "data.multi_label": True, "data.label_separator": "|",
        "model.blend": "tfidf"})
    values["data"].update(train_size=None, val_size=None)
    result = train(from_dict(values), run_dir=tmp_path / "run")
    weight = result.blend["weight"]
    assert isinstance(weight, list) and len(weight) == len(TOPICS) and all(0 <= w <= 1 for w in weight)
    assert set(result.blend["test_encoder"]) == {"micro_f1", "macro_f1"}
    written = pd.read_csv(result.run_dir / "predictions.csv", keep_default_na=False)
    served = predict(result.run_dir, list(written["text"][:10]), backend="torch-fp32")
    assert [p["label"] for p in served] == list(written["predicted"][:10])  # the blend's label sets, served


def test_tune_on_label_sets_picks_on_micro_f1_and_leaves_a_thresholded_best(tiny_models, multilabel_files, tmp_path):
    from slmtune.config import from_dict
    from slmtune.experiments.tune import TuneConfig, run_tune
    from slmtune.serve.inference import predict

    base = from_dict(tiny_overrides(tiny_models["bert"], multilabel_files, **{
        "data.multi_label": True, "data.label_separator": "|", "data.train_size": None, "data.val_size": 60}))
    summary = run_tune(base, TuneConfig(time="5m", lora_rates=[5e-2], full_rates=[1e-2]), tmp_path / "search")
    assert summary["metric"] == "micro_f1"
    names = {row["candidate"] for row in summary["leaderboard"]}
    assert names == {"tfidf", "lora-bert-lr0.05", "full-bert-lr0.01", "blend"}  # no probe on label sets
    best = runs.read_result(tmp_path / "search" / "best")
    assert best["thresholds"] and best["metrics"]["test"]["micro_f1"] > 0.5
    assert {"micro_f1", "macro_f1"} <= set(summary["test"]["best"]) and "mcnemar" not in summary["test"]
    assert isinstance(predict(tmp_path / "search" / "best", ["a text"])[0]["labels"], list)
