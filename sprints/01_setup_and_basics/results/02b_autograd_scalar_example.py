"""Autograd on a scalar function: gradients match finite differences; gradients accumulate.

Run: python -m sprints.01_setup_and_basics.results.02b_autograd_scalar_example --points 5
"""

from __future__ import annotations

import argparse

import torch

from llmlab.cli import positive_float, positive_int, run
from llmlab.device import seed_everything


def f(x: torch.Tensor) -> torch.Tensor:
    """f(x) = x^3 + 2 x^2 sin(x): a product, a chain and a power, so autograd has work to do."""
    return x**3 + 2 * x**2 * torch.sin(x)


def f_prime(x: torch.Tensor) -> torch.Tensor:
    """The derivative worked out by hand: 3x^2 + 4x sin(x) + 2x^2 cos(x)."""
    return 3 * x**2 + 4 * x * torch.sin(x) + 2 * x**2 * torch.cos(x)


def central_difference(fn, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """(f(x+h) - f(x-h)) / 2h: error O(h^2), so float64 and h=1e-6 give ~1e-9 accuracy."""
    return (fn(x + h) - fn(x - h)) / (2 * h)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=positive_int, default=5, help="random x values to check")
    parser.add_argument("--lr", type=positive_float, default=0.1, help="gradient-descent step size")
    parser.add_argument("--steps", type=positive_int, default=50, help="gradient-descent steps")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random x values")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)

    # 1. Autograd vs finite differences vs the hand-derived formula (float64 throughout).
    x = (torch.rand(args.points, dtype=torch.float64) * 6 - 3).requires_grad_()
    f(x).sum().backward()  # sum: each f(x_i) depends only on x_i, so grad_i = f'(x_i)
    numeric = central_difference(f, x.detach())
    max_diff = float((x.grad - numeric).abs().max())
    max_diff_formula = float((x.grad - f_prime(x.detach())).abs().max())
    for xi, g, n in zip(x.detach().tolist(), x.grad.tolist(), numeric.tolist(), strict=True):
        print(f"x={xi:+.4f}  autograd {g:+.8f}  finite diff {n:+.8f}")
    print(f"max |autograd - finite difference| = {max_diff:.2e}; vs formula {max_diff_formula:.2e}")

    # 2. .grad accumulates: a second backward() adds to it, which is why loops call zero_grad().
    w = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    f(w).backward()
    first = w.grad.item()
    f(w).backward()
    ratio = w.grad.item() / first
    w.grad = None  # what optimizer.zero_grad() does
    print(f"grad after one backward {first:.4f}, after two {first * ratio:.4f} (x{ratio:.1f})")

    # 3. Gradient descent on g(w) = (w - 3)^2 using autograd's gradient.
    w = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    for _ in range(args.steps):
        loss = (w - 3.0) ** 2
        loss.backward()
        with torch.no_grad():  # the update itself must not be recorded in the graph
            w -= args.lr * w.grad
        w.grad = None
    print(f"gradient descent: w = {w.item():.6f} after {args.steps} steps (minimum at 3)")

    return {
        "max_abs_diff": max_diff,
        "max_abs_diff_formula": max_diff_formula,
        "accumulation_ratio": ratio,
        "gd_final_w": w.item(),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
