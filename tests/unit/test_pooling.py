"""Mean pooling as a frozen extra layer: it computes the masked mean, ignores padding, stays frozen under full
fine-tuning and LoRA, and a mean-pooled run exports to a stock class that `pipeline()` loads and agrees with."""

import importlib.util

import pytest
import torch

from conftest import tiny_overrides
from slmtune.config import from_dict
from slmtune.models.build import add_lora, load_classifier, param_counts
from slmtune.models.pooling import LAYOUTS, SCALE, _layers


def _assert_first_token_is_the_masked_mean(model, input_ids, attention_mask):
    """The last layer's first token = LayerNorm(masked mean of the layer below + first token / SCALE), with the
    last real layer's affine."""
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    below = out.hidden_states[-2]
    mask = attention_mask.unsqueeze(-1).float()
    mean = (below * mask).sum(1) / mask.sum(1)
    norm = _layers(model)[-2].get_submodule(LAYOUTS[model.config.model_type]["norm2"])
    normed = torch.nn.functional.layer_norm(mean + below[:, 0] / SCALE, mean.shape[-1:], eps=norm.eps)
    assert torch.allclose(out.last_hidden_state[:, 0], normed * norm.weight + norm.bias, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_first_token_holds_the_masked_mean(tiny_models, kind):
    model = load_classifier(tiny_models[kind], list("abcd"), pooling="mean").eval()
    assert model.config.num_hidden_layers == 3 and model.config.slmtune_pooling == "mean"
    ids = torch.tensor([[101, 2054, 2003, 2023, 102, 0, 0], [101, 3000, 2001, 2000, 1999, 2003, 102]])
    mask = (ids != 0).long()
    with torch.no_grad():
        _assert_first_token_is_the_masked_mean(model, ids, mask)
        # padding changes nothing: the first row alone, unpadded, gives the same logits
        padded = model(input_ids=ids, attention_mask=mask).logits[0]
        alone = model(input_ids=ids[:1, :5], attention_mask=mask[:1, :5]).logits[0]
    assert torch.allclose(padded, alone, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_first_token_only_gives_the_same_logits(tiny_models, kind, attention):
    from slmtune.models.build import load_tokenizer
    from slmtune.models.pooling import first_token_only
    from slmtune.serve.logits import predict_logits

    model = load_classifier(tiny_models[kind], list("abcd"), pooling="mean").eval()
    model.set_attn_implementation(attention)
    layer = _layers(model)[-1]
    ids = torch.tensor([[101, 2054, 2003, 2023, 102, 0, 0], [101, 3000, 2001, 2000, 1999, 2003, 102]])
    mask = (ids != 0).long()
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        unpadded = model(input_ids=ids[1:], attention_mask=mask[1:]).logits
        with first_token_only(model):
            calls = []
            hook = layer.register_forward_hook(lambda *args: calls.append(1))
            fast = model(input_ids=ids, attention_mask=mask).logits
            fast_unpadded = model(input_ids=ids[1:], attention_mask=mask[1:]).logits
            fast_no_mask = model(input_ids=ids[1:]).logits
            hook.remove()
            states = model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            assert torch.equal(states[-1][:, 1:], states[-2][:, 1:])  # only the first token is computed
    assert len(calls) == 3
    assert torch.allclose(fast, full, atol=1e-5) and not torch.equal(fast, torch.zeros_like(fast))
    assert torch.allclose(fast_unpadded, unpadded, atol=1e-5) and torch.allclose(fast_no_mask, unpadded, atol=1e-5)
    assert "forward" not in vars(layer)  # the block restores the layer
    texts = ["stocks fell sharply", "the team won the final match at home", "new chip"]
    tokenizer = load_tokenizer(tiny_models[kind])
    slow = torch.stack([model(**tokenizer(t, return_tensors="pt")).logits[0] for t in texts]).detach().numpy()
    assert abs(predict_logits(model, tokenizer, texts) - slow).max() < 1e-5  # slmtune's inference uses it


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_first_token_only_trains_like_the_whole_layer(tiny_models, kind):
    """In training the first-token path gives the whole layer's loss and gradients (dropout off), and applies
    the layer's own dropout modules when they are on; blocks nest."""
    from slmtune.models.pooling import first_token_only

    ids = torch.tensor([[101, 2054, 2003, 2023, 102, 0, 0], [101, 3000, 2001, 2000, 1999, 2003, 102]])
    mask, labels = (ids != 0).long(), torch.tensor([1, 3])
    model = load_classifier(tiny_models[kind], list("abcd"), pooling="mean").train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # the head's too (DistilBERT's seq_classif_dropout)

    def loss_and_grads():
        model.zero_grad()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    whole, whole_grads = loss_and_grads()
    with first_token_only(model), first_token_only(model):
        fast, fast_grads = loss_and_grads()
    assert "forward" not in vars(_layers(model)[-1])
    assert torch.allclose(fast, whole, atol=1e-6) and whole_grads.keys() == fast_grads.keys()
    for name, grad in whole_grads.items():
        assert torch.allclose(fast_grads[name], grad, atol=1e-6), name

    model = load_classifier(tiny_models[kind], list("abcd"), dropout=0.3, attention_dropout=0.3,
                            pooling="mean").train()
    layer = _layers(model)[-1]
    used = []
    for name in ("attention_dropout", "out_dropout"):
        if name in LAYOUTS[kind]:
            layer.get_submodule(LAYOUTS[kind][name]).register_forward_hook(lambda *a, n=name: used.append(n))
    with first_token_only(model):
        draws = [model(input_ids=ids, attention_mask=mask).logits for _ in range(2)]
        model.eval()
        plain = model(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(draws[0], draws[1])  # the pooled token gets dropout in training
    assert set(used) == {n for n in ("attention_dropout", "out_dropout") if n in LAYOUTS[kind]}
    with torch.no_grad():
        assert torch.allclose(plain, model(input_ids=ids, attention_mask=mask).logits, atol=1e-5)


@pytest.mark.parametrize("kind", ["roberta", "electra"])
def test_other_bert_layouts_pool_too(tmp_path, kind):
    import transformers

    from slmtune.models.pooling import add_mean_pooling

    config_class, model_class = {"roberta": ("RobertaConfig", "RobertaForSequenceClassification"),
                                 "electra": ("ElectraConfig", "ElectraForSequenceClassification")}[kind]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=37, num_labels=4,
                                                 max_position_embeddings=64, pad_token_id=1)
    model = getattr(transformers, model_class)(config).eval()
    add_mean_pooling(model)
    ids = torch.tensor([[0, 5, 6, 7, 2, 1, 1], [0, 8, 9, 10, 11, 12, 2]])
    mask = (ids != 1).long()
    with torch.no_grad():
        _assert_first_token_is_the_masked_mean(model, ids, mask)


def test_pooling_layer_stays_frozen(tiny_models):
    full = load_classifier(tiny_models["bert"], list("abcd"), pooling="mean")
    assert not any(p.requires_grad for p in _layers(full)[-1].parameters())
    assert all(p.requires_grad for p in _layers(full)[0].parameters())
    lora = add_lora(load_classifier(tiny_models["distilbert"], list("abcd"), pooling="mean"), from_dict({}).lora)
    adapted = {n.split(".layer.")[1].split(".")[0] for n, _ in lora.named_parameters() if "lora_" in n}
    assert adapted == {"0", "1"}  # the pooling layer (index 2) has no adapters
    # its fixed weights are not counted as parameters: full fine-tuning trains 100%, and both totals agree
    plain = load_classifier(tiny_models["bert"], list("abcd"))
    assert param_counts(full) == param_counts(plain) and param_counts(full)["percent"] == 100
    lora_cls = add_lora(load_classifier(tiny_models["distilbert"], list("abcd")), from_dict({}).lora)
    assert param_counts(lora) == param_counts(lora_cls)


def test_unsupported_architecture_falls_back_to_its_own_head_with_a_note(tiny_models, tmp_path, capsys):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from slmtune.models.pooling import is_mean_pooled

    GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    model = load_classifier(str(tmp_path), list("abcd"), pooling="mean")
    assert not is_mean_pooled(model.config) and "this gpt2 model's head reads its own" in capsys.readouterr().out


@pytest.mark.parametrize("method, kind", [("full", "bert"), ("lora", "distilbert")])
def test_mean_pooled_run_trains_predicts_and_exports(tiny_models, synthetic_files, tmp_path, method, kind):
    from transformers import pipeline

    from slmtune.experiments.common import run_identity
    from slmtune.serve.export import export_run
    from slmtune.serve.inference import evaluate_run, predict
    from slmtune.train import train

    values = tiny_overrides(tiny_models[kind], synthetic_files, **{"model.method": method, "model.pooling": "mean",
                                                                   "train.epochs": 6})
    config = from_dict(values)
    assert run_identity(config)["model"]["pooling"] == "mean"
    assert "pooling" not in run_identity(from_dict(tiny_overrides(tiny_models[kind], synthetic_files)))["model"]
    result = train(config, run_dir=tmp_path / "run")
    assert result.metrics["test"]["accuracy"] > 0.5  # chance is 0.25
    if method == "full" and importlib.util.find_spec("onnxruntime"):  # ORT's fused attention keeps the pooling
        onnx = evaluate_run(tmp_path / "run", "test", backend="onnx")
        assert onnx["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"], abs=0.02)
    out = export_run(tmp_path / "run", tmp_path / "export")
    texts = ["stock market shares profit bank", "software internet computer chip", "president election war"]
    pipe = pipeline("text-classification", model=str(out), top_k=None)
    assert pipe.model.config.num_hidden_layers == 3  # a stock class with the pooling layer inside
    # pipeline() runs the stock fp32 model: the same numbers as slmtune's fp32 engine (bf16 differs by ~1e-3)
    for mine, theirs in zip(predict(tmp_path / "run", texts, backend="torch-fp32"), pipe(texts)):
        scores = {d["label"]: d["score"] for d in theirs}
        for label, p in mine["probabilities"].items():
            assert scores[label] == pytest.approx(p, abs=1e-5)


def test_validation_step_scores_like_the_whole_pooling_layer(tiny_models, tmp_path):
    """The Trainer's validation passes use `first_token_only` and still give the full layer's logits and loss."""
    from transformers import TrainingArguments

    from slmtune.models.build import load_tokenizer
    from slmtune.trainer import BucketTrainer as _BucketTrainer

    model = load_classifier(tiny_models["bert"], ["World", "Sports", "Business", "Sci/Tech"], pooling="mean").eval()
    tokenizer = load_tokenizer(tiny_models["bert"])
    texts = ["goal match team win", "stock market shares profit", "election minister", "chip", "a b c d e f"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    inputs = {**batch, "labels": torch.tensor([1, 2, 0, 3, 3])}
    with torch.no_grad():
        full = model(**inputs)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = _BucketTrainer(model=model, args=args)
    seen = []  # the whole layer computes queries; the first-token path does not
    query = _layers(model)[-1].get_submodule(LAYOUTS["bert"]["query"])
    hook = query.register_forward_hook(lambda *args: seen.append(1))
    try:
        loss, logits, _ = trainer.prediction_step(model, inputs, prediction_loss_only=False)
    finally:
        hook.remove()
    assert not seen  # the whole pooling layer never ran
    torch.testing.assert_close(logits, full.logits, atol=1e-5, rtol=0)
    assert loss.item() == pytest.approx(full.loss.item(), abs=1e-5)
