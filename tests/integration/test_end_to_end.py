"""The CLI end to end on the real packaged MiniLM and a small slice of real AG News."""

import csv
import json

import pytest

from slmtune.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_run(ag_news_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("real") / "run"
    code = main(["train", "--data-dir", str(ag_news_dir), "--output-dir", str(run), "train.epochs=1",
                 "train.batch_size=8", "train.learning_rate=3e-3", "data.train_size=200", "data.val_size=40",
                 "data.test_size=400"])
    assert code == 0
    return run


def test_real_minilm_learns_ag_news(real_run):
    result = json.loads((real_run / "result.json").read_text())
    assert result["status"] == "success"
    assert result["sizes"] == {"train": 200, "validation": 40, "test": 400}
    assert result["metrics"]["test"]["accuracy"] > 0.5  # chance is 0.25
    assert 0 < result["params"]["percent"] < 1  # LoRA trains under 1% of MiniLM
    for name in ("config.yaml", "env.json", "metrics.jsonl", "predictions.csv", "confusion_matrix.png",
                 "training_curves.png", "model/adapter_model.safetensors", "model/adapter_config.json"):
        assert (real_run / name).is_file(), name
    env = json.loads((real_run / "env.json").read_text())
    assert env["packages"]["torch"] and env["torch_threads"] >= 1


def test_predict_evaluate_export_on_the_real_run(real_run, tmp_path, capsys):
    with (real_run / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))[:16]
    source = tmp_path / "new.csv"
    with source.open("w", newline="") as handle:
        csv.writer(handle).writerows([["text"]] + [[r["text"]] for r in rows])
    assert main(["predict", str(real_run), "--input", str(source), "--output", str(tmp_path / "p.csv")]) == 0
    with (tmp_path / "p.csv").open() as handle:
        predicted = list(csv.DictReader(handle))
    assert [p["predicted"] for p in predicted] == [r["predicted"] for r in rows]
    assert list(predicted[0])[:2] == ["text", "predicted"]  # the input's columns first
    assert main(["predict", str(real_run), "--text", "Stocks fell as oil prices rose"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[0] in ("World", "Sports", "Business", "Sci/Tech")

    # torch: the exact engine of the run (the default, auto, may keep a faster engine measured by predict --input)
    assert main(["evaluate", str(real_run), "--backend", "torch"]) == 0
    evaluation = json.loads((real_run / "evaluation-test-torch.json").read_text())
    stored = json.loads((real_run / "result.json").read_text())["metrics"]["test"]
    assert evaluation["accuracy"] == pytest.approx(stored["accuracy"])

    from transformers import pipeline

    assert main(["export", str(real_run), str(tmp_path / "export")]) == 0
    pipe = pipeline("text-classification", model=str(tmp_path / "export"), truncation=True)
    assert [p["label"] for p in pipe([r["text"] for r in rows])] == [r["predicted"] for r in rows]


def test_full_fine_tuning_mean_pools_and_exports_to_a_stock_class(ag_news_dir, tmp_path):
    run = tmp_path / "full"
    assert main(["train", "--method", "full", "--data-dir", str(ag_news_dir), "--output-dir", str(run),
                 "train.epochs=1", "train.batch_size=8", "data.train_size=48", "data.val_size=16",
                 "data.test_size=48", "train.precision=fp32"]) == 0  # fp32, as pipeline() below computes
    result = json.loads((run / "result.json").read_text())
    assert result["params"]["total"] == 22_714_756  # as with the [CLS] head
    assert result["params"]["trainable"] == 22_714_756 - 30_522 * 384  # all but the word embeddings
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 7 and config["slmtune_pooling"] == "mean"  # 6 + the pooling layer

    from transformers import pipeline

    with (run / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert main(["export", str(run), str(tmp_path / "export")]) == 0
    pipe = pipeline("text-classification", model=str(tmp_path / "export"), truncation=True, top_k=None)
    for row, scores in zip(rows, pipe([r["text"] for r in rows])):
        best = max(scores, key=lambda s: s["score"])
        assert best["label"] == row["predicted"]
        assert best["score"] == pytest.approx(float(row[f"p_{row['predicted']}"]), abs=1e-4)
