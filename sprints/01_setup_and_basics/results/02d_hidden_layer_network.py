"""A one-hidden-layer network trained with hand-written backprop and gradient descent.

No autograd in the update: the forward pass keeps what the backward pass needs, the chain
rule is written out line by line, and autograd is used once, only to check it.

Run: python -m sprints.01_setup_and_basics.results.02d_hidden_layer_network --epochs 2000
"""

from __future__ import annotations

import argparse
import math

import torch

from llmlab.cli import positive_float, positive_int, run
from llmlab.device import seed_everything
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir

Params = dict[str, torch.Tensor]


def init_params(n_in: int, n_hidden: int, n_out: int) -> Params:
    """Random weights scaled by 1/sqrt(fan_in), so activations start with unit-ish variance."""
    return {
        "W1": torch.randn(n_in, n_hidden, dtype=torch.float64) / math.sqrt(n_in),
        "b1": torch.zeros(n_hidden, dtype=torch.float64),
        "W2": torch.randn(n_hidden, n_out, dtype=torch.float64) / math.sqrt(n_hidden),
        "b2": torch.zeros(n_out, dtype=torch.float64),
    }


def forward(params: Params, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """x (N, in) -> y_hat (N, out); also returns the intermediates the backward pass needs."""
    z = x @ params["W1"] + params["b1"]  # (N, hidden) pre-activation
    a = torch.relu(z)  # (N, hidden) hidden activations
    y_hat = a @ params["W2"] + params["b2"]  # (N, out)
    return y_hat, {"x": x, "z": z, "a": a}


def mse(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((y_hat - y) ** 2).mean()


def backward(
    params: Params, cache: dict[str, torch.Tensor], y_hat: torch.Tensor, y: torch.Tensor
) -> Params:
    """The chain rule by hand for L = mean((y_hat - y)^2); see notes/02d_hidden_layer_network.md."""
    x, z, a = cache["x"], cache["z"], cache["a"]
    d_yhat = 2.0 * (y_hat - y) / y.numel()  # dL/dy_hat, (N, out)
    d_W2 = a.T @ d_yhat  # (hidden, out)
    d_b2 = d_yhat.sum(dim=0)  # the bias is added to every row, so its gradient sums over rows
    d_a = d_yhat @ params["W2"].T  # (N, hidden)
    d_z = d_a * (z > 0).to(z.dtype)  # ReLU'(z) is 1 where z > 0, else 0
    d_W1 = x.T @ d_z  # (in, hidden)
    d_b1 = d_z.sum(dim=0)
    return {"W1": d_W1, "b1": d_b1, "W2": d_W2, "b2": d_b2}


def autograd_check(params: Params, x: torch.Tensor, y: torch.Tensor) -> float:
    """Max |manual - autograd| gradient over all parameters (autograd used only here)."""
    y_hat, cache = forward(params, x)
    manual = backward(params, cache, y_hat, y)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    mse(forward(leaves, x)[0], y).backward()
    return max(float((manual[k] - leaves[k].grad).abs().max()) for k in params)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=positive_int, default=32, help="hidden units")
    parser.add_argument("--samples", type=positive_int, default=200, help="training points")
    parser.add_argument("--epochs", type=positive_int, default=2000, help="full-batch GD steps")
    parser.add_argument(
        "--lr", type=positive_float, default=0.05, help="gradient-descent step size"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for data and weights")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    # Target: y = sin(x) on [-3, 3] -- curved, so a hidden layer is needed to fit it.
    x = torch.linspace(-3, 3, args.samples, dtype=torch.float64).unsqueeze(1)
    y = torch.sin(x)
    params = init_params(1, args.hidden, 1)
    n_params = sum(p.numel() for p in params.values())
    grad_diff = autograd_check(params, x, y)
    print(f"1 -> {args.hidden} (ReLU) -> 1 network, {n_params} parameters")
    print(f"manual backprop vs autograd: max |difference| = {grad_diff:.2e}")

    losses = []
    for epoch in range(args.epochs):
        y_hat, cache = forward(params, x)
        losses.append(mse(y_hat, y).item())
        grads = backward(params, cache, y_hat, y)
        for k in params:  # the gradient-descent update: w <- w - lr * dL/dw
            params[k] -= args.lr * grads[k]
        if epoch % max(1, args.epochs // 5) == 0:
            print(f"epoch {epoch:5d}  MSE {losses[-1]:.5f}")
    final = mse(forward(params, x)[0], y).item()
    losses.append(final)
    print(f"MSE {losses[0]:.5f} -> {final:.5f} ({losses[0] / final:.0f}x lower)")

    png = plot_curves(
        {"training MSE": losses},
        run_dir("01_setup_and_basics", "02d_hidden_layer_network") / "loss_curve.png",
        title="Hand-written backprop: 1-hidden-layer ReLU net fitting sin(x)",
        xlabel="gradient-descent step",
        ylabel="MSE",
        logy=True,
    )
    print(f"loss curve: {png}")
    return {
        "initial_loss": losses[0],
        "final_loss": final,
        "loss_ratio": losses[0] / final,
        "grad_check_max_diff": grad_diff,
        "num_parameters": float(n_params),
        "loss_curve_png": str(png),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
