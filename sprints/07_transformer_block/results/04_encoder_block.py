"""The encoder block: shapes with padding, a stack of N blocks, parity with nn.TransformerEncoderLayer.

Run: python -m sprints.07_transformer_block.results.04_encoder_block --n-layers 6
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from llmlab.attention import padding_mask
from llmlab.blocks import Encoder, EncoderBlock
from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.plotting import plot_heatmap
from llmlab.runs import run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=positive_int, default=32, help="model width")
    parser.add_argument("--n-heads", type=positive_int, default=4, help="attention heads")
    parser.add_argument("--d-ff", type=positive_int, default=64, help="feed-forward width")
    parser.add_argument("--n-layers", type=positive_int, default=6, help="blocks in the stack")
    parser.add_argument("--seq-len", type=positive_int, default=8, help="padded sequence length")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    D, H, FF, T = args.d_model, args.n_heads, args.d_ff, args.seq_len
    lengths = torch.tensor([T, max(1, T // 2), max(1, T // 4)])  # three sequences, padded to T
    x = torch.randn(len(lengths), T, D)
    keep = padding_mask(lengths, T)  # (B, 1, 1, T), True = real token
    print(f"input {tuple(x.shape)}, lengths {lengths.tolist()}, padding mask {tuple(keep.shape)}")

    block = EncoderBlock(D, H, FF, dropout=0.1).eval()
    y = block(x, keep)
    n_params = sum(p.numel() for p in block.parameters())
    print(f"one block: {tuple(x.shape)} -> {tuple(y.shape)}, {n_params:,} parameters")
    # Padding must not leak: changing padded positions leaves the real positions unchanged.
    noisy = x.clone()
    noisy[1, lengths[1] :] = torch.randn_like(noisy[1, lengths[1] :]) * 10
    with torch.no_grad():
        leak = (block(noisy, keep)[1, : lengths[1]] - y[1, : lengths[1]]).abs().max().item()
    print(f"changing padded tokens moves real outputs by {leak:.1e}")

    encoder = Encoder(args.n_layers, D, H, FF, norm_first=True).eval()
    z = encoder(x, keep)
    print(f"stack of {args.n_layers} pre-norm blocks: {tuple(x.shape)} -> {tuple(z.shape)}")

    figures: dict[str, float] = {"padding_leak": leak, "n_params_block": float(n_params)}
    for norm_first in (False, True):
        ref = nn.TransformerEncoderLayer(
            D, H, FF, dropout=0.1, activation="gelu", batch_first=True, norm_first=norm_first
        ).eval()
        ours = EncoderBlock.from_torch(ref).eval()
        with torch.no_grad():  # torch's key padding mask is the opposite: True = ignore
            diff = (ours(x, keep) - ref(x, src_key_padding_mask=~keep[:, 0, 0])).abs().max()
        name = "pre_norm" if norm_first else "post_norm"
        print(f"vs nn.TransformerEncoderLayer(norm_first={norm_first}): max diff {diff:.1e}")
        figures[f"{name}_parity_diff"] = diff.item()

    with torch.no_grad():
        _, weights = block.self_attn(x, mask=keep, need_weights=True)
    out = run_dir("07_transformer_block", "04_encoder_block")
    png = plot_heatmap(
        weights[1].mean(0).numpy(),
        out / "encoder_self_attention.png",
        title=f"Self-attention of a length-{int(lengths[1])} sequence padded to {T} (head average)",
        xlabel="key position",
        ylabel="query position",
    )
    print(f"figure: {png}")
    return figures | {"output_shape_ok": float(z.shape == x.shape), "figure": str(png)}


if __name__ == "__main__":
    raise SystemExit(run(main))
