"""SGD, SGD with momentum and Adam on the same ill-conditioned problem, from the same start.

Linear regression whose two input features have very different scales (std 1 and 10):
the loss surface is a long narrow valley. SGD's step size is capped by the steep direction
(lr < 2 / largest curvature), so it crawls along the flat one; momentum builds up speed
along it; Adam rescales every parameter's step by its own gradient history.

Run: python -m sprints.03_models_and_training_loops.results.03_optimizers --steps 200
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from llmlab.cli import positive_float, positive_int, run
from llmlab.device import seed_everything
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir


def train(model: nn.Module, opt: torch.optim.Optimizer, x, y, steps: int) -> list[float]:
    """Full-batch training; returns the loss before each step and after the last one."""
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    with torch.no_grad():
        losses.append(nn.functional.mse_loss(model(x), y).item())
    return losses


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=positive_int, default=500, help="data points")
    parser.add_argument("--steps", type=positive_int, default=200, help="steps per optimizer")
    parser.add_argument(
        "--sgd-lr", type=positive_float, default=0.008, help="SGD lr (diverges above ~0.0089 here)"
    )
    parser.add_argument("--momentum", type=positive_float, default=0.9, help="SGD momentum")
    parser.add_argument("--adam-lr", type=positive_float, default=0.1, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and weights")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    x = torch.randn(args.samples, 2) * torch.tensor([1.0, 10.0])
    y = x @ torch.tensor([[3.0], [0.5]]) + 1.0 + 0.1 * torch.randn(args.samples, 1)
    # Curvature of the MSE loss along each direction: eigenvalues of 2/N X^T X (with bias).
    xb = torch.cat([x, torch.ones(args.samples, 1)], dim=1)
    eig = torch.linalg.eigvalsh(2 * xb.T @ xb / args.samples)
    print(
        f"loss curvatures {[round(v, 2) for v in eig.tolist()]}: condition number "
        f"{eig.max() / eig.min():.0f}; SGD diverges for lr > 2/{eig.max():.1f} = {2 / eig.max():.4f}"
    )

    start = nn.Linear(2, 1)
    curves: dict[str, list[float]] = {}
    for name in ("SGD", "SGD+momentum", "Adam"):
        model = copy.deepcopy(start)  # identical starting weights for a fair race
        if name == "SGD":
            opt = torch.optim.SGD(model.parameters(), lr=args.sgd_lr)
        elif name == "SGD+momentum":
            opt = torch.optim.SGD(model.parameters(), lr=args.sgd_lr, momentum=args.momentum)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=args.adam_lr)
        curves[name] = train(model, opt, x, y, args.steps)
        print(
            f"{name:13s} MSE {curves[name][0]:9.3f} -> {curves[name][-1]:.5f} "
            f"(w={[round(v, 3) for v in model.weight.detach().flatten().tolist()]}, "
            f"b={model.bias.item():.3f}; true w=[3.0, 0.5], b=1.0)"
        )
    png = plot_curves(
        curves,
        run_dir("03_models_and_training_loops", "03_optimizers") / "optimizers.png",
        title="Same problem, same start: SGD vs momentum vs Adam",
        xlabel="step",
        ylabel="MSE",
        logy=True,
    )
    print(f"loss curves: {png}")
    return {
        "sgd_final_loss": curves["SGD"][-1],
        "momentum_final_loss": curves["SGD+momentum"][-1],
        "adam_final_loss": curves["Adam"][-1],
        "initial_loss": curves["SGD"][0],
        "condition_number": float(eig.max() / eig.min()),
        "curves_png": str(png),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
