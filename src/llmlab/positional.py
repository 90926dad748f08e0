"""Positional encodings (sprint 05): how a transformer learns where each token sits.

- `sinusoidal_table(length, dim)`: the fixed table of "Attention Is All You Need",
  PE[pos, 2i] = sin(pos / 10000^(2i/dim)), PE[pos, 2i+1] = cos(pos / 10000^(2i/dim)).
- `SinusoidalPositionalEncoding`: adds that table (a buffer) to token embeddings, then dropout.
- `LearnedPositionalEmbedding`: GPT-2's way, one trainable vector per position, added likewise.
- `RotaryEmbedding` + `apply_rotary` (RoPE, Llama / SmolLM2): rotate queries and keys by an
  angle proportional to their position, so q . k depends only on the positions' difference.
  Same layout as Hugging Face's `LlamaRotaryEmbedding` / `apply_rotary_pos_emb` ("rotate half").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmlab.errors import LLMLabError


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The fixed (length, dim) sinusoidal table; with an odd `dim` the last column is a sine."""
    if length <= 0 or dim <= 0:
        raise LLMLabError(f"sinusoidal_table needs length > 0 and dim > 0, got {length}, {dim}")
    position = torch.arange(length, dtype=torch.float32)[:, None]
    # 1 / 10000^(2i/dim) for i = 0 .. ceil(dim/2) - 1, computed in log space for accuracy.
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: dim // 2])
    return table


def _check_length(length: int, offset: int, max_len: int, what: str) -> None:
    if offset < 0 or offset + length > max_len:
        raise LLMLabError(
            f"{what}: positions {offset}..{offset + length - 1} do not fit max_len={max_len}; "
            "shorten the sequence or build the module with a larger max_len"
        )


class SinusoidalPositionalEncoding(nn.Module):
    """x + PE[offset : offset + L], then dropout. The table is a buffer: saved with `.to()`,
    never trained (and not stored in the state dict, since it is recomputed exactly)."""

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise LLMLabError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model, self.max_len = d_model, max_len
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: (B, L, d_model) token embeddings; `offset` = position of the first token."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise LLMLabError(f"expected (batch, length, {self.d_model}), got {tuple(x.shape)}")
        _check_length(x.shape[1], offset, self.max_len, "SinusoidalPositionalEncoding")
        return self.dropout(x + self.pe[offset : offset + x.shape[1]])


class LearnedPositionalEmbedding(nn.Module):
    """x + W[offset : offset + L] with a trainable (max_len, d_model) table (GPT-2's `wpe`)."""

    def __init__(self, max_len: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)  # GPT-2's init
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise LLMLabError(f"expected (batch, length, {self.d_model}), got {tuple(x.shape)}")
        _check_length(x.shape[1], offset, self.max_len, "LearnedPositionalEmbedding")
        return self.dropout(x + self.weight[offset : offset + x.shape[1]])


class RotaryEmbedding(nn.Module):
    """cos / sin tables for RoPE: pair (i, i + d/2) of a head rotates by angle pos * theta_i,
    theta_i = base^(-2i/d). Call with position ids; pass the result to `apply_rotary`."""

    def __init__(self, head_dim: int, max_len: int = 2048, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim <= 0 or head_dim % 2:
            raise LLMLabError(
                f"RoPE rotates pairs of features: head_dim must be even, got {head_dim}"
            )
        self.head_dim, self.max_len, self.base = head_dim, max_len, base
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq  # (max_len, d/2)
        angles = torch.cat([angles, angles], dim=-1)  # feature i and i + d/2 share an angle
        self.register_buffer("cos_table", angles.cos(), persistent=False)
        self.register_buffer("sin_table", angles.sin(), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer positions of any shape (e.g. (L,) or (B, L)) -> cos, sin of shape (..., head_dim)."""
        if position_ids.numel() and (
            int(position_ids.min()) < 0 or int(position_ids.max()) >= self.max_len
        ):
            raise LLMLabError(
                f"RotaryEmbedding: positions up to {int(position_ids.max())} do not fit "
                f"max_len={self.max_len}; build it with a larger max_len"
            )
        return self.cos_table[position_ids], self.sin_table[position_ids]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension (a 90-degree turn per pair)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class _Rotate(torch.autograd.Function):
    """x * cos + rotate_half(x) * sin with a hand-written backward, on the two halves.

    On the halves (x1, x2) of the last dimension, and (c1, c2), (s1, s2) of the tables:
    out1 = x1 c1 - x2 s1, out2 = x2 c2 + x1 s2. Written with `rotate_half`, autograd records
    a negation, a concatenation, two products and a sum per tensor and runs as many kernels
    backwards; here the forward is four half-width kernels and so is the backward, the
    transposed rotation: g1 c1 + g2 s2 and g2 c2 - g1 s1. That saves ~1.5 ms of sprint 09's
    ~60 ms training step on a CPU (note 07 §5 of sprint 09)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(cos, sin)
        ctx.x_dtype = x.dtype
        out = torch.empty(x.shape, dtype=torch.result_type(x, cos), device=x.device)
        (x1, x2), (o1, o2) = x.chunk(2, -1), out.chunk(2, -1)
        (c1, c2), (s1, s2) = cos.chunk(2, -1), sin.chunk(2, -1)
        torch.mul(x1, c1, out=o1).addcmul_(x2, s1, value=-1)
        torch.mul(x2, c2, out=o2).addcmul_(x1, s2)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        cos, sin = ctx.saved_tensors
        out = torch.empty(grad.shape, dtype=ctx.x_dtype, device=grad.device)
        (g1, g2), (o1, o2) = grad.chunk(2, -1), out.chunk(2, -1)
        (c1, c2), (s1, s2) = cos.chunk(2, -1), sin.chunk(2, -1)
        torch.mul(g1, c1, out=o1).addcmul_(g2, s2)
        torch.mul(g2, c2, out=o2).addcmul_(g1, s1, value=-1)
        return out, None, None


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k (B, H, L, head_dim) by the angles in cos/sin ((L, d) or (B, L, d)).

    Each pair (x_i, x_{i+d/2}) becomes (x_i cos - x_{i+d/2} sin, x_i sin + x_{i+d/2} cos),
    i.e. x * cos + rotate_half(x) * sin (computed by `_Rotate`, which skips the
    concatenation; tests/test_positional.py checks it against that formula and Hugging Face).
    """
    if cos.shape != sin.shape or cos.shape[-1] != q.shape[-1] or q.shape[-1] != k.shape[-1]:
        raise LLMLabError(
            f"apply_rotary: q {tuple(q.shape)}, k {tuple(k.shape)}, cos {tuple(cos.shape)} "
            "must share the last (head) dimension"
        )
    if cos.dim() == 3:  # (B, L, d) -> (B, 1, L, d), broadcasting over heads
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return _Rotate.apply(q, cos, sin), _Rotate.apply(k, cos, sin)
