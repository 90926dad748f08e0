"""Attention (sprint 06).

From scratch (what sprint 06 teaches, readable and checked against PyTorch):

- `causal_mask(size)`: the look-ahead mask, True where a query may attend (lower triangle).
- `padding_mask(lengths_or_keep)`: (B, 1, 1, L) mask, True for real tokens, False for padding.
- `scaled_dot_product_attention(q, k, v, mask)`: softmax(q k^T / sqrt(d)) v with boolean masks
  (True = keep, as `torch.nn.functional.scaled_dot_product_attention`); a fully masked row
  gives zeros, never NaN. Returns the output and the attention weights.
- `MultiHeadAttention`: separate `w_q`, `w_k`, `w_v`, `w_o` projections, `split_heads` /
  `combine_heads`, self- and cross-attention, optional `KVCache`; loads weights from
  `torch.nn.MultiheadAttention` or from a `CausalSelfAttention`.

The efficient path (what `llmlab.gpt` uses):

- `CausalSelfAttention`: one fused QKV projection and PyTorch's
  `F.scaled_dot_product_attention` (flash / memory-efficient kernels where available),
  with an optional `KVCache` for incremental decoding and optional QK-norm (sprint 09).
- `KVCache`: keys and values of past positions, appended to at each decoding step; dynamic
  (concatenate) or static (pre-allocated, written in place: sprint 10's fast decoding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import LLMLabError
from llmlab.positional import apply_rotary


def causal_mask(
    size: int, device: torch.device | str | None = None, *, past: int = 0
) -> torch.Tensor:
    """The (size, past + size) look-ahead mask: True where query i may attend to key j.

    With `past` cached positions, query i sits at absolute position `past + i` and sees keys
    `0 .. past + i`; `past=0` gives the usual lower-triangular (size, size) mask.
    """
    if size <= 0 or past < 0:
        raise LLMLabError(f"causal_mask needs size > 0 and past >= 0, got size={size}, past={past}")
    query_pos = torch.arange(past, past + size, device=device)
    key_pos = torch.arange(past + size, device=device)
    return key_pos[None, :] <= query_pos[:, None]


def padding_mask(lengths_or_keep: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """A (B, 1, 1, L) key mask, True for real tokens, that broadcasts over heads and queries.

    Pass either the lengths of the B sequences (1-D integer tensor; L = `max_len` or the
    longest length) or a (B, L) boolean tensor that is True for real tokens.
    """
    x = lengths_or_keep
    if x.dtype == torch.bool:
        if x.dim() != 2:
            raise LLMLabError(
                f"padding_mask: a boolean keep mask must be (B, L), got {tuple(x.shape)}"
            )
        keep = x
    elif not x.is_floating_point() and x.dim() == 1:
        longest = int(x.max()) if x.numel() else 0
        max_len = longest if max_len is None else max_len
        if (x < 0).any() or longest > max_len:
            raise LLMLabError(
                f"padding_mask: lengths must be in [0, max_len={max_len}], got {x.tolist()}"
            )
        keep = torch.arange(max_len, device=x.device)[None, :] < x[:, None]
    else:
        raise LLMLabError(
            "padding_mask expects 1-D integer lengths or a (B, L) boolean mask, got "
            f"dtype={x.dtype}, shape={tuple(x.shape)}"
        )
    return keep[:, None, None, :]


def _check_mask(mask: torch.Tensor, scores_shape: torch.Size) -> None:
    if mask.dtype != torch.bool:
        raise LLMLabError(
            f"attention mask must be boolean (True = attend), got dtype {mask.dtype} and shape "
            f"{tuple(mask.shape)} for scores of shape {tuple(scores_shape)}; convert it with "
            "`mask.bool()` (a 0/1 mask) or build it with causal_mask / padding_mask"
        )
    try:
        broadcast = torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        broadcast = None
    if broadcast != scores_shape:
        raise LLMLabError(
            f"attention mask of shape {tuple(mask.shape)} does not broadcast to the scores' "
            f"shape {tuple(scores_shape)} (..., queries, keys)"
        )


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d) with masked scores removed) v, from scratch.

    Shapes: q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv); `mask` is boolean and broadcasts
    to (..., Lq, Lk), True = may attend. Returns (output (..., Lq, dv), weights (..., Lq, Lk)).
    The weights are those actually used (after dropout, as `nn.MultiheadAttention` returns).
    A query whose keys are all masked gets zero weights and a zero output (no NaN).
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise LLMLabError(
            f"attention shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}; need q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv)"
        )
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Lq, Lk)
    if mask is not None:
        _check_mask(mask, scores.shape)
        # -inf makes exp() exactly 0 for masked keys. A row with no key left would be
        # softmax([-inf, ...]) = 0/0 = NaN, so such rows get finite scores and zero weights.
        row_alive = mask.any(dim=-1, keepdim=True)
        scores = scores.masked_fill(~mask, float("-inf")).masked_fill(~row_alive, 0.0)
        weights = torch.softmax(scores, dim=-1).masked_fill(~row_alive, 0.0)
    else:
        weights = torch.softmax(scores, dim=-1)
    if training and dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


class KVCache:
    """Past keys and values of one attention layer, shape (batch, heads, length, head_dim).

    Two storage strategies, same interface:
    - dynamic (`max_len=None`): each `append` concatenates, i.e. copies everything so far
      (simple; the cost of step t grows with t);
    - static (`max_len=N`): buffers for N positions are allocated on the first `append` and
      each step writes only its new slice in place (what fast decoders do; sprint 10).
    """

    def __init__(self, max_len: int | None = None) -> None:
        if max_len is not None and max_len <= 0:
            raise LLMLabError(f"KVCache max_len must be positive, got {max_len}")
        self.max_len = max_len
        self.length = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.length

    @property
    def k(self) -> torch.Tensor | None:
        return None if self._k is None else self._k[:, :, : self.length]

    @property
    def v(self) -> torch.Tensor | None:
        return None if self._v is None else self._v[:, :, : self.length]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new positions' keys/values and return all keys/values so far."""
        new = k.shape[-2]
        if self.max_len is None:
            if self._k is None:
                self._k, self._v = k, v
            else:
                self._k = torch.cat([self._k, k], dim=-2)
                self._v = torch.cat([self._v, v], dim=-2)
        else:
            if self.length + new > self.max_len:
                raise LLMLabError(
                    f"KVCache holds at most {self.max_len} positions, got {self.length + new}: "
                    "create it with a larger max_len"
                )
            if self._k is None:
                shape = (*k.shape[:-2], self.max_len, k.shape[-1])
                self._k = k.new_empty(shape)
                self._v = v.new_empty((*v.shape[:-2], self.max_len, v.shape[-1]))
            self._k[:, :, self.length : self.length + new] = k
            self._v[:, :, self.length : self.length + new] = v
        self.length += new
        return self.k, self.v

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (in that order): beam search moves caches with their beams."""
        if self._k is not None:
            self._k = self._k.index_select(0, index)
            self._v = self._v.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Multi-head attention from scratch: project, split into heads, attend, combine, project.

    `forward(query)` is self-attention; `forward(query, key=memory)` is cross-attention
    (keys and values from the encoder output). Masks are boolean, True = may attend, and
    broadcast to (B, H, Lq, Lk): a (Lq, Lk) causal mask, a (B, 1, 1, Lk) padding mask, or both
    combined with `&`.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
    ) -> None:
        super().__init__()
        if d_model <= 0 or n_heads <= 0 or d_model % n_heads != 0:
            raise LLMLabError(
                f"d_model={d_model} must be a positive multiple of n_heads={n_heads} "
                "(each head gets d_model // n_heads dimensions)"
            )
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.dropout = dropout
        self.w_q = nn.Linear(d_model, d_model, bias=bias)
        self.w_k = nn.Linear(kdim or d_model, d_model, bias=bias)
        self.w_v = nn.Linear(vdim or d_model, d_model, bias=bias)
        self.w_o = nn.Linear(d_model, d_model, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) -> (B, H, L, d_head): each head sees its own slice of the features."""
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.d_head).transpose(1, 2)

    def combine_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, L, d_head) -> (B, L, d_model): concatenate the heads again."""
        B, H, L, Dh = x.shape
        return x.transpose(1, 2).reshape(B, L, H * Dh)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        need_weights: bool = False,
        *,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from `query` (B, Lq, d_model) to `key`/`value` (default: `query`).

        `kv_cache` (self-attention decoding): the new keys/values are appended and the
        query attends to all of them. `is_causal` adds the look-ahead mask, offset by the
        cache length so that decoding step by step equals recomputing the full sequence.
        Returns (output (B, Lq, d_model), weights (B, H, Lq, Lk) if `need_weights` else None).
        """
        key = query if key is None else key
        value = key if value is None else value
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise LLMLabError(
                f"query must be (batch, length, d_model={self.d_model}), got {tuple(query.shape)}"
            )
        if key.dim() != 3 or value.dim() != 3 or key.shape[:2] != value.shape[:2]:
            raise LLMLabError(
                f"key and value must be (batch, length, dim) with the same batch and length, "
                f"got key {tuple(key.shape)}, value {tuple(value.shape)}"
            )
        q = self.split_heads(self.w_q(query))
        k = self.split_heads(self.w_k(key))
        v = self.split_heads(self.w_v(value))
        past = 0
        if kv_cache is not None:
            past = len(kv_cache)
            k, v = kv_cache.append(k, v)
        if is_causal:
            causal = causal_mask(query.shape[1], query.device, past=past)
            mask = causal if mask is None else mask & causal
        out, weights = scaled_dot_product_attention(
            q, k, v, mask, dropout_p=self.dropout, training=self.training
        )
        return self.w_o(self.combine_heads(out)), (weights if need_weights else None)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """A copy of `torch.nn.MultiheadAttention` weights (its `in_proj` is q, k, v stacked)."""
        if not mha.batch_first:
            raise LLMLabError("from_torch expects nn.MultiheadAttention(batch_first=True)")
        bias = mha.out_proj.bias is not None
        new = cls(mha.embed_dim, mha.num_heads, mha.dropout, bias, mha.kdim, mha.vdim)
        new = new.to(mha.out_proj.weight.device, mha.out_proj.weight.dtype)
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                w_q, w_k, w_v = mha.in_proj_weight.chunk(3, dim=0)
            else:
                w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
            for layer, w in zip((new.w_q, new.w_k, new.w_v), (w_q, w_k, w_v), strict=True):
                layer.weight.copy_(w)
            new.w_o.weight.copy_(mha.out_proj.weight)
            if bias:
                for layer, b in zip(
                    (new.w_q, new.w_k, new.w_v), mha.in_proj_bias.chunk(3), strict=True
                ):
                    layer.bias.copy_(b)
                new.w_o.bias.copy_(mha.out_proj.bias)
        return new

    @classmethod
    def from_causal_self_attention(cls, attn: CausalSelfAttention) -> MultiHeadAttention:
        """A copy of a `CausalSelfAttention`: its fused `c_attn` splits into w_q, w_k, w_v."""
        d_model = attn.c_proj.weight.shape[0]
        bias = attn.c_proj.bias is not None
        new = cls(d_model, attn.n_head, attn.dropout, bias)
        new = new.to(attn.c_proj.weight.device, attn.c_proj.weight.dtype)
        with torch.no_grad():
            for layer, w in zip(
                (new.w_q, new.w_k, new.w_v), attn.c_attn.weight.chunk(3), strict=True
            ):
                layer.weight.copy_(w)
            new.w_o.weight.copy_(attn.c_proj.weight)
            if bias:
                for layer, b in zip(
                    (new.w_q, new.w_k, new.w_v), attn.c_attn.bias.chunk(3), strict=True
                ):
                    layer.bias.copy_(b)
                new.w_o.bias.copy_(attn.c_proj.bias)
        return new


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with fused QKV (GPT-2's `c_attn` / `c_proj`)."""

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        dropout: float = 0.0,
        bias: bool = True,
        *,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise LLMLabError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_head = n_head
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        # QK-norm (Persimmon, OLMo 2, modded-nanoGPT): LayerNorm over each head's query and key
        # bounds the attention logits, so a high learning rate cannot blow the softmax up.
        self.q_norm = self.k_norm = None
        if qk_norm:
            head_dim = n_embd // n_head
            self.q_norm = nn.LayerNorm(head_dim, eps=norm_eps, bias=bias)
            self.k_norm = nn.LayerNorm(head_dim, eps=norm_eps, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: KVCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`rope`: (cos, sin) of this call's positions, (T, head_dim) or (B, T, head_dim), to
        rotate q and k. `attn_mask`: boolean (B, 1, T, past + T), True = may attend, replacing
        the causal mask (e.g. causal AND not padding); None = plain causal attention."""
        B, T, C = x.shape
        # (B, T, 3C) -> three (B, n_head, T, head_dim) tensors
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:  # rotate before caching: cached keys keep their own positions
            q, k = apply_rotary(q, k, *rope)
        past = 0
        if kv_cache is not None:
            past = len(kv_cache)
            k, v = kv_cache.append(k, v)
        dropout_p = self.dropout if self.training else 0.0
        if attn_mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        elif T == 1:  # one new query may see every cached key: no mask to build (decoding)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        else:
            # New query i sits at absolute position past + i and may see keys 0..past + i.
            # (`is_causal` aligns the mask top-left, which is wrong once a cache exists.)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=causal_mask(T, x.device, past=past), dropout_p=dropout_p
            )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))
