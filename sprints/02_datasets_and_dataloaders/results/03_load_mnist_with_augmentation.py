"""Data augmentation with RandomRotation: a grid of original digits and rotated copies.

Training data gets random rotations (a new angle every time an item is read); test data
gets only the deterministic ToTensor + Normalize.

Run: python -m sprints.02_datasets_and_dataloaders.results.03_load_mnist_with_augmentation --degrees 25
"""

from __future__ import annotations

import argparse

import torch
from torchvision import transforms

from llmlab.cli import positive_float, positive_int, run
from llmlab.data.mnist import MNIST_MEAN, MNIST_STD, default_transform, load_mnist
from llmlab.device import seed_everything
from llmlab.plotting import plot_image_grid
from llmlab.runs import run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--degrees", type=positive_float, default=25.0, help="rotate by a random angle in +-degrees"
    )
    parser.add_argument("--images", type=positive_int, default=8, help="digits per row")
    parser.add_argument("--rows", type=positive_int, default=3, help="rows of rotated copies")
    parser.add_argument(
        "--source", choices=["auto", "subset", "full"], default="auto", help="MNIST source"
    )
    parser.add_argument(
        "--download", action="store_true", help="download full MNIST (needs internet)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the random angles")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    normalize = transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))
    train_tf = transforms.Compose(
        [transforms.RandomRotation(args.degrees), transforms.ToTensor(), normalize]
    )
    test_tf = default_transform(augment=False)  # evaluation must see the data as it is
    train = load_mnist("train", args.source, transform=train_tf, download=args.download)
    test_view = load_mnist("train", args.source, transform=test_tf, download=args.download)
    print(f"train transform: {train_tf}")

    def pixels(t: torch.Tensor):
        return (t[0] * MNIST_STD + MNIST_MEAN).numpy()  # back to [0, 1] for display

    idx = list(range(args.images))
    originals = [pixels(test_view[i][0]) for i in idx]
    rotated = [[pixels(train[i][0]) for i in idx] for _ in range(args.rows)]
    changes = [abs(r - o).mean() for row in rotated for r, o in zip(row, originals, strict=True)]
    test_same = float(torch.equal(test_view[0][0], test_view[0][0]))
    train_varies = float(not torch.equal(train[0][0], train[0][0]))
    print(f"mean |rotated - original| pixel change: {sum(changes) / len(changes):.4f}")
    print(
        f"test transform deterministic: {bool(test_same)}; train transform random: {bool(train_varies)}"
    )
    png = plot_image_grid(
        [originals, *rotated],
        run_dir("02_datasets_and_dataloaders", "03_load_mnist_with_augmentation")
        / "augmentation.png",
        row_titles=["original"]
        + [f"RandomRotation({args.degrees:g}) #{k + 1}" for k in range(args.rows)],
    )
    print(f"augmentation grid: {png}")
    return {
        "mean_abs_pixel_change": float(sum(changes) / len(changes)),
        "test_transform_deterministic": test_same,
        "train_transform_random": train_varies,
        "grid_rows": float(1 + args.rows),
        "grid_png": str(png),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
