"""Scaled dot-product attention from scratch, with masks, checked against PyTorch's fused kernel.

Run: python -m sprints.06_multi_head_attention.results.scaled_dot_product_attention --seq-len 6
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from llmlab.attention import causal_mask, padding_mask, scaled_dot_product_attention
from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.errors import LLMLabError
from llmlab.plotting import plot_heatmap
from llmlab.runs import run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, default=2, help="sequences per batch")
    parser.add_argument("--seq-len", type=positive_int, default=6, help="tokens per sequence")
    parser.add_argument("--d-k", type=positive_int, default=8, help="query/key/value width")
    parser.add_argument(
        "--pad", type=int, default=2, help="padding tokens at the end of the second sequence"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the random q, k, v")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    if not 0 <= args.pad < args.seq_len:
        raise LLMLabError(f"--pad must be in [0, --seq-len), got {args.pad}")
    seed_everything(args.seed)
    L = args.seq_len
    q, k, v = (torch.randn(args.batch, L, args.d_k) for _ in range(3))

    # Real tokens: sequence 0 is full, the others end with `pad` padding tokens.
    lengths = torch.tensor([L] + [L - args.pad] * (args.batch - 1))
    keep_pad = padding_mask(lengths, L)[:, 0]  # (B, 1, L): broadcasts over queries
    masks = {
        "none": None,
        "causal": causal_mask(L),
        "padding": keep_pad,
        "causal+padding": keep_pad & causal_mask(L),
    }
    results: dict[str, float | str] = {}
    print(f"q, k, v: {tuple(q.shape)}; lengths {lengths.tolist()}")
    for name, mask in masks.items():
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        diff = (out - ref).abs().max().item()
        results[f"max_abs_diff_{name}"] = diff
        print(
            f"mask {name:15s} max |ours - torch| = {diff:.2e}   rows sum to 1: "
            f"{torch.allclose(weights.sum(-1), torch.ones(()))}"
        )

    # A query that may see nothing: softmax over an empty set is 0/0 = NaN. Ours gives zeros.
    blind = causal_mask(L).clone()
    blind[0] = False
    out, weights = scaled_dot_product_attention(q, k, v, blind)
    results["fully_masked_row_nan"] = float(torch.isnan(out).any() or torch.isnan(weights).any())
    results["fully_masked_row_abs_sum"] = out[:, 0].abs().sum().item()
    print(
        f"query 0 fully masked: NaN in output? {bool(results['fully_masked_row_nan'])}, "
        f"|output row| = {results['fully_masked_row_abs_sum']:.1f}"
    )

    # Picture: the weights of the padded sequence under causal + padding masks.
    folder = run_dir("06_multi_head_attention", "scaled_dot_product_attention")
    _, weights = scaled_dot_product_attention(q, k, v, masks["causal+padding"])
    b = args.batch - 1
    labels = [f"t{i}" if i < lengths[b] else "<pad>" for i in range(L)]
    png = plot_heatmap(
        weights[b].numpy(),
        folder / "weights_causal_padding.png",
        title=f"sequence {b}: causal + padding mask (masked keys get weight 0)",
        xlabel="key",
        ylabel="query",
        xticklabels=labels,
        yticklabels=labels,
        annotate=True,
    )
    results["weights_png"] = str(png)
    print(f"wrote {png}")
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
