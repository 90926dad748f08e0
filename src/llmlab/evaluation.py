"""Language-model evaluation: loss over a whole split and perplexity (sprint 09).

Perplexity is `exp` of the mean next-token cross-entropy (in nats): the number of equally
likely tokens the model is, on average, choosing between. `evaluate_lm` scores EVERY token
of a split once (not a sample of batches), so two runs are compared on exactly the same text.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import nn

from llmlab.data.lm_dataset import sequential_windows


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats); inf instead of an overflow for a diverged model."""
    return math.exp(loss) if loss < 700 else float("inf")


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    data: np.ndarray,
    block_size: int,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Mean loss and perplexity over every target token of `data` (non-overlapping windows).

    Each window restarts the context, so the first tokens of a window are predicted with
    little history: this is the standard "chunked" evaluation, a slight over-estimate of
    the loss a sliding window would give.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for x, y in sequential_windows(data, block_size, batch_size, device):
            with autocast or contextlib.nullcontext():
                _, loss = model(x, y)
            total += float(loss) * y.numel()  # batches differ in size: weight by tokens
            count += y.numel()
    finally:
        model.train(was_training)
    mean = total / count
    return {"loss": mean, "perplexity": perplexity(mean), "tokens": count}
