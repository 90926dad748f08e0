"""Transformer building blocks (sprint 07).

- `LayerNorm`: layer normalisation from scratch (matches `nn.LayerNorm`, gradients too).
- `PositionWiseFeedForward`: Linear -> GELU -> Dropout -> Linear, applied to every position.
- `AddNorm`: the residual sub-layer wrapper, post-norm `LayerNorm(x + Dropout(f(x)))` (the
  2017 paper) or pre-norm `x + Dropout(f(LayerNorm(x)))` (GPT-2 and most modern models).
- `EncoderBlock`: self-attention + FFN, each wrapped in `AddNorm`.
- `DecoderBlock`: masked self-attention + cross-attention to the encoder output + FFN.
- `Encoder` / `Decoder`: N blocks stacked (plus a final LayerNorm in pre-norm stacks, or
  wherever `final_norm=True` asks for one, as `torch.nn.Transformer` has).

Masks follow `llmlab.attention`: boolean, True = may attend, broadcastable to
(batch, heads, queries, keys); e.g. `padding_mask(lengths)` is (B, 1, 1, L).
`EncoderBlock.from_torch` / `DecoderBlock.from_torch` copy the weights of PyTorch's
`nn.TransformerEncoderLayer` / `nn.TransformerDecoderLayer` (parity tests, sprint-07 scripts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.attention import MultiHeadAttention
from llmlab.errors import LLMLabError

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact erf GELU (PyTorch's "gelu", BERT)
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "relu": F.relu,  # the 2017 paper
}


class LayerNorm(nn.Module):
    """Normalise each position over its last dims to mean 0, variance 1, then scale and shift.

    y = (x - mean) / sqrt(var + eps) * weight + bias, with the *biased* variance (divide by
    N, not N - 1) as `nn.LayerNorm` does. Statistics are per position, never across the batch.
    """

    def __init__(
        self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, bias: bool = True
    ) -> None:
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-len(self.normalized_shape) :]) != self.normalized_shape:
            raise LLMLabError(
                f"LayerNorm{self.normalized_shape} got an input of shape {tuple(x.shape)}: "
                "its last dimensions must equal normalized_shape"
            )
        dims = tuple(range(-len(self.normalized_shape), 0))
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, unbiased=False)
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, bias={self.bias is not None}"


class PositionWiseFeedForward(nn.Module):
    """d_model -> d_ff -> activation -> dropout -> d_model, the same MLP at every position."""

    def __init__(
        self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "gelu"
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise LLMLabError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.activation = activation
        self.linear1 = nn.Linear(d_model, d_ff)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(ACTIVATIONS[self.activation](self.linear1(x))))


class AddNorm(nn.Module):
    """Residual connection around a sub-layer, with its LayerNorm and dropout.

    post-norm (norm_first=False): LayerNorm(x + Dropout(sublayer(x)))
    pre-norm  (norm_first=True):  x + Dropout(sublayer(LayerNorm(x)))
    Pre-norm keeps an un-normalised identity path from input to output, which is why deep
    pre-norm stacks train without warm-up tricks; they need one final LayerNorm at the top.
    """

    def __init__(
        self, d_model: int, dropout: float = 0.0, norm_first: bool = False, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.norm = LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(
        self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


def _check_sizes(d_model: int, n_heads: int, d_ff: int) -> None:
    if d_model <= 0 or n_heads <= 0 or d_ff <= 0:
        raise LLMLabError(
            f"d_model, n_heads, d_ff must be positive, got {d_model}, {n_heads}, {d_ff}"
        )
    if d_model % n_heads:
        raise LLMLabError(f"d_model={d_model} is not divisible by n_heads={n_heads}")


class EncoderBlock(nn.Module):
    """Self-attention then FFN, each inside `AddNorm` (bidirectional: no causal mask)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = False,
        activation: str = "gelu",
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        _check_sizes(d_model, n_heads, d_ff)
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ffn = PositionWiseFeedForward(d_model, d_ff, dropout, activation)
        self.add_norm1 = AddNorm(d_model, dropout, norm_first, layer_norm_eps)
        self.add_norm2 = AddNorm(d_model, dropout, norm_first, layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, d_model); mask bool True = may attend, e.g. `padding_mask` (B, 1, 1, T)."""
        x = self.add_norm1(x, lambda h: self.self_attn(h, h, h, mask=mask)[0])
        return self.add_norm2(x, self.ffn)

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> EncoderBlock:
        """An `EncoderBlock` holding a copy of a PyTorch encoder layer's weights."""
        block = cls(**_shape_of_torch_layer(layer))
        with torch.no_grad():
            _copy_mha(block.self_attn, layer.self_attn)
            _copy_ffn(block.ffn, layer.linear1, layer.linear2)
            _copy_norm(block.add_norm1.norm, layer.norm1)
            _copy_norm(block.add_norm2.norm, layer.norm2)
        return block


