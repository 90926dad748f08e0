"""Residual Add & Norm: post-norm vs pre-norm vs no residual, in a deep stack of sub-layers.

Stacks `--depth` feed-forward sub-layers three ways and measures (1) at initialisation, how
the signal's size evolves with depth and how much gradient reaches each layer, and (2) how
fast each stack learns a simple task (a fixed random linear map of its input) with Adam.

Run: python -m sprints.07_transformer_block.results.02_residual_add_norm --depth 24
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from llmlab.blocks import AddNorm, LayerNorm, PositionWiseFeedForward
from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir

MODES = ("no residual", "post-norm", "pre-norm")


class Stack(nn.Module):
    """`depth` FFN sub-layers wired as `mode` says (the attention half is left out for clarity)."""

    def __init__(self, mode: str, depth: int, d_model: int) -> None:
        super().__init__()
        self.mode = mode
        self.sublayers = nn.ModuleList(
            PositionWiseFeedForward(d_model, 4 * d_model) for _ in range(depth)
        )
        self.wrappers = nn.ModuleList(
            AddNorm(d_model, norm_first=(mode == "pre-norm")) for _ in range(depth)
        )
        self.final_norm = LayerNorm(d_model)  # pre-norm stacks need one at the top

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        stds = []
        for sub, wrap in zip(self.sublayers, self.wrappers, strict=True):
            x = wrap.norm(sub(x)) if self.mode == "no residual" else wrap(x, sub)
            stds.append(x.std().item())
        return (self.final_norm(x) if self.mode == "pre-norm" else x), stds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=positive_int, default=24, help="sub-layers stacked")
    parser.add_argument("--d-model", type=positive_int, default=64, help="features per position")
    parser.add_argument("--batch", type=positive_int, default=16, help="sequences per batch")
    parser.add_argument("--seq-len", type=positive_int, default=16, help="positions per sequence")
    parser.add_argument("--steps", type=positive_int, default=100, help="training steps per stack")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    x = torch.randn(args.batch, args.seq_len, args.d_model)
    task = torch.randn(args.d_model, args.d_model) / args.d_model**0.5
    target = x @ task  # learnable: a linear map of the input

    # The two formulas, checked on one wrapper.
    sub = PositionWiseFeedForward(args.d_model, 4 * args.d_model)
    post, pre = AddNorm(args.d_model), AddNorm(args.d_model, norm_first=True)
    ref_ln = nn.LayerNorm(args.d_model)
    with torch.no_grad():
        post_diff = (post(x, sub) - ref_ln(x + sub(x))).abs().max().item()
        pre_diff = (pre(x, sub) - (x + sub(ref_ln(x)))).abs().max().item()
    print(f"post-norm == LayerNorm(x + f(x)): max diff {post_diff:.1e}")
    print(f"pre-norm  == x + f(LayerNorm(x)): max diff {pre_diff:.1e}")
    figures = {"post_norm_formula_diff": post_diff, "pre_norm_formula_diff": pre_diff}

    stds, grads, losses = {}, {}, {}
    for mode in MODES:
        torch.manual_seed(args.seed)  # the same sub-layer weights for every mode
        stack = Stack(mode, args.depth, args.d_model)
        out, stds[mode] = stack(x)
        with torch.no_grad():  # how much of the input survives the stack at initialisation
            cos = nn.functional.cosine_similarity(out, x, dim=-1).mean().item()
        nn.functional.mse_loss(out, target).backward()
        # Gradient norm of each sub-layer's first weight matrix: how much signal reaches it.
        grads[mode] = [s.linear1.weight.grad.norm().item() for s in stack.sublayers]
        stack.zero_grad()
        optimizer = torch.optim.Adam(stack.parameters(), lr=args.lr)
        losses[mode] = []
        for _ in range(args.steps):
            loss = nn.functional.mse_loss(stack(x)[0], target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[mode].append(loss.item())
        print(
            f"{mode:12s} std after layer 1 / {args.depth}: {stds[mode][0]:.2f} / "
            f"{stds[mode][-1]:.2f}; cos(output, input) {cos:+.2f}; grad norm layer 1 / last "
            f"{grads[mode][0]:.1e} / {grads[mode][-1]:.1e}; loss {losses[mode][0]:.3f} -> "
            f"{losses[mode][-1]:.4f} after {args.steps} steps"
        )
        key = mode.replace(" ", "_").replace("-", "_")
        figures |= {
            f"{key}_final_std": stds[mode][-1],
            f"{key}_input_cosine": cos,
            f"{key}_first_layer_grad": grads[mode][0],
            f"{key}_final_loss": losses[mode][-1],
        }

    out_dir = run_dir("07_transformer_block", "02_residual_add_norm")
    std_png = plot_curves(
        stds,
        out_dir / "residual_stream_std.png",
        title="Signal std after each layer",
        xlabel="layer",
        ylabel="std",
    )
    grad_png = plot_curves(
        grads,
        out_dir / "gradient_norms.png",
        logy=True,
        title="Gradient norm reaching each layer",
        xlabel="layer",
        ylabel="||dL/dW1||",
    )
    loss_png = plot_curves(
        losses,
        out_dir / "training_loss.png",
        logy=True,
        title=f"Learning a linear map through {args.depth} sub-layers",
        xlabel="step",
        ylabel="MSE",
    )
    print(f"figures: {std_png}, {grad_png}, {loss_png}")
    return figures | {
        "std_figure": str(std_png),
        "grad_figure": str(grad_png),
        "loss_figure": str(loss_png),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
