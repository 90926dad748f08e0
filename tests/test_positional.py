"""Positional encodings (sprint 05): closed forms, relative-position properties, RoPE parity
with Hugging Face's Llama implementation (`atol=1e-5`, float32)."""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.errors import LLMLabError
from llmlab.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    apply_rotary,
    rotate_half,
    sinusoidal_table,
)


@pytest.mark.parametrize("dim", [16, 7])
def test_sinusoidal_table_matches_closed_form(dim: int) -> None:
    table = sinusoidal_table(50, dim)
    assert table.shape == (50, dim)
    for pos in (0, 1, 13, 49):
        for j in range(dim):
            i = j // 2  # columns 2i and 2i+1 share the frequency 1 / 10000^(2i/dim)
            angle = pos / 10000 ** (2 * i / dim)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert table[pos, j].item() == pytest.approx(expected, abs=1e-5)


def test_sinusoidal_dot_product_depends_only_on_offset() -> None:
    table = sinusoidal_table(200, 64)
    for k in (1, 5, 20):
        dots = torch.stack([table[p] @ table[p + k] for p in (0, 17, 60, 150)])
        torch.testing.assert_close(dots, dots[:1].expand_as(dots), atol=1e-3, rtol=0)
    # and it falls with distance: nearby positions look more alike
    assert table[10] @ table[11] > table[10] @ table[30]
    # PE[p + k] is a fixed linear map (a rotation per frequency) of PE[p]
    k = 3
    inv_freq = 1 / 10000 ** (torch.arange(0, 64, 2) / 64)
    c, s = torch.cos(k * inv_freq), torch.sin(k * inv_freq)
    sin_p, cos_p = table[40, 0::2], table[40, 1::2]
    torch.testing.assert_close(sin_p * c + cos_p * s, table[43, 0::2], atol=1e-5, rtol=0)
    torch.testing.assert_close(cos_p * c - sin_p * s, table[43, 1::2], atol=1e-5, rtol=0)


def test_sinusoidal_module_adds_buffer_and_checks_length() -> None:
    pe = SinusoidalPositionalEncoding(8, max_len=10, dropout=0.0)
    assert "pe" in dict(pe.named_buffers()) and not list(pe.parameters())
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(pe(x), x + sinusoidal_table(10, 8)[:4])
    torch.testing.assert_close(pe(x, offset=3), x + sinusoidal_table(10, 8)[3:7])
    with pytest.raises(LLMLabError, match="max_len=10"):
        pe(torch.randn(1, 11, 8))
    with pytest.raises(LLMLabError, match="8"):
        pe(torch.randn(1, 3, 5))
    # dropout only in training mode
    pe = SinusoidalPositionalEncoding(8, max_len=10, dropout=0.5)
    torch.testing.assert_close(pe.eval()(x), x + sinusoidal_table(10, 8)[:4])
    assert (pe.train()(x) == 0).any()


def test_learned_positional_embedding_is_trainable_and_checks_length() -> None:
    torch.manual_seed(0)
    pe = LearnedPositionalEmbedding(6, 4)
    x = torch.zeros(1, 3, 4)
    torch.testing.assert_close(pe(x), pe.weight[:3].unsqueeze(0))
    pe(x).sum().backward()
    assert (pe.weight.grad[:3] == 1).all() and (pe.weight.grad[3:] == 0).all()
    with pytest.raises(LLMLabError, match="max_len=6"):
        pe(torch.zeros(1, 7, 4))


