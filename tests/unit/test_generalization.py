"""Few-shot and scaling studies end to end on tiny random models."""

import json

import pytest

from conftest import tiny_overrides
from slmtune.cli import main
from slmtune.experiments.fewshot import FewShotConfig, run_fewshot, with_min_steps
from slmtune.experiments.scaling import ScalingConfig, run_scaling

QUIET = {"progress": lambda *_: None}


def _run(tiny_models, synthetic_files):
    values = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 1})
    values["data"]["val_size"] = 12
    return values


def test_min_steps_scales_epochs_for_small_sets():
    from slmtune.config import RunConfig

    small = with_min_steps(RunConfig(), rows=8, min_steps=100)
    assert small.train.epochs == 100 and small.train.max_evals == 10  # not 100 validation passes
    assert with_min_steps(RunConfig(), rows=2400, min_steps=100).train == RunConfig().train


def test_max_evals_caps_validation_passes(tiny_models, synthetic_files, tmp_path):
    from slmtune.config import from_dict
    from slmtune.experiments.common import run_identity
    from slmtune.train import train

    values = _run(tiny_models, synthetic_files)
    values["train"].update(epochs=6, max_evals=2)
    train(from_dict(values), run_dir=tmp_path / "r")
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len([x for x in lines if "validation_accuracy" in x]) == 2
    values["train"]["max_evals"] = None  # an unset new field leaves the keys of earlier runs unchanged
    assert "max_evals" not in run_identity(from_dict(values))["train"]
    values["train"]["max_evals"] = 2
    assert run_identity(from_dict(values))["train"]["max_evals"] == 2


def test_kept_rows_are_keyed_by_settings_and_code_version():
    """A resumed study reuses a kept row only if the settings and the method's code version match."""
    from slmtune.config import RunConfig
    from slmtune.experiments.fewshot import draw_config, kept_row

    cfg = FewShotConfig()
    _, prompt = kept_row(cfg, draw_config(cfg, RunConfig(), 8, 0, "prompt"), 8, 0, "prompt")
    assert prompt["code"] == 3 and prompt["prompt_prior_rows"] == 4.0  # rows of older code are not reused
    assert prompt["prompt_freeze_word_embeddings"] is True
    name, probe = kept_row(cfg, draw_config(cfg, RunConfig(), 8, 0, "probe"), 8, 0, "probe")
    assert name == "probe-8shot-0" and "code" not in probe  # version 1: the keys of earlier rows stay valid
    _, other = kept_row(FewShotConfig(probe_c=0.5), draw_config(cfg, RunConfig(), 8, 0, "probe"), 8, 0, "probe")
    assert other != probe


def test_fewshot_study(tiny_models, synthetic_files, tmp_path):
    cfg = FewShotConfig(run=_run(tiny_models, synthetic_files), shots=[2, 4], draws=2,
                        methods=["probe", "prompt", "lora"], min_steps=10)
    summary = run_fewshot(cfg, tmp_path / "f", **QUIET)
    assert set(summary["curves"]) == {"probe", "prompt", "lora"}
    assert summary["curves"]["probe"][4]["n"] == 2
    assert summary["anchors"] == {}  # AG News' published few-shot results are drawn on AG News only
    rows = json.loads((tmp_path / "f" / "summary.json").read_text())["rows"]
    assert len(rows) == 12 and all(0 <= r["test_accuracy"] <= 1 for r in rows)
    assert (tmp_path / "f" / "plots" / "fewshot.png").stat().st_size > 5000
    assert len(list((tmp_path / "f" / "cache").glob("*.npy"))) >= 2  # test embeddings cached once
    again = run_fewshot(cfg, tmp_path / "f", **QUIET)  # a repeated (or resumed) study computes nothing again
    rows_again = json.loads((tmp_path / "f" / "summary.json").read_text())["rows"]
    assert all(r["reused"] for r in rows_again) and again["curves"] == summary["curves"]
    assert len(list((tmp_path / "f" / "rows").glob("prompt-*.json"))) == 4


def test_scaling_study(tiny_models, synthetic_files, tmp_path):
    cfg = ScalingConfig(run=_run(tiny_models, synthetic_files), sizes=[8, 16, 32, 64, 100000], seeds=[1, 2],
                        predict_at=[1000], min_steps=20)
    messages = []
    summary = run_scaling(cfg, tmp_path / "s", progress=messages.append)
    assert any("dropped sizes [100000]" in m for m in messages)
    assert set(summary["fit"]) >= {"a", "b", "c", "r2", "a_ci", "b_ci", "c_ci"}
    assert summary["predictions"][0]["n"] == 1000 and len(summary["per_size"]) == 4
    for name in ("scaling.png", "scaling_residuals.png"):
        assert (tmp_path / "s" / "plots" / name).stat().st_size > 5000


