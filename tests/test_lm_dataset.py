"""llmlab.data.lm_dataset: random windows, every-window dataset, sequential validation windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from llmlab.data.lm_dataset import (
    RandomWindowDataset,
    TextDataset,
    get_batch,
    sequential_windows,
)
from llmlab.errors import LLMLabError


@pytest.fixture
def tokens(tmp_path) -> np.memmap:
    """A uint16 token file read back as a memmap, like the prepared Shakespeare splits."""
    rng = np.random.default_rng(0)
    rng.integers(0, 50257, size=1001, dtype=np.uint16).tofile(tmp_path / "t.bin")
    return np.memmap(tmp_path / "t.bin", dtype=np.uint16, mode="r")


def _is_window(data: np.ndarray, row: torch.Tensor) -> bool:
    n = len(row)
    return any(np.array_equal(data[s : s + n], row.numpy()) for s in range(len(data) - n + 1))


def test_get_batch_targets_are_inputs_shifted_by_one(tokens) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(tokens, batch_size=6, block_size=16, device="cpu", generator=g)
    assert x.shape == y.shape == (6, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y, strict=True):
        full = torch.cat([row_x, row_y[-1:]])
        assert _is_window(np.asarray(tokens, dtype=np.int64), full)  # windows come from the data


def test_get_batch_is_reproducible_and_resumable(tokens) -> None:
    g1 = torch.Generator().manual_seed(123)
    first = [get_batch(tokens, 4, 8, "cpu", g1)[0] for _ in range(3)]
    g2 = torch.Generator().manual_seed(123)
    again = [get_batch(tokens, 4, 8, "cpu", g2)[0] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])
    # Save the state mid-run, draw on, restore: the same batch comes again (resume).
    state = g1.get_state()
    next_batch = get_batch(tokens, 4, 8, "cpu", g1)[0]
    g1.set_state(state)
    assert torch.equal(get_batch(tokens, 4, 8, "cpu", g1)[0], next_batch)


def test_random_window_dataset_state_dict(tokens) -> None:
    batches = RandomWindowDataset(tokens, block_size=8, seed=7)
    batches.get_batch(2)
    state = batches.state_dict()
    x1, y1 = batches.get_batch(2)
    other = RandomWindowDataset(tokens, block_size=8, seed=999)
    other.load_state_dict(state)
    x2, y2 = other.get_batch(2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_windows_reach_the_end_of_the_data() -> None:
    data = np.arange(10, dtype=np.uint16)
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(data, 200, 4, "cpu", g)
    assert int(y.max()) == 9 and int(x.min()) == 0  # first and last tokens are both reachable


def test_too_short_corpus_is_a_clear_error() -> None:
    data = np.arange(8, dtype=np.uint16)
    msg = r"corpus of 8 tokens is shorter than the context \(block_size\+1=9\)"
    with pytest.raises(LLMLabError, match=msg):
        get_batch(data, 2, 8)
    with pytest.raises(LLMLabError, match="--block-size"):
        TextDataset(data, 8)
    with pytest.raises(LLMLabError):
        RandomWindowDataset(data, 8)
    assert get_batch(data, 2, 7)[0].shape == (2, 7)  # exactly block_size+1 tokens is enough


def test_text_dataset_length_and_items() -> None:
    data = np.arange(20, dtype=np.uint16)
    ds = TextDataset(data, block_size=5)
    assert len(ds) == 15  # windows start at 0..14
    x, y = ds[3]
    assert x.tolist() == [3, 4, 5, 6, 7] and y.tolist() == [4, 5, 6, 7, 8]
    assert ds[-1][1].tolist() == [15, 16, 17, 18, 19]
    with pytest.raises(IndexError):
        ds[15]
    strided = TextDataset(list(range(20)), block_size=5, stride=5)
    assert len(strided) == 3 and strided[2][0].tolist() == [10, 11, 12, 13, 14]
    xb, yb = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert xb.shape == (4, 5) and torch.equal(xb[:, 1:], yb[:, :-1])
    with pytest.raises(LLMLabError):
        TextDataset(data, 5, stride=0)


@pytest.mark.parametrize(("n", "block_size", "batch_size"), [(1001, 16, 5), (97, 8, 3), (9, 8, 4)])
def test_sequential_windows_predict_every_token_once(n, block_size, batch_size) -> None:
    data = np.arange(n, dtype=np.int64) % 50000
    xs, ys = [], []
    for x, y in sequential_windows(data.astype(np.uint16), block_size, batch_size):
        assert x.shape == y.shape and x.shape[0] <= batch_size and x.shape[1] <= block_size
        assert torch.equal(x[:, 1:], y[:, :-1])
        xs.append(x.reshape(-1))
        ys.append(y.reshape(-1))
    # Every token but the first is a target exactly once, in order; inputs are their left
    # neighbours, so each prediction sees the true previous token.
    assert torch.cat(ys).tolist() == data[1:].tolist()
    assert torch.cat(xs).tolist() == data[:-1].tolist()
