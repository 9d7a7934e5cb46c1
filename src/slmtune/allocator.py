"""glibc's malloc set for tensor work: freed memory is kept for the next forward pass or training step.

By default glibc hands each allocation of 128 KiB or more to a fresh `mmap` and unmaps it when freed, moving that
limit up only as it sees larger blocks freed, and gives the top of the heap back to the system beyond twice that
limit. A forward pass allocates and frees activations of a few MiB per layer, so the next pass touches fresh pages
again: 1.8 million page faults for one pass over 4,960 AG News rows, against 0.18 million with the settings here
(2-core AMX CPU, docs/speed.md). PyTorch's CPU performance guide points at jemalloc or tcmalloc preloaded for the
same reason; these two `mallopt` settings get most of it without a preload. The process keeps what it has freed
(up to its peak), which is what a training or inference process reuses anyway.

Set once per process by slmtune's training and inference; SLMTUNE_KEEP_FREED_MEMORY=0 leaves glibc as it is.
Nothing happens on other C libraries (musl, macOS, Windows).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
"""Allocations below this come from the heap: glibc's own ceiling for its moving limit (32 MiB on 64-bit)."""
TRIM_THRESHOLD = (1 << 31) - 1
"""Free memory at the top of the heap kept before any is given back (the largest value mallopt takes)."""


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the settings above once per process (glibc only); True where they took."""
    if os.environ.get("SLMTUNE_KEEP_FREED_MEMORY", "1").strip() == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # the mmap limit first: setting either fixes both limits, and the default 128 KiB would then stay
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
