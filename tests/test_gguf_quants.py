"""GGUF block formats from scratch (`llmlab.gguf_quants`) against the `gguf` package's reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmlab import gguf_quants as G
from llmlab.errors import LLMLabError

gguf = pytest.importorskip("gguf")
FORMATS = ("Q8_0", "Q4_0", "Q4_1")


def awkward_rows() -> torch.Tensor:
    """Random rows of different scales plus blocks that stress the rounding rules."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 128, generator=gen) * torch.rand(48, 1, generator=gen) * 4
    x[0, :32] = 0.0  # an all-zero block: scale 0, no division by zero
    x[1, :32] = 1.5  # a constant block
    x[2, :32] = torch.tensor([-1.0, 1.0] * 16)  # ties between +max and -max
    x[3, :32] = torch.randint(-4, 5, (32,), generator=gen).float() * 0.25  # exact .5 steps
    x[4] *= 1e-6  # tiny values (float16 scales lose precision)
    x[5, :32] = -x[5, :32].abs()  # one-sided blocks
    x[6, :32] = x[6, :32].abs()
    return x


@pytest.mark.parametrize("fmt", FORMATS)
def test_packed_bytes_equal_the_reference(fmt: str) -> None:
    x = awkward_rows()
    ours = G.quantize(x, fmt)
    ref = gguf.quants.quantize(x.numpy(), getattr(gguf.GGMLQuantizationType, fmt))
    assert ours.dtype == torch.uint8 and tuple(ours.shape) == ref.shape
    assert tuple(ours.shape) == (48, 128 // 32 * G.FORMATS[fmt].block_bytes)
    mismatched = int((ours.numpy() != ref).sum())
    assert mismatched == 0  # bit-exact on every packed byte
    # Dequantising the reference's bytes gives the reference's floats exactly.
    back = G.dequantize(torch.from_numpy(ref), fmt).numpy()
    ref_back = gguf.quants.dequantize(ref, getattr(gguf.GGMLQuantizationType, fmt))
    assert np.array_equal(back, ref_back)


@pytest.mark.parametrize(
    ("fmt", "bpw", "max_steps"), [("Q8_0", 8.5, 0.5), ("Q4_0", 4.5, 1.0), ("Q4_1", 5.0, 0.5)]
)
def test_round_trip_error_is_within_a_step(fmt: str, bpw: float, max_steps: float) -> None:
    assert G.FORMATS[fmt].bits_per_weight == bpw
    x = torch.randn(16, 256, generator=torch.Generator().manual_seed(1))
    blocks = x.reshape(-1, 32)
    err = (G.roundtrip(x, fmt) - x).reshape(-1, 32).abs().amax(dim=1)
    if fmt == "Q8_0":
        step = blocks.abs().amax(dim=1) / 127
    elif fmt == "Q4_0":  # truncation after +8.5 can cost up to a whole step on one side
        step = blocks.abs().amax(dim=1) / 8
    else:
        step = (blocks.amax(dim=1) - blocks.amin(dim=1)) / 15
    # float16 scales add a relative error of ~1e-3 of the range
    assert (err <= max_steps * step * 1.01 + 1e-3 * blocks.abs().amax(dim=1)).all()


def test_smollm2_gguf_weights_are_the_converted_models_weights() -> None:
    """The offline 'fp32' SmolLM2 is the Q4_1 file dequantised: our decoder of the file's
    bytes gives the converted weights exactly, and re-quantising gives the bytes back."""
    from safetensors import safe_open

    from llmlab.pretrained import smollm2_dir, smollm2_gguf_path

    reader = gguf.GGUFReader(smollm2_gguf_path())
    tensor = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    assert tensor.tensor_type.name == "Q4_1"
    raw = torch.from_numpy(np.array(tensor.data))
    ours = G.dequantize(raw, "Q4_1")
    assert torch.equal(ours, torch.from_numpy(gguf.quants.dequantize(np.array(tensor.data), 3)))
    with safe_open(str(smollm2_dir() / "model.safetensors"), framework="pt") as f:
        converted = f.get_tensor("model.layers.0.mlp.down_proj.weight")
    assert torch.equal(ours, converted.float())
    same = (G.quantize(converted, "Q4_1") == raw).float().mean().item()
    assert same == 1.0  # re-quantising the dequantised file gives back every byte


def test_quantize_model_weights_counts_and_keeps_the_tie() -> None:
    from llmlab.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32))
    before = {n: p.clone() for n, p in model.named_parameters()}
    out = G.quantize_model_weights_(model, "Q4_0")
    linear_params = 32 * 96 + 32 * 32 + 32 * 128 + 128 * 32 + 64 * 32  # qkv, proj, fc, proj, head
    assert out["quantized_params"] == linear_params
    assert out["packed_bytes"] == linear_params // 32 * 18
    assert model.lm_head.weight is model.wte.weight  # still tied, quantized once
    assert not torch.equal(before["wte.weight"], model.wte.weight)
    assert torch.equal(before["ln_f.weight"], model.ln_f.weight)  # norms stay in float
    # llama.cpp-style: 4-bit blocks, the tied head in 8 bits
    other = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32))
    head = other.lm_head.weight.detach().clone()
    out = G.quantize_model_weights_(other, "Q4_0", overrides={"lm_head": "Q8_0"})
    assert out["packed_bytes"] == (linear_params - 64 * 32) // 32 * 18 + 64 * 32 // 32 * 34
    assert torch.equal(other.wte.weight, G.roundtrip(head, "Q8_0"))


def test_bad_input_is_a_one_line_error() -> None:
    with pytest.raises(LLMLabError, match="multiple of 32"):
        G.quantize(torch.randn(4, 30), "Q8_0")
    with pytest.raises(LLMLabError, match="unknown GGUF format"):
        G.quantize(torch.randn(4, 32), "Q5_K")
    with pytest.raises(LLMLabError, match="uint8"):
        G.dequantize(torch.randn(4, 34), "Q8_0")
    with pytest.raises(LLMLabError, match="only float"):
        G.quantize(torch.ones(2, 32, dtype=torch.long), "Q4_1")
    with pytest.raises(LLMLabError, match="nothing to quantize"):
        G.quantize_model_weights_(torch.nn.Sequential(torch.nn.Linear(30, 4)), "Q8_0")
