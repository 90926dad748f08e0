"""PyTorch eager dynamic quantization (`torch.ao.quantization.quantize_dynamic`): one qconfig
per module type or per layer name, and the traps the learner hit.

1. SmolLM2: every `nn.Linear` to int8 (per-tensor, then per-channel weights), then layer
   choices by name (LM head kept in float, every `down_proj` kept in float, attention only).
   Perplexity on Macbeth and batch-1 latency side by side with float32: the kernel is fast,
   the quality is what the qconfig choices decide.
2. The `Conv1D` trap: Hugging Face's `GPT2LMHeadModel` stores its projections in
   transformers' `Conv1D`, which `quantize_dynamic` silently skips; our `GPT` (the same
   weights, `nn.Linear`) gets every layer quantized. Counts and speed side by side.
3. `reduce_range`: torch.ao's dynamic Linear quantizes activations to 7 bits, a guard for
   CPUs without VNNI; whether this CPU needs it.

Run: python -m sprints.14_quantization.results.eager_dynamic
     python -m sprints.14_quantization.results.eager_dynamic --gpt-shape tiny --tokens 512
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch
from torch import nn
from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig
from tqdm import tqdm

from llmlab import quantization as Q
from llmlab.cli import positive_int, run, torch_threads
from llmlab.device import seed_everything
from llmlab.evaluation import CausalLMAdapter
from llmlab.gpt import GPT, GPTConfig
from llmlab.runs import make_writer, run_dir

SPRINT = "14_quantization"
# (n_layer, n_head, n_embd, vocab) for the Conv1D comparison
GPT_SHAPES = {"tiny": (2, 4, 128, 512), "small": (12, 12, 768, 50257)}


def qconfig_specs(model: nn.Module) -> dict[str, tuple[str, dict | None, bool]]:
    """name -> (description, qconfig_spec for quantize_dynamic, per-channel)."""
    n_layers = model.config.num_hidden_layers if hasattr(model.config, "num_hidden_layers") else 0
    down = {f"model.layers.{i}.mlp.down_proj": None for i in range(n_layers)}
    attention = {
        f"model.layers.{i}.self_attn": per_channel_dynamic_qconfig for i in range(n_layers)
    }
    pc = per_channel_dynamic_qconfig
    return {
        "all_per_tensor": ("every Linear, per-tensor weights", {nn.Linear: default_dynamic_qconfig}, False),
        "all_per_channel": ("every Linear, per-channel weights", {nn.Linear: pc}, True),
        "no_lm_head": ("per-channel, lm_head float", {nn.Linear: pc, "lm_head": None}, True),
        "no_down_proj": ("per-channel, lm_head + down_proj float",
                         {nn.Linear: pc, "lm_head": None, **down}, True),
        "attention_only": ("attention projections only", attention, True),
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2",
                   help="the Llama model for part 1: smollm2 (bundled) or tiny (random)")  # fmt: skip
    p.add_argument("--tokens", type=positive_int, default=2048, help="Macbeth tokens scored")
    p.add_argument("--block-size", type=positive_int, default=128,
                   help="window length (and tokens per timed forward pass)")  # fmt: skip
    p.add_argument("--gpt-shape", choices=list(GPT_SHAPES), default="small",
                   help="shape of the GPT-2 pair for the Conv1D trap (small = GPT-2 small)")  # fmt: skip
    p.add_argument("--repeats", type=positive_int, default=5, help="timed passes per model")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the random GPT-2 weights")
    p.add_argument("--device", default="cpu", choices=["cpu"],
                   help="torch.ao's quantized kernels run on the CPU only")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


def conv1d_trap(shape: str, block: int, repeats: int) -> dict[str, Any]:
    """Our GPT and HF's GPT2LMHeadModel, same weights, through quantize_dynamic."""
    n_layer, n_head, n_embd, vocab = GPT_SHAPES[shape]
    ours = GPT(GPTConfig(vocab_size=vocab, block_size=max(block, 64), n_layer=n_layer,
                         n_head=n_head, n_embd=n_embd)).eval()  # fmt: skip
    hf = ours.to_hf().eval()
    ours_q, ours_counts = Q.eager_dynamic(copy.deepcopy(ours))
    hf_q, hf_counts = Q.eager_dynamic(copy.deepcopy(hf))
    fixed_q, fixed_counts = Q.eager_dynamic(GPT.from_hf(hf).eval())  # the fix: convert first
    x = torch.randint(vocab, (1, block), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same = (CausalLMAdapter(ours)(x)[0] - CausalLMAdapter(hf)(x)[0]).abs().max().item()
    t = Q.time_forward({"ours": ours, "ours_int8": ours_q, "hf": hf, "hf_int8": hf_q}, x, repeats)
    out = {
        "shape": shape,
        "float_logits_max_diff": same,
        "ours_counts": ours_counts,
        "hf_counts": hf_counts,
        "converted_counts": fixed_counts,
        "ours_speedup": t["ours"] / t["ours_int8"],
        "hf_speedup": t["hf"] / t["hf_int8"],
    }
    print(f"\nGPT-2 '{shape}' shape, same weights (float logits differ by {same:.1e}):")
    print(f"  our GPT (nn.Linear):        {ours_counts['quantized']} layers int8, "
          f"{ours_counts['float_linear']} left in float -> {out['ours_speedup']:.2f}x at batch 1")  # fmt: skip
    print(f"  HF GPT2LMHeadModel:         {hf_counts['quantized']} layer int8 (lm_head), "
          f"{hf_counts['conv1d_skipped']} Conv1D skipped without a warning -> "
          f"{out['hf_speedup']:.2f}x")  # fmt: skip
    print(f"  HF model -> GPT.from_hf -> quantize_dynamic: {fixed_counts['quantized']} layers int8")
    return out


def _main(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    model, tok, context = Q.load_lm(args.model, args.seed)
    block = min(args.block_size, context)
    ids = Q.heldout_tokens(tok, args.tokens)
    out_dir = run_dir(SPRINT, "eager_dynamic")
    writer = make_writer(out_dir)
    base = Q.perplexity_of(model, ids, block)
    size = Q.state_dict_bytes(model)
    models: dict[str, nn.Module] = {"float32": model}
    rows: dict[str, dict[str, Any]] = {}
    specs = qconfig_specs(model)
    for i, (name, (desc, spec, _)) in enumerate(tqdm(specs.items(), desc="qconfigs", leave=False)):
        q, counts = Q.eager_dynamic(copy.deepcopy(model), spec)
        models[name] = q
        ppl = Q.perplexity_of(q, ids, block)
        rows[name] = {"description": desc, "perplexity": ppl, "delta_pct": 100 * (ppl / base - 1),
                      "mib": Q.state_dict_bytes(q) / 2**20, **counts}  # fmt: skip
        writer.add_scalar("perplexity", ppl, i)
    x = torch.from_numpy(ids[:block])[None]
    t = Q.time_forward(models, x, repeats=args.repeats)
    print(f"{args.model}: float32 perplexity {base:.2f} ({len(ids) - 1:,} Macbeth tokens), "
          f"{size / 2**20:.0f} MiB, {t['float32'] * 1e3:.0f} ms per 1 x {block} forward")  # fmt: skip
    print(f"{'qconfig choice':<40} {'int8':>5} {'float':>5} {'MiB':>5} {'perplexity':>10} "
          f"{'change':>8} {'speed-up':>8}")  # fmt: skip
    for name, r in rows.items():
        r["speedup_b1"] = t["float32"] / t[name]
        print(f"{r['description']:<40} {r['quantized']:>5} {r['float_linear']:>5} {r['mib']:>5.0f} "
              f"{r['perplexity']:>10.2f} {r['delta_pct']:>+7.1f}% {r['speedup_b1']:>7.2f}x")  # fmt: skip
    print("(speed-ups measured side by side, median of the turns; 'float' counts nn.Linear "
          "layers left in float32)")  # fmt: skip
    del models
    trap = conv1d_trap(args.gpt_shape, block, args.repeats)
    needed = Q.reduce_range_needed()
    print(f"\nreduce_range: torch.ao's dynamic Linear always quantizes activations to 7 bits "
          f"(0..127); this CPU {'lacks' if needed else 'has'} VNNI, so it "
          f"{'needs that guard' if needed else 'could use all 8 (llmlab Int8Linear does)'}")  # fmt: skip
    writer.close()
    return {"model": args.model, "base_perplexity": base, "base_mib": size / 2**20, "rows": rows,
            "conv1d": trap, "reduce_range_needed": needed, "out_dir": str(out_dir)}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(run(main))
