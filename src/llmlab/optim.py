"""Optimiser and learning-rate schedule for language-model training (sprint 09).

- `decay_groups` / `configure_adamw`: AdamW with weight decay on the matrices of linear
  layers only, none on biases, norms and embeddings (the token embedding, tied to the LM head,
  counts as an embedding); the fused kernel on CUDA.
- `lr_at`: linear warmup, then cosine decay to a floor: the schedule of GPT-2/3 training.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from llmlab.errors import LLMLabError


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters into decayed (matrices of linear layers) and not decayed (the rest).

    Decay pulls weights toward zero; that regularises the matrices that mix features, but on
    biases, LayerNorm gains and embedding rows it only fights the model (a LayerNorm gain of 0
    switches a feature off; a rare token's embedding would shrink between its rare updates).
    """
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():  # parameters() yields a tied tensor once
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in embedding_params else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def configure_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    device_type: str = "cpu",
) -> torch.optim.AdamW:
    """AdamW over `decay_groups`, using the fused kernel on CUDA (one launch for all params)."""
    fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    # Fused: one kernel for all parameters on CUDA. Elsewhere `foreach` still batches the
    # per-parameter updates into a few multi-tensor ops (PyTorch enables it only on CUDA).
    extra = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr, betas=betas, **extra)


def lr_at(step: int, max_lr: float, warmup_steps: int, max_steps: int, min_lr: float) -> float:
    """Learning rate at `step`: linear warmup to `max_lr`, cosine decay to `min_lr`.

    Warmup keeps the first updates small while Adam's second-moment estimates are still
    noisy; the cosine then anneals so the last steps settle into a minimum.
    """
    if max_steps <= 0:
        raise LLMLabError(f"max_steps must be positive, got {max_steps}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
