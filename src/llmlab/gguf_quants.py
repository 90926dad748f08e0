"""GGUF block quantization, from scratch: Q8_0, Q4_0 and Q4_1 (sprint 14).

llama.cpp's GGUF files store each weight row in blocks of 32 values. A block carries its own
float16 scale `d` (Q4_1 also a float16 minimum `m`) and 32 small integers, so one outlier
spoils only its own block. Per block of 32 values:

| format | stored | value | bytes | bits/weight |
|---|---|---|---|---|
| Q8_0 | d, 32 x int8 | d q, d = absmax/127 | 34 | 8.5 |
| Q4_0 | d, 32 x 4 bit | d (q - 8), d = -(signed absmax)/8 | 18 | 4.5 |
| Q4_1 | d, m, 32 x 4 bit | d q + m, d = (max - min)/15, m = min | 20 | 5.0 |

Two 4-bit values share a byte: value i in the low nibble, value i + 16 in the high one.
Every step below is the float32 arithmetic of the reference, `gguf.quants` (the Python port
of llama.cpp's `ggml-quants.c`), so the packed bytes are bit-identical to it
(`tests/test_gguf_quants.py`).

- `FORMATS`: name -> `BlockFormat` (bytes per block, bits per weight).
- `quantize(x, fmt)` -> uint8 tensor (..., K/32 x bytes per block); `dequantize(data, fmt)`
  -> float32 (..., K). Per format: `quantize_q8_0` / `dequantize_q8_0`, `..._q4_0`, `..._q4_1`.
- `roundtrip(x, fmt)`: dequantize(quantize(x)), the weight a GGUF runtime computes with.
- `quantize_model_weights_(model, fmt, overrides={"lm_head": "Q8_0"})`: every `nn.Linear`
  weight replaced by its round trip (and the tied embedding with it; `overrides` give some
  layers another format), returning how many bytes the packed weights take.

`sprints/14_quantization/notes/05_gguf_formats.md` explains the formats;
`sprints/14_quantization/results/gguf_formats.py` checks them on SmolLM2 and your model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llmlab.errors import LLMLabError

BLOCK_SIZE = 32


@dataclass(frozen=True)
class BlockFormat:
    """Layout of one GGUF block of `BLOCK_SIZE` values."""

    name: str
    block_bytes: int

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.block_bytes / BLOCK_SIZE


FORMATS = {
    "Q8_0": BlockFormat("Q8_0", 2 + BLOCK_SIZE),
    "Q4_0": BlockFormat("Q4_0", 2 + BLOCK_SIZE // 2),
    "Q4_1": BlockFormat("Q4_1", 2 + 2 + BLOCK_SIZE // 2),
}


def _format(fmt: str) -> BlockFormat:
    if fmt not in FORMATS:
        raise LLMLabError(f"unknown GGUF format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """(..., K) float -> (n_blocks, 32) float32, refusing rows that do not split into blocks."""
    if x.dim() == 0 or x.shape[-1] % BLOCK_SIZE:
        raise LLMLabError(
            f"GGUF blocks hold {BLOCK_SIZE} values: the last dimension ({tuple(x.shape)}) must "
            f"be a multiple of {BLOCK_SIZE}; keep this tensor in float"
        )
    if not x.is_floating_point():
        raise LLMLabError(f"only float tensors can be quantized, got {x.dtype}")
    return x.detach().to(device="cpu", dtype=torch.float32).reshape(-1, BLOCK_SIZE)


def _inverse(d: torch.Tensor) -> torch.Tensor:
    """1/d, and 0 where d == 0 (an all-zero block), as the reference does."""
    return torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, 1, d))


def _f16_bytes(v: torch.Tensor) -> torch.Tensor:
    """(n, 1) float32 -> (n, 2) uint8: the float16 (round to nearest even) little-endian."""
    return v.to(torch.float16).view(torch.uint8)


def _f16_value(b: torch.Tensor) -> torch.Tensor:
    return b.contiguous().view(torch.float16).to(torch.float32)


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(n, 32) values 0..15 -> (n, 16) bytes: value i low nibble, value i + 16 high nibble."""
    q = q.to(torch.uint8).reshape(-1, 2, BLOCK_SIZE // 2)
    return q[:, 0] | (q[:, 1] << 4)


def _unpack_nibbles(b: torch.Tensor) -> torch.Tensor:
    return torch.cat([b & 0x0F, b >> 4], dim=1)


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """round(), ties away from zero (C's roundf), with the reference's exact float steps."""
    a = v.abs()
    floored = torch.floor(a)
    return torch.sign(v) * (floored + torch.floor(2 * (a - floored)))


def _out_shape(shape: torch.Size, fmt: BlockFormat) -> tuple[int, ...]:
    return (*shape[:-1], shape[-1] // BLOCK_SIZE * fmt.block_bytes)


def quantize_q8_0(x: torch.Tensor) -> torch.Tensor:
    """Q8_0: d = absmax/127 per block, q = round(x/d) in int8."""
    blocks = _blocks(x)
    d = blocks.abs().amax(dim=1, keepdim=True) / 127
    q = _round_half_away(blocks * _inverse(d)).to(torch.int8).view(torch.uint8)
    return torch.cat([_f16_bytes(d), q], dim=1).reshape(_out_shape(x.shape, FORMATS["Q8_0"]))


def quantize_q4_0(x: torch.Tensor) -> torch.Tensor:
    """Q4_0: d = -(the value of largest magnitude, with its sign)/8, q = x/d + 8 in 0..15.

    Dividing by the signed extreme maps it exactly to q = 0 (the value -8 d), so the side
    of the range that holds the extreme gets all 8 negative steps.
    """
    blocks = _blocks(x)
    extreme = torch.gather(blocks, 1, blocks.abs().argmax(dim=1, keepdim=True))
    d = extreme / -8
    q = torch.trunc(blocks * _inverse(d) + 8.5).clamp(0, 15)
    return torch.cat([_f16_bytes(d), _pack_nibbles(q)], dim=1).reshape(
        _out_shape(x.shape, FORMATS["Q4_0"])
    )


def quantize_q4_1(x: torch.Tensor) -> torch.Tensor:
    """Q4_1: m = min, d = (max - min)/15, q = (x - m)/d rounded, in 0..15 (asymmetric)."""
    blocks = _blocks(x)
    hi = blocks.amax(dim=1, keepdim=True)
    lo = blocks.amin(dim=1, keepdim=True)
    d = (hi - lo) / 15
    q = torch.trunc((blocks - lo) * _inverse(d) + 0.5).clamp(0, 15)
    return torch.cat([_f16_bytes(d), _f16_bytes(lo), _pack_nibbles(q)], dim=1).reshape(
        _out_shape(x.shape, FORMATS["Q4_1"])
    )


def _byte_blocks(data: torch.Tensor, fmt: BlockFormat) -> tuple[torch.Tensor, tuple[int, ...]]:
    if data.dtype != torch.uint8 or data.dim() == 0 or data.shape[-1] % fmt.block_bytes:
        raise LLMLabError(
            f"{fmt.name} data must be uint8 with a last dimension that is a multiple of "
            f"{fmt.block_bytes} bytes, got {data.dtype} {tuple(data.shape)}"
        )
    shape = (*data.shape[:-1], data.shape[-1] // fmt.block_bytes * BLOCK_SIZE)
    return data.reshape(-1, fmt.block_bytes), shape


def dequantize_q8_0(data: torch.Tensor) -> torch.Tensor:
    b, shape = _byte_blocks(data, FORMATS["Q8_0"])
    return (b[:, 2:].contiguous().view(torch.int8).float() * _f16_value(b[:, :2])).reshape(shape)


def dequantize_q4_0(data: torch.Tensor) -> torch.Tensor:
    b, shape = _byte_blocks(data, FORMATS["Q4_0"])
    q = _unpack_nibbles(b[:, 2:]).to(torch.int8) - 8
    return (_f16_value(b[:, :2]) * q.float()).reshape(shape)


def dequantize_q4_1(data: torch.Tensor) -> torch.Tensor:
    b, shape = _byte_blocks(data, FORMATS["Q4_1"])
    q = _unpack_nibbles(b[:, 4:]).float()
    return (_f16_value(b[:, :2]) * q + _f16_value(b[:, 2:4])).reshape(shape)


_QUANTIZE = {"Q8_0": quantize_q8_0, "Q4_0": quantize_q4_0, "Q4_1": quantize_q4_1}
_DEQUANTIZE = {"Q8_0": dequantize_q8_0, "Q4_0": dequantize_q4_0, "Q4_1": dequantize_q4_1}


def quantize(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Pack `x` (last dimension a multiple of 32) into GGUF `fmt` blocks (uint8)."""
    _format(fmt)
    return _QUANTIZE[fmt](x)


def dequantize(data: torch.Tensor, fmt: str) -> torch.Tensor:
    """Unpack GGUF `fmt` blocks back to float32 values."""
    _format(fmt)
    return _DEQUANTIZE[fmt](data)


def roundtrip(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """The values a GGUF runtime multiplies with: dequantize(quantize(x)), in x's dtype."""
    return dequantize(quantize(x, fmt), fmt).to(x.dtype).reshape(x.shape)


@torch.no_grad()
def quantize_model_weights_(
    model: nn.Module,
    fmt: str,
    skip: tuple[str, ...] = (),
    overrides: dict[str, str] | None = None,
) -> dict[str, int]:
    """Replace every `nn.Linear` weight (and so a tied embedding) by its `fmt` round trip.

    `overrides` maps a name fragment to another format, as llama.cpp's "mostly Q4" files
    keep the token embedding / LM head in Q8_0 or better: {"lm_head": "Q8_0"}. Layers whose
    name contains a string of `skip`, or whose input size is not a multiple of 32, stay in
    float (llama.cpp keeps such tensors in F16/F32 too). Returns the counts:
    `quantized_params`, `float_params` and `packed_bytes` (bytes of the quantized tensors).
    """
    _format(fmt)
    overrides = overrides or {}
    for other in overrides.values():
        _format(other)
    seen: set[int] = set()
    quantized = packed = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or id(module.weight) in seen:
            continue
        seen.add(id(module.weight))
        w = module.weight
        if any(s in name for s in skip) or w.shape[-1] % BLOCK_SIZE:
            continue
        this = next((f for key, f in overrides.items() if key in name), fmt)
        w.copy_(roundtrip(w, this))
        quantized += w.numel()
        packed += w.numel() // BLOCK_SIZE * FORMATS[this].block_bytes
    total = sum(p.numel() for p in model.parameters())  # tied weights counted once
    if quantized == 0:
        raise LLMLabError(
            "no nn.Linear weight with an input size that is a multiple of 32 was found: "
            "nothing to quantize in this model"
        )
    return {
        "quantized_params": quantized,
        "float_params": total - quantized,
        "packed_bytes": packed,
    }
