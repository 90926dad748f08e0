"""The algorithmic baseline: `torch.flip` reverses every sequence exactly, at any length, in
microseconds; a model trained to reverse is right only on the lengths it was trained on.

1. `torch.flip` on a right-padded batch moves the padding to the front: right only for the
   full-length rows. Flipping each row within its own length fixes it.
2. The learned model is trained on lengths `--min-length`..`--length` (three seeds) and
   tested on those lengths and on longer ones (`--test-length`): the length-generalisation
   split of `llmlab.data.seq_tasks`. `--checkpoint DIR` tests a saved model instead
   (e.g. `01_encoder_decoder`'s) and skips training.
3. Time to reverse the same test batch: flip vs greedy decoding (wall clock).

Run: python -m sprints.15_encoder_decoder.results.06_flip_baseline
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from llmlab.cli import positive_int, run, torch_threads
from llmlab.data.seq_tasks import SeqBatch, length_split
from llmlab.errors import LLMLabError
from llmlab.plotting import plot_curves
from llmlab.runs import make_writer, run_dir
from llmlab.seq2seq import Seq2SeqTransformer
from llmlab.seq2seq_training import evaluate, mean_std, train_seq2seq

from ._common import SPRINT, TEST_SEED, add_training_args, base_config, seeds

SCRIPT = "06_flip_baseline"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--test-length",
        type=positive_int,
        default=16,
        help="longest test length; lengths --length + 1 .. this are never seen in training",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="DIR",
        help="test this saved reversal model (01_encoder_decoder writes one) instead of training",
    )
    # Lengths 1-10 take about twice the steps of fixed length 10 to learn (measured).
    add_training_args(parser, task=None, steps=600)
    parser.set_defaults(min_length=1)
    return parser


def flip_padded(src: torch.Tensor, lengths: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Reverse each row within its own length: `torch.flip`, then shift the row left by its
    padding so the padding goes back to the right."""
    S = src.shape[1]
    flipped = torch.flip(src, dims=[1])  # row of length n: pads first, then x_n .. x_1
    index = (torch.arange(S)[None, :] + (S - lengths)[:, None]).clamp(max=S - 1)
    out = flipped.gather(1, index)
    return out.masked_fill(torch.arange(S)[None, :] >= lengths[:, None], pad_id)


def accuracy(pred: torch.Tensor, batch: SeqBatch) -> tuple[float, float]:
    """(token accuracy, exact match) of predicted symbol ids against the batch's targets."""
    S = batch.src.shape[1]
    gold = batch.tgt_out[:, :S]
    mask = torch.arange(S)[None, :] < batch.lengths[:, None]
    right = (pred[:, :S] == gold) & mask
    return right.sum().item() / mask.sum().item(), (right | ~mask).all(1).float().mean().item()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.test_length <= args.length:
        raise LLMLabError(
            f"--test-length {args.test_length} must be longer than --length {args.length}"
        )
    with torch_threads(args.threads):
        return compare_with_flip(args)