def _shape_of_torch_layer(layer: nn.TransformerEncoderLayer | nn.TransformerDecoderLayer) -> dict:
    """The constructor arguments of our block that match a PyTorch encoder/decoder layer."""
    return dict(
        d_model=layer.linear1.in_features,
        n_heads=layer.self_attn.num_heads,
        d_ff=layer.linear1.out_features,
        dropout=layer.dropout.p,
        norm_first=layer.norm_first,
        activation=_torch_activation(layer),
        layer_norm_eps=layer.norm1.eps,
    )


class DecoderBlock(nn.Module):
    """Masked self-attention, cross-attention to the encoder output (`memory`), FFN."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = False,
        activation: str = "gelu",
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        _check_sizes(d_model, n_heads, d_ff)
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ffn = PositionWiseFeedForward(d_model, d_ff, dropout, activation)
        self.add_norm1 = AddNorm(d_model, dropout, norm_first, layer_norm_eps)
        self.add_norm2 = AddNorm(d_model, dropout, norm_first, layer_norm_eps)
        self.add_norm3 = AddNorm(d_model, dropout, norm_first, layer_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        causal: bool = True,
    ) -> torch.Tensor:
        """x (B, T, d) target; memory (B, S, d) encoder output.

        tgt_mask: bool True = may attend among targets (e.g. target padding, (B, 1, 1, T));
        the look-ahead (causal) mask is added when `causal`, so position t never sees t+1.
        memory_mask: bool True = may attend to that source position (source padding).
        """
        x = self.add_norm1(x, lambda h: self.self_attn(h, h, h, mask=tgt_mask, is_causal=causal)[0])
        # Cross-attention: queries from the decoder, keys and values from the encoder.
        x = self.add_norm2(x, lambda h: self.cross_attn(h, memory, memory, mask=memory_mask)[0])
        return self.add_norm3(x, self.ffn)

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> DecoderBlock:
        """A `DecoderBlock` holding a copy of a PyTorch decoder layer's weights."""
        block = cls(**_shape_of_torch_layer(layer))
        with torch.no_grad():
            _copy_mha(block.self_attn, layer.self_attn)
            _copy_mha(block.cross_attn, layer.multihead_attn)
            _copy_ffn(block.ffn, layer.linear1, layer.linear2)
            _copy_norm(block.add_norm1.norm, layer.norm1)
            _copy_norm(block.add_norm2.norm, layer.norm2)
            _copy_norm(block.add_norm3.norm, layer.norm3)
        return block


class Encoder(nn.Module):
    """`n_layers` encoder blocks; pre-norm stacks end with a LayerNorm (as GPT-2's `ln_f`).

    `final_norm` overrides that choice: `torch.nn.Transformer` ends both of its stacks with a
    LayerNorm even in post-norm, and the sprint-15 seq2seq model matches it (None = pre-norm).
    """

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        final_norm: bool | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        if n_layers <= 0:
            raise LLMLabError(f"n_layers must be positive, got {n_layers}")
        self.layers = nn.ModuleList(
            EncoderBlock(d_model, n_heads, d_ff, **kwargs) for _ in range(n_layers)
        )
        self.norm = _final_norm(d_model, final_norm, kwargs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


def _final_norm(d_model: int, final_norm: bool | None, block_kwargs: dict) -> nn.Module:
    """The stack's closing LayerNorm: by default only pre-norm stacks need one."""
    if final_norm is None:
        final_norm = block_kwargs.get("norm_first", False)
    eps = block_kwargs.get("layer_norm_eps", 1e-5)
    return LayerNorm(d_model, eps=eps) if final_norm else nn.Identity()


class Decoder(nn.Module):
    """`n_layers` decoder blocks; pre-norm stacks end with a LayerNorm (`final_norm`: as
    `Encoder`)."""

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        final_norm: bool | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        if n_layers <= 0:
            raise LLMLabError(f"n_layers must be positive, got {n_layers}")
        self.layers = nn.ModuleList(
            DecoderBlock(d_model, n_heads, d_ff, **kwargs) for _ in range(n_layers)
        )
        self.norm = _final_norm(d_model, final_norm, kwargs)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        causal: bool = True,
    ) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory, tgt_mask, memory_mask, causal)
        return self.norm(x)


# --- copying PyTorch's reference layers (parity tests) --------------------------------------


def _torch_activation(layer: nn.Module) -> str:
    act = layer.activation
    if act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
        return "gelu"
    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    raise LLMLabError(f"cannot copy a layer with activation {act!r}: use 'gelu' or 'relu'")


def _copy_mha(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    # PyTorch packs the Q, K, V projections into one (3d, d) `in_proj_weight`: from_torch splits it.
    ours.load_state_dict(MultiHeadAttention.from_torch(ref).state_dict())


def _copy_ffn(ours: PositionWiseFeedForward, linear1: nn.Linear, linear2: nn.Linear) -> None:
    ours.linear1.load_state_dict(linear1.state_dict())
    ours.linear2.load_state_dict(linear2.state_dict())


def _copy_norm(ours: LayerNorm, ref: nn.LayerNorm) -> None:
    ours.weight.copy_(ref.weight)
    ours.bias.copy_(ref.bias)
