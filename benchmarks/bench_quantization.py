"""Quantization side by side: method x (size on disk, batch-1 and batch-8 latency, tokens/s,
perplexity change) for SmolLM2 and for your sprint-09 model, measured in one run.

For each model every method is built from the same float32 weights (calibrated methods on
Hamlet), scored on the same Macbeth tokens (one window at a time, every token once), and
timed side by side: all variants of a model stay in memory and take turns, so a change of
machine load hits them alike; the ratios are the result, the milliseconds depend on the
machine. GGUF rows round-trip the weights through our Q8_0/Q4_0 (`llmlab.gguf_quants`):
their size is the packed one, their latency is not measured (PyTorch has no GGUF kernel).

Target (issue 12): a configuration at least 2x faster than float32 at batch 1 with a
perplexity at most 3 % higher.

Run: python -m benchmarks.bench_quantization
     python -m benchmarks.bench_quantization --models smollm2 --methods fp32,bf16,smoothquant_int8_token
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from llmlab import gguf_quants as G  # noqa: E402
from llmlab import quantization as Q  # noqa: E402
from llmlab.cli import positive_float, positive_int, run, torch_threads  # noqa: E402
from llmlab.device import seed_everything  # noqa: E402
from llmlab.errors import LLMLabError  # noqa: E402
from llmlab.runs import make_writer, run_dir  # noqa: E402

# name -> (description, format, overrides): llama.cpp's Q4 files keep the head in 8 bits
GGUF_METHODS = {
    "gguf_q8_0": ("GGUF Q8_0 (weights round-tripped)", "Q8_0", {}),
    "gguf_q4_0_head_q8": ("GGUF Q4_0, head Q8_0 (round-tripped)", "Q4_0", {"lm_head": "Q8_0"}),
}
ALL_METHODS = {**Q.LM_METHODS, **{k: v[0] for k, v in GGUF_METHODS.items()}}
DEFAULT_METHODS = [
    "fp32", "bf16", "torch_ao_dynamic", "int8_token", "int8_token_outliers",
    "smoothquant_int8_token", "torchao_int8_dynamic", "torchao_int8_weight_only",
    "torchao_int4_g32", "torchao_int4_g32_head_bf16", "gguf_q8_0", "gguf_q4_0_head_q8",
]  # fmt: skip
TARGET_SPEEDUP, TARGET_DELTA_PCT = 2.0, 3.0


def name_list(choices: dict[str, str] | tuple[str, ...]):
    def parse(text: str) -> list[str]:
        names = [s.strip() for s in text.split(",") if s.strip()]
        if not names or any(n not in choices for n in names):
            raise argparse.ArgumentTypeError(f"choose among {', '.join(choices)}")
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--models", type=name_list(Q.LM_CHOICES), default=["smollm2", "sprint09"],
                   help="smollm2, sprint09 (your newest run; skipped with a note if none) "
                   "or tiny (random, for a smoke run)")  # fmt: skip
    p.add_argument("--methods", type=name_list(ALL_METHODS), default=DEFAULT_METHODS,
                   help=f"comma-separated, among {', '.join(ALL_METHODS)}")  # fmt: skip
    p.add_argument("--tokens", type=positive_int, default=2048,
                   help="Macbeth tokens scored for SmolLM2 (and tiny)")  # fmt: skip
    p.add_argument("--char-tokens", type=positive_int, default=16384,
                   help="Macbeth characters scored for the sprint-09 model")  # fmt: skip
    p.add_argument("--block-size", type=positive_int, default=128,
                   help="tokens per window and per timed sequence (capped at the context)")  # fmt: skip
    p.add_argument("--calib-tokens", type=positive_int, default=512,
                   help="Hamlet tokens for the calibrated methods")  # fmt: skip
    p.add_argument("--alpha", type=positive_float, default=0.5, help="SmoothQuant alpha")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed batch-1 passes")
    p.add_argument("--repeats-b8", type=positive_int, default=3, help="timed batch-8 passes")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed (weights of --models tiny)")
    p.add_argument("--device", default="cpu", choices=["cpu"],
                   help="every kernel compared here is a CPU kernel")  # fmt: skip
    return p


def gguf_copy(model: torch.nn.Module, method: str) -> tuple[torch.nn.Module, float]:
    """Weights round-tripped through a GGUF format, and the size the packed file would have."""
    _, fmt, overrides = GGUF_METHODS[method]
    q = copy.deepcopy(model)
    counts = G.quantize_model_weights_(q, fmt, overrides=overrides)
    # float tensors (norms, an untied or unquantizable matrix) at 4 bytes per value
    return q, counts["packed_bytes"] + 4 * counts["float_params"]


def bench_model(name: str, args: argparse.Namespace, writer) -> dict[str, Any] | None:
    try:
        model, tok, context = Q.load_lm(name, args.seed)
    except LLMLabError as exc:
        if name != "sprint09":
            raise
        print(f"skipping the sprint-09 model: {exc}")
        return None
    block = min(args.block_size, context)
    ids = Q.heldout_tokens(tok, args.char_tokens if name == "sprint09" else args.tokens)
    batches = Q.calibration_batches(tok, args.calib_tokens, block)
    stats = Q.collect_input_stats(model, batches) if set(args.methods) & set(Q.CALIBRATED) else None
    base = Q.perplexity_of(model, ids, block)
    rows: dict[str, dict[str, Any]] = {}
    timed: dict[str, torch.nn.Module] = {}
    for method in tqdm(args.methods, desc=name, leave=False):
        if method in GGUF_METHODS:
            q, size = gguf_copy(model, method)
        else:
            q = Q.quantize_lm(model, method, stats, args.alpha)
            size = Q.state_dict_bytes(q)
            timed[method] = q
        ppl = base if method == "fp32" else Q.perplexity_of(q, ids, block)
        rows[method] = {"mib": size / 2**20, "perplexity": ppl, "delta_pct": 100 * (ppl / base - 1)}
        if method in GGUF_METHODS:
            del q
    if "fp32" not in timed:
        timed["fp32"] = model  # the reference for every ratio
    x = torch.from_numpy(ids[:block])[None]
    # a model that answers in milliseconds gets more turns (about 0.3 s of float32 each)
    probe = Q.time_forward({"fp32": timed["fp32"]}, x, repeats=1)["fp32"]
    extra = min(100, math.ceil(0.3 / max(probe, 1e-6)))
    t1 = Q.time_forward(timed, x, repeats=max(args.repeats, extra))
    t8 = Q.time_forward(timed, x.repeat(8, 1), repeats=max(args.repeats_b8, extra // 8))
    for method, r in rows.items():
        if method in timed:
            r.update(ms_b1=1e3 * t1[method], ms_b8=1e3 * t8[method],
                     tokens_per_s_b8=8 * block / t8[method],
                     speedup_b1=t1["fp32"] / t1[method], speedup_b8=t8["fp32"] / t8[method])  # fmt: skip
        for key, value in r.items():
            writer.add_scalar(f"{name}/{method}/{key}", value, 0)
    del timed
    return {"model": name, "window": block, "tokens": len(ids) - 1, "base_perplexity": base,
            "rows": rows}  # fmt: skip


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        f"**{result['model']}** — float32 perplexity {result['base_perplexity']:.3f} on "
        f"{result['tokens']:,} Macbeth tokens (windows of {result['window']})",
        "",
        "| method | MiB | batch 1 (ms) | speed-up b1 | batch 8 (ms) | speed-up b8 | tokens/s b8 "
        "| perplexity | change |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in result["rows"].items():
        if "ms_b1" in r:
            timing = (f"{r['ms_b1']:.1f} | {r['speedup_b1']:.2f}x | {r['ms_b8']:.1f} | "
                      f"{r['speedup_b8']:.2f}x | {r['tokens_per_s_b8']:,.0f}")  # fmt: skip
        else:
            timing = "— | — | — | — | —"
        lines.append(f"| {ALL_METHODS[method]} | {r['mib']:.1f} | {timing} | "
                     f"{r['perplexity']:.3f} | {r['delta_pct']:+.2f}% |")  # fmt: skip
    return lines


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 5), squeeze=False)
    for ax, res in zip(axes[0], results, strict=False):
        pts = [(m, r) for m, r in res["rows"].items() if "speedup_b1" in r]
        ax.fill_between([TARGET_SPEEDUP, 100], -100, TARGET_DELTA_PCT, color="tab:green",
                        alpha=0.12, label="target: >= 2x, <= +3 %")  # fmt: skip
        for m, r in pts:
            ax.scatter(r["speedup_b1"], r["delta_pct"], s=30)
            ax.annotate(m, (r["speedup_b1"], r["delta_pct"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
        deltas = [r["delta_pct"] for _, r in pts]
        ax.set_yscale("symlog", linthresh=5)
        ax.set_xlim(0, max(TARGET_SPEEDUP + 1, max(r["speedup_b1"] for _, r in pts) * 1.15))
        ax.set_ylim(min(-2, min(deltas) * 1.2), max(10, max(deltas) * 1.5))
        ax.set(title=f"{res['model']}", xlabel="speed-up over float32, batch 1 (x)",
               ylabel="perplexity change (%)")  # fmt: skip
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("quantization: speed vs quality (measured side by side in one run)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


def _main(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    out_dir = run_dir("14_quantization", "bench_quantization")
    writer = make_writer(out_dir)
    results = []
    try:
        for name in args.models:
            res = bench_model(name, args, writer)
            if res is not None:
                results.append(res)
    finally:
        writer.close()
    if not results:
        raise LLMLabError("no model was benchmarked: train the sprint-09 model or add smollm2")
    lines = []
    for res in results:
        lines += table(res) + [""]
        hits = [m for m, r in res["rows"].items() if r.get("speedup_b1", 0) >= TARGET_SPEEDUP
                and r["delta_pct"] <= TARGET_DELTA_PCT and m != "fp32"]  # fmt: skip
        res["meets_target"] = hits
        lines.append(f"{res['model']}: methods >= {TARGET_SPEEDUP:g}x at batch 1 within "
                     f"+{TARGET_DELTA_PCT:g}% perplexity: {', '.join(hits) or 'none'}")  # fmt: skip
        lines.append("")
    lines.append(f"(torch {torch.__version__}, {torch.get_num_threads()} thread(s); speed-ups "
                 "are medians of passes taken in turns on this machine, now)")  # fmt: skip
    print("\n".join(lines))
    (out_dir / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    png = plot(results, out_dir / "bench_quantization.png")
    summary = {"models": results, "png": str(png), "table": str(out_dir / "table.md")}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\ntable: {out_dir / 'table.md'}\npicture: {png}")
    if any(not math.isfinite(r["perplexity"]) for res in results for r in res["rows"].values()):
        print("note: a perplexity is infinite: that method broke the model")
    return summary


if __name__ == "__main__":
    raise SystemExit(run(main))
