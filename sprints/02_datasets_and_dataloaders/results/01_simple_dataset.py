"""A custom Dataset (__len__/__getitem__) and a DataLoader that batches and shuffles it.

Run: python -m sprints.02_datasets_and_dataloaders.results.01_simple_dataset --batch-size 16
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from llmlab.cli import positive_int, run
from llmlab.device import seed_everything


class NoisySquares(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Points x in [-1, 1] with targets x^2 + noise; item i is always the same pair.

    The data is made once in `__init__`; `__getitem__` only looks it up (and applies the
    optional `transform`), which is the contract a DataLoader relies on.
    """

    def __init__(
        self,
        size: int,
        noise: float = 0.05,
        seed: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        g = torch.Generator().manual_seed(seed)  # own generator: the data never depends on
        self.x = torch.rand(size, 1, generator=g) * 2 - 1  # the global seed or call order
        self.y = self.x**2 + noise * torch.randn(size, 1, generator=g)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.y[index]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=positive_int, default=100, help="number of samples")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="samples per batch")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data and the shuffling")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    ds = NoisySquares(args.size, seed=args.seed)
    x0, y0 = ds[0]
    print(f"dataset: {len(ds)} samples; item 0 = (x {x0.tolist()}, y {y0.tolist()})")

    # Batching: the default collate_fn stacks items into (batch, ...) tensors.
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=False)
    batches = list(loader)
    xb, yb = batches[0]
    print(
        f"{len(batches)} batches of {tuple(xb.shape)} / {tuple(yb.shape)}; "
        f"last batch has {len(batches[-1][0])} (drop_last=True would drop it)"
    )
    dropped = len(DataLoader(ds, batch_size=args.batch_size, drop_last=True))

    # Shuffling: a new order every epoch, the same samples every epoch.
    g = torch.Generator().manual_seed(args.seed)
    shuffled = DataLoader(ds, batch_size=args.batch_size, shuffle=True, generator=g)
    epochs = [torch.cat([x for x, _ in shuffled]).squeeze(1) for _ in range(2)]
    ordered = ds.x.squeeze(1)
    order_changed = float(not torch.equal(epochs[0], ordered))
    epochs_differ = float(not torch.equal(epochs[0], epochs[1]))
    same_content = float(all(torch.equal(e.sort().values, ordered.sort().values) for e in epochs))
    print(
        f"shuffle: epoch 1 order differs from dataset order: {bool(order_changed)}; "
        f"epoch 1 vs 2 differ: {bool(epochs_differ)}; same samples: {bool(same_content)}"
    )
    print(f"first 5 x of epoch 1: {[round(v, 3) for v in epochs[0][:5].tolist()]}")
    print(f"first 5 x of epoch 2: {[round(v, 3) for v in epochs[1][:5].tolist()]}")
    return {
        "num_samples": float(len(ds)),
        "num_batches": float(len(batches)),
        "batch_rows": float(xb.shape[0]),
        "batch_features": float(xb.shape[1]),
        "last_batch_size": float(len(batches[-1][0])),
        "num_batches_drop_last": float(dropped),
        "order_changed": order_changed,
        "epochs_differ": epochs_differ,
        "same_content": same_content,
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
