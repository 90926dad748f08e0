"""SmolLM2 vs your sprint-09 model on the same Shakespeare text, in bits per character.

Both models score the validation split of sprint 09 (the end of *Henry IV, Part 2*, which
your model never saw; SmolLM2's trillions of web tokens very likely include Shakespeare, so
its figure is an optimistic one) with `llmlab.evaluation.evaluate_lm`: every token
predicted exactly once, with sliding windows so each token sees at least half a context. Losses per token cannot be compared across tokenizers (SmolLM2's token
is ~3-4 characters, the char model's exactly 1), so the table converts each total into
bits per character: total nats / (characters covered x ln 2).

Run: python -m sprints.10_pretrained_generation_demo.results.evaluate_models
     python -m sprints.10_pretrained_generation_demo.results.evaluate_models --chars 0   # all 122k
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmlab.cli import non_negative_int, positive_int, run
from llmlab.data.shakespeare import TRAIN_FRACTION, build_corpus
from llmlab.errors import LLMLabError
from llmlab.evaluation import CausalLMAdapter, bits_per_character, evaluate_lm
from llmlab.pretrained import (
    SPRINT09_NAME,
    checkpoint_folder,
    load_gpt_checkpoint,
    load_pretrained,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--models", default="smollm2,sprint09",
                   help="comma-separated: smollm2, sprint09, llmlab checkpoints, HF folders")  # fmt: skip
    p.add_argument("--chars", type=non_negative_int, default=20_000,
                   help="score the first N characters of the validation split (0: all)")  # fmt: skip
    p.add_argument("--context", type=positive_int, default=512,
                   help="window for Hugging Face models (ours use their own block_size)")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    return p


def validation_text(n_chars: int) -> str:
    """Sprint 09's validation split as text: the last 10 % of the tiny corpus."""
    text = build_corpus("tiny")
    val = text[int(len(text) * TRAIN_FRACTION) :]
    return val[:n_chars] if n_chars else val


def score(name: str, text: str, context: int, batch_size: int) -> dict[str, Any]:
    """Loss per token, tokens, and the characters those scored tokens cover."""
    if _is_llmlab(name):
        model, tok = load_gpt_checkpoint(name)
        ids = np.asarray(tok.encode(text), dtype=np.int64)
        first = tok.decode(ids[:1])
        window, kind = model.config.block_size, f"llmlab GPT, char-level ({tok.vocab_size})"
    else:
        hf, tok = load_pretrained(name)
        model = CausalLMAdapter(hf)
        ids = np.asarray(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
        first = tok.decode(ids[:1])
        window = min(context, getattr(hf.config, "max_position_embeddings", context))
        kind = f"{type(hf).__name__}, BPE ({len(tok):,})"
    if len(ids) < 2:
        raise LLMLabError(f"the text is too short to score ({len(ids)} tokens): use more --chars")
    window = min(window, len(ids) - 1)
    start = time.perf_counter()
    with torch.no_grad():
        result = evaluate_lm(model, ids, window, batch_size, stride=max(1, window // 2))
    seconds = time.perf_counter() - start
    n_chars = len(text) - len(first)  # the first token is never predicted: its characters out
    return {
        "kind": kind,
        "tokens": result["tokens"],
        "chars_per_token": n_chars / result["tokens"],
        "loss_per_token": result["loss"],
        "token_perplexity": result["perplexity"],
        "bits_per_char": bits_per_character(result["loss"], result["tokens"], n_chars),
        "window": window,
        "seconds": seconds,
    }


def _is_llmlab(name: str) -> bool:
    """ "sprint09" or an llmlab checkpoint/run folder (scored with our GPT and tokenizer)."""
    if name.lower() == SPRINT09_NAME:
        return True
    try:
        checkpoint_folder(Path(name))
        return True
    except LLMLabError:
        return False


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    text = validation_text(args.chars)
    print(f"scoring {len(text):,} characters of sprint 09's validation split "
          f"({'all' if not args.chars else 'first ' + format(args.chars, ',')})")  # fmt: skip
    rows: dict[str, Any] = {}
    try:
        for name in [n.strip() for n in args.models.split(",") if n.strip()]:
            rows[name] = score(name, text, args.context, args.batch_size)
    finally:
        torch.set_num_threads(before)
    print(f"\n{'model':<10} {'kind':<38} {'tokens':>7} {'chars/tok':>9} {'nats/tok':>8} "
          f"{'tok ppl':>8} {'bits/char':>9}")  # fmt: skip
    for name, r in rows.items():
        print(f"{name:<10} {r['kind']:<38} {r['tokens']:>7,} {r['chars_per_token']:>9.2f} "
              f"{r['loss_per_token']:>8.3f} {r['token_perplexity']:>8.2f} "
              f"{r['bits_per_char']:>9.3f}")  # fmt: skip
    print("token perplexities differ in unit (a token is a character for one model, ~"
          f"{max(r['chars_per_token'] for r in rows.values()):.1f} characters for another): "
          "compare bits per character.")  # fmt: skip
    return {"chars": len(text), "models": rows}


if __name__ == "__main__":
    raise SystemExit(run(main))
