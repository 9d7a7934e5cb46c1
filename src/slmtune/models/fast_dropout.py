"""Dropout with a cheaper random mask on CPU: same p, same inverted scaling, one 64-bit draw per three elements.

torch's CPU dropout draws one Bernoulli sample per element (`bernoulli_`), which took 23% of a LoRA training
step on a 2-core CPU (profiled: 32 dropout calls per step, 1.8 ms each). Here each 64-bit random integer from
torch's generator (so `torch.manual_seed` still decides everything) gives three uniform 16-bit lanes; an element
is kept when its lane clears a threshold, so P(drop) = round(65536 p) / 65536 (p = 0.1 -> 0.100006).
Only training on CPU changes; evaluation, p = 0 and other devices use `nn.Dropout` itself.
"""

from __future__ import annotations

import sys

import torch

_LANES = 3  # of the four 16-bit lanes of a draw in [0, 2**63): the top lane lacks its sign bit


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """Boolean mask, each element True with probability 1 - round(65536 p) / 65536."""
    n = shape.numel()
    words = torch.empty((n + _LANES - 1) // _LANES, dtype=torch.int64).random_()  # uniform on [0, 2**63)
    lanes = words.view(torch.int16).view(-1, 4)
    lanes = lanes[:, :_LANES] if sys.byteorder == "little" else lanes[:, 4 - _LANES:]
    threshold = round(p * 65536) - 32768  # int16 lanes are uniform on [-32768, 32767]
    return (lanes >= threshold).reshape(-1)[:n].view(shape)


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


def install(model: torch.nn.Module) -> int:
    """Swap every `nn.Dropout` in `model` (encoder, head, LoRA) for `FastDropout`; returns how many."""
    swapped = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout:
            module.__class__ = FastDropout  # same state (p, inplace), new forward
            swapped += 1
    return swapped
