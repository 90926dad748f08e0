"""Parity tests of the from-scratch attention (sprint 06) against PyTorch.

Tolerances: float32 everywhere, `atol=1e-5, rtol=1e-4` for outputs and weights, `atol=1e-4,
rtol=1e-4` for gradients (different summation orders; observed errors are ~1e-7).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmlab.attention import (
    CausalSelfAttention,
    KVCache,
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)
from llmlab.errors import LLMLabError

TOL = {"atol": 1e-5, "rtol": 1e-4}
GRAD_TOL = {"atol": 1e-4, "rtol": 1e-4}

B, H, L, D = 2, 3, 5, 8


def _qkv(seed: int = 0, lq: int = L, lk: int = L) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, n, D, generator=g, requires_grad=True) for n in (lq, lk, lk))


def test_causal_mask_is_lower_triangle() -> None:
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert torch.equal(m, torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    # With 3 cached positions, the 2 new queries see the whole past plus themselves.
    m = causal_mask(2, past=3)
    assert m.tolist() == [[True] * 4 + [False], [True] * 5]


def test_padding_mask_from_lengths_and_keep() -> None:
    m = padding_mask(torch.tensor([3, 1]), max_len=4)
    assert m.shape == (2, 1, 1, 4)
    assert m[:, 0, 0].tolist() == [[True, True, True, False], [True, False, False, False]]
    keep = torch.tensor([[True, False], [True, True]])
    assert torch.equal(padding_mask(keep)[:, 0, 0], keep)
    with pytest.raises(LLMLabError, match="lengths"):
        padding_mask(torch.tensor([5]), max_len=4)
    with pytest.raises(LLMLabError, match="padding_mask"):
        padding_mask(torch.ones(2, 3))


def _masks() -> dict[str, torch.Tensor | None]:
    causal = causal_mask(L)
    pad = padding_mask(torch.tensor([L, 3]), max_len=L)
    return {"none": None, "causal": causal, "padding": pad, "both": pad & causal}


@pytest.mark.parametrize("name", ["none", "causal", "padding", "both"])
def test_sdpa_matches_torch_outputs_and_gradients(name: str) -> None:
    mask = _masks()[name]
    q, k, v = _qkv()
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask)
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, L), **TOL)
    if mask is not None:
        assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for mine, theirs in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(mine.grad, theirs.grad, **GRAD_TOL)


def test_sdpa_fully_masked_rows_give_zeros_not_nan() -> None:
    q, k, v = _qkv()
    mask = causal_mask(L).clone()
    mask[2] = False  # query 2 may attend to nothing
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    assert (out[..., 2, :] == 0).all() and (weights[..., 2, :] == 0).all()
    # The other rows are unaffected: they equal torch's result.
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(L))
    keep_rows = [0, 1, 3, 4]
    torch.testing.assert_close(out[..., keep_rows, :], ref[..., keep_rows, :], **TOL)
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[..., 2, :] == 0).all()


def test_sdpa_bad_masks_raise() -> None:
    q, k, v = _qkv()
    with pytest.raises(LLMLabError, match=r"\(3, 3\).*\(2, 3, 5, 5\)"):
        scaled_dot_product_attention(q, k, v, causal_mask(3))
    with pytest.raises(LLMLabError, match="boolean"):
        scaled_dot_product_attention(q, k, v, causal_mask(L).float())
    with pytest.raises(LLMLabError, match="shapes"):
        scaled_dot_product_attention(q, k[..., :4], v)


def test_sdpa_dropout_only_in_training() -> None:
    q, k, v = _qkv()
    a, _ = scaled_dot_product_attention(q, k, v, dropout_p=0.5, training=False)
    b, _ = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(a, b)
    torch.manual_seed(0)
    _, w = scaled_dot_product_attention(q, k, v, dropout_p=0.5, training=True)
    assert (w == 0).any()


def test_split_and_combine_heads_are_inverse() -> None:
    mha = MultiHeadAttention(12, 3)
    x = torch.randn(2, 7, 12)
    heads = mha.split_heads(x)
    assert heads.shape == (2, 3, 7, 4)
    # head h holds features h*4 .. h*4+3
    torch.testing.assert_close(heads[:, 1], x[..., 4:8])
    torch.testing.assert_close(mha.combine_heads(heads), x)


def test_mha_rejects_bad_configuration_and_input() -> None:
    with pytest.raises(LLMLabError, match="multiple"):
        MultiHeadAttention(10, 3)
    mha = MultiHeadAttention(12, 3)
    with pytest.raises(LLMLabError, match="d_model=12"):
        mha(torch.randn(2, 5, 8))
    with pytest.raises(LLMLabError, match=r"\(4, 4\)"):
        mha(torch.randn(2, 5, 12), mask=causal_mask(4))


def _torch_and_mine(kdim: int | None = None, vdim: int | None = None, seed: int = 0):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(12, 3, batch_first=True, kdim=kdim, vdim=vdim).eval()
    with torch.no_grad():  # torch initialises the in-projection bias to zero: make it count
        for p in ref.parameters():
            if p.dim() == 1:
                p.normal_()
    return ref, MultiHeadAttention.from_torch(ref).eval()


def test_mha_self_attention_matches_torch_with_causal_and_padding() -> None:
    ref, mine = _torch_and_mine()
    x = torch.randn(2, 6, 12)
    lengths = torch.tensor([6, 4])
    keep = padding_mask(lengths, 6)
    causal = causal_mask(6)
    out, w = mine(x, mask=keep & causal, need_weights=True)
    # torch: attn_mask True = NOT allowed, key_padding_mask True = IGNORE this key.
    ref_out, ref_w = ref(
        x, x, x, attn_mask=~causal, key_padding_mask=~keep[:, 0, 0], need_weights=True
    )
    torch.testing.assert_close(out, ref_out, **TOL)
    assert w.shape == (2, 3, 6, 6)
    torch.testing.assert_close(w.mean(dim=1), ref_w, **TOL)
    # Same result through the is_causal flag.
    out2, _ = mine(x, mask=keep, is_causal=True)
    torch.testing.assert_close(out2, out, **TOL)


def test_mha_gradients_match_torch() -> None:
    ref, mine = _torch_and_mine()
    x = torch.randn(2, 6, 12)
    causal = causal_mask(6)
    out, _ = mine(x, mask=causal)
    ref_out, _ = ref(x, x, x, attn_mask=~causal, need_weights=False)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref_out.backward(grad)
    w_q, w_k, w_v = ref.in_proj_weight.grad.chunk(3)
    torch.testing.assert_close(mine.w_q.weight.grad, w_q, **GRAD_TOL)
    torch.testing.assert_close(mine.w_k.weight.grad, w_k, **GRAD_TOL)
    torch.testing.assert_close(mine.w_v.weight.grad, w_v, **GRAD_TOL)
    torch.testing.assert_close(mine.w_o.weight.grad, ref.out_proj.weight.grad, **GRAD_TOL)


@pytest.mark.parametrize("kdim", [None, 7])
def test_mha_cross_attention_matches_torch(kdim: int | None) -> None:
    ref, mine = _torch_and_mine(kdim=kdim, vdim=kdim)
    target = torch.randn(2, 4, 12)
    memory = torch.randn(2, 9, kdim or 12)
    keep = padding_mask(torch.tensor([9, 5]), 9)
    out, w = mine(target, memory, memory, mask=keep, need_weights=True)
    ref_out, ref_w = ref(target, memory, memory, key_padding_mask=~keep[:, 0, 0])
    assert out.shape == (2, 4, 12) and w.shape == (2, 3, 4, 9)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(w.mean(dim=1), ref_w, **TOL)
    assert (w[1, :, :, 5:] == 0).all()


def test_mha_kv_cache_decoding_equals_full_recomputation() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3).eval()
    x = torch.randn(2, 7, 12)
    full, _ = mha(x, is_causal=True)
    cache = KVCache()
    # A 3-token prompt, then one token at a time, then a 2-token chunk.
    steps = [mha(x[:, :3], kv_cache=cache, is_causal=True)[0]]
    steps += [mha(x[:, t : t + 1], kv_cache=cache, is_causal=True)[0] for t in (3, 4)]
    steps.append(mha(x[:, 5:7], kv_cache=cache, is_causal=True)[0])
    assert len(cache) == 7
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)


def _causal_pair(seed: int = 0) -> tuple[CausalSelfAttention, MultiHeadAttention]:
    torch.manual_seed(seed)
    fast = CausalSelfAttention(12, 3).eval()
    return fast, MultiHeadAttention.from_causal_self_attention(fast).eval()


def test_causal_self_attention_equals_from_scratch_path() -> None:
    fast, slow = _causal_pair()
    x = torch.randn(2, 6, 12, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y_fast = fast(x)
    y_slow, _ = slow(x2, mask=causal_mask(6))
    torch.testing.assert_close(y_fast, y_slow, **TOL)
    y_fast.sum().backward()
    y_slow.sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, **GRAD_TOL)


def test_causal_self_attention_kv_cache_equals_full_recomputation() -> None:
    fast, slow = _causal_pair(1)
    x = torch.randn(1, 6, 12)
    full = fast(x)
    fast_cache, slow_cache = KVCache(), KVCache()
    fast_steps, slow_steps = [], []
    for start, stop in ((0, 2), (2, 3), (3, 4), (4, 6)):
        fast_steps.append(fast(x[:, start:stop], kv_cache=fast_cache))
        slow_steps.append(slow(x[:, start:stop], kv_cache=slow_cache, is_causal=True)[0])
    torch.testing.assert_close(torch.cat(fast_steps, dim=1), full, **TOL)
    torch.testing.assert_close(torch.cat(slow_steps, dim=1), full, **TOL)
