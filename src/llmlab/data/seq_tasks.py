"""Toy sequence-to-sequence tasks with deterministic generators (sprint 15).

- `TASKS`: the task functions, each defined on a plain Python list of symbols so that it
  reads as its own specification: `copy`, `reverse`, `sort`, `running_sum` (prefix sums
  mod the number of symbols: each output also depends on the previous *output*).
- `SeqVocab`: the shared token layout, `pad = 0`, `bos = 1`, `eos = 2`, symbol s -> s + 3.
- `SeqTask`: one task with its symbol count and length range; `sample(n, generator)` draws a
  `SeqBatch` (source, decoder input, decoder target, lengths) from a seeded generator, so the
  same seed always gives the same examples; `batches(batch_size, seed)` is an endless stream.
- `length_split(...)`: the length-generalisation split, train on lengths <= L, test longer.
- `get_task(name, ...)`: look a task up by name, with a one-line error for unknown names.

Layout of one example of length n (right-padded to the batch's longest):
source `x_1 .. x_n`, decoder input `BOS y_1 .. y_n`, decoder target `y_1 .. y_n EOS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

import torch

from llmlab.errors import LLMLabError


def _copy(x: list[int], n_symbols: int) -> list[int]:
    return list(x)


def _reverse(x: list[int], n_symbols: int) -> list[int]:
    return x[::-1]


def _sort(x: list[int], n_symbols: int) -> list[int]:
    return sorted(x)


def _running_sum(x: list[int], n_symbols: int) -> list[int]:
    # y_t = (x_1 + ... + x_t) mod V, i.e. y_t = (y_{t-1} + x_t) mod V: a decoder that reads
    # its previous output can take that shortcut, and then depends on that output being right.
    return [s % n_symbols for s in accumulate(x)]


TASKS: dict[str, Callable[[list[int], int], list[int]]] = {
    "copy": _copy,
    "reverse": _reverse,
    "sort": _sort,
    "running_sum": _running_sum,
}


@dataclass(frozen=True)
class SeqVocab:
    """Token ids shared by source and target: three special tokens, then the symbols."""

    n_symbols: int
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    @property
    def size(self) -> int:
        return self.n_symbols + 3

    def encode(self, symbols: list[int]) -> list[int]:
        return [s + 3 for s in symbols]

    def decode(self, ids: list[int] | torch.Tensor) -> list[int]:
        """Token ids -> symbols, stopping at EOS and dropping BOS / padding."""
        out = []
        for i in ids.tolist() if isinstance(ids, torch.Tensor) else ids:
            if i == self.eos_id:
                break
            if i >= 3:
                out.append(i - 3)
        return out


class SeqBatch(NamedTuple):
    """src (B, S), tgt_in (B, S + 1) = BOS y, tgt_out (B, S + 1) = y EOS, lengths (B,)."""

    src: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device | str) -> SeqBatch:
        return SeqBatch(*(t.to(device) for t in self))

    def __len__(self) -> int:  # the number of examples, not the tuple's 4 fields
        return self.src.shape[0]


@dataclass(frozen=True)
class SeqTask:
    """A named task over `n_symbols` symbols with source lengths in [min_len, max_len]."""

    name: str
    n_symbols: int = 10
    min_len: int = 10
    max_len: int = 10

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise LLMLabError(
                f"unknown task {self.name!r}: choose one of {', '.join(sorted(TASKS))}"
            )
        if self.n_symbols < 2:
            raise LLMLabError(f"a task needs at least 2 symbols, got n_symbols={self.n_symbols}")
        if not 1 <= self.min_len <= self.max_len:
            raise LLMLabError(
                f"need 1 <= min_len <= max_len, got min_len={self.min_len}, max_len={self.max_len}"
            )

    @property
    def vocab(self) -> SeqVocab:
        return SeqVocab(self.n_symbols)

    def target(self, symbols: list[int]) -> list[int]:
        """The task's output for one source sequence of symbols (not token ids)."""
        return TASKS[self.name](list(symbols), self.n_symbols)

    def sample(self, n: int, generator: torch.Generator) -> SeqBatch:
        """`n` examples drawn from `generator` (same generator state -> same examples)."""
        if n <= 0:
            raise LLMLabError(f"need a positive number of examples, got {n}")
        lengths = torch.randint(self.min_len, self.max_len + 1, (n,), generator=generator)
        symbols = torch.randint(self.n_symbols, (n, self.max_len), generator=generator)
        return self.batch(
            [row[:k] for row, k in zip(symbols.tolist(), lengths.tolist(), strict=True)]
        )

    def batch(self, sources: list[list[int]]) -> SeqBatch:
        """Encode given source sequences (lists of symbols) with their targets, right-padded."""
        v = self.vocab
        longest = max(len(s) for s in sources)
        src = torch.full((len(sources), longest), v.pad_id, dtype=torch.long)
        tgt_in = torch.full((len(sources), longest + 1), v.pad_id, dtype=torch.long)
        tgt_out = torch.full_like(tgt_in, v.pad_id)
        for i, s in enumerate(sources):
            if not s or min(s) < 0 or max(s) >= self.n_symbols:
                raise LLMLabError(
                    f"source {s} is empty or has symbols outside 0..{self.n_symbols - 1}"
                )
            y = v.encode(self.target(s))
            src[i, : len(s)] = torch.tensor(v.encode(s))
            tgt_in[i, : len(y) + 1] = torch.tensor([v.bos_id, *y])
            tgt_out[i, : len(y) + 1] = torch.tensor([*y, v.eos_id])
        lengths = torch.tensor([len(s) for s in sources])
        return SeqBatch(src, tgt_in, tgt_out, lengths)

    def batches(self, batch_size: int, seed: int) -> Iterator[SeqBatch]:
        """An endless stream of fresh batches; two streams with one seed are identical."""
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield self.sample(batch_size, generator)


def get_task(name: str, n_symbols: int = 10, min_len: int = 10, max_len: int = 10) -> SeqTask:
    """The task called `name` (one of `TASKS`), with a one-line error for anything else."""
    return SeqTask(name, n_symbols, min_len, max_len)


def length_split(
    name: str, n_symbols: int, train_max_len: int, test_max_len: int, train_min_len: int = 1
) -> tuple[SeqTask, SeqTask]:
    """(train task on lengths train_min_len..L, test task on lengths L+1..test_max_len)."""
    if test_max_len <= train_max_len:
        raise LLMLabError(
            f"the test lengths must be longer than the training ones: got train up to "
            f"{train_max_len}, test up to {test_max_len}"
        )
    train = SeqTask(name, n_symbols, train_min_len, train_max_len)
    test = SeqTask(name, n_symbols, train_max_len + 1, test_max_len)
    return train, test
