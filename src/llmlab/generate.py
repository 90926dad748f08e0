"""Autoregressive text generation for our `GPT` (sprint 08; reused by sprints 09 and 10).

- `filter_top_k(logits, k)`, `filter_top_p(logits, p)`: remove unlikely tokens (set to -inf).
- `sample_next(logits, ...)`: one next token from the last position's logits: greedy, or
  temperature + top-k + top-p sampling.
- `generate(model, idx, max_new_tokens, ...)`: the decoding loop, with a per-layer `KVCache`
  (each step feeds one new token) or, without the cache, re-running the whole (cropped)
  context at every step.
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.attention import KVCache
from llmlab.errors import LLMLabError


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the others to -inf."""
    if k <= 0:
        raise LLMLabError(f"top_k must be a positive integer, got {k}")
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of top tokens whose probability reaches p."""
    if not 0.0 < p <= 1.0:
        raise LLMLabError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    # Drop a token when the tokens *before* it already reach p; the top token always stays.
    drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, vocab) logits -> (B, 1) next token ids."""
    if greedy:
        return logits.argmax(dim=-1, keepdim=True)
    if not temperature > 0:
        raise LLMLabError(
            f"temperature must be > 0, got {temperature}: use greedy=True for argmax decoding"
        )
    logits = logits.float() / temperature
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None:
        logits = filter_top_p(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend the (B, T) prompt `idx` by `max_new_tokens` tokens; returns (B, T + new).

    With `use_cache`, the prompt is read once and each step feeds only the newest token,
    reusing the keys/values stored in one `KVCache` per block; positions then cannot go
    past `block_size`. Without it, every step re-reads the last `block_size` tokens (a
    sliding window), which is slower but never runs out of context.
    The model is put in eval mode for the call (dropout off) and restored afterwards.
    """
    if max_new_tokens < 0:
        raise LLMLabError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not greedy and not temperature > 0:
        raise LLMLabError(
            f"temperature must be > 0, got {temperature}: use greedy=True for argmax decoding"
        )
    if top_k is not None and top_k <= 0:
        raise LLMLabError(f"top_k must be a positive integer, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise LLMLabError(f"top_p must be in (0, 1], got {top_p}")
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise LLMLabError(
            f"the prompt must be (batch, time) with time >= 1, got {tuple(idx.shape)}"
        )
    # Decode with the plain module: a DDP wrapper has no `config`, and a `torch.compile`d
    # model would recompile for every new sequence length.
    while hasattr(model, "_orig_mod") or isinstance(model, nn.parallel.DistributedDataParallel):
        model = model._orig_mod if hasattr(model, "_orig_mod") else model.module
    block_size = model.config.block_size
    if use_cache and idx.shape[1] + max_new_tokens > block_size:
        raise LLMLabError(
            f"prompt ({idx.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"context (block_size={block_size}): shorten the prompt, generate fewer tokens, "
            "or pass use_cache=False to slide the context window"
        )
    device = next(model.parameters()).device
    idx = idx.to(device)
    was_training = model.training
    model.eval()
    try:
        caches = [KVCache() for _ in model.h] if use_cache else None
        step_input = idx
        for _ in range(max_new_tokens):
            if not use_cache:
                step_input = idx[:, -block_size:]  # crop to the context window
            logits, _ = model(step_input, kv_caches=caches)
            next_token = sample_next(logits[:, -1, :], temperature, top_k, top_p, greedy, generator)
            idx = torch.cat([idx, next_token], dim=1)
            step_input = next_token  # with a cache, only the new token is fed next
    finally:
        model.train(was_training)
    return idx
