"""The full training loop, written out: MLP on MNIST with tqdm and per-epoch validation loss.

forward -> loss -> zero_grad -> backward -> step, for every batch; after every epoch the
model is switched to eval mode and scored on held-out data without building a graph.
(Sprint 04 moves this loop into reusable helpers in `llmlab.training`.)

Run: python -m sprints.03_models_and_training_loops.results.04_training_loop --epochs 5
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, random_split
from tqdm import tqdm

from llmlab.cli import positive_float, positive_int, probability, run
from llmlab.data.mnist import default_transform, load_mnist
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir


class MLP(nn.Module):
    """28x28 image -> 10 logits: Flatten, Linear, ReLU, Linear."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive_int, default=5, help="passes over the data")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="samples per batch")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--hidden", type=positive_int, default=128, help="hidden units")
    parser.add_argument(
        "--val-fraction", type=probability, default=0.1, help="share of train held out"
    )
    parser.add_argument("--limit", type=positive_int, help="use only this many training images")
    parser.add_argument(
        "--source", choices=["auto", "subset", "full"], default="auto", help="MNIST source"
    )
    parser.add_argument(
        "--download", action="store_true", help="download full MNIST (needs internet)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--seed", type=int, default=0, help="seed for split, shuffling, weights")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    device = get_device(args.device)
    data = load_mnist("train", args.source, default_transform(), download=args.download)
    if args.limit:
        data = Subset(data, range(min(args.limit, len(data))))
    n_val = int(len(data) * args.val_fraction)
    if n_val == 0:
        raise LLMLabError("--val-fraction leaves no validation images: raise it or --limit")
    # The validation set comes out of the training split; the test split stays untouched
    # until the final evaluation (05_basic_evaluation.py).
    train_set, val_set = random_split(
        data, [len(data) - n_val, n_val], generator=torch.Generator().manual_seed(args.seed)
    )
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=256)
    print(f"{len(train_set)} train / {len(val_set)} validation images on {device}")

    model = MLP(args.hidden).to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    history: dict[str, list[float]] = {"train loss": [], "validation loss": []}
    val_acc = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()  # training behaviour for dropout/batch-norm layers (none here, but habit)
        total, count = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{args.epochs}", leave=False)
        for images, labels in bar:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)  # 1. forward
            loss = loss_fn(logits, labels)  # 2. loss
            optimizer.zero_grad()  # 3. clear the previous batch's gradients
            loss.backward()  # 4. backward: fill .grad of every parameter
            optimizer.step()  # 5. update the weights
            total += loss.item() * len(labels)  # weight by batch size: the last batch is smaller
            count += len(labels)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history["train loss"].append(total / count)

        model.eval()
        val_total, correct = 0.0, 0
        with torch.no_grad():  # no graph: less memory, faster, and no accidental updates
            for images, labels in val_loader:
                images, labels = images.to(device), labels.to(device)
                logits = model(images)
                val_total += loss_fn(logits, labels).item() * len(labels)
                correct += (logits.argmax(dim=1) == labels).sum().item()
        history["validation loss"].append(val_total / len(val_set))
        val_acc = correct / len(val_set)
        print(
            f"epoch {epoch}: train loss {history['train loss'][-1]:.4f}  "
            f"val loss {history['validation loss'][-1]:.4f}  val accuracy {val_acc:.2%}"
        )

    png = plot_curves(
        history,
        run_dir("03_models_and_training_loops", "04_training_loop") / "loss_curves.png",
        title="MLP on MNIST: train vs validation loss",
        xlabel="epoch",
        ylabel="cross-entropy",
    )
    print(f"loss curves: {png}")
    return {
        "first_train_loss": history["train loss"][0],
        "final_train_loss": history["train loss"][-1],
        "first_val_loss": history["validation loss"][0],
        "final_val_loss": history["validation loss"][-1],
        "val_accuracy": val_acc,
        "epochs": float(args.epochs),
        "curves_png": str(png),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
