"""Any Hugging Face encoder: tiny random models of seven architectures train with LoRA and full fine-tuning,
save, reload, export, and the exported folder's `pipeline()` predicts what `slmtune predict` does."""

import pytest
import torch

from conftest import tiny_overrides
from slmtune.config import from_dict

ARCHITECTURES = ["bert", "distilbert", "roberta", "deberta-v2", "electra", "mpnet", "modernbert"]


def _tiny_encoder(kind: str, folder, tokenizer_dir: str):
    """A random tiny encoder of `kind` with a sequence-classification head and the MiniLM WordPiece tokenizer."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    small = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 37, "max_position_embeddings": 132, "pad_token_id": tokenizer.pad_token_id,
             "num_labels": 4}
    config = {
        "bert": lambda: transformers.BertConfig(**small),
        "distilbert": lambda: transformers.DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2,
                                                            hidden_dim=37, max_position_embeddings=128, num_labels=4),
        "roberta": lambda: transformers.RobertaConfig(**small, type_vocab_size=2),
        "deberta-v2": lambda: transformers.DebertaV2Config(**small, pooler_hidden_size=32, relative_attention=True,
                                                           position_buckets=16, pos_att_type=["p2c", "c2p"]),
        "electra": lambda: transformers.ElectraConfig(**small, embedding_size=16),
        "mpnet": lambda: transformers.MPNetConfig(**small),
        "modernbert": lambda: transformers.ModernBertConfig(**small, global_attn_every_n_layers=1,
                                                            local_attention=16),
    }[kind]()
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("encoders")
    return {kind: _tiny_encoder(kind, root / kind, minilm_dir) for kind in ARCHITECTURES}


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_every_encoder_trains_exports_and_matches_pipeline(encoders, synthetic_files, tmp_path, kind, method):
    from transformers import pipeline

    from slmtune import predict, train
    from slmtune.serve.export import export_run

    values = tiny_overrides(encoders[kind], synthetic_files, **{
        "model.method": method, "train.epochs": 2, "train.precision": "fp32", "train.baseline": False})
    del values["model"]["freeze_word_embeddings"]  # the default: full fine-tuning keeps them as pretrained
    config = from_dict(values)
    result = train(config, run_dir=tmp_path / "run")
    assert result.status == "success" and 0 <= result.metrics["test"]["accuracy"] <= 1
    counts = result.params
    if method == "full":  # every weight but the word embeddings (model.freeze_word_embeddings, the default)
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(encoders[kind])
        width = getattr(cfg, "embedding_size", None) or cfg.hidden_size
        assert counts["total"] - counts["trainable"] == cfg.vocab_size * width
    else:
        assert counts["trainable"] < counts["total"]
    out = export_run(result.run_dir, tmp_path / "export")
    texts = ["stocks fell sharply as markets closed", "the team won the final match", "new chip doubles speed"]
    ours = predict(result.run_dir, texts, backend="torch-fp32")
    pipe = pipeline("text-classification", model=str(out), top_k=None)
    for mine, theirs in zip(ours, pipe(texts)):
        theirs = {row["label"]: row["score"] for row in theirs}
        assert max(theirs, key=theirs.get) == mine["label"]
        assert all(abs(theirs[name] - p) < 1e-4 for name, p in mine["probabilities"].items())


def test_mean_pooling_falls_back_to_the_head_with_a_note(encoders, capsys):
    from slmtune.models.build import load_classifier
    from slmtune.models.pooling import is_mean_pooled

    model = load_classifier(encoders["deberta-v2"], ["a", "b"], pooling="mean")
    assert not is_mean_pooled(model.config) and "mean pooling is built for" in capsys.readouterr().out
    assert is_mean_pooled(load_classifier(encoders["roberta"], ["a", "b"], pooling="mean").config)


def test_all_linear_lora_adapts_every_linear_layer_but_the_head(encoders):
    from slmtune.config import LoraConfig
    from slmtune.models.build import add_lora, load_classifier

    model = add_lora(load_classifier(encoders["modernbert"], ["a", "b"]), LoraConfig(target_modules=["all-linear"]))
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A" in n}
    assert {"Wqkv", "Wo", "Wi"} <= adapted and "classifier" not in adapted