def test_rope_matches_transformers_llama() -> None:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import (
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    head_dim, n_heads, base = 16, 2, 500.0
    config = LlamaConfig(
        hidden_size=head_dim * n_heads,
        num_attention_heads=n_heads,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": base},
    )
    hf_rope = LlamaRotaryEmbedding(config)
    rope = RotaryEmbedding(head_dim, max_len=64, base=base)
    torch.manual_seed(0)
    q, k = torch.randn(2, n_heads, 10, head_dim), torch.randn(2, n_heads, 10, head_dim)
    position_ids = torch.stack([torch.arange(10), torch.arange(30, 40)])  # second: offset 30
    cos, sin = rope(position_ids)
    hf_cos, hf_sin = hf_rope(q, position_ids)
    torch.testing.assert_close(cos, hf_cos, atol=1e-5, rtol=0)
    torch.testing.assert_close(sin, hf_sin, atol=1e-5, rtol=0)
    mine = apply_rotary(q, k, cos, sin)
    theirs = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # (L, d) tables broadcast over batch and heads too
    c1, s1 = rope(torch.arange(10))
    torch.testing.assert_close(apply_rotary(q, k, c1, s1)[0][0], mine[0][0])


def test_rope_kernel_equals_the_rotate_half_formula_forward_and_backward() -> None:
    """`apply_rotary` runs a hand-written autograd function (`_Rotate`): its outputs and
    gradients equal autograd through x * cos + rotate_half(x) * sin, for strided q/k (as
    attention's permuted QKV view gives) and per-row (B, L, d) tables; gradcheck in fp64."""
    torch.manual_seed(0)
    rope = RotaryEmbedding(8, max_len=32)
    qkv = torch.randn(2, 5, 3, 3, 8, dtype=torch.float64, requires_grad=True)  # (B, L, 3, H, d)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4)  # strided (B, H, L, d) views
    for cos, sin in (rope(torch.arange(5)), rope(torch.tensor([[3, 4, 5, 6, 7], [0, 1, 2, 3, 4]]))):
        cos, sin = cos.double(), sin.double()
        c4, s4 = (cos, sin) if cos.dim() == 2 else (cos[:, None], sin[:, None])
        expected = (q * c4 + rotate_half(q) * s4, k * c4 + rotate_half(k) * s4)
        got = apply_rotary(q, k, cos, sin)
        weights = [torch.randn_like(t) for t in got]
        grads = [
            torch.autograd.grad(
                sum((w * t).sum() for w, t in zip(weights, outs, strict=True)), qkv
            )[0]
            for outs in (got, expected)
        ]
        for a, b in zip((*got, grads[0]), (*expected, grads[1]), strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
        assert torch.autograd.gradcheck(lambda x, c=cos, s=sin: apply_rotary(x, x, c, s)[0],
                                        (q.detach().clone().requires_grad_(),))  # fmt: skip
    # tables whose halves differ (not RoPE's, but the formula's): still the formula
    cos, sin = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    got = apply_rotary(q, k, cos, sin)
    torch.testing.assert_close(got[0], q * cos + rotate_half(q) * sin, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda x: apply_rotary(x, x, cos, sin)[0],
                                    (q.detach().clone().requires_grad_(),))  # fmt: skip
    # a low-precision q with fp32 tables: the result is promoted (as x * cos is), the
    # gradient comes back in q's own dtype
    qb = torch.randn(1, 2, 5, 8, dtype=torch.bfloat16, requires_grad=True)
    out, _ = apply_rotary(qb, qb, *rope(torch.arange(5)))
    assert out.dtype == torch.float32
    out.sum().backward()
    assert qb.grad.dtype == torch.bfloat16


def test_rope_scores_depend_only_on_position_difference() -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(32, max_len=256)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)

    def score(m: int, n: int) -> float:
        cq, sq = rope(torch.tensor([m]))
        ck, sk = rope(torch.tensor([n]))
        qr, _ = apply_rotary(q, q, cq, sq)
        kr, _ = apply_rotary(k, k, ck, sk)
        return (qr * kr).sum().item()

    for delta in (0, 3, 40):
        scores = [score(m + delta, m) for m in (0, 7, 100, 200)]
        assert scores == pytest.approx([scores[0]] * 4, abs=1e-4)
    assert score(5, 5) == pytest.approx((q * k).sum().item(), abs=1e-5)  # same position: no change
    # rotation keeps lengths
    c, s = rope(torch.tensor([77]))
    torch.testing.assert_close(apply_rotary(q, k, c, s)[0].norm(), q.norm())


def test_rope_rejects_bad_input() -> None:
    with pytest.raises(LLMLabError, match="even"):
        RotaryEmbedding(7)
    rope = RotaryEmbedding(8, max_len=16)
    with pytest.raises(LLMLabError, match="max_len=16"):
        rope(torch.arange(17))
    cos, sin = rope(torch.arange(4))
    with pytest.raises(LLMLabError, match="last"):
        apply_rotary(torch.randn(1, 1, 4, 6), torch.randn(1, 1, 4, 6), cos, sin)
    with pytest.raises(LLMLabError, match="length"):
        sinusoidal_table(0, 4)
