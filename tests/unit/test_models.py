import pytest
import torch

from slmtune.config import LoraConfig
from slmtune.errors import SlmtuneError
from slmtune.models.build import (
    MINILM_SHA256,
    add_lora,
    get_model,
    load_classifier,
    lora_targets,
    param_counts,
    resolve_model,
)


@pytest.mark.parametrize("kind, targets, head", [
    ("bert", ["query", "value"], ["classifier"]),
    ("distilbert", ["q_lin", "v_lin"], ["pre_classifier", "classifier"]),
])
def test_lora_targets_per_architecture(tiny_models, kind, targets, head):
    model = load_classifier(tiny_models[kind], ["a", "b", "c", "d"])
    assert lora_targets(model, LoraConfig()) == (targets, head)
    wrapped = add_lora(model, LoraConfig())
    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert any(f"{targets[0]}.lora_A" in n for n in names) and any(f"{targets[1]}.lora_B" in n for n in names)
    assert any(head[-1] in n for n in names)  # the head trains beside the adapters
    counts = param_counts(wrapped)
    assert 0 < counts["trainable"] < counts["total"] and 0 < counts["percent"] < 100


def test_distilbert_lora_learns(tiny_models):
    model = add_lora(load_classifier(tiny_models["distilbert"], ["a", "b", "c", "d"]), LoraConfig(dropout=0.0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(1000, 2000, (8, 12))
    labels = torch.arange(8) % 4
    losses = []
    for _ in range(30):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_unknown_architecture_names_the_type(tmp_path, minilm_dir):
    from transformers import SqueezeBertConfig, SqueezeBertForSequenceClassification

    config = SqueezeBertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16, embedding_size=16, q_groups=1, k_groups=1, v_groups=1,
                               post_attention_groups=1, intermediate_groups=1, output_groups=1)
    SqueezeBertForSequenceClassification(config).save_pretrained(tmp_path)
    model = load_classifier(str(tmp_path), ["a", "b"])
    with pytest.raises(SlmtuneError, match="'squeezebert'.*all-linear"):  # in neither PEFT's mapping nor slmtune's
        lora_targets(model, LoraConfig())
    assert lora_targets(model, LoraConfig(target_modules=["query"]))[0] == ["query"]
    assert lora_targets(model, LoraConfig(target_modules=["all-linear"]))[0] == "all-linear"
    with pytest.raises(SlmtuneError, match="not found"):
        lora_targets(model, LoraConfig(target_modules=["nope"]))


def test_packaged_minilm_resolves_offline(minilm_dir):
    from pathlib import Path

    assert (Path(minilm_dir) / "model.safetensors").is_file() and len(MINILM_SHA256) == 64
    assert resolve_model("minilm") == minilm_dir


@pytest.mark.parametrize("name, message", [
    ("no-such-org/no-such-model-xyz", "unknown model"),
    ("/definitely/not/here/model", "unknown model"),
])
def test_unknown_model_is_a_clear_error(name, message):
    with pytest.raises(SlmtuneError, match=message):
        load_classifier(name, ["a", "b"])


def test_get_model_for_users_own_trainer(tiny_models):
    model = get_model(tiny_models["bert"], label_names=["x", "y"])
    assert hasattr(model, "peft_config") and model.config.id2label == {0: "x", 1: "y"}
    assert getattr(model.config, "slmtune_pooling", "cls") == "cls"  # LoRA keeps the [CLS] head
    plain = get_model(tiny_models["bert"], label_names=["x", "y"], use_lora=False)
    assert plain.config.slmtune_pooling == "mean"  # full fine-tuning's default, as in `slmtune train`
    frozen = {n.split(".")[3] for n, p in plain.named_parameters() if not p.requires_grad}
    assert frozen == {"2"}  # only the pooling layer (bert.encoder.layer.2) is fixed
    assert get_model(tiny_models["bert"], use_lora=False, pooling="cls").config.num_hidden_layers == 2


@pytest.mark.parametrize("kind, hidden, attention", [
    ("bert", "hidden_dropout_prob", "attention_probs_dropout_prob"),
    ("distilbert", "dropout", "attention_dropout"),
])
def test_dropout_overrides(tiny_models, kind, hidden, attention):
    model = load_classifier(tiny_models[kind], ["a", "b"], dropout=0.0, attention_dropout=0.05)
    assert getattr(model.config, hidden) == 0.0 and getattr(model.config, attention) == 0.05
    rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert 0.0 in rates and rates <= {0.0, 0.05, 0.1, 0.2}
    default = load_classifier(tiny_models[kind], ["a", "b"])
    assert getattr(default.config, hidden) == 0.1
