"""A custom transform class (AddGaussianNoise) composed with ToTensor and Normalize.

A transform is any callable: a class with `__call__` can hold parameters (here mean and
std) and print itself nicely in a Compose.

Run: python -m sprints.02_datasets_and_dataloaders.results.04_custom_transform --std 0.2
"""

from __future__ import annotations

import argparse

import torch
from torchvision import transforms

from llmlab.cli import positive_float, positive_int, run
from llmlab.data.mnist import MNIST_MEAN, MNIST_STD, load_mnist
from llmlab.device import seed_everything
from llmlab.plotting import plot_image_grid
from llmlab.runs import run_dir


class AddGaussianNoise:
    """Add N(mean, std^2) noise to a tensor; optionally clamp back into [0, 1] (pixel range)."""

    def __init__(self, mean: float = 0.0, std: float = 0.1, clamp: bool = False) -> None:
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        self.mean, self.std, self.clamp = mean, std, clamp

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        noisy = tensor + torch.randn_like(tensor) * self.std + self.mean
        return noisy.clamp(0.0, 1.0) if self.clamp else noisy

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std}, clamp={self.clamp})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mean", type=float, default=0.0, help="mean of the added noise")
    parser.add_argument("--std", type=positive_float, default=0.2, help="std of the added noise")
    parser.add_argument("--images", type=positive_int, default=256, help="images to measure on")
    parser.add_argument("--seed", type=int, default=0, help="seed for the noise")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    noise = AddGaussianNoise(args.mean, args.std)
    # Order matters: noise is defined on [0, 1] pixels, so it goes after ToTensor and
    # before Normalize (which would otherwise scale the noise by 1/0.3081 too).
    clean_tf = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )
    noisy_tf = transforms.Compose(
        [transforms.ToTensor(), noise, transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )
    print(f"pipeline: {noisy_tf}")
    clean_ds = load_mnist("train", "subset", transform=clean_tf)
    noisy_ds = load_mnist("train", "subset", transform=noisy_tf)
    n = min(args.images, len(clean_ds))
    clean = torch.stack([clean_ds[i][0] for i in range(n)])
    noisy = torch.stack([noisy_ds[i][0] for i in range(n)])
    # Undo Normalize's scaling to measure the noise in pixel units.
    diff = (noisy - clean) * MNIST_STD
    print(
        f"added noise over {n} images: mean {diff.mean():+.4f} (asked {args.mean}), "
        f"std {diff.std():.4f} (asked {args.std})"
    )
    labels_same = float(all(clean_ds[i][1] == noisy_ds[i][1] for i in range(n)))

    png = plot_image_grid(
        [[clean[i, 0].numpy() for i in range(8)], [noisy[i, 0].numpy() for i in range(8)]],
        run_dir("02_datasets_and_dataloaders", "04_custom_transform") / "noise.png",
        row_titles=["clean", f"+ N({args.mean}, {args.std}^2) noise"],
    )
    print(f"clean vs noisy: {png}")
    return {
        "noise_mean_measured": float(diff.mean()),
        "noise_std_measured": float(diff.std()),
        "labels_unchanged": labels_same,
        "noise_png": str(png),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
