"""Device choice and reproducibility (sprint 01).

- `get_device("auto" | "cpu" | "cuda" | "cuda:1" | "mps")`: the best available device, or the
  one asked for, with a clear error when it is not there.
- `seed_everything(seed)`: seed Python, NumPy and PyTorch (CPU and every GPU) in one call.
"""

from __future__ import annotations

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
