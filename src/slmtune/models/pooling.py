"""Mean pooling as one frozen extra encoder layer, so that a mean-pooled classifier stays a stock
transformers class (`BertForSequenceClassification`, `DistilBertForSequenceClassification`, ...).

The sequence-classification classes read the first token of the last layer. The appended layer makes that
token hold the masked mean of the layer below: its queries and keys are zero, so every token attends
uniformly to every unmasked token (padding is masked as usual); its values are the hidden states unchanged;
the attention output is scaled by `SCALE` before the residual add and LayerNorm, so the first token's own
state weighs 1/SCALE beside the mean; the feed-forward block is zero (any of BERT's activations maps 0 to 0),
and the last LayerNorm takes the last real layer's scale and shift. The classifier head then sees
`LayerNorm(mean + h_first / SCALE)`, the same kind of vector that the encoder's other layers emit.

The layer is frozen (and LoRA leaves it alone), so training never turns it into anything else, and a saved
or exported model is an ordinary checkpoint with one more layer: `pipeline()` loads it without remote code
and computes exactly what slmtune computes.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from slmtune.errors import SlmtuneError

SCALE = 100.0
"""Weight of the mean against the first token's own state (residual). 100 keeps the product inside fp16's
range for hidden states up to ~650 in magnitude."""

# Submodule names of one encoder layer, per architecture family.
_BERT_LIKE = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "out": "attention.output.dense", "norm1": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "norm2": "output.LayerNorm",
    "attention_dropout": "attention.self.dropout", "out_dropout": "attention.output.dropout",
}
_DISTILBERT = {  # no dropout on the attention output
    "query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
    "out": "attention.out_lin", "norm1": "sa_layer_norm",
    "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2", "norm2": "output_layer_norm",
    "attention_dropout": "attention.dropout",
}
_WEIGHTED = ("query", "key", "value", "out", "norm1", "ffn_in", "ffn_out", "norm2")
LAYOUTS = {"bert": _BERT_LIKE, "roberta": _BERT_LIKE, "xlm-roberta": _BERT_LIKE, "camembert": _BERT_LIKE,
           "electra": _BERT_LIKE, "distilbert": _DISTILBERT}


def _layers(model) -> torch.nn.ModuleList:
    """The encoder's layer list (BERT-like `encoder.layer`, DistilBERT `transformer.layer`), also through
    wrappers such as PEFT's."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.endswith(("encoder.layer", "transformer.layer")):
            return module
    raise SlmtuneError(f"cannot find the encoder layers of this {model.config.model_type} model")


def supports_mean_pooling(model) -> bool:
    """Whether the mean-pooling layer can be built for this architecture (BERT-like and DistilBERT layers)."""
    return model.config.model_type in LAYOUTS


def _layout(model) -> dict[str, str]:
    layout = LAYOUTS.get(model.config.model_type)
    if layout is None:
        raise SlmtuneError(f"model.pooling=mean supports model types {', '.join(sorted(LAYOUTS))}; "
                           f"this model is {model.config.model_type!r} (use model.pooling=cls)")
    return layout


@torch.no_grad()
def add_mean_pooling(model) -> int:
    """Append the frozen mean-pooling layer to `model` (in place); returns the new layer's index."""
    layout = _layout(model)
    layers = _layers(model)
    last = layers[-1]
    layer = copy.deepcopy(last)
    part = {name: layer.get_submodule(path) for name, path in layout.items() if name in _WEIGHTED}
    for name in ("query", "key", "ffn_in", "ffn_out"):
        part[name].weight.zero_()
        part[name].bias.zero_()
    hidden = part["value"].weight.shape[0]
    eye = torch.eye(hidden, dtype=part["value"].weight.dtype)
    part["value"].weight.copy_(eye)
    part["value"].bias.zero_()
    part["out"].weight.copy_(eye * SCALE)
    part["out"].bias.zero_()
    part["norm1"].weight.fill_(1.0)
    part["norm1"].bias.zero_()
    # norm2 keeps the last layer's scale and shift (a deep copy), so the pooled vector looks like a hidden state
    index = len(layers)
    for module in layer.modules():
        if hasattr(module, "layer_idx"):
            module.layer_idx = index
    layer.requires_grad_(False)
    layers.append(layer)
    model.config.num_hidden_layers = index + 1
    model.config.slmtune_pooling = "mean"
    return index


def is_mean_pooled(config) -> bool:
    return getattr(config, "slmtune_pooling", "cls") == "mean"


def pooling_parameters(model) -> int:
    """Number of fixed weights in the pooling layer (0 without one)."""
    if not is_mean_pooled(getattr(model, "config", None)):
        return 0
    return sum(p.numel() for p in _layers(model)[-1].parameters())


def freeze_pooling(model) -> None:
    """Keep a loaded mean-pooled model's pooling layer out of training."""
    if is_mean_pooled(model.config):
        _layers(model)[-1].requires_grad_(False)


def _key_mask(attention_mask, hidden: torch.Tensor) -> torch.Tensor:
    """(batch, keys) 1.0 where a key may be attended to, from the mask the layer receives: None (no padding),
    2-D 0/1, 4-D boolean (True = attend) or 4-D additive (0 = attend)."""
    if attention_mask is None:
        return hidden.new_ones(hidden.shape[:2])
    if attention_mask.dim() == 2 or attention_mask.dtype == torch.bool:
        return (attention_mask if attention_mask.dim() == 2 else attention_mask[:, 0, 0, :]).to(hidden.dtype)
    mask = attention_mask[:, 0, 0, :]
    return (mask > torch.finfo(mask.dtype).min / 2).to(hidden.dtype)


@contextlib.contextmanager
def first_token_only(model):
    """Inside this block, the mean-pooling layer of `model` computes only the first token, the one the head
    reads; the other positions pass through unchanged. Same logits in evaluation, the same computation and
    dropout in training (on the first query's attention probabilities and on the attention output, each by the
    layer's own dropout module), for a seventh less work on a 6-layer encoder forward and backward. A no-op for
    models without the layer. Used by slmtune's training, validation and inference."""
    if not is_mean_pooled(getattr(model, "config", None)) or "forward" in vars(_layers(model)[-1]):
        yield  # nothing to do, or already inside such a block
        return
    layer = _layers(model)[-1]
    part = {name: layer.get_submodule(path) for name, path in _layout(model).items()}
    no_dropout = torch.nn.Identity()

    def forward(hidden_states, attention_mask=None, *args, **kwargs):
        keys = _key_mask(attention_mask, hidden_states)
        weights = keys / keys.sum(1, keepdim=True).clamp(min=1.0)  # uniform attention: queries and keys are zero
        weights = part["attention_dropout"](weights)
        # the value projection is linear with a zero bias: project the weighted sum instead of every token
        mean = part["value"]((hidden_states * weights.unsqueeze(-1).to(hidden_states.dtype)).sum(1))
        attended = part.get("out_dropout", no_dropout)(part["out"](mean))
        first = part["norm1"](attended + hidden_states[:, 0])
        first = part["norm2"](first)  # the feed-forward block is zero, so its residual add is the identity
        return torch.cat([first.unsqueeze(1).to(hidden_states.dtype), hidden_states[:, 1:]], dim=1)

    layer.forward = forward
    try:
        yield
    finally:
        del layer.forward
