"""Evaluation done right: model.eval(), torch.no_grad(), test loss, accuracy, confusion matrix.

Trains a small MLP with dropout for a few epochs, then scores it on the untouched test
split, and shows why both switches matter: dropout makes train-mode predictions random,
and without no_grad every prediction builds a graph it will never use.

Run: python -m sprints.03_models_and_training_loops.results.05_basic_evaluation --epochs 3
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from llmlab.cli import positive_float, positive_int, probability, run
from llmlab.data.mnist import default_transform, load_mnist
from llmlab.device import get_device, seed_everything
from llmlab.plotting import plot_confusion_matrix
from llmlab.runs import run_dir


class DropoutMLP(nn.Module):
    """Flatten, Linear, ReLU, Dropout, Linear: dropout behaves differently in train and eval."""

    def __init__(self, hidden: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device
) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy, accuracy and the 10x10 confusion matrix (rows: true, cols: predicted)."""
    model.eval()  # dropout off (and batch-norm would use its running statistics)
    total, correct, n = 0.0, 0, 0
    confusion = np.zeros((10, 10), dtype=np.int64)
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            total += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            preds = logits.argmax(dim=1)
            correct += (preds == labels).sum().item()
            n += len(labels)
            np.add.at(confusion, (labels.cpu().numpy(), preds.cpu().numpy()), 1)
    return total / n, correct / n, confusion


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive_int, default=3, help="training epochs")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="samples per batch")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--hidden", type=positive_int, default=128, help="hidden units")
    parser.add_argument("--dropout", type=probability, default=0.3, help="dropout probability")
    parser.add_argument("--limit", type=positive_int, help="use only this many training images")
    parser.add_argument(
        "--source", choices=["auto", "subset", "full"], default="auto", help="MNIST source"
    )
    parser.add_argument(
        "--download", action="store_true", help="download full MNIST (needs internet)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--seed", type=int, default=0, help="seed for shuffling and weights")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    device = get_device(args.device)
    train = load_mnist("train", args.source, default_transform(), download=args.download)
    test = load_mnist("test", args.source, default_transform(), download=args.download)
    if args.limit:
        train = Subset(train, range(min(args.limit, len(train))))
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test, batch_size=256)
    model = DropoutMLP(args.hidden, args.dropout).to(device)

    untrained_loss, untrained_acc, _ = evaluate(model, test_loader, device)
    print(
        f"untrained: test loss {untrained_loss:.3f} (ln 10 = 2.303), accuracy {untrained_acc:.1%}"
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for images, labels in tqdm(train_loader, desc=f"epoch {epoch}", leave=False):
            images, labels = images.to(device), labels.to(device)
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test_loss, test_acc, confusion = evaluate(model, test_loader, device)
    per_class = confusion.diagonal() / confusion.sum(axis=1)
    print(
        f"after {args.epochs} epochs on {len(train)} images: test loss {test_loss:.4f}, "
        f"accuracy {test_acc:.2%} on {len(test)} test images"
    )
    print("per-digit accuracy: " + " ".join(f"{d}:{a:.0%}" for d, a in enumerate(per_class)))

    # Why model.eval(): in train mode dropout zeroes random units on every call.
    batch = next(iter(test_loader))[0][:16].to(device)
    model.train()
    with torch.no_grad():
        differ = float(not torch.equal(model(batch), model(batch)))
    model.eval()
    with torch.no_grad():
        equal = float(torch.equal(model(batch), model(batch)))
    # Why torch.no_grad(): without it the output carries a graph (grad_fn) back to the weights.
    tracked = model(batch)
    with torch.no_grad():
        untracked = model(batch)
    print(f"train mode: two passes differ: {bool(differ)}; eval mode: identical: {bool(equal)}")
    print(
        f"output requires_grad without no_grad: {tracked.requires_grad}, "
        f"with no_grad: {untracked.requires_grad}"
    )

    png = plot_confusion_matrix(
        confusion,
        run_dir("03_models_and_training_loops", "05_basic_evaluation") / "confusion.png",
        labels=[str(d) for d in range(10)],
        title=f"MNIST test confusion matrix (accuracy {test_acc:.1%})",
    )
    print(f"confusion matrix: {png}")
    return {
        "untrained_accuracy": untrained_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "min_class_accuracy": float(per_class.min()),
        "train_mode_outputs_differ": differ,
        "eval_mode_outputs_equal": equal,
        "requires_grad_without_no_grad": float(tracked.requires_grad),
        "requires_grad_with_no_grad": float(untracked.requires_grad),
        "confusion_png": str(png),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
