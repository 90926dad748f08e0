"""Device choice and reproducibility (sprint 01).

- `get_device("auto" | "cpu" | "cuda" | "cuda:1" | "mps")`: the best available device, or the
  one asked for, with a clear error when it is not there.
- `seed_everything(seed)`: seed Python, NumPy and PyTorch (CPU and every GPU) in one call.
- `keep_freed_memory()`: ask glibc's malloc to reuse freed buffers instead of returning them
  to the kernel, which saves a page fault per 4 KB of every fresh activation (sprint 09).
"""

from __future__ import annotations

import ctypes
import functools
import os
import random

import numpy as np
import torch

from llmlab.errors import LLMLabError


def get_device(name: str | None = "auto") -> torch.device:
    """Return `name` as a device; "auto" (or None) picks cuda, then mps, then cpu."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LLMLabError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LLMLabError("--device cuda asked for, but no CUDA GPU is available: use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LLMLabError("--device mps asked for, but MPS is not available: use --device cpu")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed every random number generator the course uses.

    `deterministic=True` also asks PyTorch for deterministic kernels (slower on GPU), which
    the exact-resume and distributed tests rely on.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CPU and all CUDA devices
    os.environ["PYTHONHASHSEED"] = str(seed)
    # Set both ways: a deterministic run must not leave the flag on for what runs next.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


# glibc's mallopt() parameters (<malloc.h>)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's upper limit on a 64-bit system


@functools.cache  # process-wide and idempotent: set it once
def keep_freed_memory(trim_mb: int = 256) -> bool:
    """Make glibc's malloc keep freed blocks of up to 32 MB for reuse (Linux; elsewhere a
    no-op that returns False).

    A training step frees and allocates the same activation-sized buffers every time. By
    default glibc serves a block of more than 128 KB with a fresh `mmap` and gives it back on
    `free` (the threshold adapts, but trimming still returns the top of the heap), so the next
    step touches new pages: one page fault per 4 KB. On sprint 09's CPU (a VM, where a fault
    costs ~2.3 us) that was ~2,000 faults, ~4 ms of a 65 ms step. With blocks up to 32 MB
    served from the heap and up to `trim_mb` MB of free heap kept, a step faults no more.
    The cost: the process holds on to what it freed (here a few MB)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return mallopt(_M_TRIM_THRESHOLD, trim_mb * 2**20) == 1 and ok