@pytest.mark.parametrize("argv, message", [
    (["fewshot", "--methods", "magic"], "unknown few-shot method"),
    (["fewshot", "--shots", "1,a"], "--shots takes integers"),
    (["scaling", "--seeds", "1,1"], "without duplicates"),
])
def test_generalization_bad_input(capsys, tmp_path, argv, message):
    code = main(argv + ["--study-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and message in err


def test_fewshot_bad_prior_rows_is_a_one_line_error(capsys, tmp_path):
    (tmp_path / "f.yaml").write_text("study: fewshot\nprompt_prior_rows: -1\n")
    code = main(["fewshot", "--config", str(tmp_path / "f.yaml"), "--study-dir", str(tmp_path / "x")])
    assert code == 2 and "prompt_prior_rows must be null or a number >= 0" in capsys.readouterr().err


def test_prompt_head_starts_as_the_zero_shot_classifier(tiny_models):
    import numpy as np

    from slmtune.methods import prompt_head
    from slmtune.methods.embeddings import embed, load_encoder

    texts = ["match goal team coach", "stock market shares profit", "software internet chip network"]
    name = tiny_models["bert"]
    prototypes = embed(load_encoder(name), ["sports", "business", "science"])
    untrained, tokenizer = prompt_head.fine_tune(name, texts, [0, 1, 2], prototypes, seed=0,
                                                 cfg=prompt_head.PromptHeadConfig(steps=0, scale=10.0,
                                                                                  prior_rows=None))
    logits = prompt_head.predict_logits(untrained, tokenizer, texts)
    expected = 10.0 * embed(load_encoder(name), texts) @ prototypes.T
    assert np.allclose(logits, expected, atol=1e-4)
    trained, _ = prompt_head.fine_tune(name, texts * 4, [0, 1, 2] * 4, prototypes, seed=0,
                                       cfg=prompt_head.PromptHeadConfig(steps=30, learning_rate=1e-3, scale=10.0))
    after = prompt_head.predict_logits(trained, tokenizer, texts)
    assert (after.argmax(1) == [0, 1, 2]).all()  # learns the three rows
    assert prompt_head.steps_for(rows=8, batch_size=16, min_steps=100) == 100
    assert prompt_head.steps_for(rows=1600, batch_size=16, min_steps=100) == 300


def test_prompt_head_ends_with_class_mean_prototypes(tiny_models):
    import numpy as np
    import torch

    from slmtune.errors import SlmtuneError
    from slmtune.methods import prompt_head

    name = tiny_models["bert"]
    texts = ["match goal team coach", "stock market shares", "software chip", "league final win", "bank profit"]
    labels = [0, 1, 2, 0, 1]  # class 3 has no rows: it keeps its learned prototype
    prototypes = np.random.default_rng(0).normal(size=(4, 32)).astype(np.float32)

    def tuned(prior_rows):
        cfg = prompt_head.PromptHeadConfig(steps=5, batch_size=4, learning_rate=1e-3, scale=10.0,
                                           prior_rows=prior_rows)
        return prompt_head.fine_tune(name, texts, labels, prototypes, seed=0, cfg=cfg)

    (learned, tokenizer), (means, _), (shrunk, _) = tuned(None), tuned(0.0), tuned(2.0)
    # the same seed and steps give the same encoder: only the head differs
    assert all(torch.equal(a, b) for a, b in zip(means.encoder.parameters(), learned.encoder.parameters()))
    ids = [tokenizer(t)["input_ids"] for t in texts]
    with torch.no_grad():
        embedded = np.concatenate([means.embed(torch.tensor([i]), torch.ones(1, len(i), dtype=torch.long)).numpy()
                                   for i in ids])
    unit = torch.nn.functional.normalize(learned.prototypes.detach(), dim=-1).numpy()
    for c in range(3):  # the sum of the class's row embeddings (the mean's direction), + prior_rows x learned
        rows = embedded[np.array(labels) == c].sum(0)
        np.testing.assert_allclose(means.prototypes[c].detach().numpy(), rows, atol=1e-5)
        np.testing.assert_allclose(shrunk.prototypes[c].detach().numpy(), rows + 2.0 * unit[c], atol=1e-5)
    assert torch.equal(means.prototypes[3], learned.prototypes[3])
    directions = torch.nn.functional.normalize(means.prototypes.detach(), dim=-1).numpy()
    np.testing.assert_allclose(prompt_head.predict_logits(means, tokenizer, texts), 10.0 * embedded @ directions.T,
                               atol=1e-4)
    with pytest.raises(SlmtuneError, match="prior_rows"):
        prompt_head.fine_tune(name, texts, labels, prototypes, seed=0,
                              cfg=prompt_head.PromptHeadConfig(steps=1, prior_rows=-1.0))


def test_prompt_head_can_freeze_the_word_embeddings(tiny_models):
    import numpy as np
    import torch
    from transformers import AutoModel

    from slmtune.methods import prompt_head
    from slmtune.models.build import _load

    name = tiny_models["bert"]
    before = _load(AutoModel, name).get_input_embeddings().weight.detach().clone()
    texts, labels = ["match goal team", "stock market shares", "software chip"], [0, 1, 2]
    prototypes = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32)
    for freeze in (True, False):
        cfg = prompt_head.PromptHeadConfig(steps=3, batch_size=3, learning_rate=1e-2, freeze_word_embeddings=freeze)
        model, _ = prompt_head.fine_tune(name, texts, labels, prototypes, seed=0, cfg=cfg)
        after = model.encoder.get_input_embeddings().weight.detach()
        assert torch.equal(after, before) == freeze  # frozen: untouched; trained: updated
        assert not torch.equal(model.encoder.encoder.layer[0].output.dense.weight.detach(),
                               _load(AutoModel, name).encoder.layer[0].output.dense.weight.detach())


def test_prompt_head_sub_batches_keep_the_batch_gradient(tiny_models, tmp_path):
    import numpy as np
    from transformers import AutoTokenizer, BertConfig, BertModel

    from slmtune.methods import prompt_head

    ids = [[0] * n for n in (3, 9, 4, 7, 12)]
    assert prompt_head.split_by_length([0, 1, 2, 3, 4], ids, 2) == [[0, 2, 3], [1, 4]]
    assert prompt_head.split_by_length([1, 0], ids, 4) == [[0], [1]]
    # without dropout, two length-sorted passes train exactly as one padded batch does
    config = BertConfig(vocab_size=len(AutoTokenizer.from_pretrained(tiny_models["bert"])), hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, max_position_embeddings=128)
    BertModel(config).save_pretrained(tmp_path / "m")
    AutoTokenizer.from_pretrained(tiny_models["bert"]).save_pretrained(tmp_path / "m")
    texts = ["match goal", "stock market shares profit fell sharply today", "chip", "team coach season win",
             "the league final ended in a draw after extra time"]
    prototypes = np.random.default_rng(0).normal(size=(2, 32)).astype(np.float32)
    logits = []
    for parts in (1, 2):  # 5 rows: passes of 3 and 2, so each pass must weigh by its share of the batch
        cfg = prompt_head.PromptHeadConfig(steps=3, batch_size=5, learning_rate=1e-3, scale=10.0, sub_batches=parts)
        model, tokenizer = prompt_head.fine_tune(str(tmp_path / "m"), texts, [0, 1, 0, 1, 0], prototypes, seed=0,
                                                 cfg=cfg)
        logits.append(prompt_head.predict_logits(model, tokenizer, texts))
    assert np.allclose(logits[0], logits[1], atol=1e-4)


def test_setfit_method_on_the_same_draws(tiny_models, synthetic_files, tmp_path, monkeypatch):
    pytest.importorskip("setfit", reason="SetFit is the optional extra slmtune[setfit] (dev installs it)")
    cfg = FewShotConfig(run=_run(tiny_models, synthetic_files), shots=[2], draws=2, methods=["probe", "setfit"])
    monkeypatch.chdir(tmp_path)
    summary = run_fewshot(cfg, tmp_path / "f", **QUIET)
    assert not (tmp_path / "checkpoints").exists() and not list((tmp_path / "f").glob("setfit-*"))  # no debris
    rows = json.loads((tmp_path / "f" / "summary.json").read_text())["rows"]
    setfit = [r for r in rows if r["method"] == "setfit"]
    assert len(setfit) == 2 and all(0 <= r["test_accuracy"] <= 1 and r["train_seconds"] > 0 for r in setfit)
    assert [r["seed"] for r in setfit] == [r["seed"] for r in rows if r["method"] == "probe"]  # same draws
    assert summary["curves"]["setfit"][2]["n"] == 2


class _Payload:
    """A pickle that creates a file when loaded: what a hostile model_head.pkl could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_setfit_never_unpickles_the_model_folder(tiny_models, synthetic_files, tmp_path, capsys):
    pytest.importorskip("setfit", reason="SetFit is the optional extra slmtune[setfit] (dev installs it)")
    import pickle
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_models["bert"], folder)
    marker = tmp_path / "pickle-ran"
    (folder / "model_head.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    run = _run(tiny_models, synthetic_files)
    run["model"]["name"] = str(folder)
    cfg = FewShotConfig(run=run, shots=[2], draws=1, methods=["setfit"])
    summary = run_fewshot(cfg, tmp_path / "f", **QUIET)
    assert not marker.exists()  # the pickle was never loaded
    assert "ignoring pickle files" in capsys.readouterr().out
    assert summary["curves"]["setfit"][2]["n"] == 1
