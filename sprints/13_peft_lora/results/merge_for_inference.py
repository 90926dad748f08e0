"""Merge a LoRA adapter into the base weights for inference: the merged model gives the
adapter model's outputs, the same greedy text, and runs at the base model's speed.

W' = W + (alpha / r) B A is computed once per layer (`llmlab.lora.merge_and_unload`), after
which the model is the plain architecture again: same classes, same state-dict names, no
extra matmuls. Timed side by side in interleaved rounds (the median of each): a batch-1
forward over a prompt, and greedy decoding with the KV cache, for the base model, the
unmerged adapter model and the merged one.

The adapter is `--adapter DIR` (a folder written by `llmlab.lora.save_adapter`, e.g. one of
`compare_finetuning`'s `checkpoints/ours-*` folders); without one, a fresh adapter whose B is
filled with noise stands in (an untrained adapter is the base model exactly, which would
prove nothing), and the script says so.

Run: python -m sprints.13_peft_lora.results.merge_for_inference
     python -m sprints.13_peft_lora.results.merge_for_inference --adapter runs/13_peft_lora/compare_finetuning/<run>/checkpoints/<ours-...>
     python -m sprints.13_peft_lora.results.merge_for_inference --model sprint09 --targets all-linear
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmlab.classification import is_gpt_checkpoint
from llmlab.cli import non_negative_int, positive_int, run, torch_threads
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.generate import generate
from llmlab.lora import (
    inject_lora,
    load_adapter,
    lora_layers,
    lora_summary,
    merge_and_unload,
    read_adapter,
    unmerge_lora,
)
from llmlab.pretrained import load_gpt_checkpoint, load_pretrained
from llmlab.runs import run_dir
from llmlab.tokenizers import CharTokenizer

SPRINT, SCRIPT = "13_peft_lora", "merge_for_inference"
PROMPT = "Of Mans First Disobedience, and the Fruit Of that Forbidden Tree, whose mortal tast"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (offline), sprint09 (your sprint-09 GPT), a checkpoint folder, or a "
        "Hugging Face name such as gpt2 (online)",
    )
    p.add_argument("--adapter", type=Path, help="adapter folder (default: a noisy fresh one)")
    p.add_argument(
        "--targets",
        default="attn",
        help="fresh adapter only: attn (peft's default projections) or all-linear",
    )
    p.add_argument("--r", type=positive_int, default=8, help="fresh adapter only: LoRA rank")
    p.add_argument("--prompt-tokens", type=positive_int, default=64, help="prompt length timed")
    p.add_argument("--new-tokens", type=positive_int, default=32, help="greedy tokens generated")
    p.add_argument("--rounds", type=positive_int, default=5, help="interleaved timing rounds")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=non_negative_int, default=1, help="CPU threads (0: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed for the fresh adapter's noise")
    p.add_argument("--out-dir", type=Path, help="run folder (default runs/13_peft_lora/...)")
    return p


def load(name: str, device: torch.device) -> tuple[nn.Module, Any, int]:
    """(model, tokenizer, context length): our GPT or a transformers causal LM."""
    if is_gpt_checkpoint(name):
        model, tokenizer = load_gpt_checkpoint(name)
        return model.to(device).eval(), tokenizer, model.config.block_size
    model, tokenizer = load_pretrained(name, device=device)
    return model, tokenizer, model.config.max_position_embeddings


def encode(tokenizer: Any, text: str, n: int) -> list[int]:
    """`n` token ids of `text` repeated (a prompt of exactly the length to time)."""
    if isinstance(tokenizer, CharTokenizer):
        text = "".join(c for c in text if c in tokenizer.chars)
        ids = tokenizer.encode(text)
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return (ids * (n // len(ids) + 1))[:n]


def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return out[0] if isinstance(out, tuple) else out.logits


@torch.no_grad()
def timings(
    models: dict[str, nn.Module], ids: torch.Tensor, new_tokens: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Median seconds of a prompt forward and of greedy decoding, models interleaved in
    every round so that a change of machine load hits them all alike."""
    times: dict[str, dict[str, list[float]]] = {n: {"prefill": [], "decode": []} for n in models}
    for model in models.values():  # warm-up: first calls allocate and pick kernels
        logits_of(model, ids)
        generate(model, ids, 2, greedy=True)
    for _ in range(rounds):
        for name, model in models.items():
            t0 = time.perf_counter()
            logits_of(model, ids)
            t1 = time.perf_counter()
            generate(model, ids, new_tokens, greedy=True)
            t2 = time.perf_counter()
            times[name]["prefill"].append(t1 - t0)
            times[name]["decode"].append((t2 - t1) / new_tokens)
    return {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return merge(args)


def merge(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    if args.targets not in ("attn", "all-linear"):
        raise LLMLabError(f"--targets must be attn or all-linear, got {args.targets!r}")
    if args.adapter:
        read_adapter(args.adapter)  # a bad folder fails before the model loads
    seed_everything(args.seed)
    device = get_device(args.device)
    base, tokenizer, context = load(args.model, device)
    if args.prompt_tokens + args.new_tokens > context:
        raise LLMLabError(
            f"--prompt-tokens + --new-tokens = {args.prompt_tokens + args.new_tokens} is longer "
            f"than the model's context ({context}): ask for fewer"
        )
    adapter = copy.deepcopy(base)
    if args.adapter:
        load_adapter(adapter, args.adapter)
        source = str(args.adapter)
    else:
        inject_lora(adapter, None if args.targets == "attn" else "all-linear", r=args.r)
        g = torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            for layer in lora_layers(adapter).values():
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.02)
        source = f"fresh r={args.r} adapter on {args.targets}, B filled with noise"
        print(f"no --adapter: a {source} (pass --adapter DIR for a trained one)")
    adapter.eval()
    info = lora_summary(adapter)
    layers = len(lora_layers(adapter))
    merged = merge_and_unload(copy.deepcopy(adapter))

    ids = torch.tensor([encode(tokenizer, PROMPT, args.prompt_tokens)], device=device)
    with torch.no_grad():
        want, got = logits_of(adapter, ids), logits_of(merged, ids)
        base_logits = logits_of(base, ids)
    max_err = float((want - got).abs().max())
    adapter_effect = float((want - base_logits).abs().max())
    text = {
        name: generate(model, ids, args.new_tokens, greedy=True)[0, ids.shape[1] :].tolist()
        for name, model in (("adapter", adapter), ("merged", merged), ("base", base))
    }
    same_tokens = sum(a == b for a, b in zip(text["adapter"], text["merged"], strict=True))
    # Unmerging restores the base weights up to float rounding.
    check = copy.deepcopy(adapter)
    for layer in lora_layers(check).values():
        layer.merge()
    unmerge_lora(check)
    with torch.no_grad():
        unmerge_err = max(
            float((layer.base_layer.weight - base.get_submodule(n).weight).abs().max())
            for n, layer in lora_layers(check).items()
        )
    del check
    same_keys = set(merged.state_dict()) == set(base.state_dict())

    models = {"base": base, "adapter (unmerged)": adapter, "merged": merged}
    t = timings(models, ids, args.new_tokens, args.rounds)
    out = args.out_dir or run_dir(SPRINT, SCRIPT)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": args.model,
        "adapter": source,
        "lora_layers": layers,
        "lora_params": info["lora"],
        "max_abs_logit_diff_merged_vs_adapter": max_err,
        "max_abs_logit_diff_adapter_vs_base": adapter_effect,
        "greedy_tokens_equal": same_tokens,
        "greedy_tokens": args.new_tokens,
        "adapter_changes_greedy_text": text["adapter"] != text["base"],
        "unmerge_max_abs_err": unmerge_err,
        "merged_has_base_state_dict_keys": same_keys,
        "timings_s": t,
        "prefill_ratio_to_base": {n: v["prefill"] / t["base"]["prefill"] for n, v in t.items()},
        "decode_ratio_to_base": {n: v["decode"] / t["base"]["decode"] for n, v in t.items()},
        "prompt_tokens": args.prompt_tokens,
        "wall_seconds": time.perf_counter() - t_start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{args.model} + {source}: {layers} LoRA layers, {info['lora']:,} parameters")
    print(
        f"max |logits merged - adapter| = {max_err:.2e} (the adapter itself moves logits by up "
        f"to {adapter_effect:.2f}); greedy: {same_tokens}/{args.new_tokens} tokens equal"
    )
    print(f"unmerge restores the base weights to {unmerge_err:.1e}; merged state dict has the "
          f"base's keys: {same_keys}")  # fmt: skip
    print(f"\n{'model':20s} {'prompt forward':>15s} {'per token':>10s} {'vs base':>14s}")
    for name, v in t.items():
        print(
            f"{name:20s} {1e3 * v['prefill']:12.1f} ms {1e3 * v['decode']:7.1f} ms "
            f"{summary['prefill_ratio_to_base'][name]:6.2f}x {summary['decode_ratio_to_base'][name]:5.2f}x"
        )
    print(
        f"(batch 1, {args.prompt_tokens}-token prompt, {args.new_tokens} greedy tokens with the "
        f"KV cache; median of {args.rounds} interleaved rounds) run folder {out}"
    )
    return summary


if __name__ == "__main__":
    raise SystemExit(run(main))
