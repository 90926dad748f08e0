"""Sprint-07 building blocks against PyTorch's reference implementations.

Tolerances: float32 on CPU; the blocks compute the same maths in a different order than
PyTorch's fused kernels, so outputs agree to ~1e-6 and are compared with atol=1e-5, rtol=1e-4.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmlab.attention import causal_mask, padding_mask
from llmlab.blocks import (
    AddNorm,
    Decoder,
    DecoderBlock,
    Encoder,
    EncoderBlock,
    LayerNorm,
    PositionWiseFeedForward,
)
from llmlab.errors import LLMLabError

TOL = {"atol": 1e-5, "rtol": 1e-4}
D, H, FF = 32, 4, 64


@pytest.mark.parametrize("shape", [(16,), (6, 16)])
def test_layer_norm_matches_torch_forward_and_gradients(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    ref = nn.LayerNorm(shape, eps=1e-5)
    ours = LayerNorm(shape, eps=1e-5)
    with torch.no_grad():  # non-trivial scale and shift, shared by both
        ref.weight.normal_()
        ref.bias.normal_()
        ours.weight.copy_(ref.weight)
        ours.bias.copy_(ref.bias)
    x = (torch.randn(4, 5, *shape) * 3 + 2).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), ref(x_ref)
    torch.testing.assert_close(y, y_ref, **TOL)
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, **TOL)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **TOL)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, **TOL)


def test_layer_norm_normalises_each_position_and_supports_no_bias() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 7, 64) * 5 + 3
    y = LayerNorm(64)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(-1, unbiased=False), torch.ones(2, 7), atol=1e-3, rtol=0)
    no_bias = LayerNorm(64, bias=False)
    assert no_bias.bias is None
    torch.testing.assert_close(no_bias(x), nn.LayerNorm(64, bias=False)(x), **TOL)
    with pytest.raises(LLMLabError, match="normalized_shape"):
        LayerNorm(32)(x)


def test_feed_forward_matches_linear_gelu_linear() -> None:
    torch.manual_seed(0)
    ffn = PositionWiseFeedForward(D, FF, dropout=0.5).eval()
    ref = nn.Sequential(nn.Linear(D, FF), nn.GELU(), nn.Linear(FF, D))
    ref[0].load_state_dict(ffn.linear1.state_dict())
    ref[2].load_state_dict(ffn.linear2.state_dict())
    x = torch.randn(3, 5, D)
    torch.testing.assert_close(ffn(x), ref(x), **TOL)
    # Position-wise: each position is transformed independently of the others.
    torch.testing.assert_close(ffn(x)[:, 2], ffn(x[:, 2:3])[:, 0], **TOL)
    with pytest.raises(LLMLabError, match="activation"):
        PositionWiseFeedForward(D, FF, activation="swish")


def test_add_norm_post_and_pre_norm_formulas() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, D)
    sub = nn.Linear(D, D)
    post = AddNorm(D, norm_first=False).eval()
    pre = AddNorm(D, norm_first=True).eval()
    ln = nn.LayerNorm(D)
    torch.testing.assert_close(post(x, sub), ln(x + sub(x)), **TOL)
    torch.testing.assert_close(pre(x, sub), x + sub(ln(x)), **TOL)
    # Pre-norm keeps the identity path: a zero sub-layer returns x unchanged.
    torch.testing.assert_close(pre(x, torch.zeros_like), x)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_block_matches_torch_encoder_layer(norm_first: bool) -> None:
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(
        D, H, FF, dropout=0.1, activation="gelu", batch_first=True, norm_first=norm_first
    ).eval()
    ours = EncoderBlock.from_torch(ref).eval()
    x = torch.randn(3, 7, D)
    keep = padding_mask(torch.tensor([7, 4, 2]), 7)  # (B, 1, 1, T), True = real token
    # torch's src_key_padding_mask is the opposite: True = ignore this key.
    expected = ref(x, src_key_padding_mask=~keep[:, 0, 0])
    torch.testing.assert_close(ours(x, keep), expected, **TOL)
    torch.testing.assert_close(ours(x), ref(x), **TOL)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_matches_torch_decoder_layer(norm_first: bool) -> None:
    torch.manual_seed(0)
    ref = nn.TransformerDecoderLayer(
        D, H, FF, dropout=0.1, activation="gelu", batch_first=True, norm_first=norm_first
    ).eval()
    ours = DecoderBlock.from_torch(ref).eval()
    x, memory = torch.randn(3, 6, D), torch.randn(3, 5, D)
    tgt_keep = padding_mask(torch.tensor([6, 4, 3]), 6)
    src_keep = padding_mask(torch.tensor([5, 3, 1]), 5)
    expected = ref(
        x,
        memory,
        tgt_mask=~causal_mask(6),  # torch bool tgt_mask: True = NOT allowed
        tgt_key_padding_mask=~tgt_keep[:, 0, 0],
        memory_key_padding_mask=~src_keep[:, 0, 0],
    )
    torch.testing.assert_close(ours(x, memory, tgt_keep, src_keep), expected, **TOL)


def test_decoder_block_is_causal() -> None:
    torch.manual_seed(0)
    block = DecoderBlock(D, H, FF).eval()
    x, memory = torch.randn(1, 6, D), torch.randn(1, 4, D)
    changed = x.clone()
    changed[:, 4:] = torch.randn(1, 2, D)  # change the future
    out, out_changed = block(x, memory), block(changed, memory)
    torch.testing.assert_close(out[:, :4], out_changed[:, :4])
    assert not torch.allclose(out[:, 4:], out_changed[:, 4:])
    # Without the look-ahead mask the past does see the future.
    assert not torch.allclose(
        block(x, memory, causal=False)[:, :4], block(changed, memory, causal=False)[:, :4]
    )


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_keep_shapes_and_match_torch(norm_first: bool) -> None:
    torch.manual_seed(0)
    kwargs = {"dropout": 0.0, "norm_first": norm_first}
    enc, dec = Encoder(3, D, H, FF, **kwargs).eval(), Decoder(2, D, H, FF, **kwargs).eval()
    src, tgt = torch.randn(2, 9, D), torch.randn(2, 4, D)
    memory = enc(src)
    assert memory.shape == src.shape
    assert dec(tgt, memory).shape == tgt.shape
    # The stack equals torch's nn.TransformerEncoder with the same layers and final norm.
    layer = nn.TransformerEncoderLayer(
        D, H, FF, 0.0, "gelu", batch_first=True, norm_first=norm_first
    )
    final = nn.LayerNorm(D) if norm_first else None
    ref = nn.TransformerEncoder(layer, 3, norm=final, enable_nested_tensor=False).eval()
    for i, ref_layer in enumerate(ref.layers):
        enc.layers[i] = EncoderBlock.from_torch(ref_layer).eval()
    if norm_first:
        enc.norm.load_state_dict(ref.norm.state_dict())
    torch.testing.assert_close(enc(src), ref(src), **TOL)


def test_bad_shapes_are_clear_errors() -> None:
    with pytest.raises(LLMLabError, match="divisible"):
        EncoderBlock(30, 4, 64)
    with pytest.raises(LLMLabError, match="n_layers"):
        Encoder(0, D, H, FF)
