"""llmlab.data.mnist: the offline MNIST subset, its split, transforms and the full-MNIST errors."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from llmlab.data import mnist
from llmlab.data.mnist import (
    MNIST_MEAN,
    MNIST_STD,
    MNISTSubset,
    default_transform,
    full_mnist_available,
    load_mnist,
)
from llmlab.errors import LLMLabError


@pytest.mark.parametrize(("split", "size"), [("train", 4000), ("test", 1000)])
def test_subset_shapes_dtypes_and_balanced_labels(split: str, size: int) -> None:
    ds = load_mnist(split, source="subset")
    assert len(ds) == size
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert isinstance(y, int)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    counts = torch.bincount(ds.targets, minlength=10)
    assert len(counts) == 10 and int(counts.sum()) == size
    assert counts.tolist() == [size // 10] * 10  # stratified: every digit equally often


def test_no_transform_equals_to_tensor() -> None:
    from torchvision import transforms

    plain = MNISTSubset("test")
    via_pil = MNISTSubset("test", transform=transforms.ToTensor())
    for i in (0, 7, 999):
        torch.testing.assert_close(plain[i][0], via_pil[i][0])
        assert plain[i][1] == via_pil[i][1]


def test_split_is_deterministic_and_disjoint() -> None:
    a, b = MNISTSubset("train"), MNISTSubset("train")
    assert torch.equal(a.data[:50], b.data[:50]) and torch.equal(a.targets, b.targets)
    train, test = MNISTSubset("train"), MNISTSubset("test")
    train_rows = {bytes(img.numpy().tobytes()) for img in train.data}
    assert not any(bytes(img.numpy().tobytes()) in train_rows for img in test.data)
    # Shuffled within a split: the first 100 labels are not all one digit.
    assert len(set(train.targets[:100].tolist())) == 10


def test_cached_arrays_are_read_only_for_callers() -> None:
    ds = MNISTSubset("train")
    ds.data[0].fill_(255)  # editing one dataset's copy ...
    assert not torch.equal(MNISTSubset("train").data[0], ds.data[0])  # ... leaves the cache alone


def test_default_transform_normalises() -> None:
    ds = load_mnist("train", source="subset", transform=default_transform())
    batch, labels = next(iter(DataLoader(ds, batch_size=1000)))
    assert batch.shape == (1000, 1, 28, 28) and labels.dtype == torch.int64
    # Normalised with full MNIST's statistics, the subset is close to mean 0, std 1.
    assert abs(float(batch.mean())) < 0.05 and abs(float(batch.std()) - 1.0) < 0.05
    raw = MNISTSubset("train")[0][0]
    torch.testing.assert_close(ds[0][0], (raw - MNIST_MEAN) / MNIST_STD)


def test_augment_transform_rotates_but_keeps_shape() -> None:
    torch.manual_seed(0)
    ds = load_mnist("train", source="subset", transform=default_transform(augment=True))
    plain = load_mnist("train", source="subset", transform=default_transform())
    draws = [ds[3][0] for _ in range(5)]
    assert all(x.shape == (1, 28, 28) for x in draws)
    # A fresh random angle on every access: most draws differ from the upright image.
    assert sum(not torch.equal(x, plain[3][0]) for x in draws) >= 3


def test_full_without_files_or_download_says_what_to_do() -> None:
    assert not full_mnist_available()
    with pytest.raises(LLMLabError) as err:
        load_mnist("train", source="full")
    assert str(err.value) == (
        "full MNIST is not under data/mnist: pass --download (needs internet) "
        "or use --source subset"
    )


def test_auto_falls_back_with_exactly_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mnist, "_announced_fallback", False)  # as in a fresh process
    capsys.readouterr()
    ds = load_mnist("test", source="auto")
    assert isinstance(ds, MNISTSubset) and len(ds) == 1000
    assert len(load_mnist("train", source="auto")) == 4000
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "--source full" in lines[0]  # one line for both splits
    load_mnist("test", source="subset")  # an explicit subset prints nothing
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("kwargs", "word"), [({"split": "val"}, "split"), ({"source": "x"}, "source")]
)
def test_bad_arguments_are_rejected(kwargs: dict, word: str) -> None:
    with pytest.raises(LLMLabError, match=word):
        load_mnist(**kwargs)
