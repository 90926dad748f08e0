"""Streaming: show text as it is generated, from `transformers` and from our own loop.

`model.generate` returns only when every token is done. To show tokens as they come, it
runs in a background thread and hands text over through a `TextIteratorStreamer` (a queue
the main thread iterates). Our decoding loop is already a Python generator
(`llmlab.generate.stream`), so it needs no thread. Both decode incrementally, holding back
a piece that would end in the middle of a multi-byte character. The script prints the
pieces as they arrive and reports the time to the first piece versus the whole answer,
and checks that both streams (greedy) spell the same text.

Run: python -m sprints.10_pretrained_generation_demo.results.streaming
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

from llmlab.cli import positive_int, run, torch_threads
from llmlab.generate import stream, stream_transformers
from llmlab.pretrained import load_pretrained


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default="smollm2", help="smollm2, sprint09, a folder or hub name")
    p.add_argument("--prompt", default="Write two sentences about a lighthouse keeper.",
                   help="the user message (sent through the chat template when there is one)")  # fmt: skip
    p.add_argument("--new-tokens", type=positive_int, default=48, help="tokens to generate")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="do not echo the pieces")
    return p


def consume(pieces: Iterator[str], quiet: bool) -> dict[str, Any]:
    """Read a stream to the end, timing the first piece and the whole."""
    start = time.perf_counter()
    first, texts = None, []
    for piece in pieces:
        if first is None:
            first = time.perf_counter() - start
        texts.append(piece)
        if not quiet:
            print(piece, end="", flush=True)
    if not quiet:
        print()
    total = time.perf_counter() - start
    return {"text": "".join(texts), "pieces": len(texts), "first_piece_s": first, "total_s": total}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        model, tok = load_pretrained(args.model)
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(
                [{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                return_dict=True, return_tensors="pt",
            )["input_ids"]  # fmt: skip
        else:
            ids = tok(args.prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        limit = getattr(model.config, "max_position_embeddings", 2048)
        n = min(args.new_tokens, limit - ids.shape[1])
        eos = model.generation_config.eos_token_id
        print(f"--- transformers: generate() in a thread + TextIteratorStreamer ({args.model})")
        hf = consume(
            stream_transformers(model, tok, ids, max_new_tokens=n, do_sample=False,
                                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None
                                else eos),
            args.quiet,
        )  # fmt: skip
        print("--- llmlab: our decoding loop as a Python generator")
        ours = consume(stream(model, tok, ids, n, greedy=True, eos_token_id=eos), args.quiet)
    for name, r in (("transformers", hf), ("llmlab", ours)):
        print(f"{name:>12}: {r['pieces']} pieces, first after {r['first_piece_s']:.2f} s, "
              f"all after {r['total_s']:.2f} s")  # fmt: skip
    same = hf["text"].strip() == ours["text"].strip()
    print(f"same text from both streams: {same}")
    return {"transformers": hf, "llmlab": ours, "same_text": same}


if __name__ == "__main__":
    raise SystemExit(run(main))
