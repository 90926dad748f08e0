"""nn.Module: define models with __init__/forward, recover known weights, see why ReLU matters.

1. `SimpleMLP`: layers are made in `__init__`, data flows through them in `forward`.
2. `LinearRegression` learns y = 2 x1 - 3.4 x2 + 4.2 from noisy samples.
3. Stacked Linear layers without an activation collapse into one Linear layer, so they
   cannot fit a curve; the same stack with ReLU between the layers can.

Run: python -m sprints.03_models_and_training_loops.results.01_define_nn_module --steps 500
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from llmlab.cli import positive_float, positive_int, run
from llmlab.device import seed_everything


class SimpleMLP(nn.Module):
    """28x28 image -> 10 class scores (logits): Flatten, Linear, ReLU, Linear."""

    def __init__(self, hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()  # registers the bookkeeping that makes parameters() work
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.flatten(x))))


class LinearRegression(nn.Module):
    """y = x @ w + b with one nn.Linear."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class DeepNet(nn.Module):
    """1 -> hidden -> hidden -> 1, with ReLU between layers or (activation=False) without."""

    def __init__(self, hidden: int = 32, activation: bool = True) -> None:
        super().__init__()
        act = nn.ReLU() if activation else nn.Identity()
        self.layers = nn.Sequential(
            nn.Linear(1, hidden), act, nn.Linear(hidden, hidden), act, nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> float:
    """Full-batch Adam on MSE; returns the final loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return nn.functional.mse_loss(model(x), y).item()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=positive_int, default=32, help="hidden units")
    parser.add_argument("--samples", type=positive_int, default=500, help="training points")
    parser.add_argument("--steps", type=positive_int, default=500, help="Adam steps per model")
    parser.add_argument("--lr", type=positive_float, default=0.01, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and weights")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)

    # 1. A module, its parameters, a forward pass on a dummy batch.
    mlp = SimpleMLP(hidden=args.hidden)
    print(mlp)
    logits = mlp(torch.randn(4, 1, 28, 28))
    n_params = sum(p.numel() for p in mlp.parameters())
    print(f"dummy batch (4, 1, 28, 28) -> logits {tuple(logits.shape)}; {n_params:,} parameters")

    # 2. Linear regression recovers the weights that generated the data.
    true_w, true_b = torch.tensor([[2.0], [-3.4]]), 4.2
    x = torch.randn(args.samples, 2)
    y = x @ true_w + true_b + 0.01 * torch.randn(args.samples, 1)
    reg = LinearRegression(2)
    fit(reg, x, y, args.steps, lr=0.1)
    learned = torch.cat([reg.linear.weight.detach().flatten(), reg.linear.bias.detach()])
    truth = torch.tensor([2.0, -3.4, true_b])
    rel_error = float((learned - truth).norm() / truth.norm())
    print(
        f"linear regression: learned w=[{learned[0]:.4f}, {learned[1]:.4f}], b={learned[2]:.4f}; "
        f"true w=[2.0, -3.4], b=4.2; relative error {rel_error:.2%}"
    )

    # 3. Why non-linearity matters: fit y = sin(3x) with and without ReLU.
    xs = torch.linspace(-2, 2, args.samples).unsqueeze(1)
    ys = torch.sin(3 * xs)
    linear_only = DeepNet(args.hidden, activation=False)
    with_relu = DeepNet(args.hidden, activation=True)
    linear_loss = fit(linear_only, xs, ys, args.steps, args.lr)
    relu_loss = fit(with_relu, xs, ys, args.steps, args.lr)
    # Without activations W3(W2(W1 x + b1) + b2) + b3 is one affine map: compute it directly.
    l1, l2, l3 = (m for m in linear_only.layers if isinstance(m, nn.Linear))
    with torch.no_grad():
        w = l3.weight @ l2.weight @ l1.weight
        b = l3.weight @ (l2.weight @ l1.bias + l2.bias) + l3.bias
        collapse_diff = float((linear_only(xs) - (xs @ w.T + b)).abs().max())
    print(
        f"sin(3x): 3 Linear layers, no activation: MSE {linear_loss:.4f}; "
        f"with ReLU: MSE {relu_loss:.4f} ({linear_loss / relu_loss:.0f}x lower)"
    )
    print(
        f"the linear-only stack equals ONE Linear(1, 1) (max diff {collapse_diff:.1e}): "
        f"w={w.item():.3f}, b={b.item():.3f}"
    )
    return {
        "mlp_logits_rows": float(logits.shape[0]),
        "mlp_logits_cols": float(logits.shape[1]),
        "mlp_parameters": float(n_params),
        "weight_relative_error": rel_error,
        "linear_only_loss": linear_loss,
        "relu_loss": relu_loss,
        "collapse_max_diff": collapse_diff,
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
