"""Int8 quantization from scratch, the outliers that break it, and PyTorch's int8 paths (sprint 14).

The maths (note 01): a real value x is stored as an integer q = clamp(round(x/s) + z, qmin,
qmax) and read back as x^ = s (q - z).

- `QScheme`: bits, symmetric (z = 0, signed) or asymmetric (unsigned, zero point z),
  per-tensor or per-channel, absmax or percentile calibration.
- `observe_range(x, scheme)`: the (lo, hi) range to represent, per tensor or per channel.
- `qparams(lo, hi, scheme)`: (scale, zero point), the formulas of torch.ao's observers.
- `quantize`, `dequantize`, `fake_quantize` (quantize then dequantize), `quant_error`,
  `row_error` (the error of each token, averaged).

Outliers (note 02):
- `linear_layers(model)`: the `nn.Linear` layers by name; transformers' `Conv1D` (GPT-2) is
  refused with what to do.
- `collect_input_stats(model, batches)`: per layer, the largest |input| of every channel and
  of every token (forward pre-hooks).
- `outlier_channels(stats, threshold)`: the input channels whose |x| reaches `threshold`.

Fixes, simulated in float (note 03):
- `FakeQuantLinear`: weights and inputs through quantize -> dequantize; inputs per tensor
  (one scale, like torch.ao), per token (one per row, like torchao) or static (calibrated);
  LLM.int8()-style outlier columns kept in float.
- `smoothquant_scales`, `fold_smoothquant_`: SmoothQuant's per-channel scales, folded into the
  norm or linear layer before (Llama and llmlab GPT), so no runtime cost.
- `replace_linears_(model, make)`: swap chosen `nn.Linear` layers for quantized ones.

Real int8 kernels on the CPU (note 04):
- `Int8Linear`: int8 weights per output channel and the fbgemm kernel behind torch.ao's
  dynamic quantization, with the full 8-bit activation range and optional float outlier
  columns.
- `eager_dynamic`: `torch.ao.quantization.quantize_dynamic` with a qconfig per module type or
  per layer name, reporting what it quantized (and what it silently skipped).
- `static_quantize(model, calibration, fuse, engine)`: eager static quantization (stubs,
  fusion, observers, calibration, convert) for models made of supported modules (a CNN).
- `quantized_engine(name)`: context manager for `torch.backends.quantized.engine`.
- `torchao_quantize(model, method)`: torchao int8 dynamic, int8 weight-only, int4 weight-only.
- `LM_METHODS`, `quantize_lm(model, method, stats)`: every method above by name, as a
  quantized copy of a language model.

Measuring (every sprint-14 script and `benchmarks/bench_quantization.py`):
- `LMAdapter`: another name for `llmlab.evaluation.CausalLMAdapter` (any causal LM as
  `(idx, targets) -> (logits, loss)`, so `evaluate_lm` scores it).
- `load_lm(name)`: "smollm2", "sprint09" (your model) or "tiny" (random, for smoke runs).
- `heldout_tokens(tokenizer)`: Macbeth (not in the tiny corpus), tokenised, for perplexity;
  `perplexity_of(model, ids, window)`: every token scored once, one window at a time.
- `calibration_batches(tokenizer, n, block)`: the first n tokens of Hamlet in (1, block) windows.
- `state_dict_bytes(model)`: the size `torch.save` writes; `time_side_by_side`,
  `time_forward`: latencies measured in turns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import LLMLabError
from llmlab.evaluation import CausalLMAdapter, evaluate_lm

# torchao (imported by these helpers, or by transformers when it is installed) registers
# enums with torch.compile and torch logs a deprecation warning for each: noise for a
# learner, nothing they can act on.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

# --- the maths ---------------------------------------------------------------------------------

CALIBRATIONS = ("absmax", "percentile")


@dataclass(frozen=True)
class QScheme:
    """How to map floats to `bits`-bit integers.

    symmetric: signed integers, zero point 0, range +-absmax (`narrow` drops -128 so the grid is
    symmetric: [-127, 127], as LLM.int8() and GGUF do). asymmetric: unsigned [0, 2^bits - 1]
    with a zero point, so a one-sided range (after a ReLU) uses every level.
    per_channel: one scale per slice along `axis` (a weight's output rows, an input's tokens).
    calibration: "absmax" covers the whole observed range; "percentile" clips it at the
    `percentile`-th percentile, trading clipped outliers for finer steps everywhere else.
    """

    bits: int = 8
    symmetric: bool = True
    per_channel: bool = False
    narrow: bool = True
    calibration: str = "absmax"
    percentile: float = 99.99

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 16:
            raise LLMLabError(f"QScheme.bits must be in [2, 16], got {self.bits}")
        if self.calibration not in CALIBRATIONS:
            raise LLMLabError(
                f"unknown calibration {self.calibration!r}: choose one of {', '.join(CALIBRATIONS)}"
            )
        if not 50.0 < self.percentile <= 100.0:
            raise LLMLabError(f"QScheme.percentile must be in (50, 100], got {self.percentile}")

    @property
    def qmin(self) -> int:
        if not self.symmetric:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1 if not self.symmetric else 2 ** (self.bits - 1) - 1

    @property
    def label(self) -> str:
        cal = "absmax" if self.calibration == "absmax" else f"p{self.percentile:g}"
        kind = "sym" if self.symmetric else "asym"
        return f"int{self.bits} {kind} per-{'channel' if self.per_channel else 'tensor'} {cal}"


def _rows(x: torch.Tensor, scheme: QScheme, axis: int) -> torch.Tensor:
    """x as (channels, values): one row per channel, or a single row per tensor."""
    x = x.detach().float()
    if scheme.per_channel:
        if x.dim() == 0:
            raise LLMLabError("per-channel quantization needs a tensor with at least 1 dimension")
        return x.movedim(axis, 0).reshape(x.shape[axis], -1)
    return x.reshape(1, -1)


def _percentile(rows: torch.Tensor, p: float) -> torch.Tensor:
    """Nearest-rank percentile of each row (kthvalue: no size limit, unlike torch.quantile)."""
    n = rows.shape[1]
    k = min(n, max(1, math.ceil(p / 100 * n)))
    return rows.kthvalue(k, dim=1).values


def observe_range(
    x: torch.Tensor, scheme: QScheme, axis: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) to represent: shape () per tensor, (x.shape[axis],) per channel."""
    rows = _rows(x, scheme, axis)
    if rows.numel() == 0:
        raise LLMLabError("cannot calibrate a quantizer on an empty tensor")
    if scheme.calibration == "absmax":
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
    elif scheme.symmetric:
        hi = _percentile(rows.abs(), scheme.percentile)
        lo = -hi
    else:
        lo, hi = _percentile(rows, 100 - scheme.percentile), _percentile(rows, scheme.percentile)
    if not scheme.per_channel:
        lo, hi = lo[0], hi[0]
    return lo, hi


