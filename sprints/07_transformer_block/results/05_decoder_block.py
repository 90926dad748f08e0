"""The decoder block: masked self-attention, cross-attention, FFN; causality, stacking and parity.

Run: python -m sprints.07_transformer_block.results.05_decoder_block --n-layers 6
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from llmlab.attention import causal_mask, padding_mask
from llmlab.blocks import Decoder, DecoderBlock, Encoder
from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.plotting import plot_heatmap
from llmlab.runs import run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=positive_int, default=32, help="model width")
    parser.add_argument("--n-heads", type=positive_int, default=4, help="attention heads")
    parser.add_argument("--d-ff", type=positive_int, default=64, help="feed-forward width")
    parser.add_argument("--n-layers", type=positive_int, default=6, help="blocks in each stack")
    parser.add_argument("--src-len", type=positive_int, default=7, help="source (encoder) length")
    parser.add_argument("--tgt-len", type=positive_int, default=6, help="target (decoder) length")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    D, H, FF, S, T = args.d_model, args.n_heads, args.d_ff, args.src_len, args.tgt_len
    src, tgt = torch.randn(2, S, D), torch.randn(2, T, D)
    src_keep = padding_mask(torch.tensor([S, max(1, S - 3)]), S)
    tgt_keep = padding_mask(torch.tensor([T, max(1, T - 2)]), T)

    block = DecoderBlock(D, H, FF).eval()
    y = block(tgt, src, tgt_keep, src_keep)
    print(f"one block: target {tuple(tgt.shape)} + memory {tuple(src.shape)} -> {tuple(y.shape)}")
    # Causality: changing the last target token must not change any earlier output.
    changed = tgt.clone()
    changed[:, -1] = torch.randn(2, D)
    with torch.no_grad():
        causal_leak = (block(changed, src)[:, :-1] - block(tgt, src)[:, :-1]).abs().max().item()
        unmasked = (
            (block(changed, src, causal=False)[:, :-1] - block(tgt, src, causal=False)[:, :-1])
            .abs()
            .max()
            .item()
        )
    print(
        f"future token changed: earlier outputs move by {causal_leak:.1e} with the look-ahead "
        f"mask, by {unmasked:.2f} without it"
    )

    encoder = Encoder(args.n_layers, D, H, FF).eval()
    decoder = Decoder(args.n_layers, D, H, FF).eval()
    with torch.no_grad():
        out = decoder(tgt, encoder(src, src_keep), tgt_keep, src_keep)
    print(f"encoder-decoder with {args.n_layers}+{args.n_layers} blocks: output {tuple(out.shape)}")

    figures: dict[str, float] = {"causal_leak": causal_leak, "unmasked_change": unmasked}
    for norm_first in (False, True):
        ref = nn.TransformerDecoderLayer(
            D, H, FF, dropout=0.1, activation="gelu", batch_first=True, norm_first=norm_first
        ).eval()
        ours = DecoderBlock.from_torch(ref).eval()
        with torch.no_grad():  # torch's masks: True = NOT allowed, so invert ours
            expected = ref(
                tgt,
                src,
                tgt_mask=~causal_mask(T),
                tgt_key_padding_mask=~tgt_keep[:, 0, 0],
                memory_key_padding_mask=~src_keep[:, 0, 0],
            )
            diff = (ours(tgt, src, tgt_keep, src_keep) - expected).abs().max().item()
        name = "pre_norm" if norm_first else "post_norm"
        print(f"vs nn.TransformerDecoderLayer(norm_first={norm_first}): max diff {diff:.1e}")
        figures[f"{name}_parity_diff"] = diff

    with torch.no_grad():  # the sub-layers' attention maps for the padded second example
        _, self_w = block.self_attn(tgt, mask=tgt_keep, need_weights=True, is_causal=True)
        _, cross_w = block.cross_attn(tgt, src, src, mask=src_keep, need_weights=True)
    out_dir = run_dir("07_transformer_block", "05_decoder_block")
    self_png = plot_heatmap(
        self_w[1].mean(0).numpy(),
        out_dir / "decoder_self_attention.png",
        title="Masked self-attention (causal + target padding)",
        xlabel="target key",
        ylabel="target query",
    )
    cross_png = plot_heatmap(
        cross_w[1].mean(0).numpy(),
        out_dir / "decoder_cross_attention.png",
        title="Cross-attention to the encoder (source padding masked)",
        xlabel="source position",
        ylabel="target query",
    )
    print(f"figures: {self_png}, {cross_png}")
    return figures | {
        "output_shape_ok": float(out.shape == tgt.shape),
        "self_attention_figure": str(self_png),
        "cross_attention_figure": str(cross_png),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
