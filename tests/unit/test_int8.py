"""int8 that keeps the predictions (the layer search, the ONNX Runtime plan, the torchao engine) and the compiled
engines."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from slmtune.config import from_dict
from slmtune.serve import backends, int8, kept
from slmtune.serve.loading import load_run
from slmtune.train import train


@pytest.fixture(scope="module")
def bert_run(tiny_models, synthetic_files, tmp_path_factory):
    cfg = from_dict(tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 2}))
    return train(cfg, run_dir=tmp_path_factory.mktemp("runs") / "bert").run_dir


def test_the_search_keeps_the_worst_layers_in_fp32_until_the_budget_holds():
    errors = {f"layer{i}": 1.0 / (i + 1) for i in range(10)}  # layer0 is the worst
    reference = np.zeros((200, 1), dtype=int)
    asked = []

    def predict(kept):  # each of the three worst layers left in int8 flips 1% of the rows
        asked.append(list(kept))
        out = reference.copy()
        for i in range(3):
            if f"layer{i}" not in kept:
                out[i * 2: i * 2 + 2] = 1
        return out

    plan = int8.search(errors, predict, reference, max_change=0.01, margin=1.0)
    assert asked == [[], ["layer0"], ["layer0", "layer1"]]  # 0, 1, 2, ... worst first
    assert plan["kept_fp32"] == ["layer0", "layer1"] and plan["int8_layers"] == 8 and plan["within_budget"]
    assert [t["changed"] for t in plan["tries"]] == [0.03, 0.02, 0.01]
    asked.clear()
    twenty = {f"layer{i}": 1.0 / (i + 1) for i in range(20)}

    def five_bad(kept):  # each of the five worst layers left in int8 flips 1% of the rows
        asked.append(len(kept))
        out = reference.copy()
        out[[i * 2 + j for i in range(5) if f"layer{i}" not in kept for j in range(2)]] = 1
        return out

    bisected = int8.search(twenty, five_bad, reference, max_change=0.0, margin=1.0)
    assert asked == [0, 1, 2, 4, 8, 6, 5]  # doubling passes at 8, bisection finds the fewest that hold
    assert bisected["kept_fp32"] == [f"layer{i}" for i in range(5)] and bisected["changed"] == 0.0
    never = int8.search(errors, lambda kept: 1 - reference, reference, max_change=0.01)
    assert not never["within_budget"] and len(never["kept_fp32"]) <= 5  # at most half the layers stay fp32
    asked.clear()
    margin = int8.search(errors, predict, reference, max_change=0.02)  # half the budget on its own rows
    assert asked[-1] == ["layer0", "layer1"] and margin["target"] == 0.01 and margin["within_budget"]


def test_layer_errors_rank_every_linear_layer(bert_run):
    run = load_run(bert_run)
    texts = ["stocks fell on oil news", "the team won the cup final", "a new chip for phones"] * 4
    per_tensor = int8.layer_errors(run.model, run.tokenizer, texts, 32)
    per_token = int8.layer_errors(run.model, run.tokenizer, texts, 32, per_token=True)
    linear = {n for n, m in run.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(per_tensor) == set(per_token) == linear
    assert all(0 < e < 1 for e in per_tensor.values())
    # one scale per token is never coarser than one per tensor on these activations, on average over layers
    assert np.mean(list(per_token.values())) < np.mean(list(per_tensor.values()))


def test_the_check_and_the_search_measure_rows_the_model_never_trained_on_first(bert_run):
    """auto's check, then the layer search: validation rows, then the training file's spare rows (cleaned, in a
    seeded draw), then training rows; never test rows, never the same rows while there are enough."""
    from slmtune.data import load_splits

    run = load_run(bert_run)
    splits = load_splits(run.config.data, run.config.seed)
    val, spare = len(splits.validation), len(splits.spare)
    assert spare == 160 - 120 - val > 4  # 40 rows of each of 4 classes: 120 trained, the rest never seen
    trained, tested = set(splits.train.texts), set(splits.test.texts)
    check, search = int8.measured_rows(run, check_rows=val + spare // 2, rows=spare)
    assert check[:val] == splits.validation.texts and not set(check) & trained
    assert not set(search[: spare - spare // 2]) & trained and set(search[spare - spare // 2:]) <= trained
    assert not set(check) & set(search) and not (set(check) | set(search)) & tested
    assert set(check[val:]) | set(search[: spare - spare // 2]) == set(splits.spare.texts)  # every spare row
    assert int8.measured_rows(run, check_rows=val + spare // 2, rows=spare) == (check, search)  # seeded
    whole, fallback = int8.measured_rows(run, check_rows=10_000)
    assert len(whole) == val + spare + 120 and fallback == splits.train.texts[:1000]  # too few: training rows


def test_onnx_int8_keeps_the_plan_it_searched_and_searches_again_for_another_budget(bert_run, capsys):
    pytest.importorskip("onnxruntime")
    from slmtune.precision import resolve
    from slmtune.serve.logits import predict_logits

    run = load_run(bert_run)
    engine = backends.onnx_for_run(bert_run, int8=True, max_change=0.0)
    plan = json.loads((bert_run / "onnx" / int8.PLAN_FILE).read_text())
    linear = {n for n, m in run.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(plan["kept_fp32"]) <= linear and plan["max_change"] == 0.0
    assert plan["int8_layers"] + len(plan["kept_fp32"]) == len(linear)  # every linear layer found in the graph
    assert "onnx-int8 with" in capsys.readouterr().out
    texts = int8.search_rows(run)
    kwargs = {"max_length": run.config.data.max_length, "cache": False}
    fp32 = int8.decisions(run, predict_logits(run.model, run.tokenizer, texts, precision=resolve("fp32"), **kwargs))
    ours = int8.decisions(run, predict_logits(engine, run.tokenizer, texts, **kwargs))
    assert np.mean((ours != fp32).any(axis=1)) == pytest.approx(plan["changed"], abs=1e-4)  # the file is the plan
    backends.onnx_for_run(bert_run, int8=True, max_change=0.5)
    assert json.loads((bert_run / "onnx" / int8.PLAN_FILE).read_text())["max_change"] == 0.5


def test_smoothing_moves_an_outlier_channel_into_the_weights_and_cuts_the_per_token_error(bert_run):
    run = load_run(bert_run)
    texts = ["stocks fell on oil news", "the team won the cup final", "a new chip for phones"] * 4
    layer = "bert.encoder.layer.0.attention.self.query"
    module = dict(run.model.named_modules())[layer]
    seen = {}

    def first_input(module, inputs, output) -> None:
        seen.setdefault("x", inputs[0].detach().reshape(-1, inputs[0].shape[-1]).abs().amax(0))

    handle = module.register_forward_hook(first_input)
    try:
        factors = int8.smoothing(run.model, run.tokenizer, texts[:1], 32, alpha=0.5)
        with torch.no_grad():  # an outlier input channel, as BERT-class activations carry
            module.weight[:, 3] *= 1e-3
            run.model.bert.embeddings.LayerNorm.weight[3] *= 1e3
            run.model.bert.embeddings.LayerNorm.bias[3] *= 1e3
        plain = int8.layer_errors(run.model, run.tokenizer, texts, 32, per_token=True)
        smooth = int8.smoothing(run.model, run.tokenizer, texts, 32)
        smoothed = int8.layer_errors(run.model, run.tokenizer, texts, 32, per_token=True, smooth=smooth)
    finally:
        handle.remove()
    eps = torch.finfo(torch.float32).eps
    expected = (seen["x"] + eps) ** 0.5 / (module.weight.detach().abs().amax(0) * torch.where(
        torch.arange(module.in_features) == 3, 1e3, 1.0) + eps) ** 0.5
    assert torch.allclose(factors[layer], expected, rtol=1e-4)  # s_j = sqrt(max|x_j| / max|W_:,j|)
    assert smooth[layer][3] > 10 * smooth[layer].median()  # the outlier channel gets the large factor
    assert smoothed[layer] < plain[layer] / 2


def test_torch_int8_keeps_its_smoothing_factors_and_searches_again_when_they_are_damaged(bert_run, capsys):
    pytest.importorskip("torchao")
    for name in (int8.COMPILED_PLAN_FILE, int8.SMOOTHING_FILE):
        (bert_run / name).unlink(missing_ok=True)
    int8.torch_int8(load_run(bert_run), bert_run, 0.5)
    plan = json.loads((bert_run / int8.COMPILED_PLAN_FILE).read_text())
    assert plan["smoothing_alpha"] == int8.SMOOTHING_ALPHA and "torch-int8 with" in capsys.readouterr().out
    from safetensors.torch import load_file

    linear = {n for n, m in load_run(bert_run).model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(load_file(bert_run / int8.SMOOTHING_FILE)) == linear
    int8.torch_int8(load_run(bert_run), bert_run, 0.5)  # kept: no second search
    assert "torch-int8 with" not in capsys.readouterr().out
    (bert_run / int8.SMOOTHING_FILE).write_bytes(b"not a safetensors file")
    model = int8.torch_int8(load_run(bert_run), bert_run, 0.5)
    assert "torch-int8 with" in capsys.readouterr().out  # searched again, factors written again
    assert set(load_file(bert_run / int8.SMOOTHING_FILE)) == linear
    quantized = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                 and n not in plan["kept_fp32"] and hasattr(m.weight, "act_pre_scale")]
    assert quantized and all(m.weight.act_pre_scale is not None for m in quantized)


def test_a_run_whose_data_is_gone_is_quantized_whole_and_says_so(bert_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import shutil

    import yaml

    copy = tmp_path / "run"
    shutil.copytree(bert_run, copy, ignore=shutil.ignore_patterns("onnx", "backend.json", "torch-int8.json"))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"]["dataset"] = str(tmp_path / "gone.csv")
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    backends.onnx_for_run(copy, int8=True)
    assert "without the layer search" in capsys.readouterr().out
    assert json.loads((copy / "onnx" / int8.PLAN_FILE).read_text())["kept_fp32"] == []


def test_auto_counts_compilation_against_the_job_size():
    choice = {"chosen": "torch-int8", "max_change": 0.005, "candidates": [
        {"backend": "torch", "rows_per_s": 200.0, "changed": 0.0},
        {"backend": "onnx-int8", "rows_per_s": 150.0, "changed": 0.01},  # over the budget
        {"backend": "torch-int8", "rows_per_s": 300.0, "changed": 0.003, "compile_s": 60.0}]}
    assert backends.pick(choice, 7600) == "torch"  # 38 s against 60 + 25 s
    assert backends.pick(choice, 1_000_000) == "torch-int8"  # 83 min against 60 s + 56 min
    assert backends.pick(choice, None) == "torch-int8"  # size unknown: the fastest


def test_torch_int8_runs_compiled_and_falls_back_to_torch_where_it_cannot_compile(bert_run, monkeypatch, capsys):
    pytest.importorskip("torchao")
    from slmtune.serve.logits import predict_logits

    run = load_run(bert_run)
    used = backends.engine(bert_run, "torch-int8", max_change=0.0)
    assert used.name == "torch-int8"
    plan = json.loads((bert_run / int8.COMPILED_PLAN_FILE).read_text())
    assert plan["max_change"] == 0.0 and plan["machine"] == kept.machine()
    texts = int8.search_rows(run)
    logits = predict_logits(used.model, run.tokenizer, texts, max_length=run.config.data.max_length, cache=False)
    exact = predict_logits(run.model, run.tokenizer, texts, max_length=run.config.data.max_length, cache=False)
    assert np.abs(logits - exact).max() < 0.1 * np.abs(exact).max()  # int8, not another model
    assert "torch-int8 with" in capsys.readouterr().out

    def cannot(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", cannot)
    for name in backends.COMPILED:
        fallback = backends.engine(bert_run, name, max_change=0.0)
        assert fallback.name == "torch" and fallback.precision == run.precision
        out = capsys.readouterr().out
        assert f"{name} could not compile here (RuntimeError: no C++ compiler found); using torch" in out


def test_torch_compiled_computes_what_torch_computes_in_the_same_precision(bert_run):
    from slmtune.serve.logits import predict_logits

    run = load_run(bert_run)
    used = backends.engine(bert_run, "torch-compiled")
    assert used.name == "torch-compiled" and used.precision == run.precision
    texts = int8.search_rows(run)
    kwargs = {"max_length": run.config.data.max_length, "precision": run.precision, "cache": False}
    compiled = predict_logits(used.model, run.tokenizer, texts, **kwargs)
    eager = predict_logits(run.model, run.tokenizer, texts, **kwargs)
    tolerance = 0.05 if run.precision.name != "fp32" else 1e-4  # bf16 rounds in a fused order
    assert np.abs(compiled - eager).max() <= tolerance * np.abs(eager).max()
    assert (compiled.argmax(1) != eager.argmax(1)).mean() <= 0.02


def test_auto_measures_the_compiled_engines_only_for_large_jobs_and_adds_them_to_a_kept_choice(bert_run, capsys):
    pytest.importorskip("onnxruntime")
    (bert_run / backends.CHOICE_FILE).unlink(missing_ok=True)
    small = backends.choose_backend(bert_run, max_change=0.5, job_rows=backends.AUTO_MIN_ROWS)
    assert not {row["backend"] for row in small["candidates"]} & set(backends.COMPILED)
    large = backends.choose_backend(bert_run, max_change=0.5, job_rows=backends.COMPILE_MIN_ROWS)
    table = {row["backend"]: row for row in large["candidates"]}
    compiled = {"torch-compiled", *(["torch-int8"] if int8.torchao_missing() is None else [])}
    assert set(table) == {row["backend"] for row in small["candidates"]} | compiled
    assert large["candidates"][:len(small["candidates"])] == small["candidates"]  # measured once, kept
    assert all("compile_s" in table[name] for name in compiled)  # counted by pick() against the job size
    assert table["torch-compiled"]["changed"] <= 0.02
    assert large == json.loads((bert_run / backends.CHOICE_FILE).read_text())
    assert backends.choose_backend(bert_run, max_change=0.5, job_rows=10**6) == large  # nothing left to measure
    assert "torch-compiled" in capsys.readouterr().out


def test_export_int8_searches_for_its_budget_and_refuses_a_budget_that_is_not_a_share(bert_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from slmtune.cli import main

    assert main(["export", str(bert_run), str(tmp_path / "e"), "--int8", "--max-change", "0.02"]) == 0
    plan = json.loads((tmp_path / "e" / int8.PLAN_FILE).read_text())
    assert (tmp_path / "e" / "model.int8.onnx").is_file() and plan["max_change"] == 0.02
    capsys.readouterr()
    assert main(["export", str(bert_run), str(tmp_path / "f"), "--int8", "--max-change", "2"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["slmtune: error: --max-change must be in [0, 1), got 2.0"] and not (tmp_path / "f").exists()