def qparams(
    lo: torch.Tensor, hi: torch.Tensor, scheme: QScheme
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) for the range [lo, hi], as torch.ao's MinMaxObserver computes them.

    The range always includes 0, so that 0 (padding, a ReLU's zeros) is exactly representable.
    """
    eps = torch.finfo(torch.float32).eps
    lo = torch.clamp(torch.as_tensor(lo, dtype=torch.float32), max=0.0)
    hi = torch.clamp(torch.as_tensor(hi, dtype=torch.float32), min=0.0)
    if scheme.symmetric:
        scale = torch.maximum(-lo, hi) / ((scheme.qmax - scheme.qmin) / 2)
        scale = torch.clamp(scale, min=eps)
        return scale, torch.zeros_like(scale, dtype=torch.int64)
    scale = torch.clamp((hi - lo) / (scheme.qmax - scheme.qmin), min=eps)
    zero_point = scheme.qmin - torch.round(lo / scale).to(torch.int64)
    return scale, zero_point.clamp(scheme.qmin, scheme.qmax)


def _along(v: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """Shape a per-channel vector to broadcast against x along `axis`."""
    if v.dim() == 0:
        return v
    shape = [1] * x.dim()
    shape[axis] = -1
    return v.reshape(shape)


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    scheme: QScheme,
    axis: int = 0,
) -> torch.Tensor:
    """q = clamp(round(x / s) + z, qmin, qmax) as int32 (round half to even, like PyTorch)."""
    s, z = _along(scale, x, axis), _along(zero_point, x, axis)
    q = torch.round(x.float() * (1.0 / s)) + z  # x * (1/s): the same rounding as ATen's kernels
    return q.clamp(scheme.qmin, scheme.qmax).to(torch.int32)


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int = 0
) -> torch.Tensor:
    """x^ = s (q - z)."""
    return (q - _along(zero_point, q, axis)).float() * _along(scale, q, axis)


def fake_quantize(
    x: torch.Tensor,
    scheme: QScheme,
    axis: int = 0,
    value_range: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """quantize -> dequantize: what the network computes with, in float. The range comes from x
    itself (dynamic) unless `value_range` (calibrated beforehand: static) is given."""
    lo, hi = observe_range(x, scheme, axis) if value_range is None else value_range
    scale, zero_point = qparams(lo, hi, scheme)
    return dequantize(quantize(x, scale, zero_point, scheme, axis), scale, zero_point, axis).to(
        x.dtype
    )


def quant_error(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
    """Relative error ||x - x^|| / ||x||, the same as an SQNR in dB, and the largest |x - x^|."""
    x, x_hat = x.detach().double(), x_hat.detach().double()
    err = torch.linalg.vector_norm(x - x_hat).item()
    ref = torch.linalg.vector_norm(x).item()
    rel = err / ref if ref > 0 else float(err > 0)
    sqnr = 20 * math.log10(1 / rel) if rel > 0 else float("inf")
    return {"rel_error": rel, "sqnr_db": sqnr, "max_abs_error": (x - x_hat).abs().max().item()}


def row_error(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    """Mean over rows (tokens) of ||y - y^|| / ||y||: every token counts the same, so one
    huge token cannot hide that all the others were rounded to zero."""
    y, y_hat = (
        y.detach().double().reshape(-1, y.shape[-1]),
        y_hat.detach().double().reshape(-1, y.shape[-1]),
    )
    ref = torch.linalg.vector_norm(y, dim=1).clamp(min=1e-30)
    return (torch.linalg.vector_norm(y - y_hat, dim=1) / ref).mean().item()


# --- layers, statistics and outliers -------------------------------------------------------


def _is_hf_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and "transformers" in type(module).__module__


def _check_linear(module: nn.Module) -> None:
    if not isinstance(module, nn.Linear):
        hint = (
            " (transformers' Conv1D stores its weight transposed: convert the model to nn.Linear "
            "first, e.g. llmlab.gpt.GPT.from_hf)"
            if _is_hf_conv1d(module)
            else ""
        )
        raise LLMLabError(
            f"only nn.Linear layers can be quantized here, got {type(module).__name__}{hint}"
        )


def linear_layers(
    model: nn.Module, include: str | None = None, exclude: str | None = None
) -> dict[str, nn.Linear]:
    """The model's `nn.Linear` layers by name, filtered by regular expressions on the name.

    A layer that matches `include` but is not an `nn.Linear` (GPT-2's `Conv1D`, a custom
    layer) is an error rather than silently skipped, the trap of `quantize_dynamic`.
    """
    found: dict[str, nn.Linear] = {}
    conv1d: list[str] = []
    for name, module in model.named_modules():
        if include is not None and not re.search(include, name):
            continue
        if exclude is not None and re.search(exclude, name):
            continue
        if isinstance(module, nn.Linear):
            found[name] = module
        elif _is_hf_conv1d(module):
            conv1d.append(name)
    if conv1d:
        raise LLMLabError(
            f"{conv1d[0]} (and {len(conv1d) - 1} more) is a transformers Conv1D, not nn.Linear: "
            "convert the model first (llmlab.gpt.GPT.from_hf) or exclude those layers"
        )
    if not found:
        raise LLMLabError(
            f"no nn.Linear layer matches include={include!r}, exclude={exclude!r}: "
            "print(model) to see the layer names"
        )
    return found


@dataclass
class InputStats:
    """What one layer's input looked like over the calibration batches."""

    channel_absmax: torch.Tensor  # (in_features,): max |x| of each input channel
    token_absmax: list[torch.Tensor] = field(default_factory=list)  # per batch: (tokens,)

    @property
    def absmax(self) -> float:
        return float(self.channel_absmax.max())

    def tokens(self) -> torch.Tensor:
        return torch.cat(self.token_absmax)


@torch.no_grad()
def collect_input_stats(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    layers: dict[str, nn.Module] | None = None,
) -> dict[str, InputStats]:
    """Run `model` on each batch of token ids and record every layer's input magnitudes."""
    layers = linear_layers(model) if layers is None else layers
    stats: dict[str, InputStats] = {}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().float().abs().reshape(-1, args[0].shape[-1])
            channel, token = x.amax(dim=0), x.amax(dim=1)
            if name in stats:
                torch.maximum(stats[name].channel_absmax, channel, out=stats[name].channel_absmax)
                stats[name].token_absmax.append(token)
            else:
                stats[name] = InputStats(channel, [token])

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    adapter = CausalLMAdapter(model)
    try:
        for batch in batches:
            adapter(batch)
    finally:
        for h in handles:
            h.remove()
    if not stats:
        raise LLMLabError("no calibration batch reached the layers: pass at least one batch")
    return stats


def outlier_channels(stats: InputStats, threshold: float) -> torch.Tensor:
    """Indices of the input channels whose |x| reached `threshold` (LLM.int8() uses 6)."""
    return torch.nonzero(stats.channel_absmax >= threshold).flatten()


# --- simulated quantized layers ------------------------------------------------------------

ACT_MODES = ("none", "tensor", "token", "static")


class FakeQuantLinear(nn.Module):
    """A Linear computed with quantize -> dequantize'd weights and inputs, in float.

    act: "none" (weight-only), "tensor" (one scale per call, computed from this input: what
    torch.ao's dynamic quantization does), "token" (one scale per row: torchao's dynamic
    int8), "static" (one scale fixed by calibration: static quantization).
    outlier_threshold: LLM.int8(): input columns with any |x| >= threshold skip quantization
    (they are multiplied in float), decided per call as in the paper.
    """

    def __init__(
        self,
        linear: nn.Linear,
        weight_scheme: QScheme | None = QScheme(per_channel=True),
        act: str = "tensor",
        act_scheme: QScheme = QScheme(),
        outlier_threshold: float | None = None,
        static_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        _check_linear(linear)
        if act not in ACT_MODES:
            raise LLMLabError(f"unknown activation mode {act!r}: choose one of {ACT_MODES}")
        if act == "static" and static_range is None:
            raise LLMLabError("act='static' needs a calibrated static_range=(lo, hi)")
        if act_scheme.per_channel:
            raise LLMLabError("choose per-token activations with act='token', not per_channel")
        w = linear.weight.detach().float()
        w_hat = w if weight_scheme is None else fake_quantize(w, weight_scheme, axis=0)
        self.register_buffer("weight", w_hat)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        self.act, self.act_scheme = act, act_scheme
        self.outlier_threshold = outlier_threshold
        self.static_range = static_range
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act == "none":
            return x
        rows = x.reshape(-1, x.shape[-1]).float()
        keep = None
        if self.outlier_threshold is not None:
            keep = rows.abs().amax(dim=0) >= self.outlier_threshold  # (in_features,)
            rows = rows.masked_fill(keep, 0.0)
        if self.act == "token":
            scheme = dataclasses.replace(self.act_scheme, per_channel=True)
            q = fake_quantize(rows, scheme, axis=0)
        elif self.act == "static":
            lo, hi = self.static_range
            q = fake_quantize(
                rows, self.act_scheme, value_range=(torch.tensor(lo), torch.tensor(hi))
            )
        else:
            q = fake_quantize(rows, self.act_scheme)
        if keep is not None:
            q = torch.where(keep, x.reshape(-1, x.shape[-1]).float(), q)
        return q.reshape(x.shape).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantize_input(x), self.weight.to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        extra = f", outliers>={self.outlier_threshold:g}" if self.outlier_threshold else ""
        return f"{self.in_features}, {self.out_features}, act={self.act}{extra}"


def replace_linears_(
    model: nn.Module,
    make: Callable[[str, nn.Linear], nn.Module | None],
    include: str | None = None,
    exclude: str | None = None,
) -> list[str]:
    """Replace each `nn.Linear` (filtered by name) by `make(name, linear)`; None keeps it.

    Returns the replaced names. A tied LM head becomes its own module (the embedding keeps
    the float matrix), which is what every int8 runtime does too.
    """
    layers = linear_layers(model, include, exclude)
    replaced = []
    for name, linear in layers.items():
        new = make(name, linear)
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        replaced.append(name)
    return replaced


# --- SmoothQuant ---------------------------------------------------------------------------


def smoothquant_scales(
    act_absmax: torch.Tensor, weights: Iterable[torch.Tensor], alpha: float = 0.5
) -> torch.Tensor:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) over the layers that read channel j.

    Dividing input channel j by s_j and multiplying weight column j by s_j leaves X W^T
    unchanged but moves the outliers' difficulty from the activations into the weights.
    """
    if not 0.0 <= alpha <= 1.0:
        raise LLMLabError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    w_absmax = torch.stack([w.detach().float().abs().amax(dim=0) for w in weights]).amax(dim=0)
    a = act_absmax.float().clamp(min=1e-5)
    s = a.pow(alpha) / w_absmax.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


def _smoothing_groups(model: nn.Module) -> list[tuple[nn.Module, list[str], str]]:
    """(module whose output feeds the linears, linear names, how to fold) per block.

    Llama (transformers): input_layernorm -> q,k,v; post_attention_layernorm -> gate,up;
    up_proj's rows -> down_proj. llmlab GPT: ln_1 -> c_attn; ln_2 -> c_fc.
    """
    groups = []
    for name, module in model.named_modules():
        if hasattr(module, "input_layernorm") and hasattr(module, "self_attn"):  # Llama layer
            a, m = f"{name}.self_attn", f"{name}.mlp"
            groups.append(
                (module.input_layernorm, [f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj"], "norm")
            )
            groups.append(
                (module.post_attention_layernorm, [f"{m}.gate_proj", f"{m}.up_proj"], "norm")
            )
            groups.append((module.mlp.up_proj, [f"{m}.down_proj"], "rows"))
        elif (
            hasattr(module, "ln_1")
            and hasattr(module, "mlp")
            and isinstance(getattr(getattr(module, "attn", None), "c_attn", None), nn.Linear)
        ):  # llmlab GPT block
            groups.append((module.ln_1, [f"{name}.attn.c_attn"], "norm"))
            groups.append((module.ln_2, [f"{name}.mlp.c_fc"], "norm"))
    return groups


@torch.no_grad()
def fold_smoothquant_(
    model: nn.Module, stats: dict[str, InputStats], alpha: float = 0.5
) -> list[str]:
    """Fold SmoothQuant scales into the model (exactly the same function, in float).

    The division by s goes into the norm's weight (and bias) or the previous linear's output
    rows; the multiplication into the next linears' weight columns. Returns the smoothed
    layer names; the input statistics must come from this model before smoothing.
    """
    groups = _smoothing_groups(model)
    if not groups:
        raise LLMLabError(
            "SmoothQuant folding knows Llama-style (transformers) and llmlab GPT blocks only: "
            "this model has neither"
        )
    smoothed = []
    for before, names, how in groups:
        missing = [n for n in names if n not in stats]
        if missing:
            raise LLMLabError(f"no input statistics for {missing[0]}: collect them on this model")
        linears = [model.get_submodule(n) for n in names]
        s = smoothquant_scales(
            stats[names[0]].channel_absmax, [lin.weight for lin in linears], alpha
        )
        if how == "norm":
            before.weight.div_(s)
            if getattr(before, "bias", None) is not None:
                before.bias.div_(s)
        else:  # the previous linear's output rows are the next one's input channels
            before.weight.div_(s[:, None])
            if before.bias is not None:
                before.bias.div_(s)
        for lin in linears:
            lin.weight.mul_(s[None, :])
        smoothed += names
    return smoothed


# --- real int8 kernels (fbgemm) ------------------------------------------------------------


@contextlib.contextmanager
def quantized_engine(name: str) -> Iterator[None]:
    """Use the quantized backend `name` (x86, fbgemm, qnnpack, onednn) inside the block."""
    if name not in torch.backends.quantized.supported_engines:
        raise LLMLabError(
            f"quantized engine {name!r} is not available in this PyTorch build: choose one of "
            f"{', '.join(e for e in torch.backends.quantized.supported_engines if e != 'none')}"
        )
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


class Int8Linear(nn.Module):
    """A Linear on the fbgemm int8 kernel (the one behind torch.ao's dynamic quantization):
    int8 weights with one scale per output channel, activations quantized at every call.

    Three choices torch.ao's `DynamicQuantizedLinear` does not offer, all about accuracy:
    - `reduce_range=False`: all 256 activation levels (torch.ao keeps 128, a guard against
      int16 overflow on CPUs without VNNI; `reduce_range_needed()` says if yours needs it);
    - `per_token=True`: one activation scale per row (token) instead of one per call. The
      kernel only knows one scale per tensor, so each row is divided by its own |max| first
      (every row then spans [-1, 1]) and the output rows are multiplied back: two cheap
      element-wise passes buy per-token precision;
    - `outlier_columns`: input channels computed in float (LLM.int8()'s decomposition, with the
      columns chosen once from calibration statistics so the kernel's weights stay fixed).
    """

    def __init__(
        self,
        linear: nn.Linear,
        outlier_columns: torch.Tensor | None = None,
        per_token: bool = False,
        reduce_range: bool = False,
    ) -> None:
        super().__init__()
        _check_linear(linear)
        w = linear.weight.detach().float()
        cols = torch.empty(0, dtype=torch.long) if outlier_columns is None else outlier_columns
        cols = cols.to(torch.long).flatten()
        if cols.numel() and (cols.min() < 0 or cols.max() >= linear.in_features):
            raise LLMLabError(f"outlier columns must be in [0, {linear.in_features})")
        w_int8 = w.index_fill(1, cols, 0.0) if cols.numel() else w
        scale = torch.clamp(w_int8.abs().amax(dim=1) / 127, min=torch.finfo(torch.float32).eps)
        with warnings.catch_warnings():  # quantized tensors are deprecated with torch.ao
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_channel(
                w_int8, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8
            )
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("weight_int8", qweight.int_repr())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", bias)
        self.register_buffer("outlier_columns", cols)
        self.register_buffer("outlier_weight", w[:, cols].contiguous())
        self.per_token, self.reduce_range = per_token, reduce_range
        self.in_features, self.out_features = linear.in_features, linear.out_features
        engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
        with quantized_engine(engine):  # packed weights belong to the engine that packed them
            # per token: the bias is added after the rows are scaled back, not inside
            self._packed = torch.ops.quantized.linear_prepack(qweight, None if per_token else bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_float = None
        if self.outlier_columns.numel():
            x_float = x.index_select(-1, self.outlier_columns)
            x = x.index_fill(-1, self.outlier_columns, 0.0)
        if self.per_token:
            row_max = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12)
            y = torch.ops.quantized.linear_dynamic(x / row_max, self._packed, self.reduce_range)
            y = y * row_max
            if self.bias is not None:
                y = y + self.bias
        else:
            y = torch.ops.quantized.linear_dynamic(x, self._packed, self.reduce_range)
        if x_float is not None:
            y = y + F.linear(x_float, self.outlier_weight)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, int8 per-channel weights, activations "
            f"per {'token' if self.per_token else 'tensor'}, "
            f"{self.outlier_columns.numel()} float columns, reduce_range={self.reduce_range}"
        )


def reduce_range_needed() -> bool:
    """True unless the CPU has VNNI (AVX512-VNNI / AVX-VNNI), whose int8 dot products cannot
    overflow the way AVX2's int16 pairwise sums (vpmaddubsw) can."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return True
    return not re.search(r"\b(avx512_vnni|avx_vnni|amx_int8)\b", flags)


# --- PyTorch's and torchao's quantization --------------------------------------------------


def eager_dynamic(
    model: nn.Module,
    qconfig_spec: dict | None = None,
    per_channel: bool = False,
    engine: str = "x86",
) -> tuple[nn.Module, dict[str, int]]:
    """`torch.ao.quantization.quantize_dynamic` (in place) and a count of what it did.

    qconfig_spec None quantizes every `nn.Linear`; a dict maps module types or layer names to
    a qconfig (None = leave in float), e.g. {nn.Linear: qc, "lm_head": None}. Returns the
    model and {"quantized": n, "float_linear": n, "conv1d_skipped": n}: quantize_dynamic
    skips GPT-2's Conv1D layers without a word.
    """
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {nn.Linear: qconfig} if qconfig_spec is None else qconfig_spec
    with quantized_engine(engine), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        model = quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    counts = {"quantized": 0, "float_linear": 0, "conv1d_skipped": 0}
    for module in model.modules():
        name = type(module).__name__
        if name == "Linear" and "dynamic" in type(module).__module__:
            counts["quantized"] += 1
        elif type(module) is nn.Linear:
            counts["float_linear"] += 1
        elif _is_hf_conv1d(module):
            counts["conv1d_skipped"] += 1
    return model, counts


def static_quantize(
    model: nn.Module,
    calibration: Iterable[torch.Tensor],
    fuse: list[list[str]] | None = None,
    engine: str = "x86",
    qconfig: str | None = None,
    wrap: bool = True,
) -> nn.Module:
    """Eager static quantization of a copy of `model` (inputs and outputs stay float).

    The four steps: wrap in QuantStub/DeQuantStub (`QuantWrapper`; `wrap=False` for a model
    that places its own stubs), fuse conv/linear with
    batch-norm and ReLU (names relative to `model`), `prepare` (insert observers), run the
    calibration batches, `convert` (swap in int8 modules and pack the weights). The weights
    are packed for `engine`, and that decides the kernels later, whatever engine is set
    when the model runs. `qconfig` (default: the engine's) sets the observers; x86/fbgemm
    ones use 7-bit activations (reduce_range), qnnpack's all 8 bits.
    """
    import copy

    from torch.ao import quantization as tq

    if qconfig is not None and qconfig not in torch.backends.quantized.supported_engines:
        raise LLMLabError(f"no default qconfig named {qconfig!r}: use an engine name")
    with quantized_engine(engine), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        inner = copy.deepcopy(model).eval()
        wrapped = tq.QuantWrapper(inner) if wrap else inner
        wrapped.qconfig = tq.get_default_qconfig(qconfig or engine)
        if fuse:
            tq.fuse_modules(inner, fuse, inplace=True)
        tq.prepare(wrapped, inplace=True)
        seen = 0
        with torch.no_grad():
            for batch in calibration:
                wrapped(batch)
                seen += 1
        if seen == 0:
            raise LLMLabError("static quantization needs at least one calibration batch")
        tq.convert(wrapped, inplace=True)
    return wrapped


TORCHAO_METHODS = ("int8_dynamic", "int8_weight_only", "int4_weight_only")


def torchao_quantize(
    model: nn.Module,
    method: str,
    group_size: int = 32,
    bfloat16: bool = True,
    skip: tuple[str, ...] = (),
) -> nn.Module:
    """`torchao.quantization.quantize_` in place with one of `TORCHAO_METHODS`.

    int8_dynamic: int8 weights per channel, activations per token at run time.
    int8_weight_only: int8 weights, float activations (saves memory, not compute).
    int4_weight_only: 4-bit weights in groups of `group_size` with the CPU tinygemm kernel;
    it wants bfloat16 activations (the model is converted first unless `bfloat16=False`:
    float32 activations fall back to a path tens of times slower).
    Linear layers whose name contains a string of `skip` (e.g. "lm_head") stay in float.
    """
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        quantize_,
    )

    if method not in TORCHAO_METHODS:
        raise LLMLabError(f"unknown torchao method {method!r}: choose one of {TORCHAO_METHODS}")
    if method == "int4_weight_only" and group_size not in (32, 64, 128, 256):
        raise LLMLabError(f"int4 group size must be 32, 64, 128 or 256, got {group_size}")

    def wanted(module: nn.Module, fqn: str) -> bool:
        if not isinstance(module, nn.Linear) or any(s in fqn for s in skip):
            return False
        # the CPU int4 packing needs out_features % 16 == 0 (a 77-character LM head stays in
        # bfloat16) and whole groups along the input
        return method != "int4_weight_only" or (
            module.out_features % 16 == 0 and module.in_features % group_size == 0
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "int8_dynamic":
            quantize_(model, Int8DynamicActivationInt8WeightConfig(), wanted)
        elif method == "int8_weight_only":
            quantize_(model, Int8WeightOnlyConfig(), wanted)
        else:
            from torchao.prototype.quantization.int4.inference_workflow import (
                PrototypeInt4WeightOnlyConfig,
            )

            if bfloat16:
                model.to(torch.bfloat16)
            quantize_(model, PrototypeInt4WeightOnlyConfig(group_size=group_size), wanted)
    return model


# --- one name per method (the sprint-14 scripts and the benchmark) ------------------------

LM_METHODS = {
    "fp32": "float32 (the reference)",
    "bf16": "bfloat16 weights and activations",
    "torch_ao_dynamic": "torch.ao quantize_dynamic, every Linear",
    "int8_tensor": "int8, per-tensor activations (Int8Linear)",
    "int8_token": "int8, per-token activations (Int8Linear)",
    "int8_token_outliers": "int8 per-token + float outlier columns",
    "smoothquant_int8_token": "SmoothQuant + int8 per-token",
    "torchao_int8_dynamic": "torchao int8 dynamic",
    "torchao_int8_weight_only": "torchao int8 weight-only",
    "torchao_int4_g128": "torchao int4 weight-only g128 (bf16)",
    "torchao_int4_g32": "torchao int4 weight-only g32 (bf16)",
    "torchao_int4_g32_head_bf16": "torchao int4 g32, LM head kept bf16",
}
CALIBRATED = ("int8_token_outliers", "smoothquant_int8_token")


def quantize_lm(
    model: nn.Module,
    method: str,
    stats: dict[str, InputStats] | None = None,
    alpha: float = 0.5,
    threshold: float = 6.0,
) -> nn.Module:
    """A quantized copy of `model` for one of `LM_METHODS` ("fp32" returns `model` itself).

    The calibrated methods need `stats` from `collect_input_stats` on this model: the outlier
    columns (|x| >= `threshold`) or SmoothQuant's scales (`alpha`) come from them.
    """
    import copy

    if method not in LM_METHODS:
        raise LLMLabError(f"unknown method {method!r}: choose one of {', '.join(LM_METHODS)}")
    if method == "fp32":
        return model
    if method in CALIBRATED and stats is None:
        raise LLMLabError(f"{method} needs calibration statistics (collect_input_stats)")
    q = copy.deepcopy(model)
    if method == "bf16":
        return q.to(torch.bfloat16)
    if method == "torch_ao_dynamic":
        return eager_dynamic(q)[0]
    if method.startswith("torchao_"):
        name = method.removeprefix("torchao_")
        if name.startswith("int4_g"):
            group, _, keep = name[6:].partition("_")
            skip = ("lm_head",) if keep == "head_bf16" else ()
            return torchao_quantize(q, "int4_weight_only", group_size=int(group), skip=skip)
        return torchao_quantize(q, name)
    if method == "smoothquant_int8_token":
        fold_smoothquant_(q, stats, alpha)
    if method == "int8_token_outliers":
        replace_linears_(q, lambda n, lin: Int8Linear(
            lin, outlier_channels(stats[n], threshold), per_token=True))  # fmt: skip
    else:
        per_token = method != "int8_tensor"
        replace_linears_(q, lambda n, lin: Int8Linear(lin, per_token=per_token))
    return q


# --- measuring -----------------------------------------------------------------------------


LMAdapter = CausalLMAdapter  # the name this module used first (llmlab.evaluation's)


HELDOUT_PLAY = "macbeth_gut.txt"  # not among the plays of the tiny corpus sprint 09 trains on
CALIBRATION_PLAY = "hamlet_gut.txt"  # calibrate on one text, measure on another
LM_CHOICES = ("smollm2", "sprint09", "tiny")


def load_lm(name: str, seed: int = 0) -> tuple[nn.Module, Any, int]:
    """(model in eval mode, tokenizer, its context length) for one of `LM_CHOICES`.

    smollm2: the bundled SmolLM2-135M-Instruct (transformers Llama); sprint09: your newest
    sprint-09 run (llmlab `GPT`, character-level); tiny: a random 2-layer Llama with a
    character tokenizer, built in a second (smoke runs and tests: its perplexity means nothing).
    """
    from llmlab.pretrained import load_gpt_checkpoint, load_pretrained

    if name == "smollm2":
        model, tok = load_pretrained("smollm2")
        return model, tok, model.config.max_position_embeddings
    if name == "sprint09":
        model, tok = load_gpt_checkpoint("sprint09")
        return model, tok, model.config.block_size
    if name == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        from llmlab.tokenizers import CharTokenizer

        tok = CharTokenizer([chr(c) for c in range(32, 127)] + ["\n"])
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, tie_word_embeddings=True,
        )  # fmt: skip
        return LlamaForCausalLM(config).eval(), tok, config.max_position_embeddings
    raise LLMLabError(f"unknown model {name!r}: choose one of {', '.join(LM_CHOICES)}")


def heldout_tokens(
    tokenizer, n_tokens: int | None = None, play: str = HELDOUT_PLAY, start: str = "ACT I."
) -> np.ndarray:
    """Token ids of a play from `start` on (the cast list is skipped), as int64 NumPy.

    `tokenizer` is a transformers tokenizer or an llmlab one (`encode`); characters an llmlab
    character tokenizer does not know are dropped, with the count in the error if too many.
    """
    from llmlab.data.shakespeare import play_files

    paths = [p for p in play_files() if p.name == play]
    if not paths:
        raise LLMLabError(f"play {play!r} not found among the Shakespeare texts")
    text = paths[0].read_text(encoding="utf-8")
    text = text[text.find(start) :] if start in text else text
    if hasattr(tokenizer, "stoi"):  # llmlab CharTokenizer
        kept = "".join(c for c in text if c in tokenizer.stoi)
        if len(kept) < 0.99 * len(text):
            raise LLMLabError(
                f"{len(text) - len(kept):,} characters of {play} are not in the model's vocabulary"
            )
        ids = tokenizer.encode(kept)
    elif hasattr(tokenizer, "convert_tokens_to_ids"):  # transformers
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer.encode(text)
    if n_tokens is not None:
        if len(ids) < n_tokens + 1:
            raise LLMLabError(f"{play} has only {len(ids):,} tokens, fewer than {n_tokens + 1:,}")
        ids = ids[: n_tokens + 1]  # n_tokens targets
    return np.asarray(ids, dtype=np.int64)


def calibration_batches(
    tokenizer, n_tokens: int, block: int, play: str = CALIBRATION_PLAY
) -> list[torch.Tensor]:
    """The first `n_tokens` of a calibration play cut into full (1, block) windows."""
    ids = torch.from_numpy(heldout_tokens(tokenizer, n_tokens, play=play))
    return [ids[i : i + block][None] for i in range(0, n_tokens - block + 1, block)]


def perplexity_of(
    model: nn.Module, ids: np.ndarray, window: int, device: torch.device | str = "cpu"
) -> float:
    """Perplexity over every token of `ids`, in consecutive windows fed ONE at a time: a
    per-tensor activation scale must not depend on which other texts share the batch."""
    return evaluate_lm(CausalLMAdapter(model), ids, window, batch_size=1, device=device)[
        "perplexity"
    ]


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes `torch.save(model.state_dict())` writes (shared tensors are stored once)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def time_side_by_side(
    calls: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Median seconds of each call, measured side by side: the calls take turns (order
    reversed every round), so a change of machine load hits all of them alike."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.inference_mode()
def time_forward(
    models: dict[str, nn.Module], idx: torch.Tensor, repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Median seconds of one forward pass of each language model on `idx`, side by side."""
    adapters = {name: CausalLMAdapter(m) for name, m in models.items()}
    calls = {name: (lambda a=a: a(idx)) for name, a in adapters.items()}
    return time_side_by_side(calls, repeats, warmup)
