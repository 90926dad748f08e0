"""Build the sprint-04 CNN and show what each layer does to the shape of one MNIST image.

A 1x28x28 image goes through conv (3x3, padding 1: same size) -> batch-norm -> ReLU ->
max-pool (2x2: half size) twice, so 28 -> 14 -> 7 pixels while the channels grow 1 -> c1 -> c2;
then it is flattened and an MLP turns it into 10 class scores (logits).

Run: python -m sprints.04_advanced_training_mnist.results.define_cnn --channels 16 32
"""

from __future__ import annotations

import argparse

import torch

from llmlab.cli import positive_int, run
from llmlab.vision import MNISTCNN, count_parameters, format_summary, layer_summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--channels",
        type=positive_int,
        nargs=2,
        default=[32, 64],
        metavar=("C1", "C2"),
        help="output channels of the two conv stages",
    )
    p.add_argument("--hidden", type=positive_int, default=64, help="width of the MLP hidden layer")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=4,
        help="batch of random images pushed through to check the output shape",
    )
    return p


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = build_parser().parse_args(argv)
    model = MNISTCNN(channels=tuple(args.channels), hidden=args.hidden)
    print(model)
    rows = layer_summary(model, (1, 1, 28, 28))
    print("\nper-layer output for one 1x28x28 image:")
    print(format_summary(rows))
    logits = model.eval()(torch.randn(args.batch_size, 1, 28, 28))
    n_params = count_parameters(model)
    first_linear = next(r for r in rows if r["type"] == "Linear")
    print(
        f"\nbatch {tuple((args.batch_size, 1, 28, 28))} -> logits {tuple(logits.shape)}; "
        f"{n_params:,} trainable parameters "
        f"({first_linear['params']:,} of them in the first linear layer)"
    )
    return {"parameters": n_params, "output_shape": tuple(logits.shape), "layers": rows}


if __name__ == "__main__":
    raise SystemExit(run(main))
