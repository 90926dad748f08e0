"""Fast int8 that keeps SmolLM2 good: per-token scales and SmoothQuant on PyTorch's fbgemm
int8 kernel, measured for perplexity and for speed side by side with float32.

Every linear layer (LM head included) runs on the int8 kernel behind torch.ao's dynamic
quantization. What changes is only how the activations meet it:

- torch.ao's `quantize_dynamic` as is (per-tensor weights, 7-bit per-tensor activations);
- `Int8Linear` per tensor (per-channel weights, all 8 bits);
- per token (each row divided by its own max before the kernel, multiplied back after);
- per token + LLM.int8()-style float columns (inputs that reached |x| >= 6 in calibration);
- SmoothQuant (alpha 0.5, folded into the norms and up_proj) + per token: the recipe.

Calibration uses Hamlet, perplexity Macbeth, one window at a time; then the two recipes are
re-calibrated on two more plays, so the figure is not an accident of one text.

Run: python -m sprints.14_quantization.results.int8_recipe
     python -m sprints.14_quantization.results.int8_recipe --calibration-plays hamlet_gut.txt
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch
from tqdm import tqdm

from llmlab import quantization as Q
from llmlab.cli import positive_float, positive_int, run, torch_threads
from llmlab.device import seed_everything
from llmlab.errors import LLMLabError
from llmlab.plotting import plot_bar_panels
from llmlab.runs import make_writer, run_dir

SPRINT = "14_quantization"
CONFIGS = {
    "torch_ao_dynamic": "torch.ao quantize_dynamic (as is)",
    "int8_tensor": "Int8Linear, per-tensor activations",
    "int8_token": "Int8Linear, per-token activations",
    "int8_token_outliers": "per-token + float columns |x|>=6",
    "smoothquant_int8_token": "SmoothQuant + per-token (the recipe)",
}
RECIPES = Q.CALIBRATED


def play_list(text: str) -> list[str]:
    plays = [s.strip() for s in text.split(",") if s.strip()]
    if not plays:
        raise argparse.ArgumentTypeError("give at least one play file name")
    return plays


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=Q.LM_CHOICES, default="smollm2",
                   help="smollm2 (bundled), sprint09 (your newest run) or tiny (random)")  # fmt: skip
    p.add_argument("--tokens", type=positive_int, default=2048, help="Macbeth tokens scored")
    p.add_argument("--calib-tokens", type=positive_int, default=512,
                   help="tokens of each calibration play")  # fmt: skip
    p.add_argument("--calibration-plays", type=play_list,
                   default=["hamlet_gut.txt", "lear_gut.txt", "othello_gut.txt"],
                   help="plays to calibrate on; the first one for the main table, all of them "
                   "for the recipes' robustness check")  # fmt: skip
    p.add_argument("--block-size", type=positive_int, default=128,
                   help="window length (capped at the model's context)")  # fmt: skip
    p.add_argument(
        "--alpha", type=positive_float, default=0.5, help="SmoothQuant migration strength"
    )
    p.add_argument("--threshold", type=positive_float, default=6.0,
                   help="|x| from which an input column stays in float")  # fmt: skip
    p.add_argument("--repeats", type=positive_int, default=5,
                   help="timed forward passes per model (batch 1, taking turns)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed (weights of --model tiny)")
    p.add_argument("--device", default="cpu", choices=["cpu"],
                   help="the int8 kernels here are CPU kernels")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.alpha > 1:
        raise LLMLabError(f"--alpha must be in (0, 1], got {args.alpha}")
    with torch_threads(args.threads):
        return _main(args)


def _main(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    model, tok, context = Q.load_lm(args.model, args.seed)
    block = min(args.block_size, context)
    ids = Q.heldout_tokens(tok, args.tokens)

    def calibrate(play: str) -> dict[str, Q.InputStats]:
        return Q.collect_input_stats(
            model, Q.calibration_batches(tok, args.calib_tokens, block, play)
        )

    out_dir = run_dir(SPRINT, "int8_recipe")
    writer = make_writer(out_dir)
    base = Q.perplexity_of(model, ids, block)
    stats = calibrate(args.calibration_plays[0])
    models: dict[str, torch.nn.Module] = {"float32": model}
    rows: dict[str, dict[str, float]] = {}
    for i, config in enumerate(tqdm(CONFIGS, desc="configs", leave=False)):
        models[config] = Q.quantize_lm(model, config, stats, args.alpha, args.threshold)
        ppl = Q.perplexity_of(models[config], ids, block)
        rows[config] = {"perplexity": ppl, "delta_pct": 100 * (ppl / base - 1)}
        writer.add_scalar("perplexity_delta_pct", rows[config]["delta_pct"], i)
    x = torch.from_numpy(ids[:block])[None]
    seconds = Q.time_forward(models, x, repeats=args.repeats)
    for config in CONFIGS:
        rows[config]["speedup_b1"] = seconds["float32"] / seconds[config]
    print(f"{args.model}: float32 perplexity {base:.2f} on {len(ids) - 1:,} Macbeth tokens, "
          f"{seconds['float32'] * 1e3:.0f} ms per forward of 1 x {block} tokens")  # fmt: skip
    print(f"{'configuration':<40} {'perplexity':>10} {'change':>8} {'speed-up (batch 1)':>18}")
    for config, desc in CONFIGS.items():
        r = rows[config]
        print(f"{desc:<40} {r['perplexity']:>10.2f} {r['delta_pct']:>+7.1f}% "
              f"{r['speedup_b1']:>17.2f}x")  # fmt: skip
    print("(speed-ups: median of the turns, measured side by side on this machine, now)")
    for config in CONFIGS:
        del models[config]

    # The recipes re-calibrated on other plays.
    robust: dict[str, list[float]] = {r: [rows[r]["delta_pct"]] for r in RECIPES}
    for play in args.calibration_plays[1:]:
        stats_p = calibrate(play)
        for recipe in RECIPES:
            q = Q.quantize_lm(model, recipe, stats_p, args.alpha, args.threshold)
            robust[recipe].append(100 * (Q.perplexity_of(q, ids, block) / base - 1))
            del q
    summary = {}
    for recipe, deltas in robust.items():
        mean = statistics.mean(deltas)
        spread = statistics.stdev(deltas) if len(deltas) > 1 else 0.0
        summary[recipe] = {"deltas_pct": deltas, "mean_pct": mean, "std_pct": spread}
        print(f"{CONFIGS[recipe]:<40} calibrated on {len(deltas)} plays: {mean:+.2f} "
              f"+- {spread:.2f} % perplexity ({', '.join(f'{d:+.2f}' for d in deltas)})")  # fmt: skip
    writer.close()
    png = plot_bar_panels(
        {"perplexity change (%)": (list(CONFIGS), [rows[c]["delta_pct"] for c in CONFIGS]),
         "speed-up over float32, batch 1 (x)": (list(CONFIGS),
                                                [rows[c]["speedup_b1"] for c in CONFIGS])},
        out_dir / "int8_recipe.png", ylabel="", columns=2,
        title=f"{args.model}: int8 on the fbgemm kernel (Macbeth, calibrated on Hamlet)",
    )  # fmt: skip
    print(f"picture: {png}")
    return {"model": args.model, "base_perplexity": base, "rows": rows, "robustness": summary,
            "png": str(png)}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(run(main))
