"""train() end to end on tiny random models: run folder, best checkpoint, predict, export, interruption."""

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import crashed, gated_env, started, synthetic_rows, tiny_overrides, wait_until, write_csv
from slmtune import runs
from slmtune.config import from_dict
from slmtune.serve.inference import evaluate_run, load_run, predict
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
        assert saved["params"]["percent"] == 100  # tiny_overrides trains the word embeddings too
    assert not list((tmp_path / "run" / "model").glob("*.bin"))  # safetensors only
    logged = runs.MetricsLog(tmp_path / "run" / "metrics.jsonl").read()
    losses = [r["loss"] for r in logged if "loss" in r]
    assert losses[-1] < losses[0]  # it learns
    assert result.metrics["test"]["accuracy"] == test["accuracy"]


def test_full_fine_tuning_keeps_the_word_embeddings_as_pretrained_unless_asked(tiny_models, synthetic_files, tmp_path,
                                                                                capsys):
    from safetensors.torch import load_file

    from slmtune.experiments.common import run_key

    values = tiny_overrides(tiny_models["bert"], synthetic_files, **{"model.method": "full", "train.epochs": 1})
    del values["model"]["freeze_word_embeddings"]  # the default: true
    train(from_dict(values), run_dir=tmp_path / "run")
    saved = runs.read_result(tmp_path / "run")
    assert f"({saved['params']['percent']:.2f}%, word embeddings kept as pretrained)" in capsys.readouterr().out
    before = load_file(f"{tiny_models['bert']}/model.safetensors")
    after = load_file(tmp_path / "run" / "model" / "model.safetensors")
    name = next(k for k in after if k.endswith("word_embeddings.weight"))
    assert after[name].equal(before[next(k for k in before if k.endswith("word_embeddings.weight"))])
    position = next(k for k in after if k.endswith("position_embeddings.weight"))
    assert not after[position].equal(before[next(k for k in before if k.endswith("position_embeddings.weight"))])
    assert saved["params"]["trainable"] == saved["params"]["total"] - after[name].numel()
    unfrozen = dict(values, model={**values["model"], "freeze_word_embeddings": False})
    assert run_key(from_dict(values)) != run_key(from_dict(unfrozen))
    lora = {**values, "model": {**values["model"], "method": "lora"}}
    assert run_key(from_dict(lora)) == run_key(from_dict(dict(lora, model={**lora["model"],
                                                                          "freeze_word_embeddings": False})))


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

    from slmtune.serve.export import export_run

    out = export_run(lora_run.run_dir, tmp_path / "export")
    card = (out / "README.md").read_text()
    import yaml

    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pipeline_tag"] == "text-classification" and meta["license"] and meta["base_model"]
    accuracy = meta["model-index"][0]["results"][0]["metrics"][0]
    assert accuracy["value"] == round(lora_run.metrics["test"]["accuracy"], 4)
    low, high = accuracy["args"]["ci95"]
    assert low <= accuracy["value"] <= high and low < high and "pipeline(" in card
    texts = ["stock market shares profit bank", "software internet computer chip", "president election war"]
    pipe = pipeline("text-classification", model=str(out), top_k=None)
    ours = predict(lora_run.run_dir, texts, backend="torch-fp32")  # pipeline() runs fp32 (bf16 differs by ~1e-3)
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
    cfg = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 2})
    config = tmp_path / "c.yaml"
    import yaml

    config.write_text(yaml.safe_dump(cfg))
    run, gate = tmp_path / "run", tmp_path / "gate"
    proc = subprocess.Popen([sys.executable, "-m", "slmtune.cli", "train", "--config", str(config),
                             "--output-dir", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=gated_env(gate))
    wait_until(lambda: started(gate) or proc.poll() is not None, what="the first training step")
    assert started(gate), proc.communicate()[1].decode()[-2000:]  # held at its first training step
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert not crashed(err.decode())
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


@pytest.mark.parametrize("cuda, bf16, cpu_bf16, device, precision, expected, args", [
    (False, False, None, "auto", "auto", "fp32", {"use_cpu": True}),
    (False, False, "avx512_bf16", "auto", "auto", "bf16", {"use_cpu": True, "bf16": True}),
    (False, False, "amx_bf16", "auto", "fp32", "fp32", {"use_cpu": True}),
    (False, False, None, "auto", "bf16", "bf16", {"use_cpu": True, "bf16": True}),  # asked for: emulated
    (True, True, None, "auto", "auto", "bf16", {"bf16": True}),
    (True, False, None, "auto", "auto", "fp16", {"fp16": True}),
    (True, True, None, "auto", "fp32", "fp32", {}),
    (True, True, None, "cpu", "auto", "fp32", {"use_cpu": True}),
])
def test_precision_follows_the_hardware(monkeypatch, cuda, bf16, cpu_bf16, device, precision, expected, args):
    import torch

    from slmtune import precision as precision_module
    from slmtune.trainer import device_args as _device_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(precision_module, "cpu_bf16_support", lambda: cpu_bf16)
    resolved = precision_module.resolve(precision, device)
    assert resolved.name == expected and resolved.reason
    assert _device_args(resolved) == args


def test_an_isa_cap_below_bf16_means_no_native_bf16(monkeypatch):
    import torch

    from slmtune.precision import cpu_bf16_support

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)  # any CI CPU has it
    check = cpu_bf16_support.__wrapped__  # the uncached function: the cap is read from the environment
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    machine = check()
    assert machine is not None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert check() is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert check() == machine


