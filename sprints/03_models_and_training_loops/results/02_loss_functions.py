"""MSE for regression, cross-entropy for classification, and why not MSE for classes.

1. MSE and cross-entropy by hand equal `nn.MSELoss` / `nn.CrossEntropyLoss`
   (which is log-softmax followed by the negative log-likelihood).
2. For a confidently wrong prediction, MSE on a sigmoid has almost no gradient; binary
   cross-entropy's gradient is large exactly there.
3. Trained from the same confidently wrong start, cross-entropy fixes the classifier
   while MSE barely moves.

Run: python -m sprints.03_models_and_training_loops.results.02_loss_functions --steps 100
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from llmlab.cli import positive_float, positive_int, run
from llmlab.device import seed_everything


def two_blobs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n points per class: class 0 around (-1, -1), class 1 around (1, 1)."""
    x = torch.cat([torch.randn(n, 2) * 0.6 - 1.0, torch.randn(n, 2) * 0.6 + 1.0])
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    return x, y


def train_logistic(
    x: torch.Tensor, y: torch.Tensor, loss_name: str, steps: int, lr: float
) -> tuple[float, float]:
    """Logistic regression from a confidently WRONG start; returns (accuracy, start grad norm)."""
    model = nn.Linear(2, 1)
    with torch.no_grad():  # weights pointing the wrong way: every |logit| is large and wrong
        model.weight.copy_(torch.tensor([[-4.0, -4.0]]))
        model.bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    first_grad = 0.0
    for step in range(steps):
        opt.zero_grad()
        z = model(x).squeeze(1)
        if loss_name == "mse":
            loss = nn.functional.mse_loss(torch.sigmoid(z), y)
        else:  # numerically stable sigmoid + binary cross-entropy in one op
            loss = nn.functional.binary_cross_entropy_with_logits(z, y)
        loss.backward()
        if step == 0:
            first_grad = float(model.weight.grad.norm())
        opt.step()
    with torch.no_grad():
        acc = float(((model(x).squeeze(1) > 0).float() == y).float().mean())
    return acc, first_grad


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=positive_int, default=200, help="points per class")
    parser.add_argument("--steps", type=positive_int, default=100, help="SGD steps per loss")
    parser.add_argument("--lr", type=positive_float, default=0.5, help="SGD learning rate")
    parser.add_argument("--logit", type=float, default=-6.0, help="logit of the wrong prediction")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)

    # 1. The formulas behind the modules.
    pred, target = torch.randn(8, 1), torch.randn(8, 1)
    mse_diff = float((((pred - target) ** 2).mean() - nn.MSELoss()(pred, target)).abs())
    logits = torch.randn(8, 5)  # (batch, classes): raw scores, NOT probabilities
    labels = torch.randint(0, 5, (8,))  # (batch,) class indices, dtype int64
    manual_ce = -torch.log_softmax(logits, dim=1)[torch.arange(8), labels].mean()
    ce = nn.CrossEntropyLoss()(logits, labels)
    ce_diff = float((manual_ce - ce).abs())
    nll_diff = float((nn.NLLLoss()(torch.log_softmax(logits, 1), labels) - ce).abs())
    print(f"MSE by hand vs nn.MSELoss: |diff| {mse_diff:.1e}")
    print(
        f"CE by hand vs nn.CrossEntropyLoss: |diff| {ce_diff:.1e}; "
        f"log_softmax+NLLLoss: |diff| {nll_diff:.1e}; CE = {ce.item():.4f}, "
        f"chance level ln(5) = {torch.log(torch.tensor(5.0)).item():.4f}"
    )

    # 2. Gradient w.r.t. the logit for a confidently wrong prediction (true class 1).
    z = torch.tensor([args.logit], requires_grad=True)
    nn.functional.mse_loss(torch.sigmoid(z), torch.ones(1)).backward()
    mse_grad = z.grad.item()  # = 2 (p - 1) p (1 - p): p(1-p) -> 0 when the sigmoid saturates
    z.grad = None
    nn.functional.binary_cross_entropy_with_logits(z, torch.ones(1)).backward()
    ce_grad = z.grad.item()  # = p - 1: close to -1 when very wrong
    p = torch.sigmoid(z).item()
    print(
        f"logit {args.logit} (p={p:.4f}, true class 1): dL/dz MSE+sigmoid {mse_grad:.2e}, "
        f"cross-entropy {ce_grad:.2e} ({abs(ce_grad / mse_grad):.0f}x larger)"
    )

    # 3. Training from the same bad start.
    x, y = two_blobs(args.samples)
    mse_acc, mse_g = train_logistic(x, y, "mse", args.steps, args.lr)
    ce_acc, ce_g = train_logistic(x, y, "ce", args.steps, args.lr)
    print(
        f"after {args.steps} SGD steps from a confidently wrong start: accuracy "
        f"MSE+sigmoid {mse_acc:.1%} (first grad norm {mse_g:.1e}), "
        f"cross-entropy {ce_acc:.1%} (first grad norm {ce_g:.1e})"
    )
    return {
        "mse_manual_diff": mse_diff,
        "ce_manual_diff": ce_diff,
        "ce_nll_diff": nll_diff,
        "mse_sigmoid_grad": mse_grad,
        "ce_grad": ce_grad,
        "mse_accuracy": mse_acc,
        "ce_accuracy": ce_acc,
        "mse_first_grad_norm": mse_g,
        "ce_first_grad_norm": ce_g,
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
