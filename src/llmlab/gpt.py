"""The GPT-2 model (sprint 08).

- `GPTConfig`: the model's shape as a dataclass that validates itself.
- `MLP`, `Block`: GPT-2's pre-norm decoder block (sprint 07's decoder block without
  cross-attention).
- `GPT`: token + positional embeddings, stacked blocks, final LayerNorm, LM head tied to
  the token embedding, GPT-2 initialisation; `forward(idx, targets, kv_caches)` ->
  (logits, loss).
- Options from the speedrun literature (modded-nanoGPT, nanochat; measured in sprint 09's
  `notes/07_faster_training.md`): `mlp_act="relu2"` (ReLU squared), `qk_norm=True` (LayerNorm
  on each head's queries and keys), `tie_embeddings=False` (an LM head of its own). Their
  defaults are GPT-2's, so older checkpoints load and behave exactly as before.
- Checkpoints: `GPT.save(dir)` / `GPT.load(dir)` (safetensors weights + config JSON).
- Hugging Face: `GPT.from_hf(model_or_state_dict)`, `GPT.from_pretrained("gpt2")`, and
  `GPT.to_hf()` (every position type; the mapping lives in `llmlab.hf_export`, sprint 10).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.attention import CausalSelfAttention, KVCache
from llmlab.checkpoint import TOKENIZER_FILE, load_model_dir, read_config, save_model_dir
from llmlab.errors import LLMLabError
from llmlab.hf_export import MLP_ACT_FROM_HF  # the export's activation names, inverted
from llmlab.positional import RotaryEmbedding, sinusoidal_table


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
    pos_encoding: str = "learned"  # "learned" (GPT-2), "sinusoidal" or "rope"
    layer_norm_eps: float = 1e-5
    # "gelu" (tanh approximation, GPT-2), "gelu_erf" (exact GELU: same curve to 1e-3, about
    # half the CPU time without AVX-512) or "relu2" (ReLU squared)
    mlp_act: str = "gelu"
    qk_norm: bool = False  # LayerNorm over each head's queries and keys before attention
    tie_embeddings: bool = True  # the LM head reuses the token embedding matrix

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            try:  # accept NumPy / 0-d tensor integers, store a plain int (JSON-safe)
                number = operator.index(value)
            except TypeError:
                number = None
            if number is None or isinstance(value, bool) or number <= 0:
                raise LLMLabError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
            setattr(self, name, number)
        if self.n_embd % self.n_head != 0:
            raise LLMLabError(
                f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "choose n_embd as a multiple of n_head"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise LLMLabError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        if not self.layer_norm_eps > 0:
            raise LLMLabError(f"GPTConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        if self.pos_encoding not in ("learned", "sinusoidal", "rope"):
            raise LLMLabError(
                "GPTConfig.pos_encoding must be 'learned', 'sinusoidal' or 'rope', "
                f"got {self.pos_encoding!r}"
            )
        if self.mlp_act not in MLP_ACTIVATIONS:
            raise LLMLabError(
                f"GPTConfig.mlp_act must be one of {sorted(MLP_ACTIVATIONS)}, got {self.mlp_act!r}"
            )
        if self.pos_encoding == "rope" and (self.n_embd // self.n_head) % 2:
            raise LLMLabError(
                f"RoPE rotates pairs of features: the head size n_embd/n_head="
                f"{self.n_embd // self.n_head} must be even"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise LLMLabError(
                f"unknown GPTConfig fields {sorted(unknown)}: is this a GPT checkpoint?"
            )
        return cls(**data)


def relu2(x: torch.Tensor) -> torch.Tensor:
    """ReLU squared (So et al. 2021, "Primer"; modded-nanoGPT, nanochat): max(x, 0)^2.

    Like GELU it is ~0 for negative inputs, but it grows quadratically for positive ones and
    costs two cheap element-wise operations instead of a tanh (Hugging Face: `"relu2"`)."""
    return F.relu(x).square()


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, with the tanh approximation (Hugging Face: `"gelu_new"`)."""
    return F.gelu(x, approximate="tanh")


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    """The exact GELU, x * Phi(x) with the normal CDF from erf (Hugging Face: `"gelu"`). It
    differs from the tanh form by < 1e-3, and on an AVX2 CPU its forward + backward take
    half the time (sprint 09's `benchmarks/bench_step_speed.py --profile`)."""
    return F.gelu(x)


MLP_ACTIVATIONS = {"gelu": gelu_tanh, "gelu_erf": gelu_erf, "relu2": relu2}