def test_cuda_requested_without_gpu_is_a_clear_error(monkeypatch):
    import torch

    from slmtune.errors import SlmtuneError
    from slmtune.precision import resolve

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SlmtuneError, match="no CUDA device"):
        resolve("auto", "cuda")


def test_bf16_run_records_its_precision_and_matches_fp32_predictions(tiny_models, synthetic_files, tmp_path):
    """bf16 autocast on CPU (emulated where the CPU lacks it): same run folder, precision recorded, weights
    saved in fp32, and predictions that agree with an fp32 pass of the same model on nearly every row."""
    import numpy as np
    import torch

    from slmtune.precision import resolve
    from slmtune.serve.logits import predict_logits

    values = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.precision": "bf16"})
    result = train(from_dict(values), run_dir=tmp_path / "run", keep_model=True)
    saved = runs.read_result(tmp_path / "run")
    assert saved["status"] == "success" and saved["precision"] == "bf16"
    assert json.loads((tmp_path / "run" / "env.json").read_text())["compute"]["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # master weights stay fp32
    texts = [text for text, _ in synthetic_rows(10, seed=5)]
    fp32 = predict_logits(result.model, result.tokenizer, texts)
    bf16 = predict_logits(result.model, result.tokenizer, texts, precision=resolve("bf16", "cpu"))
    assert (fp32.argmax(1) == bf16.argmax(1)).mean() >= 0.9 and np.abs(fp32 - bf16).max() < 0.5


def test_frozen_weights_are_held_in_bf16_while_training_and_restored_exactly():
    import torch

    from slmtune.precision import Precision

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    for p in model[:2].parameters():
        p.requires_grad_(False)
    before = {name: p.data.clone() for name, p in model.named_parameters()}
    with Precision("bf16", "cpu", "test").frozen_weights(model):
        assert {p.dtype for p in model[:2].parameters()} == {torch.bfloat16}
        assert {p.dtype for p in model[2].parameters()} == {torch.float32}  # trained weights stay fp32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(torch.randn(3, 4)).sum().backward()
        assert model[2].weight.grad.dtype == torch.float32
    assert all(torch.equal(p.data, before[name]) and p.dtype == torch.float32 for name, p in model.named_parameters()
               if not p.requires_grad)
    with Precision("fp32", "cpu", "test").frozen_weights(model):
        assert model[0].weight.dtype == torch.float32


def test_inference_runs_the_whole_forward_in_bf16_on_a_cpu_and_restores_the_weights(tiny_models):
    """Precision.inference on a CPU in bf16: every weight held in bf16 and no autocast, so a LayerNorm computes in
    bf16 too (autocast would run it in fp32); the fp32 weights come back bit for bit; an engine's copy made once
    (held_in) gives the same logits with nothing cast per call."""
    import numpy as np
    import torch

    from slmtune.models.build import load_classifier, load_tokenizer
    from slmtune.precision import Precision
    from slmtune.serve.backends import held_in
    from slmtune.serve.logits import predict_logits

    model = load_classifier(tiny_models["bert"], ["a", "b", "c", "d"], pooling="mean").eval()
    tokenizer = load_tokenizer(tiny_models["bert"])
    before = {name: p.data.clone() for name, p in model.named_parameters()}
    bf16, fp32 = Precision("bf16", "cpu", "test"), Precision("fp32", "cpu", "test")
    seen = []
    model.bert.encoder.layer[0].output.LayerNorm.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    batch = tokenizer(["a short text", "and a longer text than that one"], padding=True, return_tensors="pt")
    with bf16.inference(model), torch.inference_mode():
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        model(**batch)
    with bf16.autocast(), torch.inference_mode():
        model(**batch)
    assert seen == [torch.bfloat16, torch.float32]
    assert all(p.dtype == torch.float32 and torch.equal(p.data, before[name]) for name, p in model.named_parameters())

    texts = [text for text, _ in synthetic_rows(12, seed=3)]
    copy = held_in(model, bf16)
    assert copy is not model and {p.dtype for p in copy.parameters()} == {torch.bfloat16}
    assert held_in(model, bf16) is copy  # made once per model: a server asks at every pass
    assert held_in(model, fp32) is model and model.bert.embeddings.word_embeddings.weight.dtype == torch.float32
    held = predict_logits(model, tokenizer, texts, precision=bf16)
    assert np.array_equal(held, predict_logits(copy, tokenizer, texts, precision=bf16))
    full = predict_logits(model, tokenizer, texts, precision=fp32)
    assert (held.argmax(1) == full.argmax(1)).mean() >= 0.9 and np.abs(held - full).max() < 0.5


FAULTS = """
import resource, sys, torch
from slmtune.allocator import keep_freed_memory
kept = keep_freed_memory()
if not kept:  # glibc's starting limit, pinned: its adaptive moves depend on what the process freed before
    import ctypes
    ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)
def step():  # what a forward pass does: activations of a few MiB each, live together, then freed
    parts = [torch.ones(512 * 1024) for _ in range(24)]
    del parts
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_freed_memory_is_kept_for_the_next_step_unless_turned_off():
    """slmtune.allocator: with glibc, memory a step freed is reused by the next instead of being given back and
    page-faulted in again; SLMTUNE_KEEP_FREED_MEMORY=0 leaves glibc as it is. Without the settings the script pins
    glibc's starting 128 KiB limit: left adaptive, glibc sometimes keeps the memory too (512 faults in one CI run),
    depending on what the process allocated before."""
    import os
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc only")
    runs_ = {}
    for setting in ("1", "0"):
        env = {**os.environ, "SLMTUNE_KEEP_FREED_MEMORY": setting}
        out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
        kept, faults = out.stdout.split()
        runs_[setting] = (kept, int(faults))
    assert runs_["1"][0] == "True" and runs_["0"][0] == "False"
    assert runs_["1"][1] < 1000 < runs_["0"][1]  # 48 MiB a step: 3 x 12k pages when given back each time


def test_report_to_passes_through(tmp_path):
    from slmtune.config import load_config
    from slmtune.precision import Precision
    from slmtune.trainer import training_args as _training_args

    fp32 = Precision("fp32", "cpu", "test")
    args = _training_args(load_config(None, ["train.report_to=tensorboard", "train.evals_per_epoch=2"]),
                          tmp_path, steps_per_epoch=10, precision=fp32)
    assert args.report_to == ["tensorboard"] and args.eval_steps == 5
    assert _training_args(load_config(None, []), tmp_path, 10, fp32).report_to == []


def test_predict_file_streams_keeps_columns_and_resumes(lora_run, tmp_path, monkeypatch):
    import csv

    from slmtune.serve import inference

    rows = [(f"id-{i}", text) for i, (text, _) in enumerate(synthetic_rows(8, seed=3))]  # 32 rows
    source = write_csv(tmp_path / "in.csv", rows, header=("id", "text"))
    output, count = inference.predict_file(lora_run.run_dir, source, tmp_path / "all.csv", chunk_rows=5,
                                           progress=False)
    with output.open() as handle:
        whole = list(csv.DictReader(handle))
    assert count == 32 and [r["id"] for r in whole] == [r[0] for r in rows]  # the input's columns, in order
    assert list(whole[0])[:4] == ["id", "text", "predicted", "score"]
    expected = predict(lora_run.run_dir, [r[1] for r in rows])
    assert [r["predicted"] for r in whole] == [p["label"] for p in expected]

    real, calls = inference._probabilities, []

    def dies_on_the_fourth_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "_probabilities", dies_on_the_fourth_chunk)
    with pytest.raises(KeyboardInterrupt):
        inference.predict_file(lora_run.run_dir, source, tmp_path / "p.csv", chunk_rows=5, progress=False)
    assert not (tmp_path / "p.csv").exists()
    assert len((tmp_path / "p.csv.partial").read_text().splitlines()) == 16  # header + 3 chunks, kept
    monkeypatch.setattr(inference, "_probabilities", real)
    done = []
    monkeypatch.setattr(inference, "_probabilities", lambda *a, **k: done.append(len(a[2])) or real(*a, **k))
    inference.predict_file(lora_run.run_dir, source, tmp_path / "p.csv", chunk_rows=5, progress=False)
    assert sum(done) == 17  # only the rows not yet written
    assert (tmp_path / "p.csv").read_text() == output.read_text()
    assert not (tmp_path / "p.csv.partial").exists() and not (tmp_path / "p.csv.partial.json").exists()


def test_output_dir_with_a_run_is_refused_unless_overwrite(tiny_models, synthetic_files, tmp_path):
    from slmtune.errors import SlmtuneError

    cfg = from_dict(tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 1}))
    train(cfg, run_dir=tmp_path / "run")
    (tmp_path / "run" / "onnx").mkdir()  # a stale export of the old model
    with pytest.raises(SlmtuneError, match="already holds a run .status success.*--overwrite"):
        train(cfg, run_dir=tmp_path / "run")
    train(cfg, run_dir=tmp_path / "run", overwrite=True)
    assert not (tmp_path / "run" / "onnx").exists()
    lines = runs.MetricsLog(tmp_path / "run" / "metrics.jsonl").read()
    assert sum(1 for r in lines if r.get("split") == "test") == 1  # one run's metrics, not two
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SlmtuneError, match="holds no slmtune run"):
        train(cfg, run_dir=tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_export_into_a_used_folder_is_refused(lora_run, tmp_path):
    from slmtune.errors import SlmtuneError
    from slmtune.serve.export import export_run

    export_run(lora_run.run_dir, tmp_path / "e")
    with pytest.raises(SlmtuneError, match="already holds an export"):
        export_run(lora_run.run_dir, tmp_path / "e")
    (tmp_path / "e" / "stale.bin").write_text("x")
    export_run(lora_run.run_dir, tmp_path / "e", overwrite=True)
    assert not (tmp_path / "e" / "stale.bin").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    with pytest.raises(SlmtuneError, match="holds no slmtune export"):
        export_run(lora_run.run_dir, tmp_path / "mine", overwrite=True)


def test_auto_backend_is_the_fastest_within_the_budget(lora_run, capsys):
    pytest.importorskip("onnxruntime")
    from slmtune.serve.backends import CHOICE_FILE, choose_backend

    (lora_run.run_dir / CHOICE_FILE).unlink(missing_ok=True)
    choice = choose_backend(lora_run.run_dir, max_change=0.0)
    table = {row["backend"]: row for row in choice["candidates"]}
    assert {"torch-fp32", "onnx", "onnx-int8"} <= set(table) and table["torch-fp32"]["changed"] == 0
    allowed = [row for row in table.values() if row["changed"] == 0]
    assert choice["chosen"] == max(allowed, key=lambda row: row["rows_per_s"])["backend"]
    assert "slmtune: backend" in capsys.readouterr().out
    assert choose_backend(lora_run.run_dir, max_change=0.0) == choice  # kept: measured once per budget and machine
    metrics = evaluate_run(lora_run.run_dir, "test", backend="auto", max_change=0.0)
    assert metrics["backend"] == choice["chosen"]


def test_auto_backend_measures_only_jobs_worth_it(lora_run, monkeypatch):
    from slmtune.serve import backends, kept

    (lora_run.run_dir / backends.CHOICE_FILE).unlink(missing_ok=True)
    measured = []
    monkeypatch.setattr(backends, "choose_backend",
                        lambda run_dir, max_change, job_rows=None: measured.append(max_change)
                        or {"chosen": "torch-fp32"})
    assert backends.engine(lora_run.run_dir, rows=10).name == "torch"  # a few texts: measuring would cost more
    assert measured == []
    assert backends.engine(lora_run.run_dir, rows=backends.AUTO_MIN_ROWS).name == "torch-fp32"
    assert backends.engine(lora_run.run_dir).name == "torch-fp32"  # a file: size unknown, worth measuring
    assert measured == [0.005, 0.005]
    kept.save(lora_run.run_dir / backends.CHOICE_FILE, {"chosen": "torch-fp32"}, max_change=0.01)
    assert backends.engine(lora_run.run_dir, max_change=0.01, rows=1).name == "torch-fp32"  # a kept choice serves all
    assert measured == [0.005, 0.005, 0.01]
    (lora_run.run_dir / backends.CHOICE_FILE).unlink()


def test_damaged_model_files_are_one_line(lora_run, tmp_path):
    import shutil

    from slmtune.errors import SlmtuneError

    copy = tmp_path / "run"
    shutil.copytree(lora_run.run_dir, copy)
    weights = next((copy / "model").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut off halfway
    with pytest.raises(SlmtuneError, match="damaged or incomplete"):
        load_run(copy)


def test_a_successful_run_warns_about_nothing(tiny_models, synthetic_files, tmp_path):
    import warnings

    cfg = from_dict(tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 1}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, run_dir=tmp_path / "run")
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]


def test_a_swallowed_interrupt_is_raised_again():
    """A stop signal whose KeyboardInterrupt lands in a __del__ (Python reports it as ignored) still stops."""
    from slmtune.runs.recorder import Interrupted, raise_interrupt, stop_on_signals

    class Dies:
        def __del__(self):
            raise_interrupt(signal.SIGTERM, None)

    with pytest.raises(Interrupted):
        with stop_on_signals(("SIGTERM",)):
            Dies()  # collected at once: its interrupt is swallowed, as inside a weakref callback
            deadline = time.time() + 5
            while time.time() < deadline:
                time.sleep(0.05)


def test_balanced_class_weights_and_the_selection_metric():
    from slmtune.resolve import DataFacts, balanced_weights, resolve_class_weight, resolve_metric

    assert balanced_weights([0, 0, 0, 1], 2).tolist() == pytest.approx([4 / 6, 2.0])
    auto = from_dict({"train": {"class_weight": "auto"}})
    assert resolve_metric(auto, DataFacts(100, 4, 3.5))[0] == "macro_f1"
    assert resolve_metric(auto, DataFacts(100, 4, 2.0))[0] == "accuracy"
    assert resolve_metric(auto, DataFacts(100, 4, 1.0, multi_label=True))[0] == "micro_f1"
    assert resolve_metric(from_dict({"train": {"metric": "accuracy"}}), DataFacts(100, 4, 10.0))[0] == "accuracy"
    assert resolve_class_weight(auto, DataFacts(100, 4, 3.5))[0] == "balanced"
    assert resolve_class_weight(auto, DataFacts(100, 4, 2.0))[0] == "none"


def test_imbalanced_run_selects_on_macro_f1_weighs_classes_and_reports_its_baseline(tiny_models, tmp_path, capsys):
    rows = [r for r in synthetic_rows(40, seed=3) if r[1] == "Sports"][:40]
    rows += [r for r in synthetic_rows(10, seed=4) if r[1] != "Sports"]  # 40 Sports, 10 of each other class
    data = write_csv(tmp_path / "imbalanced.csv", rows)
    cfg = from_dict(tiny_overrides(tiny_models["bert"], {"train": str(data), "test": str(data)}, **{
        "data.train_size": None, "data.val_size": None, "train.class_weight": "balanced", "train.epochs": None}))
    result = train(cfg, run_dir=tmp_path / "run")
    saved = runs.read_result(tmp_path / "run")
    assert saved["data"]["selection_metric"] == "macro_f1" and saved["data"]["imbalance"] > 3  # about 4:1
    assert "epochs: 6" in (tmp_path / "run" / "config.yaml").read_text()  # LoRA on imbalanced data: 6, recorded
    baseline = saved["baseline"]
    assert baseline["method"] == "tfidf+logreg" and 0 <= baseline["accuracy"] <= 1 and baseline["seconds"] >= 0
    margin = baseline["model_minus_baseline"]["accuracy"]
    assert margin == pytest.approx(result.metrics["test"]["accuracy"] - baseline["accuracy"], abs=1e-4)
    out = capsys.readouterr().out
    assert "TF-IDF + logistic regression baseline" in out and "6 epochs (train.epochs=null: LoRA on imbalanced" in out


def test_tfidf_baseline_is_fitted_once_per_split_and_skipped_without_words():
    from slmtune.methods import tfidf

    rows = (["aa bb", "cc dd", "aa xx", "cc yy"], [0, 1, 0, 1], ["aa", "cc"], [0, 1], 2)
    first = tfidf.tfidf_baseline(*rows)
    first["model_minus_baseline"] = {}  # the caller's additions do not reach the kept copy
    assert tfidf.tfidf_baseline(*rows) == {k: v for k, v in first.items() if k != "model_minus_baseline"}
    assert first["accuracy"] == 1.0 and len([k for k in tfidf._KEPT if k]) >= 1
    assert tfidf.tfidf_baseline(["a b", "c d"], [0, 1], ["a"], [0], 2) is None  # no word of 2+ characters
