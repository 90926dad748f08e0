"""Our LoRA against peft's, number by number: the same outputs, gradients and merged weights
with the same A and B; how many parameters each configuration trains and how big its adapter
file is; and two things peft lets through that ours refuses.

1. Parity (max |ours - peft|) on our GPT exported to Hugging Face GPT-2 (`Conv1D`, weights
   stored transposed: peft's `fan_in_fan_out`), with LoRA on `c_attn` and on every linear
   layer, and on SmolLM2 with LoRA on `q_proj` and `v_proj` (Llama's `nn.Linear`). B is filled
   with noise first: at its zero init any implementation "matches".
2. Trainable parameters and adapter sizes on disk for r in {4, 8, 16} x {attention, all
   linear}, for GPT-2 small's shape (the learner's log: 294,912 parameters, ~0.24%) and for
   SmolLM2 (planning figure: r=8 on q, v trains 460,800, 0.34%, 1.86 MB).
3. Pitfalls: a misspelt target name (peft trains fewer layers without a word) and an adapter
   loaded onto another base model (peft loads it; ours checks a digest of the base weights).

Run: python -m sprints.13_peft_lora.results.lora_vs_peft
     python -m sprints.13_peft_lora.results.lora_vs_peft --gpt tiny --no-smollm2   (seconds)
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmlab.cli import non_negative_int, run, torch_threads
from llmlab.device import seed_everything
from llmlab.errors import LLMLabError
from llmlab.gpt import GPT, GPTConfig
from llmlab.lora import (
    ADAPTER_FILE,
    as_peft,
    inject_lora,
    load_adapter,
    lora_layers,
    lora_summary,
    merge_lora,
    save_adapter,
)
from llmlab.pretrained import load_pretrained
from llmlab.runs import run_dir

SPRINT, SCRIPT = "13_peft_lora", "lora_vs_peft"
GPT_SHAPES = {  # GPT-2 small's shape (124M, random weights: no download) or a tiny one
    "small": GPTConfig(),
    "tiny": GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=4, n_embd=64),
}
RANKS = (4, 8, 16)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--gpt", choices=sorted(GPT_SHAPES), default="small", help="shape of our GPT (random)"
    )
    p.add_argument(
        "--no-smollm2", action="store_true", help="skip SmolLM2 (parity, counts and sizes)"
    )
    p.add_argument("--tokens", type=int, default=32, help="sequence length of the parity input")
    p.add_argument("--device", default="cpu", help="cpu (parity is checked in float32 on CPU)")
    p.add_argument("--threads", type=non_negative_int, default=1, help="CPU threads (0: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, noise and inputs")
    p.add_argument("--out-dir", type=Path, help="run folder (default runs/13_peft_lora/...)")
    return p


def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids) if isinstance(model, GPT) else model(input_ids=ids)
    return out[0] if isinstance(out, tuple) else out.logits


def fill_b(model: nn.Module, seed: int) -> None:
    """Noise in B (std 0.05): at its zero init every LoRA is a no-op and any bug hides."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.05)


def parity(base: nn.Module, ids: torch.Tensor, targets: Any, seed: int) -> dict[str, float]:
    """Max |ours - peft| for logits, gradients of A and B, merged weights; and merged vs
    unmerged logits of ours."""
    ours = inject_lora(copy.deepcopy(base), targets, r=8, alpha=16)
    fill_b(ours, seed)
    theirs = as_peft(ours)
    a, b = logits_of(ours, ids), logits_of(theirs, ids)
    a.float().square().mean().backward()
    b.float().square().mean().backward()
    grad = 0.0
    for name, layer in lora_layers(ours).items():
        peft_layer = theirs.get_submodule(name)
        for ours_p, peft_p in (
            (layer.lora_A, peft_layer.lora_A["default"].weight),
            (layer.lora_B, peft_layer.lora_B["default"].weight),
        ):
            grad = max(grad, float((ours_p.grad - peft_p.grad).abs().max()))
    for module in theirs.modules():
        if hasattr(module, "lora_A") and hasattr(module, "merge"):
            module.merge()
    merge_lora(ours)
    merged = max(
        float((layer.base_layer.weight - theirs.get_submodule(n).base_layer.weight).abs().max())
        for n, layer in lora_layers(ours).items()
    )
    with torch.no_grad():
        merged_vs_adapter = float((logits_of(ours, ids) - a).abs().max())
    return {
        "layers": len(lora_layers(ours)),
        "forward": float((a - b).detach().abs().max()),
        "grad": grad,
        "merged_weight": merged,
        "merged_vs_adapter": merged_vs_adapter,
        "logit_scale": float(a.detach().abs().max()),
    }


def counts_and_sizes(
    base: nn.Module, name: str, targets: dict[str, Any], work: Path
) -> list[dict[str, Any]]:
    """Trainable parameters and adapter bytes on disk for every rank x target set."""
    rows = []
    for label, spec in targets.items():
        for r in RANKS:
            model = inject_lora(copy.deepcopy(base), spec, r=r, alpha=16)
            s = lora_summary(model)
            folder = save_adapter(model, work / f"{name}-{label}-r{r}", base_name=name)
            rows.append(
                {
                    "model": name,
                    "targets": label,
                    "r": r,
                    "layers": len(lora_layers(model)),
                    "trainable": s["trainable"],
                    "percent": s["percent"],
                    "adapter_bytes": (folder / ADAPTER_FILE).stat().st_size,
                }
            )
            del model
    return rows


