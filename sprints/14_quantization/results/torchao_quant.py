"""torchao, the current PyTorch quantization path: `quantize_(model, config)` swaps each
linear weight for a quantized tensor subclass; no module surgery, no stubs.

On SmolLM2: int8 dynamic (per-token activations, per-channel weights), int8 weight-only,
and int4 weight-only in groups of 32 and 128 (the CPU tinygemm kernel, which wants bfloat16
activations), next to float32 and plain bfloat16. Perplexity on Macbeth, size on disk,
batch-1 latency side by side; which tensor subclass each layer ends up with; whether the
tied embedding / LM head stays tied. A micro-benchmark shows the int4 kernel's float32
trap.

On a CPU without int8 dot-product instructions (no AVX512-VNNI, AVX-VNNI or AMX: an
AVX2-only CPU) torchao's int8 dynamic kernel has no fast path: on the 2-core AVX2 EPYC of
the sprint README it ran SmolLM2 at 0.06x the speed of float32 and alone took about 6 of the
script's 11 minutes. There the default (`--variants auto`) leaves it out and says so;
`--variants all` puts it back.

Run: python -m sprints.14_quantization.results.torchao_quant
     python -m sprints.14_quantization.results.torchao_quant --model sprint09
     python -m sprints.14_quantization.results.torchao_quant --variants all
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from llmlab import quantization as Q
from llmlab.cli import positive_int, run, torch_threads
from llmlab.device import seed_everything
from llmlab.errors import LLMLabError
from llmlab.runs import make_writer, run_dir

SPRINT = "14_quantization"
VARIANTS = ("bf16", "torchao_int8_dynamic", "torchao_int8_weight_only", "torchao_int4_g128",
            "torchao_int4_g32")  # names of llmlab.quantization.LM_METHODS  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=Q.LM_CHOICES, default="smollm2",
                   help="smollm2 (bundled), sprint09 (your newest run) or tiny (random)")  # fmt: skip
    p.add_argument("--tokens", type=positive_int, default=2048, help="Macbeth tokens scored")
    p.add_argument("--block-size", type=positive_int, default=128,
                   help="window length (capped at the model's context)")  # fmt: skip
    p.add_argument("--repeats", type=positive_int, default=5, help="timed passes per model")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed (weights of --model tiny)")
    p.add_argument("--device", default="cpu", choices=["cpu"],
                   help="these are torchao's CPU kernels")  # fmt: skip
    p.add_argument("--variants", default="auto",
                   help=f"comma-separated among {', '.join(VARIANTS)}; all; or auto (all but "
                   "torchao's int8 dynamic on a real model when the CPU has no VNNI)")  # fmt: skip
    return p


# Without VNNI this kernel is 16x slower than float32 (measured, sprint README): minutes.
SLOW_WITHOUT_VNNI = "torchao_int8_dynamic"


def choose_variants(spec: str, model: str) -> tuple[list[str], list[str]]:
    """(variants to run, variants left out by `auto`) for `--variants spec`."""
    if spec in ("all", "auto"):
        chosen = list(VARIANTS)
        if spec == "auto" and model != "tiny" and Q.reduce_range_needed():
            chosen.remove(SLOW_WITHOUT_VNNI)
        return chosen, [v for v in VARIANTS if v not in chosen]
    chosen = [v.strip() for v in spec.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise LLMLabError(f"--variants: unknown {unknown or spec!r}; choose among {VARIANTS}")
    return chosen, []


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


def weight_kinds(model: nn.Module) -> dict[str, int]:
    """How many linear weights are of each tensor type (torchao's subclasses or plain)."""
    kinds: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            name = type(module.weight.data).__name__
            kinds[name] = kinds.get(name, 0) + 1
    return kinds


def is_tied(model: nn.Module) -> bool:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else model.wte
    head = (
        model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else model.lm_head
    )
    return head.weight is emb.weight


@torch.inference_mode()
def int4_float32_trap(repeats: int) -> dict[str, float]:
    """One 576 -> 1536 linear on 128 tokens: float32, int4 with float32 activations (a slow
    fallback) and int4 with bfloat16 activations (the tinygemm kernel)."""
    torch.manual_seed(0)
    lin = nn.Linear(576, 1536, bias=False).eval()
    x = torch.randn(128, 576)
    int4_f32 = Q.torchao_quantize(nn.Sequential(copy.deepcopy(lin)), "int4_weight_only",
                                  bfloat16=False)  # fmt: skip
    int4_bf16 = Q.torchao_quantize(nn.Sequential(copy.deepcopy(lin)), "int4_weight_only")
    calls = {
        "float32": lambda: lin(x),
        "int4, float32 activations": lambda: int4_f32(x),
        "int4, bfloat16 activations": lambda: int4_bf16(x.bfloat16()),
    }
    return {k: v * 1e3 for k, v in Q.time_side_by_side(calls, repeats).items()}


def _main(args: argparse.Namespace) -> dict[str, Any]:
    variants, skipped = choose_variants(args.variants, args.model)  # bad names fail first
    if skipped:
        print(f"left out: {', '.join(skipped)} (this CPU has no VNNI: torchao's int8 dynamic "
              "kernel runs ~16x slower than float32 here and would add minutes; "
              "--variants all to include it)")  # fmt: skip
    seed_everything(args.seed)
    model, tok, context = Q.load_lm(args.model, args.seed)
    block = min(args.block_size, context)
    ids = Q.heldout_tokens(tok, args.tokens)
    out_dir = run_dir(SPRINT, "torchao_quant")
    writer = make_writer(out_dir)
    base = Q.perplexity_of(model, ids, block)
    models: dict[str, nn.Module] = {"float32": model}
    rows: dict[str, dict[str, Any]] = {
        "float32": {"description": "float32", "perplexity": base, "delta_pct": 0.0,
                    "mib": Q.state_dict_bytes(model) / 2**20, "tied": is_tied(model),
                    "weights": weight_kinds(model)}}  # fmt: skip
    for i, name in enumerate(tqdm(variants, leave=False)):
        q = models[name] = Q.quantize_lm(model, name)
        desc = Q.LM_METHODS[name]
        ppl = Q.perplexity_of(q, ids, block)
        rows[name] = {"description": desc, "perplexity": ppl, "delta_pct": 100 * (ppl / base - 1),
                      "mib": Q.state_dict_bytes(q) / 2**20, "tied": is_tied(q),
                      "weights": weight_kinds(q)}  # fmt: skip
        writer.add_scalar("perplexity", ppl, i)
    x = torch.from_numpy(ids[:block])[None]
    t = Q.time_forward(models, x, repeats=args.repeats)
    print(f"{args.model}: {len(ids) - 1:,} Macbeth tokens, windows of {block}; "
          f"batch-1 latency side by side ({t['float32'] * 1e3:.0f} ms for float32)")  # fmt: skip
    print(f"{'variant':<40} {'perplexity':>10} {'change':>8} {'MiB':>6} {'speed-up':>8} "
          f"{'tied':>5}  weights")  # fmt: skip
    for name, r in rows.items():
        r["speedup_b1"] = t["float32"] / t[name]
        print(f"{r['description']:<40} {r['perplexity']:>10.2f} {r['delta_pct']:>+7.1f}% "
              f"{r['mib']:>6.0f} {r['speedup_b1']:>7.2f}x {str(r['tied']):>5}  {r['weights']}")  # fmt: skip
    del models
    trap = int4_float32_trap(max(3, args.repeats))
    print("\nint4 kernel, one 576 -> 1536 layer on 128 tokens: "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in trap.items()))  # fmt: skip
    writer.close()
    return {"model": args.model, "rows": rows, "int4_trap_ms": trap, "skipped": skipped,
            "out_dir": str(out_dir)}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(run(main))
