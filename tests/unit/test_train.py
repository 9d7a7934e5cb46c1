"""train() end to end on tiny random models: run folder, best checkpoint, predict, export, interruption."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import tiny_overrides
from slmtune import runs
from slmtune.config import from_dict
from slmtune.inference import evaluate_run, load_run, predict
from slmtune.train import train

ARTIFACTS = ["config.yaml", "env.json", "metrics.jsonl", "result.json", "predictions.csv", "confusion_matrix.png",
             "training_curves.png", "classification_report.txt", "model"]


@pytest.fixture(scope="module")
def lora_run(tiny_models, synthetic_files, tmp_path_factory):
    cfg = from_dict(tiny_overrides(tiny_models["distilbert"], synthetic_files, **{"train.epochs": 10,
                                                                                  "train.patience": 20}))
    return train(cfg, run_dir=tmp_path_factory.mktemp("runs") / "lora")


@pytest.mark.parametrize("method, kind", [("lora", "bert"), ("full", "distilbert")])
def test_train_writes_a_complete_run_folder(tiny_models, synthetic_files, tmp_path, method, kind):
    cfg = from_dict(tiny_overrides(tiny_models[kind], synthetic_files, **{"model.method": method}))
    result = train(cfg, run_dir=tmp_path / "run")
    for name in ARTIFACTS:
        assert (tmp_path / "run" / name).exists(), name
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not list((tmp_path / "run").glob(".*.tmp"))
    saved = runs.read_result(tmp_path / "run")
    assert saved["status"] == "success"
    test = saved["metrics"]["test"]
    assert set(test) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix"}
    assert set(saved["seconds"]) == {"train", "eval", "total"} and saved["samples_per_second"]["train"] > 0
    assert saved["params"]["trainable"] <= saved["params"]["total"]
    if method == "lora":
        assert (tmp_path / "run" / "model" / "adapter_model.safetensors").is_file()
        assert saved["params"]["percent"] < 50
    else:
        assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
        assert saved["params"]["percent"] == 100
    assert not list((tmp_path / "run" / "model").glob("*.bin"))  # safetensors only
    logged = runs.MetricsLog(tmp_path / "run" / "metrics.jsonl").read()
    losses = [r["loss"] for r in logged if "loss" in r]
    assert losses[-1] < losses[0]  # it learns
    assert result.metrics["test"]["accuracy"] == test["accuracy"]


def test_lora_run_learns_the_synthetic_task(lora_run):
    assert lora_run.metrics["test"]["accuracy"] > 0.6  # chance is 0.25
    lines = (lora_run.run_dir / "predictions.csv").read_text().splitlines()
    assert lines[0].startswith("id,gold,predicted,correct,p_Business") and len(lines) == 61


def test_best_checkpoint_is_the_one_kept(lora_run):
    result = runs.read_result(lora_run.run_dir)
    evals = [r for r in runs.MetricsLog(lora_run.run_dir / "metrics.jsonl").read() if "validation_select" in r]
    best = max(evals, key=lambda r: r["validation_select"])
    assert result["best"]["validation_select"] == pytest.approx(best["validation_select"])
    assert result["metrics"]["validation"]["accuracy"] == pytest.approx(best["validation_accuracy"])


def test_final_test_scores_the_last_model_before_the_best_is_restored(tiny_models, synthetic_files, tmp_path):
    from slmtune.experiments.common import run_identity, run_key

    values = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 2})
    off = from_dict(values)
    values["train"]["final_test"] = True
    result = train(from_dict(values), run_dir=tmp_path / "run")
    final = runs.read_result(tmp_path / "run")["metrics"]["test_final"]
    assert final == result.metrics["test_final"]
    assert 0 <= final["accuracy"] <= 1 and 0 <= final["macro_f1"] <= 1
    lines = runs.MetricsLog(tmp_path / "run" / "metrics.jsonl").read()
    assert final["step"] == max(r.get("step", 0) for r in lines)  # the last training step
    assert "final_test" not in run_identity(off)["train"]  # off: earlier runs keep their keys
    assert run_identity(from_dict(values))["train"]["final_test"] is True and run_key(off) != run_key(from_dict(values))


def test_predict_and_evaluate_from_the_run_folder(lora_run):
    import csv

    with (lora_run.run_dir / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))[:12]
    out = predict(lora_run.run_dir, [r["text"] for r in rows])
    assert [p["label"] for p in out] == [r["predicted"] for r in rows]  # the saved model is the evaluated one
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in out)
    again = evaluate_run(lora_run.run_dir, "test")
    assert again["accuracy"] == pytest.approx(lora_run.metrics["test"]["accuracy"])


def test_export_loads_in_plain_pipeline_and_agrees(lora_run, tmp_path):
    from transformers import pipeline

    from slmtune.export import export_run

    out = export_run(lora_run.run_dir, tmp_path / "export")
    texts = ["stock market shares profit bank", "software internet computer chip", "president election war"]
    pipe = pipeline("text-classification", model=str(out), top_k=None)
    ours = predict(lora_run.run_dir, texts)
    for mine, theirs in zip(ours, pipe(texts)):
        scores = {d["label"]: d["score"] for d in theirs}
        assert max(scores, key=scores.get) == mine["label"]
        for label, p in mine["probabilities"].items():
            assert scores[label] == pytest.approx(p, abs=1e-5)


def test_onnx_backends_report_accuracy(lora_run):
    pytest.importorskip("onnxruntime")
    torch_acc = lora_run.metrics["test"]["accuracy"]
    fp32 = evaluate_run(lora_run.run_dir, "test", backend="onnx")
    assert fp32["accuracy"] == pytest.approx(torch_acc, abs=0.02)
    int8 = evaluate_run(lora_run.run_dir, "test", backend="onnx-int8")
    assert int8["backend"] == "onnx-int8" and 0 <= int8["accuracy"] <= 1
    assert (lora_run.run_dir / "onnx" / "model.int8.onnx").is_file()


def test_interrupt_leaves_status_interrupted(tiny_models, synthetic_files, tmp_path, monkeypatch):
    from transformers import Trainer

    def boom(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", boom)
    cfg = from_dict(tiny_overrides(tiny_models["bert"], synthetic_files))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=tmp_path / "run")
    assert runs.read_result(tmp_path / "run")["status"] == "interrupted"
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_sigterm_during_training_marks_interrupted(tiny_models, synthetic_files, tmp_path):
    cfg = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 200, "data.train_size": 140})
    config = tmp_path / "c.yaml"
    import yaml

    config.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "slmtune.cli", "train", "--config", str(config),
                             "--output-dir", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    assert (run / "metrics.jsonl").exists(), "training never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err.decode()
    assert json.loads((run / "result.json").read_text())["status"] == "interrupted"
    assert not list(run.glob(".*.tmp"))


def test_load_run_refuses_unfinished(tmp_path):
    from slmtune.errors import SlmtuneError

    (tmp_path / "config.yaml").write_text("name: x\n")
    runs.write_json(tmp_path / "result.json", {"status": "interrupted"})
    with pytest.raises(SlmtuneError, match="did not finish"):
        load_run(tmp_path)
    (tmp_path / "other").mkdir()
    with pytest.raises(SlmtuneError, match="not a slmtune run folder"):
        load_run(tmp_path / "other")
    with pytest.raises(SlmtuneError, match="run folder not found"):
        load_run(tmp_path / "missing")


@pytest.mark.parametrize("cuda, bf16, device, expected", [
    (False, False, "auto", {"use_cpu": True}),
    (True, True, "auto", {"bf16": True}),
    (True, False, "auto", {"fp16": True}),
    (True, True, "cpu", {"use_cpu": True}),
])
def test_device_picks_gpu_precision_without_a_flag(monkeypatch, cuda, bf16, device, expected):
    import torch

    from slmtune.train import _device_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    assert _device_args(device) == expected


def test_cuda_requested_without_gpu_is_a_clear_error(monkeypatch):
    import torch

    from slmtune.errors import SlmtuneError
    from slmtune.train import _device_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SlmtuneError, match="no CUDA device"):
        _device_args("cuda")


def test_report_to_passes_through(tmp_path):
    from slmtune.config import load_config
    from slmtune.train import _training_args

    args = _training_args(load_config(None, ["train.report_to=tensorboard", "train.evals_per_epoch=2"]),
                          tmp_path, steps_per_epoch=10)
    assert args.report_to == ["tensorboard"] and args.eval_steps == 5
    assert _training_args(load_config(None, []), tmp_path, 10).report_to == []
