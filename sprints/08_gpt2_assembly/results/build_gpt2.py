"""Build a GPT-2, count its parameters (vs Hugging Face), save + reload it, generate a few tokens.

The default `--preset tiny` keeps GPT-2's vocabulary and block but is 2 layers of width 64,
so it runs in seconds; `--preset gpt2` builds the real 124M-parameter GPT-2 small (random
weights: the text is gibberish until sprint 09 trains it).

Run: python -m sprints.08_gpt2_assembly.results.build_gpt2 --preset gpt2
"""

from __future__ import annotations

import argparse

import torch

from llmlab.cli import non_negative_int, run
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.generate import generate
from llmlab.gpt import GPT, GPTConfig
from llmlab.runs import run_dir
from llmlab.tokenizers import gpt2_tokenizer

PRESETS = {
    "tiny": GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=64),
    "gpt2": GPTConfig(),  # GPT-2 small: 12 layers, 12 heads, width 768, context 1024
}


def parameter_formula(c: GPTConfig) -> int:
    """V*d (tied wte/lm_head) + T*d (wpe) + L*(12 d^2 + 13 d) + 2d (ln_f)."""
    d = c.n_embd
    return c.vocab_size * d + c.block_size * d + c.n_layer * (12 * d * d + 13 * d) + 2 * d


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tiny",
        help="model shape: tiny (seconds on CPU) or gpt2 (GPT-2 small, 124M)",
    )
    parser.add_argument("--prompt", default="Hello, my name is", help="prompt to continue")
    parser.add_argument(
        "--new-tokens",
        type=non_negative_int,
        default=10,
        help="tokens to generate with the random weights",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--seed", type=int, default=0, help="seed for the weights and sampling")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    device = get_device(args.device)
    config = PRESETS[args.preset]
    tokenizer = gpt2_tokenizer()
    prompt_ids = tokenizer.encode(args.prompt)
    if not prompt_ids or len(prompt_ids) + args.new_tokens > config.block_size:
        raise LLMLabError(
            f"the prompt ({len(prompt_ids)} tokens) + --new-tokens ({args.new_tokens}) must be "
            f"between 1 and the context of {config.block_size} tokens: shorten one of them"
        )
    model = GPT(config).to(device).eval()
    print(model if args.preset == "tiny" else f"{model.__class__.__name__}({config})")

    n_params = model.num_parameters()
    formula = parameter_formula(config)
    hf_params = sum(p.numel() for p in model.to_hf().parameters())  # HF counts tied weights once
    print(f"parameters: ours {n_params:,} | formula {formula:,} | Hugging Face {hf_params:,}")
    print(
        f"  of which embeddings: wte {config.vocab_size * config.n_embd:,}, "
        f"wpe {config.block_size * config.n_embd:,}; non-embedding "
        f"{model.num_parameters(non_embedding=True) - config.vocab_size * config.n_embd:,}"
    )

    out = run_dir("08_gpt2_assembly", "build_gpt2")
    ckpt = model.save(out / "checkpoint")
    size_mb = sum(f.stat().st_size for f in ckpt.iterdir()) / 1e6
    reloaded = GPT.load(ckpt, map_location=device).eval()
    idx = torch.tensor([prompt_ids], device=device)
    with torch.no_grad():
        reload_diff = (model(idx)[0] - reloaded(idx)[0]).abs().max().item()
    print(f"saved to {ckpt} ({size_mb:.1f} MB); reloaded logits max diff {reload_diff:.1e}")

    cached = generate(model, idx, args.new_tokens, greedy=True, use_cache=True)
    plain = generate(model, idx, args.new_tokens, greedy=True, use_cache=False)
    sampled = generate(
        model,
        idx,
        args.new_tokens,
        top_k=50,
        generator=torch.Generator(device).manual_seed(args.seed),
    )
    print(f"greedy with KV cache == without: {torch.equal(cached, plain)}")
    print(f"greedy : {tokenizer.decode(cached[0].tolist())!r}")
    print(f"top-50 : {tokenizer.decode(sampled[0].tolist())!r}  (random weights)")
    return {
        "n_params": float(n_params),
        "formula_params": float(formula),
        "hf_params": float(hf_params),
        "checkpoint_mb": size_mb,
        "reload_max_logit_diff": reload_diff,
        "cache_matches_no_cache": float(torch.equal(cached, plain)),
        "new_tokens": float(cached.shape[1] - idx.shape[1]),
        "checkpoint": str(ckpt),
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
