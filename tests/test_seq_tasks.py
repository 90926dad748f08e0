"""The sprint-15 task library (`llmlab.data.seq_tasks`): definitions, layout, determinism."""

from __future__ import annotations

import pytest
import torch

from llmlab.data.seq_tasks import TASKS, SeqTask, get_task, length_split
from llmlab.errors import LLMLabError


def test_task_definitions_on_a_worked_example() -> None:
    x = [3, 1, 4, 1, 5, 9, 2, 6]
    assert get_task("copy").target(x) == x
    assert get_task("reverse").target(x) == [6, 2, 9, 5, 1, 4, 1, 3]
    assert get_task("sort").target(x) == [1, 1, 2, 3, 4, 5, 6, 9]
    # 3, 4, 8, 9, 14, 23, 25, 31 mod 10
    assert get_task("running_sum").target(x) == [3, 4, 8, 9, 4, 3, 5, 1]
    assert sorted(TASKS) == ["copy", "reverse", "running_sum", "sort"]


def test_batch_layout_padding_and_special_tokens() -> None:
    task = SeqTask("reverse", n_symbols=5, min_len=1, max_len=4)
    batch = task.batch([[0, 1, 2], [4]])
    v = task.vocab
    assert (v.pad_id, v.bos_id, v.eos_id, v.size) == (0, 1, 2, 8)
    assert batch.src.tolist() == [[3, 4, 5], [7, 0, 0]]
    assert batch.tgt_in.tolist() == [[1, 5, 4, 3], [1, 7, 0, 0]]
    assert batch.tgt_out.tolist() == [[5, 4, 3, 2], [7, 2, 0, 0]]
    assert batch.lengths.tolist() == [3, 1] and len(batch) == 2
    assert v.decode(batch.tgt_out[0]) == [2, 1, 0]
    # the decoder input is the target output shifted right by one, behind BOS
    assert torch.equal(
        batch.tgt_in[:, 1:],
        batch.tgt_out[:, :-1].masked_fill(batch.tgt_out[:, :-1] == v.eos_id, v.pad_id),
    )


def test_sampling_is_deterministic_and_respects_lengths() -> None:
    task = SeqTask("sort", n_symbols=7, min_len=2, max_len=6)
    a = task.sample(50, torch.Generator().manual_seed(3))
    b = task.sample(50, torch.Generator().manual_seed(3))
    c = task.sample(50, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.src, c.src)
    assert int(a.lengths.min()) >= 2 and int(a.lengths.max()) <= 6
    assert ((a.src != 0).sum(1) == a.lengths).all()
    # every target row is the task applied to its source row
    for src, out, n in zip(a.src, a.tgt_out, a.lengths, strict=True):
        symbols = task.vocab.decode(src[:n])
        assert task.vocab.decode(out) == sorted(symbols)
    stream1, stream2 = task.batches(8, seed=5), task.batches(8, seed=5)
    for _ in range(3):
        assert torch.equal(next(stream1).src, next(stream2).src)


def test_length_split_and_errors() -> None:
    train, test = length_split("reverse", 10, train_max_len=8, test_max_len=12)
    assert (train.min_len, train.max_len, test.min_len, test.max_len) == (1, 8, 9, 12)
    g = torch.Generator().manual_seed(0)
    assert int(test.sample(20, g).lengths.min()) >= 9
    with pytest.raises(LLMLabError, match="unknown task 'rev'"):
        get_task("rev")
    with pytest.raises(LLMLabError, match="longer"):
        length_split("reverse", 10, 8, 8)
    with pytest.raises(LLMLabError, match="min_len"):
        SeqTask("copy", min_len=5, max_len=3)
    with pytest.raises(LLMLabError, match="symbols outside"):
        SeqTask("copy", n_symbols=3).batch([[0, 3]])
