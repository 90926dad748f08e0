"""Autograd through a small network: every parameter's gradient matches finite differences.

Run: python -m sprints.01_setup_and_basics.results.02c_neural_network_gradients --hidden 4
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from llmlab.cli import positive_float, positive_int, run
from llmlab.device import seed_everything


def numeric_gradients(model: nn.Module, loss_fn, h: float = 1e-6) -> list[torch.Tensor]:
    """Central differences for every parameter element: nudge it by +-h, re-run the loss."""
    grads = []
    with torch.no_grad():
        for p in model.parameters():
            g = torch.zeros_like(p)
            flat, gflat = p.view(-1), g.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + h
                up = loss_fn().item()
                flat[i] = old - h
                down = loss_fn().item()
                flat[i] = old
                gflat[i] = (up - down) / (2 * h)
            grads.append(g)
    return grads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=positive_int, default=3, help="input features")
    parser.add_argument("--hidden", type=positive_int, default=4, help="hidden units")
    parser.add_argument("--samples", type=positive_int, default=8, help="data points")
    parser.add_argument("--steps", type=positive_int, default=100, help="gradient-descent steps")
    parser.add_argument("--lr", type=positive_float, default=0.1, help="gradient-descent step size")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and weights")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    # float64: finite differences subtract two nearly equal losses; float32 would lose ~half
    # the digits and the comparison would only hold to ~1e-3.
    model = nn.Sequential(
        nn.Linear(args.inputs, args.hidden), nn.Tanh(), nn.Linear(args.hidden, 1)
    ).double()
    x = torch.randn(args.samples, args.inputs, dtype=torch.float64)
    y = torch.randn(args.samples, 1, dtype=torch.float64)

    def loss_fn() -> torch.Tensor:
        return nn.functional.mse_loss(model(x), y)

    loss_fn().backward()
    numeric = numeric_gradients(model, loss_fn)
    max_diff = 0.0
    for (name, p), g in zip(model.named_parameters(), numeric, strict=True):
        diff = float((p.grad - g).abs().max())
        max_diff = max(max_diff, diff)
        print(f"{name:10s} shape {tuple(p.shape)!s:8s} max |autograd - numeric| = {diff:.2e}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params} parameters checked; max difference {max_diff:.2e}")

    # The same gradients drive learning: plain gradient descent, written out.
    loss_before = loss_fn().item()
    for _ in range(args.steps):
        model.zero_grad()
        loss = loss_fn()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= args.lr * p.grad
    loss_after = loss_fn().item()
    print(f"MSE {loss_before:.4f} -> {loss_after:.4f} after {args.steps} steps")
    return {
        "max_abs_diff": max_diff,
        "num_parameters": float(n_params),
        "loss_before": loss_before,
        "loss_after": loss_after,
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
