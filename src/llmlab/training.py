"""Reusable training-loop pieces (taught in sprints 03-04, reused by every later sprint).

- `train_one_epoch`: one pass over a loader (forward, loss, backward, optional gradient
  clipping, optimizer step, optional per-batch scheduler step) with a tqdm bar showing the
  running loss; returns mean loss (and accuracy when the model outputs class logits).
- `evaluate`: the same pass under `model.eval()` + `torch.no_grad()`, leaving weights,
  gradients and the caller's train/eval mode untouched; optionally returns predictions and
  targets (for a confusion matrix).
- `EarlyStopping`: stop after `patience` epochs without improvement, keeping a CPU deep copy
  of the best weights so `restore` can put them back exactly.
- `confusion_matrix`: counts of (true, predicted) pairs from `evaluate`'s predictions.

Batches are `(inputs, targets)` pairs and `loss_fn(model(inputs), targets)` must be a scalar,
so the same functions train an MNIST CNN (sprint 04) or a classifier head (sprint 11).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from llmlab.errors import LLMLabError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _is_classification(outputs: torch.Tensor, targets: torch.Tensor) -> bool:
    """Class logits `(N, C)` against integer labels `(N,)`: accuracy makes sense."""
    return (
        outputs.dim() == 2
        and targets.dim() == 1
        and not targets.is_floating_point()
        and outputs.shape[0] == targets.shape[0]
    )


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    device: torch.device | str,
    scheduler: Any | None = None,
    desc: str = "train",
    grad_clip: float | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train `model` for one pass over `loader`; return `{"loss", "accuracy"?, "grad_norm"?}`.

    `scheduler` (if given) is stepped after every batch, for per-step schedules such as
    warm-up; per-epoch schedules (`CosineAnnealingLR` over epochs) are stepped by the caller.
    `grad_clip` clips the global gradient norm and reports the mean norm before clipping.
    """
    model.train()
    total_loss, total_correct, total_seen, n_batches = 0.0, 0, 0, 0
    grad_norm_sum, is_clf = 0.0, True
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for inputs, targets in bar:
        inputs, targets = inputs.to(device), targets.to(device)
        outputs = model(inputs)
        loss = loss_fn(outputs, targets)
        if not torch.isfinite(loss):
            raise LLMLabError(
                f"the loss became {loss.item()} in {desc}: lower the learning rate "
                "or clip the gradients"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            grad_norm_sum += float(nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

        n = targets.shape[0]
        total_loss += loss.item() * n  # weight by batch size: the last batch may be short
        total_seen += n
        n_batches += 1
        is_clf = is_clf and _is_classification(outputs, targets)
        if is_clf:
            total_correct += (outputs.argmax(dim=1) == targets).sum().item()
        bar.set_postfix(loss=f"{total_loss / total_seen:.4f}")
    if total_seen == 0:
        raise LLMLabError(f"{desc}: the data loader yielded no batches (is the dataset empty?)")
    result = {"loss": total_loss / total_seen}
    if is_clf:
        result["accuracy"] = total_correct / total_seen
    if grad_clip is not None:
        result["grad_norm"] = grad_norm_sum / n_batches
    return result


def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: LossFn,
    device: torch.device | str,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Mean loss (and accuracy) of `model` on `loader` without touching its weights or grads.

    Runs under `model.eval()` (dropout off, batch-norm uses running statistics) and
    `torch.no_grad()`, then puts the model back in the mode the caller had it in.
    With `return_predictions=True` the dict also holds CPU tensors `predictions` and `targets`.
    """
    was_training = model.training
    model.eval()
    total_loss, total_correct, total_seen, is_clf = 0.0, 0, 0, True
    preds: list[torch.Tensor] = []
    trues: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for inputs, targets in loader:
                inputs, targets = inputs.to(device), targets.to(device)
                outputs = model(inputs)
                n = targets.shape[0]
                total_loss += loss_fn(outputs, targets).item() * n
                total_seen += n
                is_clf = is_clf and _is_classification(outputs, targets)
                if is_clf:
                    predicted = outputs.argmax(dim=1)
                    total_correct += (predicted == targets).sum().item()
                    if return_predictions:
                        preds.append(predicted.cpu())
                        trues.append(targets.cpu())
    finally:
        model.train(was_training)
    if total_seen == 0:
        raise LLMLabError("evaluate: the data loader yielded no batches (is the dataset empty?)")
    result: dict[str, Any] = {"loss": total_loss / total_seen}
    if is_clf:
        result["accuracy"] = total_correct / total_seen
        if return_predictions:
            result["predictions"] = torch.cat(preds)
            result["targets"] = torch.cat(trues)
    return result


def confusion_matrix(
    targets: torch.Tensor, predictions: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """`(num_classes, num_classes)` counts: row = true class, column = predicted class."""
    index = targets.long() * num_classes + predictions.long()
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class EarlyStopping:
    """Stop when the monitored value has not improved for `patience` consecutive epochs.

    `mode="min"` for a loss, `"max"` for an accuracy. An epoch improves when it beats the best
    value by more than `min_delta`. The best epoch's `state_dict` is deep-copied to the CPU
    (not referenced: the optimizer keeps changing the live tensors), so `restore` brings
    those exact weights back.

    ```python
    stopper = EarlyStopping(patience=3)
    for epoch in range(1, epochs + 1):
        ...
        if stopper.step(val_loss, model):
            break
    stopper.restore(model)
    ```
    """

    def __init__(self, patience: int, min_delta: float = 0.0, mode: str = "min") -> None:
        if patience < 1:
            raise LLMLabError(f"patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise LLMLabError(f"min_delta must be >= 0, got {min_delta}")
        if mode not in ("min", "max"):
            raise LLMLabError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best_value = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0  # 1-based epoch of the best value; 0 = none yet
        self.epoch = 0  # number of `step` calls so far
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def improved(self, value: float) -> bool:
        """Whether `value` beats the best by more than `min_delta` (NaN never does)."""
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta

    def step(self, value: float, model: nn.Module) -> bool:
        """Record one epoch's monitored value; return True when training should stop."""
        self.epoch += 1
        value = float(value)
        if self.improved(value):
            self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch, 0
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def restore(self, model: nn.Module) -> nn.Module:
        """Load the best epoch's weights into `model` (they are copied, so restore twice works)."""
        if self.best_state is None:
            raise LLMLabError("EarlyStopping.restore called before any epoch improved")
        model.load_state_dict(self.best_state)  # copies into the live tensors: no aliasing
        return model

    def state_dict(self) -> dict[str, Any]:
        """The counters (not the weights), to store in a checkpoint for resuming."""
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "epoch": self.epoch,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any], model: nn.Module | None = None) -> None:
        """Restore the counters; pass `model` to take its current weights as the best ones."""
        self.best_value = float(state["best_value"])
        self.best_epoch = int(state["best_epoch"])
        self.epoch = int(state["epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        if model is not None:
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
