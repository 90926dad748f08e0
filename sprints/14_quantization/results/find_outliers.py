"""Find the outlier features that break per-tensor int8, and draw them.

Forward pre-hooks record the input of every linear layer on a calibration text (Hamlet):
the largest |x| of each input channel and of each token. SmolLM2's `mlp.down_proj` inputs
reach |x| in the thousands in a couple of channels, on the first token of every window
(an "attention sink"), while most inputs stay below 10: one scale per tensor sized for 3,000
rounds every ordinary value to zero.

Pictures: the largest input per layer type along the depth; the channel maxima of every
down_proj input (layers x channels); the worst layer's outlier channel token by token.

Run: python -m sprints.14_quantization.results.find_outliers
     python -m sprints.14_quantization.results.find_outliers --model sprint09
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import numpy as np
import torch

from llmlab import quantization as Q
from llmlab.cli import positive_float, positive_int, run, torch_threads
from llmlab.device import seed_everything
from llmlab.evaluation import CausalLMAdapter
from llmlab.plotting import plot_curves, plot_heatmap
from llmlab.runs import make_writer, run_dir

SPRINT = "14_quantization"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=Q.LM_CHOICES, default="smollm2",
                   help="smollm2 (bundled), sprint09 (your newest run) or tiny (random)")  # fmt: skip
    p.add_argument("--calib-tokens", type=positive_int, default=512,
                   help="tokens of Hamlet run through the model")  # fmt: skip
    p.add_argument("--block-size", type=positive_int, default=128,
                   help="window length (capped at the model's context)")  # fmt: skip
    p.add_argument("--threshold", type=positive_float, default=6.0,
                   help="|x| at which an input channel counts as an outlier (LLM.int8() uses 6)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed (weights of --model tiny)")
    p.add_argument("--device", default="cpu", choices=["cpu"], help="device (CPU statistics)")
    return p


def layer_kind(name: str) -> str:
    """Group layers by what feeds them: the same input reaches q, k and v (and gate, up)."""
    for pattern, kind in (
        (r"(q_proj|k_proj|v_proj|c_attn)$", "attention input (q/k/v)"),
        (r"(o_proj|attn\.c_proj)$", "attention output (o)"),
        (r"(gate_proj|up_proj|c_fc)$", "MLP input (gate/up)"),
        (r"(down_proj|mlp\.c_proj)$", "MLP down projection"),
        (r"lm_head$", "LM head"),
    ):
        if re.search(pattern, name):
            return kind
    return "other"


def block_index(name: str) -> int | None:
    m = re.search(r"(?:layers|h)\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


def _main(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    model, tok, context = Q.load_lm(args.model, args.seed)
    block = min(args.block_size, context)
    batches = Q.calibration_batches(tok, args.calib_tokens, block)
    stats = Q.collect_input_stats(model, batches)
    out_dir = run_dir(SPRINT, "find_outliers")
    names = list(stats)

    print(f"{args.model}: {len(names)} linear layers, inputs recorded on {len(batches)} "
          f"windows of {block} Hamlet tokens")  # fmt: skip
    print(f"{'layer':<34} {'max |x|':>9} {'median ch.':>10} {'ch. >= thr':>10} {'top channel':>11} "
          f"{'at token':>8}")  # fmt: skip
    rows = []
    for name in names:
        st = stats[name]
        tokens = torch.stack(st.token_absmax)  # (windows, tokens)
        rows.append({
            "layer": name,
            "max": st.absmax,
            "median_channel_max": float(st.channel_absmax.median()),
            "outlier_channels": int(Q.outlier_channels(st, args.threshold).numel()),
            "top_channel": int(st.channel_absmax.argmax()),
            "token_of_max": int(tokens.max(dim=0).values.argmax()),
        })  # fmt: skip
    worst = sorted(rows, key=lambda r: -r["max"])
    for r in worst[:12]:
        print(f"{r['layer']:<34} {r['max']:>9.1f} {r['median_channel_max']:>10.2f} "
              f"{r['outlier_channels']:>10} {r['top_channel']:>11} {r['token_of_max']:>8}")  # fmt: skip
    with_outliers = sum(r["outlier_channels"] > 0 for r in rows)
    spread = worst[0]["max"] / worst[0]["median_channel_max"]
    print(f"... {with_outliers} of {len(rows)} layers have an input channel with |x| >= "
          f"{args.threshold:g}; in the worst one the largest input is {spread:,.0f}x its median "
          "channel's maximum")  # fmt: skip

    # Picture 1: largest input per layer kind along the depth.
    curves: dict[str, list[float]] = {}
    xs: dict[str, list[int]] = {}
    for r in rows:
        kind, b = layer_kind(r["layer"]), block_index(r["layer"])
        if b is None or kind == "other":
            continue
        if kind == "attention input (q/k/v)" and r["layer"].endswith(("k_proj", "v_proj")):
            continue  # same input as q_proj
        if kind == "MLP input (gate/up)" and r["layer"].endswith("up_proj"):
            continue
        curves.setdefault(kind, []).append(r["max"])
        xs.setdefault(kind, []).append(b)
    png_depth = plot_curves(curves, out_dir / "max_input_per_layer.png", xs=xs, logy=True,
                            title=f"{args.model}: largest |input| of each linear layer",
                            xlabel="block", ylabel="max |x| (log scale)")  # fmt: skip
    # Picture 2: channel maxima of every MLP down-projection input (blocks x channels), each
    # cell the largest of 16 neighbouring channels, so that one outlier channel stays visible.
    down = [n for n in names if layer_kind(n) == "MLP down projection"]
    maxima = torch.stack([stats[n].channel_absmax for n in down])
    group = 16 if maxima.shape[1] % 16 == 0 else 1
    maxima = maxima.reshape(len(down), -1, group).amax(dim=2)
    matrix = np.log10(maxima.clamp(min=1e-3).numpy())
    png_map = plot_heatmap(matrix, out_dir / "down_proj_channel_max.png", cmap="magma",
                           title="log10 max |x| of the MLP down-projection inputs",
                           xlabel=f"input channel (groups of {group})", ylabel="block")  # fmt: skip
    # Picture 3: the worst layer's top channel vs its median channel, token by token.
    name, channel = worst[0]["layer"], worst[0]["top_channel"]
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(name).register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        CausalLMAdapter(model)(batches[0])
    handle.remove()
    x = seen[0].reshape(-1, seen[0].shape[-1]).abs().float()
    median_channel = int(stats[name].channel_absmax.argsort()[x.shape[1] // 2])
    png_tokens = plot_curves(
        {f"channel {channel} (the outlier)": x[:, channel].tolist(),
         f"channel {median_channel} (a median one)": x[:, median_channel].tolist()},
        out_dir / "worst_layer_tokens.png", logy=True, xs={
            f"channel {channel} (the outlier)": range(x.shape[0]),
            f"channel {median_channel} (a median one)": range(x.shape[0])},
        title=f"{name}: |x| token by token (first window)", xlabel="token position",
        ylabel="|x| (log scale)",
    )  # fmt: skip
    writer = make_writer(out_dir)
    for i, r in enumerate(rows):
        writer.add_scalar("max_abs_input", r["max"], i)
        writer.add_scalar("outlier_channels", r["outlier_channels"], i)
    writer.close()
    print(f"pictures: {png_depth}\n          {png_map}\n          {png_tokens}")
    return {
        "model": args.model,
        "rows": rows,
        "worst_layer": worst[0]["layer"],
        "worst_max": worst[0]["max"],
        "worst_token": worst[0]["token_of_max"],
        "worst_over_median": spread,
        "layers_with_outliers": with_outliers,
        "pngs": [str(png_depth), str(png_map), str(png_tokens)],
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
