"""The GPT-2 model (sprint 08).

- `GPTConfig`: the model's shape as a dataclass that validates itself.
- `MLP`, `Block`: GPT-2's pre-norm decoder block (no cross-attention).
- `GPT`: token + positional embeddings, stacked blocks, final LayerNorm, LM head tied to
  the token embedding, GPT-2 initialisation; `forward(idx, targets)` -> (logits, loss).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.attention import CausalSelfAttention, KVCache
from llmlab.errors import LLMLabError


@dataclass
class GPTConfig:
    """Shape of a GPT. The defaults are GPT-2 small (124M parameters)."""

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    pos_encoding: str = "learned"  # "learned" (GPT-2) or "sinusoidal"
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) <= 0:
                raise LLMLabError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise LLMLabError(
                f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "choose n_embd as a multiple of n_head"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise LLMLabError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.pos_encoding not in ("learned", "sinusoidal"):
            raise LLMLabError(
                f"GPTConfig.pos_encoding must be 'learned' or 'sinusoidal', got {self.pos_encoding!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise LLMLabError(f"unknown GPTConfig fields {sorted(unknown)}: is this a GPT checkpoint?")
        return cls(**data)


class MLP(nn.Module):
    """Position-wise feed-forward: n_embd -> 4 n_embd -> GELU (tanh, as GPT-2) -> n_embd."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-norm GPT block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config.n_embd, config.n_head, config.dropout, config.bias)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache)
        return x + self.mlp(self.ln_2(x))


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The fixed (length, dim) sinusoidal table of "Attention Is All You Need"."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: dim // 2])
    return table


class GPT(nn.Module):
    """A GPT-2-style decoder-only language model."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos_encoding == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        else:
            self.register_buffer(
                "pe_table", sinusoidal_table(config.block_size, config.n_embd), persistent=False
            )
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one matrix reads and writes tokens
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 n_layer), since each block adds
        # two of them to the residual stream and its variance would otherwise grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); `non_embedding` leaves out positions."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.config.pos_encoding == "learned":
            n -= self.wpe.weight.numel()
        return n

    def check_input(self, idx: torch.Tensor, past: int = 0) -> None:
        """Raise a clear error for a too-long sequence or token ids outside the vocabulary."""
        if idx.dim() != 2:
            raise LLMLabError(f"GPT expects token ids of shape (batch, time), got {tuple(idx.shape)}")
        T = idx.shape[1] + past
        if T > self.config.block_size:
            raise LLMLabError(
                f"sequence of {T} tokens is longer than the model's context "
                f"(block_size={self.config.block_size}): crop the input"
            )
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            raise LLMLabError(
                f"token ids must be in [0, {self.config.vocab_size}), got "
                f"[{int(idx.min())}, {int(idx.max())}]: wrong tokenizer for this model?"
            )

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_caches: list[KVCache] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) and, with targets, the mean cross-entropy (ignore_index=-1)."""
        past = len(kv_caches[0]) if kv_caches else 0
        # The range check reads idx on the host: skip it in the GPU training hot path.
        if not torch.compiler.is_compiling() and (idx.device.type == "cpu" or not self.training):
            self.check_input(idx, past)
        T = idx.shape[1]
        pos = torch.arange(past, past + T, device=idx.device)
        pos_emb = self.wpe(pos) if self.config.pos_encoding == "learned" else self.pe_table[pos]
        x = self.drop(self.wte(idx) + pos_emb)
        for i, block in enumerate(self.h):
            x = block(x, kv_caches[i] if kv_caches else None)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss
