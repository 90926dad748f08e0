"""Tokenizers side by side: GPT-2's BPE, characters, and a BPE trained on Shakespeare.

Shows how GPT-2 splits a few strings (token strings and ids, 'Ġ' = a leading space), builds
the character tokenizer of the Shakespeare corpus, trains byte-level BPEs of several
vocabulary sizes on the training 90 % of it, and measures how many characters each
tokenizer packs into one token on the held-out 10 % (more = shorter sequences for the
model). Writes a plot of characters per token against vocabulary size.

Run: python -m sprints.08_gpt2_assembly.results.tokenizer_demo --vocab-sizes 512,1024,4096
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmlab.cli import non_negative_int, run
from llmlab.data.shakespeare import build_corpus
from llmlab.errors import LLMLabError
from llmlab.runs import run_dir
from llmlab.tokenizers import CharTokenizer, gpt2_tokenizer, train_bpe

SPRINT, SCRIPT = "08_gpt2_assembly", "tokenizer_demo"
EXAMPLES = [
    "Hello world",
    " Hello world",
    "To be, or not to be: that is the question.",
    "naïve café 🤗",
    "it's 2026, pi=3.14159",
]


def vocab_sizes(text: str) -> list[int]:
    """argparse type: comma-separated vocabulary sizes, each at least 257."""
    try:
        sizes = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 512,1024, got {text!r}") from None
    if not sizes or sizes[0] < 257:
        raise argparse.ArgumentTypeError("each vocabulary size must be >= 257 (256 bytes + 1)")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--text",
        action="append",
        metavar="STR",
        help="a string to show with GPT-2's tokenizer (repeatable; default: examples)",
    )
    p.add_argument(
        "--vocab-sizes",
        type=vocab_sizes,
        default=[300, 512, 1024, 2048, 4096],
        help="comma-separated vocabulary sizes of the BPEs trained on Shakespeare",
    )
    p.add_argument(
        "--train-chars",
        type=non_negative_int,
        default=0,
        help="train the BPEs on only this many characters (0 = the whole "
        "training split, ~1.1 M characters)",
    )
    return p


def _plot_compression(series: dict[str, tuple[list[int], list[float]]], path: Path) -> Path:
    """Characters per token against vocabulary size (log x axis), one marker per tokenizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (sizes, values) in series.items():
        ax.plot(sizes, values, marker="o", label=label)
    ax.set_xscale("log")
    ax.set(
        title="Compression on held-out Shakespeare",
        xlabel="vocabulary size",
        ylabel="characters per token",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _show(name: str, tokens: list[str], ids: list[int]) -> None:
    print(f"  {name}: {len(ids)} tokens")
    print(f"    tokens {tokens}")
    print(f"    ids    {ids}")


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    gpt2 = gpt2_tokenizer()
    print(f"GPT-2 byte-level BPE: {gpt2.vocab_size:,} tokens, <|endoftext|> = {gpt2.eot_id}")
    for text in args.text or EXAMPLES:
        ids = gpt2.encode(text)
        print(f"\n{text!r}: {len(text)} characters, {len(text.encode('utf-8'))} bytes")
        _show("gpt2", gpt2.tokens(text), ids)
        assert gpt2.decode(ids) == text  # byte-level BPE always round-trips

    # The corpus of sprint 09, split as prepare_data splits it: train on 90 %, measure on 10 %.
    text = build_corpus("tiny")
    n_train = int(0.9 * len(text))
    train_text, val_text = text[:n_train], text[n_train:]
    if args.train_chars:
        train_text = train_text[: args.train_chars]
    if not train_text.strip():
        raise LLMLabError("--train-chars leaves no text to train on: use a larger value")

    char = CharTokenizer.from_text(text)
    print(
        f"\ncharacter tokenizer of the tiny corpus: {char.vocab_size} tokens: "
        f"{''.join(char.chars)!r}"
    )
    line = "To be, or not to be: that is the question."
    print(f"  {line!r} -> {char.encode(line)[:12]}... ({len(line)} tokens)")

    results: dict[str, float | str] = {
        "char_vocab_size": char.vocab_size,
        "char_chars_per_token": len(val_text) / len(char.encode(val_text)),
        "gpt2_chars_per_token": len(val_text) / len(gpt2.encode(val_text)),
    }
    print(
        f"\ntraining byte-level BPEs on {len(train_text):,} characters of Shakespeare, "
        f"measuring on the {len(val_text):,} held-out characters"
    )
    print(f"{'tokenizer':>12} {'vocab':>7} {'val tokens':>11} {'chars/token':>12}")
    print(f"{'char':>12} {char.vocab_size:>7} {len(val_text):>11,} {1.0:>12.2f}")
    per_token = []
    for size in args.vocab_sizes:
        bpe = train_bpe(train_text, vocab_size=size)
        n_tokens = len(bpe.encode(val_text))
        per_token.append(len(val_text) / n_tokens)
        results[f"bpe{size}_chars_per_token"] = per_token[-1]
        results[f"bpe{size}_vocab_size"] = bpe.vocab_size
        print(f"{bpe.name:>12} {bpe.vocab_size:>7} {n_tokens:>11,} {per_token[-1]:>12.2f}")
        if size == args.vocab_sizes[-1]:
            merges = json.loads(bpe.tokenizer.to_str())["model"]["merges"][:10]
            example = bpe.tokens(" " + line)
    n_gpt2 = len(gpt2.encode(val_text))
    print(
        f"{'gpt2':>12} {gpt2.vocab_size:>7} {n_gpt2:>11,} {results['gpt2_chars_per_token']:>12.2f}"
    )
    print(f"\nthe first merges the BPE learned: {[''.join(m) for m in merges]}")
    print(f"bpe{args.vocab_sizes[-1]}: {example}")
    print(f"gpt2:    {gpt2.tokens(' ' + line)}")

    plot = _plot_compression(
        {
            "BPE trained on Shakespeare": (args.vocab_sizes, per_token),
            "GPT-2 (trained on web text)": ([gpt2.vocab_size], [results["gpt2_chars_per_token"]]),
            "characters": ([char.vocab_size], [1.0]),
        },
        run_dir(SPRINT, SCRIPT) / "chars_per_token.png",
    )
    print(f"plot: {plot}")
    results["plot"] = str(plot)
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
