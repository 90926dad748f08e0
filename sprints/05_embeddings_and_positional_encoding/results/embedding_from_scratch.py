"""An embedding layer from scratch: a parameter table read by ids, equal to nn.Embedding in
values and gradients (padding_idx included), and the same thing as one-hot @ table.

Run: python -m sprints.05_embeddings_and_positional_encoding.results.embedding_from_scratch
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.embedding import Embedding
from llmlab.errors import LLMLabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--vocab", type=positive_int, default=10, help="rows of the table (vocabulary size)"
    )
    parser.add_argument("--dim", type=positive_int, default=4, help="embedding width")
    parser.add_argument("--padding-idx", type=int, default=0, help="id of the padding token")
    parser.add_argument("--seed", type=int, default=0, help="seed for the table and the ids")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    if not -args.vocab <= args.padding_idx < args.vocab:
        raise LLMLabError(
            f"--padding-idx must be in [-{args.vocab}, {args.vocab}), got {args.padding_idx}"
        )
    seed_everything(args.seed)
    ref = nn.Embedding(args.vocab, args.dim, padding_idx=args.padding_idx)
    mine = Embedding.from_pretrained(ref.weight.detach(), padding_idx=args.padding_idx)
    print(f"table: {tuple(mine.weight.shape)} = {mine.weight.numel()} parameters")

    # A padded batch: id `padding_idx` fills the end of the shorter sequence.
    ids = torch.randint(0, args.vocab, (2, 6))
    ids[1, 4:] = args.padding_idx % args.vocab
    out, ref_out = mine(ids), ref(ids)
    print(f"ids {ids.tolist()} -> vectors {tuple(out.shape)}")

    # Looking up row i is multiplying the one-hot vector of i by the table.
    one_hot = F.one_hot(ids, args.vocab).float() @ mine.weight

    grad = torch.randn_like(out)
    out.backward(grad)
    ref_out.backward(grad)
    pad_row = args.padding_idx % args.vocab
    counts = torch.bincount(ids.flatten(), minlength=args.vocab)
    results = {
        "forward_max_diff": (out - ref_out).abs().max().item(),
        "one_hot_max_diff": (out - one_hot).abs().max().item(),
        "grad_max_diff": (mine.weight.grad - ref.weight.grad).abs().max().item(),
        "padding_row_grad_abs_sum": mine.weight.grad[pad_row].abs().sum().item(),
        "unused_rows": float((counts == 0).sum()),
        "unused_rows_grad_abs_sum": mine.weight.grad[counts == 0].abs().sum().item(),
    }
    print(f"forward  max |ours - nn.Embedding| = {results['forward_max_diff']:.1e}")
    print(f"one-hot  max |lookup - one_hot @ W| = {results['one_hot_max_diff']:.1e}")
    print(f"gradient max |ours - nn.Embedding| = {results['grad_max_diff']:.1e}")
    print(
        f"padding row {pad_row} gets gradient {results['padding_row_grad_abs_sum']:.1f}; "
        f"{int(results['unused_rows'])} unused rows get {results['unused_rows_grad_abs_sum']:.1f}"
    )
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
