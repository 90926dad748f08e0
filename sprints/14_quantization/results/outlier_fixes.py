"""Why W8A8 wrecks SmolLM2 and what wins the quality back, measured on perplexity.

Every linear layer (LM head included) becomes a `FakeQuantLinear`: weights and inputs go
through quantize -> dequantize in float, so each variant isolates one idea, with no kernel
in the way. Calibration (SmoothQuant's statistics) uses Hamlet; perplexity is measured on
Macbeth, one window at a time.

- W8 weight-only; W8A8 as torch.ao's dynamic quantization does it (per-tensor weights,
  7-bit asymmetric activations, one scale per call); W8A8 with 8-bit inputs and
  per-channel weights; the same with percentile clipping (the outliers cut off);
- per-token activation scales (torchao's choice);
- LLM.int8(): input columns that reach |x| >= 6 stay in float;
- SmoothQuant: divide input channel j by s_j, multiply weight column j by s_j, folded into
  the RMSNorm (q/k/v, gate/up) and into up_proj (down_proj).

Run: python -m sprints.14_quantization.results.outlier_fixes
     python -m sprints.14_quantization.results.outlier_fixes --methods float,per_tensor,per_token
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
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
S = Q.QScheme
# name -> (description, smoothing alpha or None, layer factory)
Factory = Callable[[torch.nn.Linear], torch.nn.Module]
METHODS: dict[str, tuple[str, float | None, Factory | None]] = {
    "float": ("float32 (no quantization)", None, None),
    "w8": ("W8 weight-only, per-channel", None, lambda lin: Q.FakeQuantLinear(lin, act="none")),
    "torch_ao": (
        "W8A8 as torch.ao dynamic (7-bit per-tensor inputs)", None,
        lambda lin: Q.FakeQuantLinear(lin, S(narrow=False), "tensor", S(bits=7, symmetric=False)),
    ),
    "per_tensor": ("W8A8 per-tensor inputs", None, lambda lin: Q.FakeQuantLinear(lin)),
    "percentile": (
        "W8A8 per-tensor, p99.99 clipping", None,
        lambda lin: Q.FakeQuantLinear(lin, act_scheme=S(calibration="percentile")),
    ),
    "per_token": ("W8A8 per-token inputs", None, lambda lin: Q.FakeQuantLinear(lin, act="token")),
    "llm_int8_tensor": (
        "LLM.int8(): |x|>=6 columns float, per-tensor", None,
        lambda lin: Q.FakeQuantLinear(lin, outlier_threshold=6.0),
    ),
    "llm_int8": (
        "LLM.int8(): |x|>=6 columns float, per-token", None,
        lambda lin: Q.FakeQuantLinear(lin, act="token", outlier_threshold=6.0),
    ),
    "smooth_tensor": ("SmoothQuant, per-tensor inputs", 0.5, lambda lin: Q.FakeQuantLinear(lin)),
    "smooth_tensor_a0.8": (
        "SmoothQuant alpha 0.8, per-tensor inputs", 0.8, lambda lin: Q.FakeQuantLinear(lin),
    ),
    "smooth_token": (
        "SmoothQuant, per-token inputs", 0.5, lambda lin: Q.FakeQuantLinear(lin, act="token"),
    ),
}  # fmt: skip


def method_list(text: str) -> list[str]:
    """argparse type: comma-separated method names."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in METHODS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"methods must be among {', '.join(METHODS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=Q.LM_CHOICES, default="smollm2",
                   help="smollm2 (bundled), sprint09 (your newest run) or tiny (random)")  # fmt: skip
    p.add_argument("--methods", type=method_list, default=list(METHODS),
                   help=f"comma-separated, among {', '.join(METHODS)}")  # fmt: skip
    p.add_argument("--tokens", type=positive_int, default=2048, help="Macbeth tokens scored")
    p.add_argument("--calib-tokens", type=positive_int, default=512,
                   help="Hamlet tokens for the SmoothQuant statistics")  # fmt: skip
    p.add_argument("--block-size", type=positive_int, default=128,
                   help="window length (capped at the model's context)")  # fmt: skip
    p.add_argument("--alpha", type=positive_float, default=None,
                   help="override SmoothQuant's alpha for every smooth_* method")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed (weights of --model tiny)")
    p.add_argument("--device", default="cpu", choices=["cpu"],
                   help="device (the simulation runs anywhere, but is measured on CPU)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.alpha is not None and args.alpha > 1:
        raise LLMLabError(f"--alpha must be in (0, 1], got {args.alpha}")
    with torch_threads(args.threads):
        return _main(args)


def _main(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    model, tok, context = Q.load_lm(args.model, args.seed)
    block = min(args.block_size, context)
    ids = Q.heldout_tokens(tok, args.tokens)
    batches = Q.calibration_batches(tok, args.calib_tokens, block)
    stats = (
        Q.collect_input_stats(model, batches) if any(METHODS[m][1] for m in args.methods) else {}
    )
    out_dir = run_dir(SPRINT, "outlier_fixes")
    writer = make_writer(out_dir)
    rows: dict[str, dict[str, float]] = {}
    base = Q.perplexity_of(model, ids, block)
    for i, name in enumerate(tqdm(args.methods, desc="methods", leave=False)):
        desc, alpha, factory = METHODS[name]
        start = time.perf_counter()
        if factory is None:
            ppl = base
        else:
            q = copy.deepcopy(model)
            if alpha is not None:
                Q.fold_smoothquant_(q, stats, args.alpha or alpha)
            Q.replace_linears_(q, lambda n, lin, f=factory: f(lin))
            ppl = Q.perplexity_of(q, ids, block)
            del q
        rows[name] = {"perplexity": ppl, "delta_pct": 100 * (ppl / base - 1),
                      "seconds": time.perf_counter() - start}  # fmt: skip
        writer.add_scalar("perplexity", ppl, i)
        tqdm.write(f"{desc:<48} perplexity {ppl:9.2f}  ({rows[name]['delta_pct']:+8.1f}%)")
    writer.close()
    names = [n for n in rows if n != "float"]
    png = plot_bar_panels(
        {"perplexity change vs float32 (%)": (names, [rows[n]["delta_pct"] for n in names])},
        out_dir / "outlier_fixes.png", ylabel="% perplexity", columns=1,
        title=f"{args.model}: int8 variants on {args.tokens} Macbeth tokens",
    )  # fmt: skip
    print(f"float perplexity {base:.2f} on {len(ids) - 1:,} Macbeth tokens; picture: {png}")
    return {"model": args.model, "base_perplexity": base, "rows": rows, "png": str(png)}


if __name__ == "__main__":
    raise SystemExit(run(main))
