"""Attention (sprint 06).

- `CausalSelfAttention`: the efficient GPT path: one fused QKV projection and PyTorch's
  `F.scaled_dot_product_attention` (flash / memory-efficient kernels where available),
  with an optional `KVCache` for incremental decoding.
- `KVCache`: keys and values of past positions, appended to at each decoding step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import LLMLabError


class KVCache:
    """Past keys and values of one attention layer, shape (batch, heads, length, head_dim)."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new positions' keys/values and return all keys/values so far."""
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=-2)
            self.v = torch.cat([self.v, v], dim=-2)
        return self.k, self.v


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with fused QKV (GPT-2's `c_attn` / `c_proj`)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise LLMLabError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_head = n_head
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, 3C) -> three (B, n_head, T, head_dim) tensors
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        past = 0
        if kv_cache is not None:
            past = len(kv_cache)
            k, v = kv_cache.append(k, v)
        dropout_p = self.dropout if self.training else 0.0
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            # New query i sits at absolute position past + i and may see keys 0..past + i.
            # (`is_causal` aligns the mask top-left, which is wrong once a cache exists.)
            key_pos = torch.arange(past + T, device=x.device)
            query_pos = torch.arange(past, past + T, device=x.device)
            mask = key_pos[None, :] <= query_pos[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))
