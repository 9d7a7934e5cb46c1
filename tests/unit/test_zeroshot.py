"""Zero-shot study code paths on tiny random models (quality is checked on the real MiniLM in integration)."""

import json

import pytest

from conftest import tiny_overrides
from slmtune.errors import SlmtuneError
from slmtune.experiments.zeroshot import ZeroShotConfig, run_zeroshot
from slmtune.methods.zeroshot import label_prompts


@pytest.fixture(scope="module")
def tiny_nli(tmp_path_factory, minilm_dir):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("nli")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    labels = ["contradiction", "neutral", "entailment"]
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128, num_labels=3,
                        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_label_prompts():
    prompts = label_prompts(["Sports", "x"], ["About {}.", "{}"], {"Sports": "sports news"})
    assert prompts == [["About sports news.", "sports news"], ["About x.", "x"]]


def test_prompts_follow_the_dataset_and_its_label_names():
    from slmtune.methods.zeroshot import default_descriptions, templates_for

    assert templates_for("ag_news")[0] == "This is a news article about {}."
    assert templates_for("tickets.csv")[0] == "This text is about {}." and "news" not in " ".join(templates_for("x"))
    assert default_descriptions(["money-fx", "billing_issue"]) == {"money-fx": "money fx",
                                                                   "billing_issue": "billing issue"}
    assert default_descriptions(["World", "Sports"])["World"] == "world news and politics"


def test_every_method_runs_and_writes_the_study(tiny_models, synthetic_files, tiny_nli, tmp_path):
    run = tiny_overrides(tiny_models["bert"], synthetic_files)
    cfg = ZeroShotConfig(run=run, methods=["untrained-head", "names", "templates", "custom", "nli"],
                         templates=["Topic: {}."], nli_model=tiny_nli)
    summary = run_zeroshot(cfg, tmp_path / "z", progress=lambda *_: None)
    assert [r["method"] for r in summary["rows"]] == ["untrained-head", "names", "templates", "custom", "nli"]
    assert all(0 <= r["accuracy"] <= 1 and r["n"] == 60 for r in summary["rows"])
    saved = json.loads((tmp_path / "z" / "summary.json").read_text())
    assert saved["chance"] == 0.25 and len(saved["rows"]) == 5
    assert (tmp_path / "z" / "plots" / "confusion_templates.png").stat().st_size > 5000
    assert list((tmp_path / "z" / "cache").glob("embeddings-*.npy"))  # test embeddings computed once
    lines: list[str] = []
    again = run_zeroshot(cfg, tmp_path / "z", progress=lines.append)  # a resumed study scores nothing again
    assert again["rows"] == summary["rows"] and again["confusion_matrices"] == summary["confusion_matrices"]
    assert len(lines) == 5 and all("(reused)" in line for line in lines)


@pytest.mark.parametrize("kwargs, message", [
    ({"methods": ["telepathy"]}, "unknown zero-shot method"),
    ({"methods": ["nli"]}, "needs --nli-model"),
    ({"methods": ["custom"]}, "needs --template"),
])
def test_bad_zero_shot_config(tmp_path, kwargs, message):
    with pytest.raises(SlmtuneError, match=message):
        run_zeroshot(ZeroShotConfig(**kwargs), tmp_path / "z", progress=lambda *_: None)
