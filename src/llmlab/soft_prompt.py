"""Soft prompts: vectors from outside the vocabulary fed to a frozen language model (sprint 17).

A language model reads token ids through its input-embedding table; nothing stops us from
handing it other vectors of the same width at some positions ("virtual tokens"). Here the
vectors come from a graph: a learned projection maps a node embedding to `n_tokens` vectors,
which are put in front of a text prompt; only the projection is trained, the LM stays frozen.

- `input_embedding(model)`: the token-embedding module of a `transformers` model or an llmlab
  `GPT`.
- `embedding_scale(model)`: the typical length of the model's token vectors (the projection
  starts at that scale, so the virtual tokens look like real ones to the first layer).
- `SoftPrompt(in_dim, lm_dim, n_tokens)`: (B, in_dim) -> (B, n_tokens, lm_dim).
- `frozen(model)`: `requires_grad=False` on every parameter for the duration, then restored
  (a shared model comes back exactly as it was).
- `virtual_tokens(model, vectors, position)`: while active, the embeddings of n positions
  from `position` on are replaced by `vectors` in every forward pass (a forward hook on the
  embedding module), whatever ids the input holds there.
- Sequences are [`before` text + virtual tokens + `after` text + answer]:
  `soft_prompt_loss(...)` is the cross-entropy of the answer tokens, `label_log_probs(...)`
  the log-probability of each candidate answer (a constrained choice), and
  `greedy_continuations(...)` decodes greedily.
- `encode(tokenizer, text)`: token ids from a `transformers` or an llmlab tokenizer.

The note `sprints/17_gnn/notes/06_soft_prompts.md` explains it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import LLMLabError

PLACEHOLDER_ID = 0  # any valid id: its embedding is overwritten at the virtual positions


def input_embedding(model: nn.Module) -> nn.Module:
    """The module that turns token ids into vectors (`get_input_embeddings()` or `GPT.wte`)."""
    if hasattr(model, "get_input_embeddings"):
        return model.get_input_embeddings()
    if hasattr(model, "wte"):
        return model.wte
    raise LLMLabError(
        f"{type(model).__name__} has no input-embedding module: use a transformers causal LM "
        "or an llmlab GPT"
    )


def embedding_scale(model: nn.Module) -> float:
    """Median L2 norm of the model's token-embedding rows."""
    weight = input_embedding(model).weight.detach()
    return float(weight.float().norm(dim=1).median())


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text` without special tokens (transformers) or as is (llmlab tokenizers)."""
    try:
        return list(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:  # llmlab's CharTokenizer / BPETokenizer take the text only
        return list(tokenizer.encode(text))


def lm_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(B, T, vocab) logits of a transformers model (`.logits`) or an llmlab GPT (a tuple)."""
    out = model(ids)
    return out[0] if isinstance(out, tuple) else out.logits


class SoftPrompt(nn.Module):
    """A linear map from a node embedding to `n_tokens` virtual token vectors.

    The output is `scale * (W z + b)` with `scale` the LM's typical token-vector length and
    `W`, `b` small at first, so training starts from vectors of a familiar size.
    """

    def __init__(self, in_dim: int, lm_dim: int, n_tokens: int = 2, scale: float = 1.0) -> None:
        super().__init__()
        if in_dim <= 0 or lm_dim <= 0 or n_tokens <= 0:
            raise LLMLabError(
                f"SoftPrompt needs positive sizes, got in_dim={in_dim}, lm_dim={lm_dim}, "
                f"n_tokens={n_tokens}"
            )
        self.n_tokens, self.lm_dim = n_tokens, lm_dim
        self.proj = nn.Linear(in_dim, n_tokens * lm_dim)
        nn.init.normal_(self.proj.weight, std=1.0 / (in_dim * lm_dim) ** 0.5)
        nn.init.normal_(self.proj.bias, std=1.0 / lm_dim**0.5)  # unit-length vectors at start
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * self.proj(z).view(z.shape[0], self.n_tokens, self.lm_dim)


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Switch off gradients for every parameter of `model`, and restore each flag afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def virtual_tokens(model: nn.Module, vectors: torch.Tensor, position: int = 0) -> Iterator[None]:
    """Within the block, every forward pass of `model` reads `vectors` (B, n, dim) instead of
    the embeddings of input positions `position` .. `position + n - 1` (whatever ids they hold)."""
    module = input_embedding(model)
    end = position + vectors.shape[1]

    def replace(_module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
        if output.shape[0] != vectors.shape[0] or output.shape[1] < end:
            raise LLMLabError(
                f"virtual tokens for {vectors.shape[0]} sequences of at least {end} positions, "
                f"got input of shape {tuple(output.shape[:2])}"
            )
        parts = [output[:, :position], vectors.to(output.dtype), output[:, end:]]
        return torch.cat(parts, dim=1)

    handle = module.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def _ids(
    rows: int, before: Sequence[int], n_virtual: int, after: Sequence[int], device
) -> torch.Tensor:
    row = list(before) + [PLACEHOLDER_ID] * n_virtual + list(after)
    return torch.tensor([row] * rows, dtype=torch.long, device=device)


def _logits(model: nn.Module, ids: torch.Tensor, vectors: torch.Tensor | None, position: int):
    if vectors is None:
        return lm_logits(model, ids)
    with virtual_tokens(model, vectors, position):
        return lm_logits(model, ids)


def soft_prompt_loss(
    model: nn.Module,
    vectors: torch.Tensor,
    targets: Sequence[Sequence[int]],
    before: Sequence[int] = (),
    after: Sequence[int] = (),
) -> torch.Tensor:
    """Mean cross-entropy of each row's `targets` tokens read after
    [`before` + its virtual tokens + `after`]. Rows of different target lengths are
    right-padded; a causal model never looks right, so the padding changes nothing before it
    and is left out of the loss."""
    if len(targets) != vectors.shape[0] or any(len(t) == 0 for t in targets):
        raise LLMLabError("soft_prompt_loss needs one non-empty target per row of vectors")
    width = max(len(t) for t in targets)
    start = len(before) + vectors.shape[1] + len(after)  # the first target position
    ids = _ids(len(targets), before, vectors.shape[1], after, vectors.device)
    padded = torch.tensor([list(t) + [PLACEHOLDER_ID] * (width - len(t)) for t in targets])
    labels = torch.full_like(padded, -100)
    for i, t in enumerate(targets):
        labels[i, : len(t)] = torch.tensor(t)
    logits = _logits(model, torch.cat([ids, padded.to(ids.device)], 1), vectors, len(before))
    predictions = logits[:, start - 1 : start - 1 + width]  # position p predicts token p + 1
    return F.cross_entropy(
        predictions.reshape(-1, predictions.shape[-1]).float(),
        labels.reshape(-1).to(predictions.device),
        ignore_index=-100,
    )


@torch.no_grad()
def label_log_probs(
    model: nn.Module,
    vectors: torch.Tensor | None,
    candidates: Sequence[Sequence[int]],
    before: Sequence[int] = (),
    after: Sequence[int] = (),
) -> torch.Tensor:
    """(B, len(candidates)): the summed log-probability of each candidate continuation after
    [`before` + virtual tokens + `after`]; B = rows of `vectors` (1 without: text only)."""
    rows = vectors.shape[0] if vectors is not None else 1
    n_virtual = vectors.shape[1] if vectors is not None else 0
    device = vectors.device if vectors is not None else next(model.parameters()).device
    start = len(before) + n_virtual + len(after)
    scores = []
    for cand in candidates:
        ids = _ids(rows, before, n_virtual, list(after) + list(cand), device)
        logits = _logits(model, ids, vectors, len(before))
        logp = logits[:, start - 1 : start - 1 + len(cand)].float().log_softmax(-1)
        scores.append(logp.gather(2, ids[:, start:, None]).sum(dim=(1, 2)))
    return torch.stack(scores, dim=1)


@torch.no_grad()
def greedy_continuations(
    model: nn.Module,
    vectors: torch.Tensor | None,
    max_new_tokens: int,
    before: Sequence[int] = (),
    after: Sequence[int] = (),
) -> list[list[int]]:
    """Greedy decoding of `max_new_tokens` after [`before` + virtual tokens + `after`], one
    list of new ids per row. Each step re-reads the whole (short) sequence: the virtual
    tokens live in the embeddings, not in the ids that a KV-cached loop feeds back."""
    rows = vectors.shape[0] if vectors is not None else 1
    n_virtual = vectors.shape[1] if vectors is not None else 0
    device = vectors.device if vectors is not None else next(model.parameters()).device
    ids = _ids(rows, before, n_virtual, after, device)
    start = ids.shape[1]
    for _ in range(max_new_tokens):
        logits = _logits(model, ids, vectors, len(before))
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, start:].tolist()


__all__ = [
    "SoftPrompt",
    "embedding_scale",
    "encode",
    "frozen",
    "greedy_continuations",
    "input_embedding",
    "label_log_probs",
    "lm_logits",
    "soft_prompt_loss",
    "virtual_tokens",
]
