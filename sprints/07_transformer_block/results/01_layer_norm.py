"""LayerNorm from scratch: mean 0 / std 1 per position, parity with nn.LayerNorm (forward + grads).

Also shows why transformers use LayerNorm and not BatchNorm: a position's output does not
depend on the other sequences in the batch.

Run: python -m sprints.07_transformer_block.results.01_layer_norm --d-model 64
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from llmlab.blocks import LayerNorm
from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, default=4, help="sequences in the batch")
    parser.add_argument("--seq-len", type=positive_int, default=8, help="positions per sequence")
    parser.add_argument("--d-model", type=positive_int, default=64, help="features per position")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    B, T, D = args.batch, args.seq_len, args.d_model
    # Every position gets its own offset and scale, as activations deep in a network do.
    offset = torch.randn(B, T, 1) * 5
    scale = torch.rand(B, T, 1) * 4 + 0.5
    x = torch.randn(B, T, D) * scale + offset

    ln = LayerNorm(D)  # weight = 1, bias = 0: pure normalisation
    y = ln(x)
    mean_before, std_before = x.mean(-1).flatten(), x.std(-1, unbiased=False).flatten()
    mean_after, std_after = y.mean(-1).flatten(), y.std(-1, unbiased=False).flatten()
    print(
        f"input  per-position mean in [{mean_before.min():.2f}, {mean_before.max():.2f}], "
        f"std in [{std_before.min():.2f}, {std_before.max():.2f}]"
    )
    print(
        f"output per-position |mean| <= {mean_after.abs().max():.2e}, "
        f"std in [{std_after.min():.5f}, {std_after.max():.5f}]"
    )

    # Parity with nn.LayerNorm, with a non-trivial learned scale and shift.
    ref = nn.LayerNorm(D)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
        ln.weight.copy_(ref.weight)
        ln.bias.copy_(ref.bias)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ln(xa), ref(xb)
    upstream = torch.randn_like(ya)
    (ya * upstream).sum().backward()
    (yb * upstream).sum().backward()
    figures = {
        "mean_after_max_abs": mean_after.abs().max().item(),
        "std_after_mean": std_after.mean().item(),
        "forward_max_diff": (ya - yb).abs().max().item(),
        "grad_input_max_diff": (xa.grad - xb.grad).abs().max().item(),
        "grad_weight_max_diff": (ln.weight.grad - ref.weight.grad).abs().max().item(),
        "grad_bias_max_diff": (ln.bias.grad - ref.bias.grad).abs().max().item(),
    }
    print(
        "parity with nn.LayerNorm (max |ours - torch|): "
        + ", ".join(f"{k} {v:.1e}" for k, v in figures.items() if "diff" in k)
    )

    # Batch independence: sequence 0 normalised alone vs inside the batch.
    with torch.no_grad():
        ln_alone = (ln(x[:1]) - ln(x)[:1]).abs().max().item()
        bn = nn.BatchNorm1d(D).train()  # normalises each feature over batch and positions
        bn_all = bn(x.reshape(-1, D)).reshape(B, T, D)[:1]
        bn_alone = bn(x[:1].reshape(-1, D)).reshape(1, T, D)
        bn_change = (bn_all - bn_alone).abs().max().item()
    print(
        f"sequence 0 alone vs in the batch: LayerNorm changes by {ln_alone:.1e}, "
        f"BatchNorm by {bn_change:.2f}"
    )
    figures |= {"layernorm_batch_dependence": ln_alone, "batchnorm_batch_dependence": bn_change}

    out = run_dir("07_transformer_block", "01_layer_norm")
    png = plot_curves(
        {
            "mean before": mean_before.tolist(),
            "std before": std_before.tolist(),
            "mean after": mean_after.tolist(),
            "std after": std_after.tolist(),
        },
        out / "layer_norm_stats.png",
        title="Per-position statistics before and after LayerNorm",
        xlabel="position (batch x time, flattened)",
        ylabel="value",
    )
    print(f"figure: {png}")
    return figures | {"figure": str(png)}


if __name__ == "__main__":
    raise SystemExit(run(main))