def compare_with_flip(args: argparse.Namespace) -> dict[str, Any]:
    out = run_dir(SPRINT, SCRIPT)
    train_task, long_task = length_split(
        "reverse", args.symbols, args.length, args.test_length, train_min_len=args.min_length
    )
    models = [load_checkpoint(args)] if args.checkpoint else None
    g = torch.Generator().manual_seed(TEST_SEED)
    splits = {
        f"seen lengths {train_task.min_len}-{train_task.max_len}": train_task.sample(
            args.test_size, g
        ),
        f"longer {long_task.min_len}-{long_task.max_len}": long_task.sample(args.test_size, g),
    }
    figures: dict[str, Any] = {}
    print("torch.flip as a reverser (token accuracy, exact match):")
    for name, batch in splits.items():
        naive = accuracy(torch.flip(batch.src, dims=[1]), batch)
        fixed = accuracy(flip_padded(batch.src, batch.lengths), batch)
        print(f"  {name:<20} flip of the padded batch {naive[0]:.3f} / {naive[1]:.3f}, "
              f"flip within each length {fixed[0]:.3f} / {fixed[1]:.3f}")  # fmt: skip
        key = "seen" if name.startswith("seen") else "longer"
        figures |= {f"naive_flip_{key}_exact": naive[1], f"flip_{key}_exact": fixed[1]}

    if models is None:
        models = []
        for seed in seeds(args):
            cfg = base_config(
                args, task="reverse", seed=seed, model_max_len=max(32, args.test_length + 1)
            )
            writer = make_writer(out / f"seed{seed}")
            try:
                models.append(train_seq2seq(cfg, writer)["model"].cpu())
            finally:
                writer.close()
    source = f"checkpoint {args.checkpoint}" if args.checkpoint else f"{len(models)} seeds"
    print(f"\nthe learned model ({source}; mean ± std):")
    by_length: dict[str, list[float]] = {}
    for name, batch in splits.items():
        results = [evaluate(m, batch) for m in models]
        key = "seen" if name.startswith("seen") else "longer"
        for figure in ("fr_token_acc", "fr_exact"):
            mean, std = mean_std([r[figure] for r in results])
            figures[f"model_{key}_{figure}_mean"], figures[f"model_{key}_{figure}_std"] = mean, std
        print(
            f"  {name:<20} token accuracy {figures[f'model_{key}_fr_token_acc_mean']:.3f} ± "
            f"{figures[f'model_{key}_fr_token_acc_std']:.3f}, exact match "
            f"{figures[f'model_{key}_fr_exact_mean']:.3f} ± {figures[f'model_{key}_fr_exact_std']:.3f}"
        )
        for n in sorted(set(batch.lengths.tolist())):
            rows = batch.lengths == n
            sub = SeqBatch(
                batch.src[rows, :n],
                batch.tgt_in[rows, : n + 1],
                batch.tgt_out[rows, : n + 1],
                batch.lengths[rows],
            )
            exact = mean_std([evaluate(m, sub)["fr_exact"] for m in models])[0]
            by_length.setdefault("learned model", []).append(exact)
            by_length.setdefault("torch.flip (within length)", []).append(
                accuracy(flip_padded(sub.src, sub.lengths), sub)[1]
            )
    lengths = list(range(train_task.min_len, long_task.max_len + 1))
    figures["exact_by_length"] = by_length["learned model"]
    print("  exact match by length: " + " ".join(
        f"{n}:{e:.2f}" for n, e in zip(lengths, by_length["learned model"], strict=True)
    ))  # fmt: skip
    figures["by_length_png"] = str(
        plot_curves(
            by_length,
            out / "exact_match_by_length.png",
            title=f"reversal: exact match by length (trained on {train_task.min_len}-{train_task.max_len})",
            xlabel="sequence length",
            ylabel="exact match",
            xs={k: lengths for k in by_length},
        )
    )
    figures |= timing(models[0], splits[next(iter(splits))])
    print(f"\nfigures and TensorBoard runs: {out}")
    return figures


def load_checkpoint(args: argparse.Namespace) -> Seq2SeqTransformer:
    """A saved reversal model, with one-line errors when it cannot be the one asked for."""
    model = Seq2SeqTransformer.load(args.checkpoint)
    task_file = args.checkpoint / "task.json"
    task = json.loads(task_file.read_text()) if task_file.is_file() else {}
    if task.get("task", "reverse") != "reverse":
        raise LLMLabError(
            f"{args.checkpoint} was trained on {task['task']!r}; torch.flip is the baseline of "
            "'reverse': pass a reversal checkpoint (01_encoder_decoder saves one)"
        )
    vocab = args.symbols + 3
    if model.config.src_vocab_size != vocab or model.config.tgt_vocab_size != vocab:
        raise LLMLabError(
            f"vocabulary mismatch: {args.checkpoint} reads {model.config.src_vocab_size - 3} "
            f"symbols, this run uses --symbols {args.symbols}: pass "
            f"--symbols {model.config.src_vocab_size - 3}"
        )
    if args.test_length + 1 > model.config.max_len:
        raise LLMLabError(
            f"--test-length {args.test_length} needs {args.test_length + 1} positions but "
            f"{args.checkpoint} has max_len={model.config.max_len}: lower --test-length"
        )
    return model.eval()


@torch.no_grad()
def timing(model: Seq2SeqTransformer, batch: SeqBatch) -> dict[str, float]:
    S = batch.src.shape[1]
    times: dict[str, list[float]] = {"flip": [], "model": []}
    for _ in range(3):  # best of three, alternating
        start = time.perf_counter()
        flip_padded(batch.src, batch.lengths)
        times["flip"].append(time.perf_counter() - start)
        start = time.perf_counter()
        model.greedy_decode(batch.src, S + 1)
        times["model"].append(time.perf_counter() - start)
    flip, learned = min(times["flip"]), min(times["model"])
    n = len(batch.src)
    print(
        f"\nreversing {n} sequences: torch.flip {flip * 1e6 / n:.2f} µs per sequence, the model "
        f"{learned * 1e6 / n:.0f} µs ({learned / flip:.0f}x; wall clock, machine under load); "
        f"parameters: 0 vs {model.num_parameters():,}"
    )
    return {"flip_us_per_seq": flip * 1e6 / n, "model_us_per_seq": learned * 1e6 / n}


if __name__ == "__main__":
    raise SystemExit(run(main))
