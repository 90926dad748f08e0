"""Language-model evaluation: loss over a whole split and perplexity (sprint 09).

Perplexity is `exp` of the mean next-token cross-entropy (in nats): the number of equally
likely tokens the model is, on average, choosing between. `evaluate_lm` scores EVERY token
of a split exactly once (not a sample of batches), so two runs are compared on the same text:

- chunked (default): non-overlapping windows of `block_size`; a window's first tokens are
  predicted with little context, so this slightly over-states the loss;
- sliding (`stride < block_size`): windows `stride` apart, each scoring only its last
  `stride` targets, so every token after the first window sees at least
  `block_size - stride` tokens of context (more compute, a closer estimate).

`CausalLMAdapter` gives a `transformers` causal LM our `model(x, targets) -> (logits, loss)`
interface, so the same `evaluate_lm` scores SmolLM2 or GPT-2 (sprint 10), and
`bits_per_character` turns a loss per token into one that tokenizers cannot distort.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmlab.data.lm_dataset import check_length, sequential_windows
from llmlab.errors import LLMLabError


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats); inf instead of an overflow for a diverged model."""
    if math.isnan(loss):
        return float("nan")
    return math.exp(loss) if loss < 700 else float("inf")


def _sliding_windows(n_tokens: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, length, first scored position) for windows covering every target once."""
    windows, scored_up_to, start = [], 0, 0  # targets are data[1:], numbered 1..n-1
    while scored_up_to < n_tokens - 1:
        length = min(block_size, n_tokens - 1 - start)
        first = scored_up_to - start  # window position whose target is the next unscored one
        windows.append((start, length, first))
        scored_up_to = start + length
        start += stride
    return windows


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    data: np.ndarray,
    block_size: int,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
    stride: int | None = None,
) -> dict[str, float]:
    """Mean loss and perplexity over every target token of `data`, each scored once.

    `stride=None` (or `block_size`) is the chunked evaluation; a smaller stride slides the
    window (see the module docstring).
    """
    if stride is not None and not 0 < stride <= block_size:
        raise LLMLabError(f"stride must be in [1, block_size={block_size}], got {stride}")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        if stride is None or stride == block_size:
            for x, y in sequential_windows(data, block_size, batch_size, device):
                with autocast or contextlib.nullcontext():
                    _, loss = model(x, y)
                total += float(loss) * y.numel()  # batches differ in size: weight by tokens
                count += y.numel()
        else:
            check_length(len(data), 1)
            windows = _sliding_windows(len(data), block_size, stride)
            # Group windows of equal length so each batch is one rectangular tensor.
            by_length: dict[int, list[tuple[int, int]]] = {}
            for start, length, first in windows:
                by_length.setdefault(length, []).append((start, first))
            for length, items in by_length.items():
                offsets = np.arange(length + 1)
                for i in range(0, len(items), batch_size):
                    chunk = items[i : i + batch_size]
                    index = np.array([s for s, _ in chunk])[:, None] + offsets
                    w = torch.from_numpy(np.asarray(data)[index].astype(np.int64)).to(device)
                    with autocast or contextlib.nullcontext():
                        logits, _ = model(w[:, :-1])
                    losses = F.cross_entropy(
                        logits.float().transpose(1, 2), w[:, 1:], reduction="none"
                    )
                    keep = (
                        torch.arange(length, device=losses.device)[None, :]
                        >= torch.tensor([f for _, f in chunk], device=losses.device)[:, None]
                    )
                    total += float(losses[keep].sum())
                    count += int(keep.sum())
    finally:
        model.train(was_training)
    mean = total / count
    return {"loss": mean, "perplexity": perplexity(mean), "tokens": count}


class CausalLMAdapter(nn.Module):
    """Any causal LM behind llmlab's `forward(idx, targets) -> (logits, loss)`: a
    `transformers` model is called with `input_ids`; an llmlab model (already answering
    this way) is passed through, so one code path scores both."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.is_llmlab = type(model).__module__.startswith("llmlab.")

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.is_llmlab:
            logits = self.model(idx)[0]
        else:  # no key/value cache: scoring and training never reuse it, and it costs memory
            logits = self.model(input_ids=idx, use_cache=False).logits
        return logits, self.loss(logits, targets)

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
        """Mean next-token cross-entropy in float32 (targets of -1 ignored); None without
        targets."""
        if targets is None:
            return None
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1
        )


def bits_per_character(loss_nats: float, n_tokens: int, n_chars: int) -> float:
    """Total information (loss per token x tokens scored) per character, in bits.

    A per-token loss depends on what a token is: a character-level model predicts ~3.5 times
    as many, easier, symbols as a BPE model on the same text. Dividing the total by the
    characters those tokens cover compares models with any tokenizers on equal terms.
    """
    if n_chars <= 0:
        raise LLMLabError(f"n_chars must be positive, got {n_chars}")
    return loss_nats * n_tokens / (n_chars * math.log(2))
