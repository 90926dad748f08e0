"""The encoder-decoder transformer: parity with PyTorch, the cached decoder, beam search, and
what cross-attention learns when the model is trained to reverse sequences.

1. Our `Seq2SeqTransformer` with the weights of a `torch.nn.Transformer` gives the same
   logits and gradients (post-norm and pre-norm, padded batches).
2. It is trained with teacher forcing to reverse sequences (three seeds).
3. The cached decoder gives the same tokens as recomputing the whole prefix every step,
   faster; greedy decoding vs beam search on the trained models.
4. The cross-attention map of the trained model: output t reads source position n + 1 - t.
The seed-0 model is saved (with its task) for `06_flip_baseline --checkpoint`.

Run: python -m sprints.15_encoder_decoder.results.01_encoder_decoder
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from typing import Any

import torch
from torch import nn

from llmlab.cli import positive_int, run, torch_threads
from llmlab.device import seed_everything
from llmlab.plotting import plot_heatmap
from llmlab.runs import make_writer, run_dir
from llmlab.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from llmlab.seq2seq_training import evaluate, mean_std, train_seq2seq

from ._common import SPRINT, add_training_args, base_config, seeds, test_batch

SCRIPT = "01_encoder_decoder"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--beam-size", type=positive_int, default=4, help="beams for the beam-search comparison"
    )
    add_training_args(parser, task="reverse", steps=150)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        out = run_dir(SPRINT, SCRIPT)
        figures = parity(args)
        figures |= train_and_decode(args, out)
        print(f"\nfigures, checkpoint and TensorBoard runs: {out}")
        return figures


def parity(args: argparse.Namespace) -> dict[str, float]:
    """Max |difference| of the logits and of the embedding and head gradients (which flow
    back through every layer), ours vs `torch.nn.Transformer` with the same weights."""
    print("parity with torch.nn.Transformer (same weights, padded batch, float32):")
    figures: dict[str, float] = {}
    for norm_first in (False, True):
        seed_everything(args.seed)
        cfg = Seq2SeqConfig(
            13, 13, args.d_model, args.heads, args.d_ff, 2, 2, max_len=16, norm_first=norm_first
        )
        with warnings.catch_warnings():  # about its nested-tensor fast path: irrelevant here
            warnings.simplefilter("ignore", UserWarning)
            ref = nn.Transformer(
                cfg.d_model, cfg.n_heads, 2, 2, cfg.d_ff, 0.0, "gelu", batch_first=True,
                norm_first=norm_first,
            )  # fmt: skip
        ours = Seq2SeqTransformer(cfg).copy_from_torch(ref)
        outer = copy.deepcopy(ours)  # the reference's embeddings and head, with their own grads
        src = torch.randint(3, 13, (4, 9))
        src[1, 6:], src[2, 2:] = 0, 0  # padding
        tgt_in = torch.cat([torch.ones(4, 1, dtype=torch.long), torch.randint(3, 13, (4, 7))], 1)
        tgt_out = torch.randint(3, 13, (4, 8))
        logits, ref_logits = ours(src, tgt_in), outer.through_torch(ref, src, tgt_in)
        loss_fn = nn.functional.cross_entropy
        loss_fn(logits.flatten(0, 1), tgt_out.flatten()).backward()
        loss_fn(ref_logits.flatten(0, 1), tgt_out.flatten()).backward()
        # The embedding gradients flow back through every layer of both stacks.
        grad = max(
            (a.grad - b.grad).abs().max().item()
            for a, b in zip(ours.parameters(), outer.parameters(), strict=True)
            if a.grad is not None and b.grad is not None
        )
        name = "pre_norm" if norm_first else "post_norm"
        figures[f"{name}_logit_diff"] = (logits - ref_logits).abs().max().item()
        figures[f"{name}_grad_diff"] = grad
        print(
            f"  norm_first={norm_first!s:<5}  logits {figures[f'{name}_logit_diff']:.1e}, "
            f"gradients of embeddings and head {grad:.1e}"
        )
    return figures


def train_and_decode(args: argparse.Namespace, out) -> dict[str, Any]:
    test = test_batch(base_config(args), args.test_size)
    S = test.src.shape[1]
    rows: dict[str, list[float]] = {}
    model0 = None
    for seed in seeds(args):
        cfg = base_config(args, seed=seed)
        writer = make_writer(out / f"seed{seed}")
        try:
            model = train_seq2seq(cfg, writer)["model"].cpu()
        finally:
            writer.close()
        model0 = model0 or model
        figures = evaluate(model, test)
        beam, beam_score = model.beam_search(test.src, args.beam_size, S + 1)
        greedy = model.greedy_decode(test.src, S + 1)
        real = test.tgt_out != 0
        beam_exact = ((beam[:, : real.shape[1]] == test.tgt_out) | ~real).all(1).float().mean()
        for key, value in (
            ("tf_token_acc", figures["tf_token_acc"]),
            ("fr_token_acc", figures["fr_token_acc"]),
            ("greedy_exact", figures["fr_exact"]),
            ("beam_exact", beam_exact.item()),
            ("beam_differs", (beam != greedy[:, : beam.shape[1]]).any(1).float().mean().item()),
            (
                "beam_score_diff",
                (beam_score - model.sequence_log_prob(test.src, beam)).abs().max().item(),
            ),
        ):
            rows.setdefault(key, []).append(value)
    print(
        f"\n{args.task} of length {args.min_length or args.length}-{args.length}, "
        f"{args.steps} steps of teacher forcing, seeds {seeds(args)}, {args.test_size} test "
        "examples (mean ± std):"
    )
    figures: dict[str, Any] = {}
    for key, values in rows.items():
        mean, std = mean_std(values)
        figures[f"{key}_mean"], figures[f"{key}_std"] = mean, std
        print(f"  {key:<16} {mean:.4f} ± {std:.4f}")
    figures |= cached_vs_full(model0, test, S)
    figures["cross_attention_png"] = str(cross_attention_map(model0, test, out))
    model0.save(
        out / "checkpoint",
        extra={"task": args.task, "n_symbols": args.symbols, "max_len": args.length},
    )
    figures["checkpoint"] = str(out / "checkpoint")
    return figures


@torch.no_grad()
def cached_vs_full(model: Seq2SeqTransformer, test, S: int) -> dict[str, float]:
    """Same tokens with and without the cache; the logits step by step vs in one pass."""
    timings = {}
    for use_cache in (True, False, True, False):  # alternate: load changes slowly over time
        start = time.perf_counter()
        tokens = model.greedy_decode(test.src, S + 1, use_cache=use_cache)
        timings.setdefault(use_cache, []).append(time.perf_counter() - start)
        timings.setdefault(f"tokens{use_cache}", tokens)
    state = model.start_decoding(test.src[:64])
    tgt_in = test.tgt_in[:64]
    steps = [model.decode_step(tgt_in[:, t : t + 1], state) for t in range(tgt_in.shape[1])]
    diff = (torch.cat(steps, 1) - model(test.src[:64], tgt_in)).abs().max().item()
    same = torch.equal(timings["tokensTrue"], timings["tokensFalse"])
    cached, full = min(timings[True]), min(timings[False])
    print(
        f"\ncached decoder vs full recomputation: same greedy tokens: {same}; logits "
        f"step by step vs one pass: max diff {diff:.1e}; greedy decoding of {len(test.src)} "
        f"sequences {cached * 1000:.0f} ms cached vs {full * 1000:.0f} ms recomputed "
        f"({full / cached:.2f}x; wall clock, machine under load)"
    )
    return {
        "cache_same_tokens": float(same),
        "cache_logit_diff": diff,
        "cache_speedup": full / cached,
    }


@torch.no_grad()
def cross_attention_map(model: Seq2SeqTransformer, test, out):
    """Cross-attention weights of the last decoder layer (mean over heads), example 0."""
    block = model.decoder.layers[-1]
    captured: dict[str, Any] = {}
    handle = block.cross_attn.register_forward_hook(
        lambda module, a, kw, o: captured.update(args=a, kwargs=kw), with_kwargs=True
    )
    model(test.src[:1], test.tgt_in[:1])
    handle.remove()
    _, weights = block.cross_attn(*captured["args"], **captured["kwargs"], need_weights=True)
    src = [str(t - 3) for t in test.src[0].tolist()]
    tgt = ["BOS"] + [str(t - 3) for t in test.tgt_in[0, 1:].tolist()]
    return plot_heatmap(
        weights[0].mean(0).numpy(),
        out / "cross_attention.png",
        title="cross-attention of the trained model (last decoder layer, mean of heads)",
        xlabel="source token",
        ylabel="decoder input (predicting the next output)",
        xticklabels=src,
        yticklabels=tgt,
    )


if __name__ == "__main__":
    raise SystemExit(run(main))
