"""Build the small sprint-04 ResNet and show its skip connections at work.

Each `BasicBlock` computes relu(F(x) + x): two 3x3 convs learn only the *residual* F, and
the identity path lets the signal (and the gradient) skip the block. When a block halves the
resolution and doubles the channels, the skip path becomes a 1x1 conv with stride 2.

Run: python -m sprints.04_advanced_training_mnist.results.define_resnet_mnist --blocks 2 2 2
"""

from __future__ import annotations

import argparse

import torch

from llmlab.cli import positive_int, run
from llmlab.vision import BasicBlock, ResNetMNIST, count_parameters, format_summary, layer_summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--widths",
        type=positive_int,
        nargs=3,
        default=[16, 32, 64],
        metavar=("W1", "W2", "W3"),
        help="channels of the three stages",
    )
    p.add_argument(
        "--blocks",
        type=positive_int,
        nargs=3,
        default=[1, 1, 1],
        metavar=("B1", "B2", "B3"),
        help="BasicBlocks per stage",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the random weights and input")
    return p


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    model = ResNetMNIST(widths=tuple(args.widths), blocks=tuple(args.blocks)).eval()
    print(model)
    rows = layer_summary(model, (1, 1, 28, 28))
    print("\nper-layer output for one 1x28x28 image (a BasicBlock is one row):")
    print(format_summary(rows))
    n_params = count_parameters(model)
    logits = model(torch.randn(2, 1, 28, 28))
    print(f"\nlogits {tuple(logits.shape)}; {n_params:,} trainable parameters")

    # With its residual branch switched off (last batch-norm scale = shift = 0), a block is
    # exactly the identity on non-negative inputs: what "learn only the residual" builds on.
    block = BasicBlock(args.widths[0], args.widths[0]).eval()
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)
    x = torch.relu(torch.randn(1, args.widths[0], 28, 28))
    with torch.no_grad():
        identity_error = (block(x) - x).abs().max().item()
    print(f"BasicBlock with a zeroed residual branch: max |block(x) - x| = {identity_error:.1e}")
    return {
        "parameters": n_params,
        "output_shape": tuple(logits.shape),
        "layers": rows,
        "identity_error": identity_error,
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
