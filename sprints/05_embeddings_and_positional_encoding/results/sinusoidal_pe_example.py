"""The sinusoidal positional encoding: its table as a heat-map, the similarity of positions
(it depends only on their distance), and the module that adds it to token embeddings.

Run: python -m sprints.05_embeddings_and_positional_encoding.results.sinusoidal_pe_example --length 100 --dim 64
"""

from __future__ import annotations

import argparse

import torch

from llmlab.cli import positive_int, probability, run
from llmlab.device import seed_everything
from llmlab.errors import LLMLabError
from llmlab.plotting import plot_curves, plot_heatmap
from llmlab.positional import SinusoidalPositionalEncoding, sinusoidal_table
from llmlab.runs import run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=positive_int, default=100, help="positions to draw")
    parser.add_argument("--dim", type=positive_int, default=64, help="model width (columns)")
    parser.add_argument(
        "--offset", type=positive_int, default=5, help="distance k for the dot-product check"
    )
    parser.add_argument(
        "--dropout", type=probability, default=0.1, help="dropout of the module demo"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the demo embeddings")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    if args.offset >= args.length:
        raise LLMLabError(f"--offset must be smaller than --length ({args.length})")
    seed_everything(args.seed)
    folder = run_dir("05_embeddings_and_positional_encoding", "sinusoidal_pe_example")
    table = sinusoidal_table(args.length, args.dim)

    # 1. The table: left columns oscillate fast, right columns slowly (wavelengths 2pi .. 10000*2pi).
    table_png = plot_heatmap(
        table.numpy(),
        folder / "sinusoidal_table.png",
        cmap="RdBu",
        title=f"sinusoidal positional encoding ({args.length} x {args.dim})",
        xlabel="dimension",
        ylabel="position",
    )

    # 2. PE[p] . PE[q] depends only on |p - q|: a band matrix, brightest on the diagonal.
    similarity = table @ table.T
    sim_png = plot_heatmap(
        similarity.numpy(),
        folder / "position_similarity.png",
        title="PE[p] . PE[q]: constant along each diagonal",
        xlabel="position q",
        ylabel="position p",
    )
    k = args.offset
    dots = (table[:-k] * table[k:]).sum(dim=1)  # PE[p] . PE[p + k] for every p
    deviation = (dots - dots[0]).abs().max().item()
    by_distance = similarity[0, :].tolist()
    curve_png = plot_curves(
        {"PE[0] . PE[d]": by_distance},
        folder / "similarity_by_distance.png",
        xs={"PE[0] . PE[d]": list(range(args.length))},
        title="similarity falls with distance",
        xlabel="distance d",
        ylabel="dot product",
    )
    print(f"PE[p] . PE[p+{k}] = {dots[0]:.4f} for every p (max deviation {deviation:.1e})")
    print(
        f"PE[0] . PE[1] = {similarity[0, 1]:.2f} > PE[0] . PE[20] = {similarity[0, min(20, args.length - 1)]:.2f}"
    )

    # 3. The module: token embeddings + table (a buffer, not a parameter), then dropout.
    module = SinusoidalPositionalEncoding(args.dim, max_len=args.length, dropout=args.dropout)
    tokens = torch.randn(2, 10, args.dim)
    module.eval()
    added = module(tokens)
    add_diff = (added - (tokens + table[:10])).abs().max().item()
    print(
        f"module: {len(list(module.parameters()))} parameters, buffers "
        f"{[n for n, _ in module.named_buffers()]}; eval output = x + PE (max diff {add_diff:.1e})"
    )
    print(f"wrote {table_png}, {sim_png}, {curve_png}")
    return {
        "offset_dot_max_deviation": deviation,
        "similarity_adjacent": similarity[0, 1].item(),
        "similarity_far": similarity[0, min(20, args.length - 1)].item(),
        "module_add_max_diff": add_diff,
        "table_png": str(table_png),
        "similarity_png": str(sim_png),
        "distance_png": str(curve_png),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
