"""Dropout with a cheaper random mask on CPU: same p, same inverted scaling, one 64-bit draw per four elements.

torch's CPU dropout draws one Bernoulli sample per element (`bernoulli_`), which took 23% of a LoRA training
step on a 2-core CPU (profiled: 32 dropout calls per step, 1.8 ms each). Here each 64-bit random integer from
torch's generator (so `torch.manual_seed` still decides everything) gives four uniform 16-bit lanes; an element
is kept when its lane clears a threshold, so P(drop) = round(65536 p) / 65536 (p = 0.1 -> 0.100006).
Only training on CPU changes; evaluation, p = 0 and other devices use `nn.Dropout` itself.

The attention-probability dropout sits inside `scaled_dot_product_attention`, whose CPU kernel draws Bernoulli
samples too (a tenth of a LoRA step); models that use transformers' attention interface (BERT, DistilBERT,
RoBERTa, ELECTRA, ModernBERT, ...) get `ATTENTION`: SDPA itself, except in CPU training with attention dropout,
where the softmax probabilities get the same cheap mask.
"""

from __future__ import annotations

import torch


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """Boolean mask, each element True with probability 1 - round(65536 p) / 65536."""
    n = shape.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)  # all 64 bits
    lanes = words.view(torch.int16)[:n]  # uniform on [-32768, 32767]
    return (lanes >= round(p * 65536) - 32768).view(shape)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        scaled_mask = keep_mask(x.shape, p).to(x.dtype).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(scaled_mask)
        return x * scaled_mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (scaled_mask,) = ctx.saved_tensors
        return grad * scaled_mask, None


class FastDropout(torch.nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not 0 < self.p < 1 or self.inplace or x.device.type != "cpu":
            return super().forward(x)
        return _Dropout.apply(x, self.p)


ATTENTION = "slmtune_sdpa"  # the attention implementation's registered name


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
              **kwargs):
    """transformers' SDPA attention, but in CPU training with attention dropout: the masked softmax of the scaled
    scores with FastDropout's mask; the two matmuls run in the autocast dtype, the softmax and its dropout in
    fp32 (as autocast does on CUDA; under CPU autocast a softmax would stay in bf16)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not (module.training and 0 < dropout < 1 and query.device.type == "cpu" and key.shape[1] == query.shape[1]
            and not kwargs.get("is_causal")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scores = torch.matmul(query, key.transpose(2, 3)).float()  # matmuls in the autocast dtype, softmax in fp32
    scores = scores * (query.size(-1) ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:  # SDPA's mask: True where a token may be attended to (or an additive float)
        scores = (scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
                  if attention_mask.dtype == torch.bool else scores + attention_mask)
    probabilities = _Dropout.apply(torch.softmax(scores, dim=-1), dropout)
    out = torch.matmul(probabilities.to(value.dtype), value)
    return out.transpose(1, 2).contiguous(), None


def _use_attention(model: torch.nn.Module) -> bool:
    """Route the attention of a model that runs transformers' SDPA through the interface to `attention`."""
    from transformers import AttentionInterface, PreTrainedModel
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, PreTrainedModel) or base.config._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    try:
        base.set_attn_implementation(ATTENTION)
    except (ValueError, ImportError):
        return False
    return base.config._attn_implementation == ATTENTION


def install(model: torch.nn.Module) -> int:
    """Swap every `nn.Dropout` in `model` (encoder, head, LoRA) for `FastDropout`, and its attention for
    `ATTENTION` where transformers' attention interface allows; returns how many dropout modules were swapped."""
    swapped = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout:
            module.__class__ = FastDropout  # same state (p, inplace), new forward
            swapped += 1
    _use_attention(model)
    return swapped