def typo_pitfall(base: nn.Module, good: str, typo: str) -> dict[str, Any]:
    """peft with one target misspelt: how many layers it wrapped; ours: the error."""
    from peft import LoraConfig, inject_adapter_in_model

    theirs = inject_adapter_in_model(
        LoraConfig(r=8, target_modules=[good, typo]), copy.deepcopy(base)
    )
    wrapped = sum(hasattr(m, "lora_A") and hasattr(m, "merge") for m in theirs.modules())
    try:
        inject_lora(copy.deepcopy(base), [good, typo], r=8)
        ours = "accepted"
    except LLMLabError as exc:
        ours = str(exc)
    return {"targets": [good, typo], "peft_layers_wrapped": wrapped, "ours": ours}


def other_base_pitfall(seed: int, work: Path) -> dict[str, Any]:
    """An adapter of one tiny GPT-2 loaded onto another with the same shapes."""
    from peft import PeftModel

    def gpt2(s: int) -> nn.Module:
        torch.manual_seed(s)
        return GPT(GPT_SHAPES["tiny"]).to_hf().eval()

    ours = inject_lora(gpt2(seed), ["c_attn"], r=8, alpha=16)
    fill_b(ours, seed)
    folder = save_adapter(ours, work / "other-base", base_name=f"tiny GPT-2, seed {seed}")
    other = gpt2(seed + 1)
    PeftModel.from_pretrained(copy.deepcopy(other), folder)  # no error, no warning
    try:
        load_adapter(copy.deepcopy(other), folder)
        refused = "loaded"
    except LLMLabError as exc:
        refused = str(exc)
    reloaded = load_adapter(gpt2(seed), folder)  # the right base: exact
    ids = torch.arange(16)[None]
    with torch.no_grad():
        reload_err = float((logits_of(reloaded, ids) - logits_of(ours, ids)).abs().max())
    return {"peft": "loaded silently", "ours": refused, "reload_max_abs_err": reload_err}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.device != "cpu":
        raise LLMLabError("lora_vs_peft checks float32 parity on the CPU: pass --device cpu")
    if args.tokens < 1:
        raise LLMLabError(f"--tokens must be at least 1, got {args.tokens}")
    with torch_threads(args.threads):
        return compare(args)


def compare(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    seed_everything(args.seed)
    out = args.out_dir or run_dir(SPRINT, SCRIPT)
    out.mkdir(parents=True, exist_ok=True)
    config = GPT_SHAPES[args.gpt]
    tokens = min(args.tokens, config.block_size)
    gpt = GPT(config).eval()
    gpt2 = gpt.to_hf().eval()  # Conv1D layers: the transposed layout
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, config.vocab_size, (2, tokens), generator=g)
    results: dict[str, Any] = {"parity": {}, "counts": [], "out_dir": str(out)}
    results["parity"]["gpt2 c_attn"] = parity(gpt2, ids, ["c_attn"], args.seed)
    results["parity"]["gpt2 all-linear"] = parity(gpt2, ids, "all-linear", args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["counts"] += counts_and_sizes(
            gpt, f"GPT ({args.gpt})", {"attn (c_attn)": ["attn.c_attn"], "all-linear": "all-linear"},
            work,
        )  # fmt: skip
        results["typo"] = typo_pitfall(gpt2, "c_attn", "c_fcc")
        results["other_base"] = other_base_pitfall(args.seed, work)
        if not args.no_smollm2:
            smol, tokenizer = load_pretrained("smollm2")
            text = "Of Man's first disobedience, and the fruit of that forbidden tree"
            smol_ids = tokenizer(text, return_tensors="pt").input_ids[:, :tokens]
            results["parity"]["smollm2 q_proj,v_proj"] = parity(
                smol, smol_ids, ["q_proj", "v_proj"], args.seed
            )
            results["counts"] += counts_and_sizes(
                smol, "SmolLM2-135M", {"attn (q,v)": ["q_proj", "v_proj"],
                                       "all-linear": "all-linear"}, work,
            )  # fmt: skip
            del smol
    print("1. parity with peft 0.21 (same A and B; B filled with noise), max |ours - peft|:")
    print(f"{'model, targets':26s} {'layers':>6s} {'logits':>9s} {'grads':>9s} {'merged W':>9s}"
          f" {'merged vs adapter':>18s} {'max |logit|':>11s}")  # fmt: skip
    for name, p in results["parity"].items():
        print(
            f"{name:26s} {p['layers']:6d} {p['forward']:9.2e} {p['grad']:9.2e} "
            f"{p['merged_weight']:9.2e} {p['merged_vs_adapter']:18.2e} {p['logit_scale']:11.2f}"
        )
    print("\n2. trainable parameters and adapter file size (float32 factors):")
    print(f"{'model':16s} {'targets':14s} {'r':>3s} {'layers':>6s} {'trainable':>10s} "
          f"{'% of model':>10s} {'adapter file':>13s}")  # fmt: skip
    for c in results["counts"]:
        print(
            f"{c['model']:16s} {c['targets']:14s} {c['r']:3d} {c['layers']:6d} "
            f"{c['trainable']:10,d} {c['percent']:9.3f}% {c['adapter_bytes'] / 1e6:10.3f} MB"
        )
    typo = results["typo"]
    print(
        f"\n3. targets {typo['targets']}: peft wrapped {typo['peft_layers_wrapped']} layers and "
        f"said nothing; ours: {typo['ours']}"
    )
    ob = results["other_base"]
    print(
        f"   adapter onto another base with the same shapes: peft {ob['peft']}; ours: {ob['ours']}"
    )
    print(f"   reloaded onto its own base: max |logit difference| {ob['reload_max_abs_err']:.1e}")
    results["wall_seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(results, indent=2))
    print(f"done in {results['wall_seconds']:.0f} s; {out / 'summary.json'}")
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