class MLP(nn.Module):
    """Position-wise feed-forward: n_embd -> 4 n_embd -> activation -> n_embd.

    The activation is `config.mlp_act`: GPT-2's tanh GELU by default, the exact GELU, or ReLU
    squared."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.act = MLP_ACTIVATIONS[config.mlp_act]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm GPT block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(
            config.n_embd,
            config.n_head,
            config.dropout,
            config.bias,
            qk_norm=config.qk_norm,
            norm_eps=config.layer_norm_eps,
        )
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: KVCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, rope, attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A GPT-2-style decoder-only language model."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos_encoding == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        elif config.pos_encoding == "rope":  # positions enter inside attention, not here
            self.rotary = RotaryEmbedding(config.n_embd // config.n_head, config.block_size)
        else:
            self.register_buffer(
                "pe_table", sinusoidal_table(config.block_size, config.n_embd), persistent=False
            )
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:  # weight tying: one matrix reads and writes tokens
            self.lm_head.weight = self.wte.weight
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

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), as in the PaLM paper's appendix:
        6 N for the matrix products of the N non-embedding parameters, plus 12 L T d for
        attention's scores and weighted sums over a context of T = `seq_len` tokens."""
        c = self.config
        T = c.block_size if seq_len is None else seq_len
        return 6 * self.num_parameters(non_embedding=True) + 12 * c.n_layer * T * c.n_embd

    def check_input(self, idx: torch.Tensor, past: int = 0) -> None:
        """Raise a clear error for a too-long sequence or token ids outside the vocabulary."""
        if idx.dim() != 2:
            raise LLMLabError(
                f"GPT expects token ids of shape (batch, time), got {tuple(idx.shape)}"
            )
        total = idx.shape[1] + past
        if total > self.config.block_size:
            raise LLMLabError(
                f"sequence of {total} tokens is longer than the model's context "
                f"(block_size={self.config.block_size}): crop the input"
            )
        if idx.numel():
            low, high = (int(v) for v in torch.aminmax(idx))  # one pass over the ids
            if low < 0 or high >= self.config.vocab_size:
                raise LLMLabError(
                    f"token ids must be in [0, {self.config.vocab_size}), got [{low}, {high}]: "
                    "wrong tokenizer for this model?"
                )

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_caches: list[KVCache] | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) and, with targets, the mean cross-entropy (ignore_index=-1).

        Batched generation (sprint 10) adds three optional inputs, as Hugging Face models do:
        `attention_mask` (B, past + T), 1 for real tokens and 0 for padding, over the cached
        and the new positions; `position_ids` (B, T), each token's position in its own
        sequence (left-padded rows start later); `logits_to_keep=k` computes the LM head for
        the last k positions only (decoding needs 1; the head is the widest matrix).
        """
        past = len(kv_caches[0]) if kv_caches else 0
        # The range check reads idx on the host: skip it in the GPU training hot path.
        if not torch.compiler.is_compiling() and (idx.device.type == "cpu" or not self.training):
            self.check_input(idx, past)
        T = idx.shape[1]
        x, rope = self.wte(idx), None
        if position_ids is None:
            if self.config.pos_encoding == "rope":
                cos, sin = self.rotary.cos_table, self.rotary.sin_table
                rope = (cos[past : past + T], sin[past : past + T])
            else:
                pos = torch.arange(past, past + T, device=idx.device)
        elif self.config.pos_encoding == "rope":  # per-row positions: (B, T, head_dim) tables
            rope = (self.rotary.cos_table[position_ids], self.rotary.sin_table[position_ids])
        else:
            pos = position_ids
        if self.config.pos_encoding == "learned":
            x = x + self.wpe(pos)
        elif self.config.pos_encoding == "sinusoidal":
            x = x + self.pe_table[pos]
        x = self.drop(x)
        mask = None if attention_mask is None else _padded_causal_mask(attention_mask, T)
        for i, block in enumerate(self.h):
            x = block(x, kv_caches[i] if kv_caches else None, rope, mask)
        if logits_to_keep > 0:
            x = x[:, -logits_to_keep:]
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss

    # --- checkpoints ------------------------------------------------------------------------

    def save(
        self,
        directory: Path | str,
        training_state: dict[str, Any] | None = None,
        tokenizer_meta: dict[str, Any] | None = None,
    ) -> Path:
        """Write `model.safetensors` + `config.json` (+ `training.pt`, + `tokenizer_meta.json`:
        which tokenizer the model reads) atomically into `directory`."""
        extra = {TOKENIZER_FILE: tokenizer_meta} if tokenizer_meta is not None else None
        return save_model_dir(directory, self, self.config.to_dict(), training_state, extra)

    @classmethod
    def load_with_state(
        cls, directory: Path | str, map_location: str | torch.device = "cpu"
    ) -> tuple[GPT, dict[str, Any] | None]:
        """Rebuild a model from `config.json`, load its weights; also return `training.pt`."""
        data = read_config(directory)
        try:
            config = GPTConfig.from_dict(data)
        except TypeError as exc:
            raise LLMLabError(f"{directory}/config.json is not a GPT config ({exc})") from None
        model = cls(config)
        training_state = load_model_dir(directory, model, map_location)
        return model.to(map_location), training_state

    @classmethod
    def load(cls, directory: Path | str, map_location: str | torch.device = "cpu") -> GPT:
        """Rebuild a model saved with `save` (the config decides the shape)."""
        return cls.load_with_state(directory, map_location)[0]

    # --- Hugging Face GPT-2 -----------------------------------------------------------------

    @classmethod
    def from_hf(cls, hf: nn.Module | Mapping[str, torch.Tensor], n_head: int | None = None) -> GPT:
        """Copy a Hugging Face `GPT2LMHeadModel` (or its state dict) into a new `GPT`.

        A state dict does not say how many heads the model has: pass `n_head` then.
        """
        if isinstance(hf, nn.Module):
            config = _config_from_hf(hf.config)
            state = hf.state_dict()
        else:
            state = dict(hf)
            if n_head is None:
                raise LLMLabError(
                    "from_hf(state_dict) needs n_head: a state dict does not store it"
                )
            config = _config_from_hf_state(state, n_head)
        model = cls(config)
        converted = _hf_to_ours(state)
        try:
            model.load_state_dict(converted, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:160]
            raise LLMLabError(f"Hugging Face weights do not fit GPT({config}): {first}") from None
        return model.to(next(iter(state.values())).device)

    def to_hf(self) -> nn.Module:
        """This model as a `transformers` model with the same weights (see `llmlab.hf_export`):
        `GPT2LMHeadModel` for learned/sinusoidal positions, `GPTNeoXForCausalLM` for RoPE,
        `PersimmonForCausalLM` for RoPE with QK-norm."""
        from llmlab.hf_export import to_hf_model

        return to_hf_model(self)

    @classmethod
    def from_pretrained(cls, model_type: str = "gpt2") -> GPT:
        """Download OpenAI's GPT-2 weights from the Hugging Face hub (needs the network or
        a filled HF cache) and convert them: "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"."""
        from transformers import GPT2LMHeadModel

        try:
            hf = GPT2LMHeadModel.from_pretrained(model_type)
        except OSError as exc:
            raise LLMLabError(
                f"cannot load {model_type!r} from the Hugging Face hub ({str(exc)[:100]}): "
                "check the name and your network, or use a local checkpoint"
            ) from None
        return cls.from_hf(hf)


def _padded_causal_mask(attention_mask: torch.Tensor, new: int) -> torch.Tensor:
    """(B, S) 1/0 key mask over past + new positions -> (B, 1, new, S) boolean attention mask:
    causal AND real key. A padding query would see no key at all (softmax of nothing = NaN,
    which then leaks through the values into later layers), so every query also sees itself."""
    keys = attention_mask.shape[1]
    query_pos = torch.arange(keys - new, keys, device=attention_mask.device)[:, None]
    key_pos = torch.arange(keys, device=attention_mask.device)[None, :]
    causal = key_pos <= query_pos  # (new, S)
    mask = causal & attention_mask.bool()[:, None, :]  # (B, new, S)
    return (mask | (key_pos == query_pos))[:, None]


# GPT-2 was written in TensorFlow and Hugging Face's port keeps its `Conv1D` layers, which store
# weights as (in_features, out_features): the transpose of `nn.Linear`'s (out, in). These four
# matrices are transposed on the way in and on the way out; everything else copies as is.
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers that older transformers versions keep in GPT-2's state dict: not weights.
_HF_BUFFERS = (".attn.bias", ".attn.masked_bias")


def _hf_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(_HF_BUFFERS):
            continue
        name = key.removeprefix("transformer.")
        out[name] = value.t() if name.endswith(_CONV1D) else value
    if "lm_head.weight" in out and not torch.equal(out["lm_head.weight"], out["wte.weight"]):
        raise LLMLabError("this Hugging Face model has an untied LM head; GPT ties it to wte")
    out["lm_head.weight"] = out["wte.weight"]
    return out


def _config_from_hf(hf_config: Any) -> GPTConfig:
    c = hf_config
    problems = []
    mlp_act = MLP_ACT_FROM_HF.get(c.activation_function)
    if mlp_act is None:
        problems.append(
            f"activation_function={c.activation_function!r} (need one of {sorted(MLP_ACT_FROM_HF)})"
        )
    if c.n_inner not in (None, 4 * c.n_embd):
        problems.append(f"n_inner={c.n_inner} (need 4 * n_embd)")
    if not c.scale_attn_weights or c.scale_attn_by_inverse_layer_idx:
        problems.append("non-standard attention scaling")
    if getattr(c, "add_cross_attention", False):
        problems.append("cross-attention")
    if problems:
        raise LLMLabError(f"this Hugging Face GPT-2 differs from GPT: {'; '.join(problems)}")
    return GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.n_positions,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        dropout=c.resid_pdrop,
        layer_norm_eps=c.layer_norm_epsilon,
        mlp_act=mlp_act,
    )


def _config_from_hf_state(state: Mapping[str, torch.Tensor], n_head: int) -> GPTConfig:
    names = {k.removeprefix("transformer."): v for k, v in state.items()}
    if "wte.weight" not in names or "wpe.weight" not in names:
        raise LLMLabError("not a GPT-2 state dict: no wte.weight / wpe.weight")
    vocab_size, n_embd = names["wte.weight"].shape
    n_layer = len({k.split(".")[1] for k in names if k.startswith("h.")})
    return GPTConfig(
        vocab_size=vocab_size,
        block_size=names["wpe.weight"].shape[0],
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
    )
