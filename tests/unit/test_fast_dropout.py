"""FastDropout: the same dropout as nn.Dropout (rate, scaling, gradient, seeding), with cheaper masks on CPU."""

import torch

from slmtune.models.fast_dropout import FastDropout, install, keep_mask


def test_keep_mask_rate_and_seeding():
    torch.manual_seed(0)
    mask = keep_mask(torch.Size([400, 1001]), 0.1)
    assert mask.shape == (400, 1001) and mask.dtype == torch.bool
    assert abs(1 - mask.float().mean().item() - 0.1) < 0.002  # 400k draws: 3 sigma is 0.0014
    rows = mask.float().mean(1)
    assert rows.std() < 0.05  # no lane stuck on or off
    torch.manual_seed(3)
    a = keep_mask(torch.Size([7, 5]), 0.3)
    torch.manual_seed(3)
    assert torch.equal(a, keep_mask(torch.Size([7, 5]), 0.3))


def test_forward_backward_match_dropout_semantics():
    layer = FastDropout(0.25)
    x = torch.randn(64, 33, requires_grad=True)
    y = layer(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.75)
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.75)  # gradient flows through kept elements only
    layer.eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)


def test_install_swaps_every_dropout_of_a_lora_model(tiny_models):
    from slmtune.config import LoraConfig
    from slmtune.models.build import add_lora, load_classifier

    model = add_lora(load_classifier(tiny_models["bert"], ["a", "b"]), LoraConfig())
    before = sum(type(m) is torch.nn.Dropout for m in model.modules())
    assert before > 0 and install(model) == before
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    model.train()
    torch.manual_seed(0)
    ids = torch.randint(5, 50, (4, 9))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    out.sum().backward()  # trains through the swapped modules
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_attention_is_sdpa_outside_training_and_masks_probabilities_in_it():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    import slmtune.models.fast_dropout as fast

    module = torch.nn.Module()
    module.is_causal = False
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    mask = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    mask[0, ..., 5:] = False  # the first text has 5 tokens
    module.eval()
    reference, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0)
    assert torch.equal(fast.attention(module, q, k, v, mask, dropout=0.0)[0], reference)  # what models pass in eval
    module.train()
    keep_all = fast.keep_mask
    try:  # with every probability kept, the training path is SDPA scaled by 1 / (1 - p)
        fast.keep_mask = lambda shape, p: torch.ones(shape, dtype=torch.bool)
        assert torch.allclose(fast.attention(module, q, k, v, mask, dropout=0.3)[0], reference / 0.7, atol=1e-5)
    finally:
        fast.keep_mask = keep_all
    torch.manual_seed(1)
    out, _ = fast.attention(module, q, k, v, mask, dropout=0.5)
    assert out.shape == reference.shape and not torch.allclose(out, reference / 0.5)  # some probabilities dropped


def test_install_routes_interface_models_through_the_cheap_attention(tiny_models):
    from slmtune.models.build import load_classifier
    from slmtune.models.fast_dropout import ATTENTION

    for kind in ("bert", "distilbert"):
        model = load_classifier(tiny_models[kind], ["a", "b"])
        ids = torch.randint(5, 50, (3, 9))
        attention_mask = torch.ones_like(ids)
        attention_mask[0, 6:] = 0
        model.eval()
        with torch.no_grad():
            before = model(input_ids=ids, attention_mask=attention_mask).logits
        install(model)
        assert model.config._attn_implementation == ATTENTION, kind
        with torch.no_grad():
            assert torch.allclose(model(input_ids=ids, attention_mask=attention_mask).logits, before, atol=1e-6)
        model.train()
        model(input_ids=ids, attention_mask=attention_mask).logits.sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
