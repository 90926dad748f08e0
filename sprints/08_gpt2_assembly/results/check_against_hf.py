"""Our GPT vs Hugging Face's GPT2LMHeadModel: convert both ways, compare logits and greedy tokens.

Builds RANDOMLY initialised models of a few shapes (nothing is downloaded), converts
HF -> ours with `GPT.from_hf` and ours -> HF with `GPT.to_hf`, and reports the largest logit
difference and whether greedy decoding picks the same tokens. `--preset gpt2` adds the full
GPT-2 small shape; `--pretrained gpt2` (online only) checks OpenAI's real weights too.

Run: python -m sprints.08_gpt2_assembly.results.check_against_hf --new-tokens 20
"""

from __future__ import annotations

import argparse

import torch

from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.generate import generate
from llmlab.gpt import GPT, GPTConfig

SHAPES = [  # vocab, context, layers, heads, width
    (97, 64, 1, 1, 16),
    (512, 64, 2, 4, 64),
    (1000, 128, 4, 8, 128),
]
GPT2_SMALL = (50257, 1024, 12, 12, 768)


def hf_greedy(hf, idx: torch.Tensor, n: int) -> torch.Tensor:
    return hf.generate(idx, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)


def compare(ours: GPT, hf, idx: torch.Tensor, n: int) -> tuple[float, float]:
    """(max |logit difference|, fraction of the n greedy tokens that agree)."""
    with torch.no_grad():
        diff = (ours(idx)[0] - hf(idx).logits).abs().max().item()
    a = generate(ours, idx, n, greedy=True)[:, idx.shape[1] :]
    b = hf_greedy(hf, idx, n)[:, idx.shape[1] :]
    return diff, (a == b).float().mean().item()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        choices=["small", "gpt2"],
        default="small",
        help="small: three small shapes; gpt2: also GPT-2 small (124M, slower)",
    )
    parser.add_argument(
        "--new-tokens", type=positive_int, default=20, help="greedy tokens compared per model"
    )
    parser.add_argument("--prompt-len", type=positive_int, default=8, help="random prompt length")
    parser.add_argument(
        "--pretrained",
        default=None,
        help="also check a hub model, e.g. gpt2 (downloads: online users only)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    from transformers import GPT2Config, GPT2LMHeadModel

    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    shapes = SHAPES + ([GPT2_SMALL] if args.preset == "gpt2" else [])
    worst = {"hf_to_ours_max_diff": 0.0, "ours_to_hf_max_diff": 0.0}
    agree = {"hf_to_ours_greedy_agreement": 1.0, "ours_to_hf_greedy_agreement": 1.0}
    print(
        f"{'vocab, ctx, layers, heads, width':34s} {'direction':12s} "
        f"{'max |dlogit|':>12s} {'greedy agree':>12s}"
    )
    for shape in shapes:
        vocab, ctx, layers, heads, width = shape
        idx = torch.randint(0, vocab, (2, args.prompt_len))
        hf = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab,
                n_positions=ctx,
                n_layer=layers,
                n_head=heads,
                n_embd=width,
                bos_token_id=None,
                eos_token_id=None,
            )
        ).eval()
        mine = GPT(GPTConfig(vocab, ctx, layers, heads, width)).eval()
        pairs = {
            "hf_to_ours": (GPT.from_hf(hf).eval(), hf),
            "ours_to_hf": (mine, mine.to_hf().eval()),
        }
        for direction, (ours, ref) in pairs.items():
            diff, agreement = compare(ours, ref, idx, args.new_tokens)
            worst[f"{direction}_max_diff"] = max(worst[f"{direction}_max_diff"], diff)
            agree[f"{direction}_greedy_agreement"] = min(
                agree[f"{direction}_greedy_agreement"], agreement
            )
            print(f"{str(shape):34s} {direction:12s} {diff:12.1e} {agreement:12.0%}")
    figures = worst | agree | {"n_shapes": float(len(shapes))}
    if args.pretrained:
        hf = GPT2LMHeadModel.from_pretrained(args.pretrained).eval()
        diff, agreement = compare(
            GPT.from_hf(hf).eval(), hf, idx % hf.config.vocab_size, args.new_tokens
        )
        print(f"{args.pretrained:34s} {'hf_to_ours':12s} {diff:12.1e} {agreement:12.0%}")
        figures |= {"pretrained_max_diff": diff, "pretrained_greedy_agreement": agreement}
    return figures


if __name__ == "__main__":
    raise SystemExit(run(main))
