"""Numeric precision: bf16 autocast where the hardware runs it natively (CUDA, CPUs with AVX512-BF16 or AMX),
fp32 elsewhere. Master weights and optimizer state stay fp32 either way; only matmuls run in bf16, and the
frozen weights of a LoRA model are held in bf16 while it trains (`Precision.frozen_weights`)."""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch

from slmtune.errors import SlmtuneError

PRECISIONS = ("auto", "fp32", "bf16")
# oneDNN runs torch's CPU matmuls, and its own variable ONEDNN_MAX_CPU_ISA caps the instructions it may use: a cap
# below AVX512_CORE_BF16 makes bf16 emulated even where the CPU has it (how an AVX2-only CPU is measured on one
# that has more, with ATEN_CPU_CAPABILITY=avx2 for torch's other kernels).
ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


@functools.cache
def cpu_bf16_support() -> str | None:
    """The CPU feature that runs bf16 matmuls natively (`amx_bf16`, `avx512_bf16`, Arm `bf16`), or None.

    Without one, bf16 on CPU is emulated and slower than fp32. None too where ONEDNN_MAX_CPU_ISA caps oneDNN below
    bf16 (ISAS_WITHOUT_BF16)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() in ISAS_WITHOUT_BF16:
        return None
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        pass
    for flag in ("amx_bf16", "avx512_bf16"):
        if flag in flags:
            return flag
    cpu = getattr(torch, "cpu", None)
    if cpu is not None and getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "avx512_bf16"
    if "bf16" in flags:  # aarch64 (Graviton 3, Apple M2 and later under Linux)
        return "bf16"
    return None


@dataclass(frozen=True)
class Precision:
    """What a run computes in, on which device, and why (recorded in env.json, printed at the start)."""

    name: str
    """`fp32`, `bf16` or `fp16` (fp16 only on CUDA devices without bf16)."""
    device: str
    """`cpu` or `cuda`."""
    reason: str
    """One line: why this precision was picked."""

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain fp32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def pad_multiple(self) -> int:
        """Batches are padded to a multiple of this many tokens (training and inference): 8 in bf16 or fp16, 1 in
        fp32. On a CPU, oneDNN builds a bf16 matmul kernel for each new shape, and length-sorted batches are nearly
        all new lengths: with AMX, building them cost more than the padding saves (full fine-tuning trained 1.09x
        as fast padded to 8). fp32 matmuls (MKL) build none, so padding only costs there: 0.95x in training on an
        AVX2-only CPU. GPUs' tensor cores want multiples of 8 in half precision too (docs/speed.md)."""
        return 1 if self.dtype is None else 8

    @property
    def holds_weights(self) -> bool:
        """Whether inference holds the weights in `dtype` (a CPU in bf16) rather than autocasting (CUDA)."""
        return self.dtype is not None and self.device == "cpu"

    def autocast(self):
        """A context that runs the forward pass in this precision (nothing for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.dtype)

    @contextlib.contextmanager
    def frozen_weights(self, model: torch.nn.Module):
        """While training: the model's frozen floating-point weights held in the autocast dtype (so autocast
        does not cast them again at every step; trained weights stay fp32), restored bit for bit after."""
        with self._held(model, trained_too=False):
            yield

    def inference(self, model: torch.nn.Module):
        """The context a torch model predicts in. On a CPU in bf16: every floating-point weight held in bf16 (cast
        once, restored bit for bit after; a model already in bf16 is used as it is) and no autocast, so the whole
        forward pass runs in bf16, as transformers' `bf16_full_eval` does: autocast would run LayerNorm and the
        residual adds in fp32 and cast every activation back to bf16 before each matmul (1.2x autocast's speed on
        a 2-core AMX CPU, docs/speed.md). On CUDA: autocast. In fp32: nothing."""
        if self.holds_weights:
            return self._held(model, trained_too=True)
        return self.autocast()

    @contextlib.contextmanager
    def _held(self, model: torch.nn.Module, trained_too: bool):
        if self.dtype is None:
            yield
            return
        kept = {}
        for parameter in model.parameters():
            if ((trained_too or not parameter.requires_grad) and parameter.is_floating_point()
                    and parameter.dtype != self.dtype):
                kept[parameter] = parameter.data
                parameter.data = parameter.data.to(self.dtype)
        try:
            yield
        finally:
            for parameter, data in kept.items():
                parameter.data = data

    def as_dict(self) -> dict[str, str]:
        return {"precision": self.name, "device": self.device, "reason": self.reason}


def resolve(precision: str = "auto", device: str = "auto") -> Precision:
    """The precision `auto | fp32 | bf16` means on this machine, for `device` (`auto | cpu | cuda`)."""
    if precision not in PRECISIONS:
        raise SlmtuneError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SlmtuneError("train.device=cuda but no CUDA device is available")
    if device != "cpu" and torch.cuda.is_available():
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "fp32":
            return Precision("fp32", "cuda", "asked for fp32")
        if precision == "bf16" and not bf16_ok:
            raise SlmtuneError("precision bf16 asked for, but this CUDA device has no bf16: use auto or fp32")
        if bf16_ok:
            return Precision("bf16", "cuda", "asked for bf16" if precision == "bf16" else "CUDA device with bf16")
        return Precision("fp16", "cuda", "CUDA device without bf16: fp16 mixed precision")
    feature = cpu_bf16_support()
    if precision == "fp32":
        return Precision("fp32", "cpu", "asked for fp32")
    if precision == "bf16":
        note = f"native ({feature})" if feature else "emulated: no native bf16 on this CPU, slower than fp32"
        return Precision("bf16", "cpu", f"asked for bf16; {note}")
    if feature:
        return Precision("bf16", "cpu", f"CPU with native bf16 ({feature})")
    return Precision("fp32", "cpu", "CPU without native bf16 (AVX512-BF16 or AMX): bf16 would be slower")
