"""The position-wise feed-forward network: shapes, parameter count, position-wise check, GELU.

Run: python -m sprints.07_transformer_block.results.03_feed_forward --d-model 64 --d-ff 256
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.blocks import PositionWiseFeedForward
from llmlab.cli import positive_int, probability, run
from llmlab.device import seed_everything
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=positive_int, default=64, help="model width")
    parser.add_argument("--d-ff", type=positive_int, default=256, help="hidden width (4x usual)")
    parser.add_argument("--dropout", type=probability, default=0.1, help="dropout after GELU")
    parser.add_argument("--batch", type=positive_int, default=2, help="sequences in the batch")
    parser.add_argument("--seq-len", type=positive_int, default=5, help="positions per sequence")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    D, FF = args.d_model, args.d_ff
    ffn = PositionWiseFeedForward(D, FF, args.dropout, activation="gelu")
    print(ffn)
    x = torch.randn(args.batch, args.seq_len, D)
    hidden = ffn.linear1(x)
    print(
        f"shapes: input {tuple(x.shape)} -> hidden {tuple(hidden.shape)} -> "
        f"output {tuple(ffn(x).shape)}"
    )
    n_params = sum(p.numel() for p in ffn.parameters())
    formula = 2 * D * FF + FF + D
    print(f"parameters: {n_params:,} = 2*d_model*d_ff + d_ff + d_model = {formula:,}")

    ffn.eval()  # dropout off for the checks below
    with torch.no_grad():
        # Position-wise: position 3 through the FFN alone equals position 3 of the batch.
        t = min(3, args.seq_len - 1)
        position_diff = (ffn(x)[:, t] - ffn(x[:, t : t + 1])[:, 0]).abs().max().item()
        ref = nn.Sequential(nn.Linear(D, FF), nn.GELU(), nn.Linear(FF, D))
        ref[0].load_state_dict(ffn.linear1.state_dict())
        ref[2].load_state_dict(ffn.linear2.state_dict())
        parity = (ffn(x) - ref(x)).abs().max().item()
        ffn.train()
        train_differs = float(not torch.equal(ffn(x), ffn(x)))  # dropout draws new masks
    print(f"one position alone vs in the sequence: max diff {position_diff:.1e}")
    print(f"vs nn.Sequential(Linear, GELU, Linear): max diff {parity:.1e}")
    print(f"train mode is stochastic (dropout): {bool(train_differs)}")

    grid = torch.linspace(-4, 4, 161)
    gelu, gelu_tanh = F.gelu(grid), F.gelu(grid, approximate="tanh")
    tanh_gap = (gelu - gelu_tanh).abs().max().item()
    print(f"exact GELU vs GPT-2's tanh approximation: max gap {tanh_gap:.1e} on [-4, 4]")
    out = run_dir("07_transformer_block", "03_feed_forward")
    png = plot_curves(
        {
            "ReLU": F.relu(grid).tolist(),
            "GELU (erf)": gelu.tolist(),
            "GELU (tanh, GPT-2)": gelu_tanh.tolist(),
        },
        out / "activations.png",
        xs={k: grid.tolist() for k in ("ReLU", "GELU (erf)", "GELU (tanh, GPT-2)")},
        title="Activations of the feed-forward network",
        xlabel="x",
        ylabel="f(x)",
    )
    print(f"figure: {png}")
    return {
        "n_params": float(n_params),
        "formula_params": float(formula),
        "position_wise_diff": position_diff,
        "torch_parity_diff": parity,
        "train_mode_stochastic": train_differs,
        "gelu_tanh_max_gap": tanh_gap,
        "figure": str(png),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
