"""Language-model windows over a token array: inputs and next-token targets (sprint 09).

A window of `block_size + 1` consecutive tokens gives an input `x = w[:-1]` and its target
`y = w[1:]`: at every position the model predicts the next token.

- `get_batch(data, batch_size, block_size, device, generator)`: the fast training path,
  random windows straight from a `np.memmap` (nanoGPT style); seeded by a `torch.Generator`
  whose state (`generator.get_state()`) goes into checkpoints, so a resumed run draws the
  same batches. `RandomWindowDataset` bundles data, block size and generator.
- `TextDataset(tokens, block_size, stride)`: the teaching path, every window as a map-style
  `Dataset` for a `DataLoader`.
- `sequential_windows(data, block_size, batch_size)`: the whole split in non-overlapping
  windows, every target exactly once: the full validation loss and perplexity.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from llmlab.errors import LLMLabError

Tokens = np.ndarray | torch.Tensor | Sequence[int]


def check_length(n_tokens: int, block_size: int) -> None:
    """A window needs block_size + 1 tokens (the inputs and one more target)."""
    if block_size <= 0:
        raise LLMLabError(f"block_size must be positive, got {block_size}")
    if n_tokens < block_size + 1:
        raise LLMLabError(
            f"corpus of {n_tokens} tokens is shorter than the context "
            f"(block_size+1={block_size + 1}): use a smaller --block-size or a bigger corpus"
        )


def _to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    device = torch.device(device)
    if device.type == "cuda":
        # Pinned (page-locked) memory lets the copy run asynchronously with the GPU's work.
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def get_batch(
    data: np.ndarray,
    batch_size: int,
    block_size: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` random windows: x (B, T) and y = x shifted by one, both int64.

    `generator` (a CPU `torch.Generator`) makes the draw reproducible; without it the global
    torch RNG is used.
    """
    check_length(len(data), block_size)
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator).tolist()
    # One fancy-indexing read per batch: only the touched pages of a memmap are loaded.
    index = np.asarray(starts)[:, None] + np.arange(block_size + 1)
    windows = torch.from_numpy(np.asarray(data)[index].astype(np.int64))
    return _to_device(windows[:, :-1], device), _to_device(windows[:, 1:], device)


class RandomWindowDataset:
    """Random training batches from one token array, with a saveable random state.

    >>> batches = RandomWindowDataset(train, block_size=256, seed=1337)
    >>> x, y = batches.get_batch(32, "cuda")
    >>> ckpt["data_rng"] = batches.state_dict()   # ... later: batches.load_state_dict(...)
    """

    def __init__(self, data: np.ndarray, block_size: int, seed: int = 0) -> None:
        check_length(len(data), block_size)
        self.data = data
        self.block_size = block_size
        self.generator = torch.Generator().manual_seed(seed)

    def get_batch(
        self, batch_size: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return get_batch(self.data, batch_size, self.block_size, device, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class TextDataset(Dataset):
    """Every window of `block_size + 1` tokens, `stride` apart: item i = (x, y) int64.

    With the default `stride=1` consecutive windows overlap in all but one token, so one
    "epoch" shows each token `block_size` times; `stride=block_size` gives disjoint windows.
    """

    def __init__(self, tokens: Tokens, block_size: int, stride: int | None = None) -> None:
        self.tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
        if self.tokens.dim() != 1:
            raise LLMLabError(
                f"TextDataset expects a 1-D token sequence, got {self.tokens.dim()}-D"
            )
        self.stride = 1 if stride is None else int(stride)
        if self.stride <= 0:
            raise LLMLabError(f"stride must be positive, got {stride}")
        check_length(len(self.tokens), block_size)
        self.block_size = block_size

    def __len__(self) -> int:
        return (len(self.tokens) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        start = (i % len(self)) * self.stride
        window = self.tokens[start : start + self.block_size + 1]
        return window[:-1], window[1:]


def sequential_windows(
    data: np.ndarray,
    block_size: int,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of non-overlapping windows covering the whole array in order.

    Each of the `len(data) - 1` targets (every token but the first) appears exactly once.
    The last window is shorter when the length does not divide evenly; it comes alone in the
    final batch, so weight each batch's mean loss by `y.numel()` when averaging.
    """
    check_length(len(data), 1)
    n_targets = len(data) - 1
    n_full = n_targets // block_size
    for first in range(0, n_full, batch_size):
        starts = np.arange(first, min(first + batch_size, n_full)) * block_size
        index = starts[:, None] + np.arange(block_size + 1)
        windows = torch.from_numpy(np.asarray(data)[index].astype(np.int64))
        yield _to_device(windows[:, :-1], device), _to_device(windows[:, 1:], device)
    rest = n_targets - n_full * block_size
    if rest:
        tail = torch.from_numpy(np.asarray(data[n_full * block_size :]).astype(np.int64))[None]
        yield _to_device(tail[:, :-1], device), _to_device(tail[:, 1:], device)
