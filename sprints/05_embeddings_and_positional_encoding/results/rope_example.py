"""Rotary position embeddings (RoPE): same numbers as Hugging Face's Llama implementation, and
the score q . k after rotation depends only on the distance between the two positions.

Run: python -m sprints.05_embeddings_and_positional_encoding.results.rope_example --head-dim 64
"""

from __future__ import annotations

import argparse

import torch

from llmlab.cli import positive_float, positive_int, run
from llmlab.device import seed_everything
from llmlab.errors import LLMLabError
from llmlab.plotting import plot_heatmap
from llmlab.positional import RotaryEmbedding, apply_rotary
from llmlab.runs import run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--head-dim", type=positive_int, default=64, help="features per head (even)"
    )
    parser.add_argument("--length", type=positive_int, default=32, help="positions to compare")
    parser.add_argument("--base", type=positive_float, default=10000.0, help="RoPE base (theta)")
    parser.add_argument("--seed", type=int, default=0, help="seed for q and k")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    if args.head_dim % 2:
        raise LLMLabError(f"--head-dim must be even (RoPE rotates pairs), got {args.head_dim}")
    seed_everything(args.seed)
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    L, d = args.length, args.head_dim
    rope = RotaryEmbedding(d, max_len=L, base=args.base)
    config = LlamaConfig(
        hidden_size=2 * d,
        num_attention_heads=2,
        max_position_embeddings=L,
        rope_parameters={"rope_type": "default", "rope_theta": args.base},
    )
    q, k = torch.randn(1, 2, L, d), torch.randn(1, 2, L, d)
    positions = torch.arange(L)[None]
    cos, sin = rope(positions)
    ours = apply_rotary(q, k, cos, sin)
    theirs = apply_rotary_pos_emb(q, k, *LlamaRotaryEmbedding(config)(q, positions))
    parity = max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True))
    print(f"max |ours - transformers Llama RoPE| = {parity:.1e}")

    # The SAME query vector placed at position m and the SAME key vector at position n:
    # score(m, n) = R(m) q . R(n) k = q . R(n - m) k, a function of n - m only.
    q1 = q[:, :1, :1].expand(1, 1, L, d)
    k1 = k[:, :1, :1].expand(1, 1, L, d)
    qr, kr = apply_rotary(q1, k1, cos, sin)
    scores = qr[0, 0] @ kr[0, 0].T  # (m, n)
    diagonals = [scores.diagonal(offset) for offset in range(-(L - 1), L)]
    deviation = max((diag - diag[0]).abs().max().item() for diag in diagonals)
    norm_change = (qr.norm(dim=-1) - q1.norm(dim=-1)).abs().max().item()
    print(
        f"score(m, n) is constant along every diagonal n - m (max deviation {deviation:.1e}); "
        f"rotation keeps lengths (max change {norm_change:.1e})"
    )
    folder = run_dir("05_embeddings_and_positional_encoding", "rope_example")
    png = plot_heatmap(
        scores.numpy(),
        folder / "rope_scores.png",
        cmap="RdBu",
        title="same q at position m, same k at position n: q.k after RoPE",
        xlabel="key position n",
        ylabel="query position m",
    )
    angles = plot_heatmap(
        cos[0].numpy(),
        folder / "rope_cos_table.png",
        cmap="RdBu",
        title="cos(position x theta_i): fast pairs left, slow pairs right",
        xlabel="feature",
        ylabel="position",
    )
    print(f"wrote {png} and {angles}")
    return {
        "parity_max_diff": parity,
        "diagonal_max_deviation": deviation,
        "norm_max_change": norm_change,
        "scores_png": str(png),
        "cos_png": str(angles),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
