"""The encoder-decoder transformer (sprint 15), built from the sprint-07 blocks.

- `Seq2SeqConfig`: the model's shape as a dataclass that validates itself.
- `Seq2SeqTransformer`: source and target token embeddings, positions (sinusoidal or
  learned), `llmlab.blocks.Encoder` / `Decoder` (each stack ends with a LayerNorm, as in
  `torch.nn.Transformer`), a linear output head; padding masks come from `pad_id`, the
  decoder's look-ahead mask from the blocks.
  - `forward(src, tgt_in)`: teacher-forced logits (B, T, vocab); `hidden=True` also returns
    the decoder's last hidden states (professor forcing looks at them).
  - `encode` / `decode`: the two halves; `start_decoding` + `decode_step`: the cached
    decoder (self-attention keys/values in one `KVCache` per layer, cross-attention
    keys/values computed once from the encoder output).
  - `greedy_decode(src, ...)` (cached or full recomputation) and `beam_search(src, ...)`.
  - `copy_from_torch(transformer)`: load the weights of a `torch.nn.Transformer`;
    `through_torch(transformer, src, tgt_in)`: the same logits computed by PyTorch's stacks.
  - `save(dir)` / `load(dir)`: safetensors + config JSON, as the GPT checkpoints.
- `DecoderState`: what the cached decoder keeps between steps (and `reorder` for beams).

Token layout (see `llmlab.data.seq_tasks`): target input `BOS y_1 .. y_n`, target output
`y_1 .. y_n EOS`, padding `pad_id` on the right.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.attention import (
    KVCache,
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
)
from llmlab.blocks import ACTIVATIONS, Decoder, DecoderBlock, Encoder, EncoderBlock
from llmlab.checkpoint import load_model_dir, read_config, save_model_dir
from llmlab.errors import LLMLabError
from llmlab.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding


@dataclass
class Seq2SeqConfig:
    """Shape of an encoder-decoder transformer; the defaults are sprint 15's toy model."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    max_len: int = 32  # positions on each side (the decoder's include BOS)
    dropout: float = 0.0
    norm_first: bool = True
    activation: str = "gelu"
    pos_encoding: str = "sinusoidal"  # or "learned"
    layer_norm_eps: float = 1e-5
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        for name in (
            "src_vocab_size",
            "tgt_vocab_size",
            "d_model",
            "n_heads",
            "d_ff",
            "n_encoder_layers",
            "n_decoder_layers",
            "max_len",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LLMLabError(f"Seq2SeqConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise LLMLabError(
                f"Seq2SeqConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise LLMLabError(f"Seq2SeqConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.pos_encoding not in ("sinusoidal", "learned"):
            raise LLMLabError(
                f"Seq2SeqConfig.pos_encoding must be 'sinusoidal' or 'learned', "
                f"got {self.pos_encoding!r}"
            )
        if self.activation not in ACTIVATIONS:
            raise LLMLabError(
                f"Seq2SeqConfig.activation must be one of {sorted(ACTIVATIONS)}, "
                f"got {self.activation!r}"
            )
        special = {self.pad_id, self.bos_id, self.eos_id}
        if len(special) != 3 or min(special) < 0 or max(special) >= self.tgt_vocab_size:
            raise LLMLabError(
                f"pad_id, bos_id, eos_id must be three different ids below tgt_vocab_size="
                f"{self.tgt_vocab_size}, got {self.pad_id}, {self.bos_id}, {self.eos_id}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Seq2SeqConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise LLMLabError(
                f"unknown Seq2SeqConfig fields {sorted(unknown)}: is this a seq2seq checkpoint?"
            )
        return cls(**data)


@dataclass
class DecoderState:
    """The cached decoder's memory between steps, for a batch of B sequences.

    `self_caches[i]`: keys/values of layer i's masked self-attention for every target
    position decoded so far (they never change once computed, since position t only sees
    positions <= t). `cross_k[i]`, `cross_v[i]`: layer i's cross-attention keys/values of the
    encoder output, (B, H, S, d_head), computed once instead of at every step.
    """

    cross_k: list[torch.Tensor]
    cross_v: list[torch.Tensor]
    memory_mask: torch.Tensor  # (B, 1, 1, S), True = real source token
    self_caches: list[KVCache]

    def __len__(self) -> int:
        """Number of target positions already decoded (the next position's index)."""
        return len(self.self_caches[0])

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (in that order): beam search follows its surviving beams."""
        self.cross_k = [k.index_select(0, index) for k in self.cross_k]
        self.cross_v = [v.index_select(0, index) for v in self.cross_v]
        self.memory_mask = self.memory_mask.index_select(0, index)
        for cache in self.self_caches:
            cache.reorder(index)


def _cross_attend(
    attn: MultiHeadAttention,
    x: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """`attn(x, memory, memory, mask)` with the memory's keys/values already projected."""
    q = attn.split_heads(attn.w_q(x))
    out, _ = scaled_dot_product_attention(q, k, v, mask, attn.dropout, attn.training)
    return attn.w_o(attn.combine_heads(out))


def _block_step(
    block: DecoderBlock,
    x: torch.Tensor,
    cache: KVCache,
    cross_k: torch.Tensor,
    cross_v: torch.Tensor,
    memory_mask: torch.Tensor,
) -> torch.Tensor:
    """`DecoderBlock.forward` for new positions only, reading and filling the caches."""
    x = block.add_norm1(x, lambda h: block.self_attn(h, kv_cache=cache, is_causal=True)[0])
    x = block.add_norm2(
        x, lambda h: _cross_attend(block.cross_attn, h, cross_k, cross_v, memory_mask)
    )
    return block.add_norm3(x, block.ffn)


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder transformer: embeddings + positions, `Encoder`, `Decoder`, head."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.d_model)
        if c.pos_encoding == "sinusoidal":
            self.src_pos = SinusoidalPositionalEncoding(c.d_model, c.max_len, c.dropout)
            self.tgt_pos = SinusoidalPositionalEncoding(c.d_model, c.max_len, c.dropout)
        else:
            self.src_pos = LearnedPositionalEmbedding(c.max_len, c.d_model, c.dropout)
            self.tgt_pos = LearnedPositionalEmbedding(c.max_len, c.d_model, c.dropout)
        block = dict(
            dropout=c.dropout,
            norm_first=c.norm_first,
            activation=c.activation,
            layer_norm_eps=c.layer_norm_eps,
        )
        # final_norm=True in post-norm too: `torch.nn.Transformer` ends both stacks that way.
        self.encoder = Encoder(
            c.n_encoder_layers, c.d_model, c.n_heads, c.d_ff, final_norm=True, **block
        )
        self.decoder = Decoder(
            c.n_decoder_layers, c.d_model, c.n_heads, c.d_ff, final_norm=True, **block
        )
        self.head = nn.Linear(c.d_model, c.tgt_vocab_size)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- checks ---------------------------------------------------------------------------

    def _check_ids(self, ids: torch.Tensor, vocab_size: int, what: str, past: int = 0) -> None:
        if ids.dim() != 2 or ids.shape[1] == 0:
            raise LLMLabError(
                f"{what} must be token ids of shape (batch, length >= 1), got {tuple(ids.shape)}"
            )
        if past + ids.shape[1] > self.config.max_len:
            raise LLMLabError(
                f"{what} needs {past + ids.shape[1]} positions but the model has "
                f"max_len={self.config.max_len}: use shorter sequences or train a model with a "
                "larger --max-len"
            )
        low, high = (int(v) for v in torch.aminmax(ids))
        if low < 0 or high >= vocab_size:
            raise LLMLabError(
                f"{what} ids must be in [0, {vocab_size}), got [{low}, {high}]: is this "
                "model trained for this task's vocabulary?"
            )

    # --- the two halves -------------------------------------------------------------------

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> (memory (B, S, d), memory_mask (B, 1, 1, S), True = real token)."""
        self._check_ids(src, self.config.src_vocab_size, "source")
        memory_mask = (src != self.config.pad_id)[:, None, None, :]
        x = self.src_pos(self.src_embed(src))
        return self.encoder(x, memory_mask), memory_mask

    def decode(
        self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """All target positions at once (teacher forcing): hidden states (B, T, d)."""
        self._check_ids(tgt_in, self.config.tgt_vocab_size, "target")
        tgt_mask = (tgt_in != self.config.pad_id)[:, None, None, :]
        x = self.tgt_pos(self.tgt_embed(tgt_in))
        return self.decoder(x, memory, tgt_mask, memory_mask)

    def forward(
        self, src: torch.Tensor, tgt_in: torch.Tensor, hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits (B, T, tgt_vocab): position t predicts tgt_out[:, t]."""
        memory, memory_mask = self.encode(src)
        h = self.decode(tgt_in, memory, memory_mask)
        logits = self.head(h)
        return (logits, h) if hidden else logits

    def loss(self, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the real (non-padding) target tokens."""
        logits = self(src, tgt_in)
        return F.cross_entropy(
            logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=self.config.pad_id
        )

    # --- the cached decoder ---------------------------------------------------------------

    def start_decoding(self, src: torch.Tensor) -> DecoderState:
        """Encode `src` once and project its cross-attention keys/values for every layer."""
        memory, memory_mask = self.encode(src)
        ks, vs = [], []
        for block in self.decoder.layers:
            attn = block.cross_attn
            ks.append(attn.split_heads(attn.w_k(memory)))
            vs.append(attn.split_heads(attn.w_v(memory)))
        return DecoderState(ks, vs, memory_mask, [KVCache() for _ in self.decoder.layers])

    def decode_step(
        self, tokens: torch.Tensor, state: DecoderState, hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Feed the next target tokens (B, T_new) (usually T_new = 1); returns their logits.

        The same three sub-layers as `DecoderBlock.forward`, but self-attention reads the
        cached keys/values of earlier positions and appends its own, and cross-attention
        uses the keys/values `start_decoding` projected once.
        """
        past = len(state)
        self._check_ids(tokens, self.config.tgt_vocab_size, "target", past)
        x = self.tgt_pos(self.tgt_embed(tokens), offset=past)
        for i, block in enumerate(self.decoder.layers):
            x = _block_step(
                block,
                x,
                state.self_caches[i],
                state.cross_k[i],
                state.cross_v[i],
                state.memory_mask,
            )
        h = self.decoder.norm(x)
        logits = self.head(h)
        return (logits, h) if hidden else logits

    # --- decoding -------------------------------------------------------------------------

    def _max_new(self, max_new_tokens: int | None) -> int:
        n = self.config.max_len if max_new_tokens is None else max_new_tokens
        if not 1 <= n <= self.config.max_len:
            raise LLMLabError(
                f"max_new_tokens must be in 1..max_len={self.config.max_len}, got {n}"
            )
        return n

    @torch.no_grad()
    def greedy_decode(
        self,
        src: torch.Tensor,
        max_new_tokens: int | None = None,
        use_cache: bool = True,
        stop_at_eos: bool = True,
    ) -> torch.Tensor:
        """Free-running argmax decoding: (B, N) generated tokens (no BOS).

        Each step feeds the model its own previous outputs. After a sequence's EOS its
        remaining positions are `pad_id` (with `stop_at_eos`); decoding stops once every
        sequence is finished. `use_cache=False` re-runs the whole decoder on the prefix at
        every step (the slow reference the cache must equal).
        """
        c = self.config
        n = self._max_new(max_new_tokens)
        B = src.shape[0]
        out = torch.full((B, 1), c.bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        if use_cache:
            state = self.start_decoding(src)
        else:
            memory, memory_mask = self.encode(src)
        for _ in range(n):
            if use_cache:
                logits = self.decode_step(out[:, -1:], state)[:, -1]
            else:
                logits = self.head(self.decode(out, memory, memory_mask))[:, -1]
            token = logits.argmax(-1)
            if stop_at_eos:
                token = token.masked_fill(done, c.pad_id)
                done |= token == c.eos_id
            out = torch.cat([out, token[:, None]], dim=1)
            if stop_at_eos and done.all():
                break
        return out[:, 1:]

    @torch.no_grad()
    def sample(
        self,
        src: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Free-running *sampled* decoding, (B, N) tokens, no early stop (REINFORCE uses it)."""
        if not temperature > 0:
            raise LLMLabError(f"temperature must be > 0, got {temperature}")
        n = self._max_new(max_new_tokens)
        out = torch.full((src.shape[0], 1), self.config.bos_id, dtype=torch.long, device=src.device)
        state = self.start_decoding(src)
        for _ in range(n):
            probs = torch.softmax(
                self.decode_step(out[:, -1:], state)[:, -1].float() / temperature, -1
            )
            out = torch.cat([out, torch.multinomial(probs, 1, generator=generator)], dim=1)
        return out[:, 1:]

    @torch.no_grad()
    def beam_search(
        self,
        src: torch.Tensor,
        beam_size: int = 4,
        max_new_tokens: int | None = None,
        length_penalty: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Beam search over the cached decoder: (tokens (B, N), log-probability (B,)).

        Keeps the `beam_size` best partial sequences of each source by total log-probability;
        a finished beam (it produced EOS) only extends with padding at no cost. The winner is
        the beam with the best `log_prob / length ** length_penalty` (length counts EOS);
        the returned score is its plain total log-probability.
        """
        c = self.config
        if beam_size <= 0:
            raise LLMLabError(f"beam_size must be a positive integer, got {beam_size}")
        n = self._max_new(max_new_tokens)
        B, K, V = src.shape[0], beam_size, c.tgt_vocab_size
        device = src.device
        state = self.start_decoding(src)
        state.reorder(torch.arange(B, device=device).repeat_interleave(K))
        tokens = torch.full((B * K, 1), c.bos_id, dtype=torch.long, device=device)
        scores = torch.full((B, K), float("-inf"), device=device)
        scores[:, 0] = 0.0  # all beams start identical: keep one, or the top-K would be K copies
        done = torch.zeros(B * K, dtype=torch.bool, device=device)
        lengths = torch.zeros(B * K, device=device)
        for _ in range(n):
            logp = torch.log_softmax(self.decode_step(tokens[:, -1:], state)[:, -1].float(), -1)
            logp[done] = float("-inf")
            logp[done, c.pad_id] = 0.0
            candidates = (scores.view(-1, 1) + logp).view(B, K * V)
            scores, flat = candidates.topk(K, dim=-1)
            origin = (torch.arange(B, device=device)[:, None] * K + flat // V).view(-1)
            new = (flat % V).view(-1)
            state.reorder(origin)
            lengths = lengths[origin] + (~done[origin]).float()
            done = done[origin] | (new == c.eos_id)
            tokens = torch.cat([tokens[origin], new[:, None]], dim=1)
            if done.all():
                break
        normalised = scores / lengths.view(B, K).clamp(min=1) ** length_penalty
        best = normalised.argmax(-1)
        rows = torch.arange(B, device=device) * K + best
        return tokens[rows, 1:], scores.gather(1, best[:, None]).squeeze(1)

    @torch.no_grad()
    def sequence_log_prob(self, src: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """Total log-probability (B,) of `generated` tokens (no BOS; whatever follows the
        first EOS is ignored), recomputed with one teacher-forced pass: the check on beam
        search's scores."""
        c = self.config
        bos = torch.full_like(generated[:, :1], c.bos_id)
        tgt_in = torch.cat([bos, generated[:, :-1]], dim=1)
        logp = torch.log_softmax(self(src, tgt_in).float(), -1)
        token_logp = logp.gather(-1, generated[..., None]).squeeze(-1)
        is_eos = (generated == c.eos_id).long()
        after_eos = (is_eos.cumsum(1) - is_eos) > 0
        return token_logp.masked_fill(after_eos, 0.0).sum(-1)

    # --- PyTorch's reference and checkpoints ---------------------------------------------

    @torch.no_grad()
    def copy_from_torch(self, transformer: nn.Transformer) -> Seq2SeqTransformer:
        """Load a `torch.nn.Transformer(batch_first=True)`'s weights into the encoder and
        decoder stacks (embeddings, positions and head are ours: `nn.Transformer` has none)."""
        ref_enc, ref_dec = transformer.encoder, transformer.decoder
        if (len(ref_enc.layers), len(ref_dec.layers)) != (
            len(self.encoder.layers),
            len(self.decoder.layers),
        ):
            raise LLMLabError(
                f"layer counts differ: torch has {len(ref_enc.layers)}+{len(ref_dec.layers)}, "
                f"this model {len(self.encoder.layers)}+{len(self.decoder.layers)}"
            )
        for ours, ref in zip(self.encoder.layers, ref_enc.layers, strict=True):
            ours.load_state_dict(EncoderBlock.from_torch(ref).state_dict())
        for ours, ref in zip(self.decoder.layers, ref_dec.layers, strict=True):
            ours.load_state_dict(DecoderBlock.from_torch(ref).state_dict())
        for ours, ref in ((self.encoder.norm, ref_enc.norm), (self.decoder.norm, ref_dec.norm)):
            ours.weight.copy_(ref.weight)
            ours.bias.copy_(ref.bias)
        return self

    def through_torch(
        self, transformer: nn.Transformer, src: torch.Tensor, tgt_in: torch.Tensor
    ) -> torch.Tensor:
        """Logits of this model with `transformer` in place of our encoder and decoder: our
        embeddings, positions and head around PyTorch's stacks (the parity reference).
        PyTorch's boolean masks mean True = may NOT attend, the opposite of ours."""
        pad = self.config.pad_id
        out = transformer(
            self.src_pos(self.src_embed(src)),
            self.tgt_pos(self.tgt_embed(tgt_in)),
            tgt_mask=~causal_mask(tgt_in.shape[1], src.device),
            src_key_padding_mask=src == pad,
            tgt_key_padding_mask=tgt_in == pad,
            memory_key_padding_mask=src == pad,
        )
        return self.head(out)

    def save(self, directory: Path | str, extra: dict[str, Any] | None = None) -> Path:
        """`model.safetensors` + `config.json` (+ `task.json` = `extra`) written atomically."""
        return save_model_dir(
            directory,
            self,
            self.config.to_dict(),
            extra_json={"task.json": extra} if extra else None,
        )

    @classmethod
    def load(
        cls, directory: Path | str, map_location: str | torch.device = "cpu"
    ) -> Seq2SeqTransformer:
        """Rebuild a model saved with `save` (its config decides the shape)."""
        data = read_config(directory)
        try:
            config = Seq2SeqConfig.from_dict(data)
        except TypeError as exc:
            raise LLMLabError(f"{directory}/config.json is not a Seq2SeqConfig ({exc})") from None
        model = cls(config)
        load_model_dir(directory, model, map_location)
        return model.to(map_location)
