"""Score a partly frozen language model fast: cache what its frozen bottom layers compute
(sprint 12).

When fine-tuning trains only the top blocks of a model (sprint 12's default trains the top
4 of SmolLM2's 30), the embeddings and the blocks below never change. Their output for a
given window of text is the same before training, at every validation and after training,
so it only needs computing once: later scorings of the same windows run the trained top
blocks, the final norm and the head only (for SmolLM2 with 4 of 30 blocks trained, about a
third of the forward pass, the head included).

`FrozenPrefixLM` wraps a `CausalLMAdapter` around a `transformers` decoder-only model with
`model.layers` and `model.norm` (Llama, Qwen2, Mistral, SmolLM2) and answers
`forward(idx, targets) -> (logits, loss)` like it, so `llmlab.evaluation.evaluate_lm` takes
either. It reuses the model's own forward for both halves (swapping in the lower or upper
blocks), so masks and rotary positions are the model's, and it checks itself:

- it caches only when no gradient is being recorded (scoring, never training), and only the
  leading blocks whose parameters (and the embeddings) all have `requires_grad=False`;
- a prefix weight changed in place (a loaded checkpoint, an optimiser step) bumps the
  tensor's version counter, and the cache is emptied;
- the first cached batch is also run through the whole model; if the two disagree (a model
  whose forward does more than the swap assumes), caching switches off with a warning.

Notes: `sprints/12_finetune_gpt2_generative/notes/01_generative_finetuning.md`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from llmlab.evaluation import CausalLMAdapter

# Cached and whole-model logits agree to float32 rounding (measured ~1e-5 on SmolLM2's logits
# of up to ~30); a model the swap does not fit differs by whole units.
AGREEMENT_TOLERANCE = 1e-3


class FrozenPrefixLM(nn.Module):
    """`adapter` (a `CausalLMAdapter`) with the frozen bottom blocks' outputs cached per
    window; any other model (our `GPT`) is passed through, uncached. `max_windows` bounds the cache (each window costs T x hidden floats: 128 tokens of
    SmolLM2, 295 KB); past it, new windows are computed and not kept."""

    def __init__(self, adapter: nn.Module, max_windows: int = 4096) -> None:
        super().__init__()
        self.adapter = adapter
        self.max_windows = max_windows
        self.cache: dict[tuple[int, int, int, bytes], torch.Tensor] = {}
        self.versions: tuple[tuple[int, int], ...] = ()
        self.checked = False
        self.enabled = self._base() is not None
        self.hits = self.misses = 0

    def _base(self) -> nn.Module | None:
        """The inner decoder (`model.model`: embeddings, layers, norm), if it has that shape."""
        if not isinstance(self.adapter, CausalLMAdapter) or self.adapter.is_llmlab:
            return None  # our GPT (alone or adapted): nothing to swap, scored as it is
        inner = getattr(self.adapter.model, "model", None)
        if inner is None:
            return None
        if not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm")):
            return None
        return inner

    def frozen_blocks(self) -> int:
        """How many leading blocks are frozen, embeddings included (0: nothing to cache)."""
        inner = self._base()
        if inner is None or any(p.requires_grad for p in inner.embed_tokens.parameters()):
            return 0
        n = 0
        for layer in inner.layers:
            if any(p.requires_grad for p in layer.parameters()):
                break
            n += 1
        return min(n, len(inner.layers) - 1)  # keep one block to run: the swap needs it

    @staticmethod
    @contextlib.contextmanager
    def _blocks(inner: nn.Module, part: nn.ModuleList, final_norm: bool) -> Iterator[None]:
        """`inner` (the decoder) running only `part` of its blocks (and its norm or not)."""
        layers, norm = inner.layers, inner.norm
        inner.layers = part
        if not final_norm:
            inner.norm = nn.Identity()
        try:
            yield
        finally:
            inner.layers, inner.norm = layers, norm

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        k = self.frozen_blocks() if self.enabled and not torch.is_grad_enabled() else 0
        if k == 0:
            return self.adapter(idx, targets)
        inner = self._base()
        prefix = [*inner.embed_tokens.parameters(), *inner.layers[:k].parameters()]
        versions = tuple((p.data_ptr(), p._version) for p in prefix)
        if versions != self.versions:  # other blocks frozen, or a frozen weight rewritten
            self.cache.clear()
            self.versions = versions
        key = (k, idx.shape[0], idx.shape[1], idx.cpu().numpy().tobytes())
        hidden = self.cache.get(key)
        if hidden is None:
            self.misses += 1
            with self._blocks(inner, inner.layers[:k], final_norm=False):
                hidden = inner(input_ids=idx, use_cache=False).last_hidden_state
            if len(self.cache) < self.max_windows:
                self.cache[key] = hidden
        else:
            self.hits += 1
        with self._blocks(inner, inner.layers[k:], final_norm=True):
            logits = self.adapter.model(inputs_embeds=hidden, use_cache=False).logits
        if not self.checked:
            self.checked = True
            whole = self.adapter(idx)[0]
            if not torch.allclose(logits, whole, atol=AGREEMENT_TOLERANCE, rtol=0):
                warnings.warn(
                    f"{type(self.adapter.model).__name__}: cached scoring differs from the "
                    "whole model; caching switched off",
                    stacklevel=2,
                )
                self.enabled = False
                self.cache.clear()
                logits = whole
        return logits, CausalLMAdapter.loss(logits, targets)
