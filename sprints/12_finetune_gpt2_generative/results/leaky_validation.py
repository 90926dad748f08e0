"""Why a validation perplexity of 1.12 is too good to be true: random overlapping windows.

One model, one text (book 1 of *Paradise Lost*), the same training budget, two ways to pick
the validation text:

- leaky: cut the text into windows `--stride` characters apart (so neighbours overlap by
  all but a few characters), shuffle them and keep 10 % for validation, as a quick
  `random_split(TextDataset(...))` does. Every validation window is, but for a few
  characters, also a training window: validation measures memory, not generalisation.
- held out: the last 10 % of the text, contiguous, never trained on.

The fine-tuned model is the learner's sprint-09 character GPT (an untrained one of the
same recipe when there is none yet). Both validation curves go to `leaky_vs_heldout.png`
and TensorBoard; the leaky one keeps falling while the honest one turns up.

Run: python -m sprints.12_finetune_gpt2_generative.results.leaky_validation
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmlab.cli import non_negative_int, positive_float, positive_int, run, torch_threads
from llmlab.data.books import load_paradise_lost
from llmlab.data.lm_dataset import TextDataset, check_length
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.evaluation import evaluate_lm, perplexity
from llmlab.finetune import FinetuneConfig, finetune, lm_loss, set_trainable
from llmlab.gpt import GPT, GPTConfig
from llmlab.plotting import plot_curves
from llmlab.pretrained import load_gpt_checkpoint
from llmlab.runs import make_writer, run_dir
from llmlab.tokenizers import CharTokenizer, fit_to_chars

SPRINT, SCRIPT = "12_finetune_gpt2_generative", "leaky_validation"
VAL_FRACTION = 0.1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model",
        default="sprint09",
        help="sprint09 (your sprint-09 GPT; an untrained one of its recipe if missing), "
        "scratch, or a checkpoint folder",
    )
    p.add_argument("--book", type=positive_int, default=1, help="which book of the ten (1-10)")
    p.add_argument(
        "--stride", type=positive_int, default=4, help="characters between two leaky windows"
    )
    p.add_argument("--steps", type=positive_int, default=1500, help="optimiser steps per run")
    p.add_argument("--batch-size", type=positive_int, default=32, help="windows per step")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="peak learning rate")
    p.add_argument("--eval-interval", type=positive_int, default=100, help="steps between evals")
    p.add_argument("--seed", type=int, default=0, help="seed for batches and the leaky split")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=non_negative_int, default=1, help="CPU threads (0: torch's)")
    p.add_argument("--out-dir", type=Path, help="run folder (default runs/12_.../<time>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def load_char_model(name: str) -> tuple[GPT, CharTokenizer, str]:
    """The sprint-09 GPT, or (no run yet / "scratch") an untrained GPT of its default recipe."""
    if name != "scratch":
        try:
            model, tokenizer = load_gpt_checkpoint(name)
        except LLMLabError as exc:
            if name != "sprint09":
                raise
            print(f"{exc}; meanwhile: an untrained GPT of the same recipe")
        else:
            if not isinstance(tokenizer, CharTokenizer):
                raise LLMLabError(f"{name} is not a character-level model: pass a char GPT")
            return model, tokenizer, "pretrained"
    text = "".join(s.text for s in load_paradise_lost())
    tokenizer = CharTokenizer(fit_to_chars(text, set(text) - {"\u2019"} | {"'"})[0])
    config = GPTConfig(tokenizer.vocab_size, 64, 2, 4, 128, bias=False, pos_encoding="rope")
    return GPT(config), tokenizer, "untrained"


@torch.no_grad()
def windows_loss(model: GPT, windows: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean next-token loss over a list of (x, y) windows (each scored in full)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), 256):
        chunk = windows[i : i + 256]
        x, y = torch.stack([w[0] for w in chunk]), torch.stack([w[1] for w in chunk])
        device = next(model.parameters()).device
        total += float(model(x.to(device), y.to(device))[1]) * y.numel()
        count += y.numel()
    model.train()
    return total / count


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return compare(args)


def compare(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    device = get_device(args.device)
    books = load_paradise_lost()
    if not 1 <= args.book <= len(books):
        raise LLMLabError(f"--book must be in [1, {len(books)}], got {args.book}")
    out = args.out_dir or run_dir(SPRINT, SCRIPT)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    base, tokenizer, origin = load_char_model(args.model)
    block = base.config.block_size
    text, mapped = fit_to_chars(books[args.book - 1].text, tokenizer.chars)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    check_length(len(ids), 2 * block)

    # Held out: the last 10 % of the book, contiguous. Leaky: overlapping windows of the
    # whole book, 10 % of them (at random) for validation.
    cut = int(len(ids) * (1 - VAL_FRACTION))
    honest_train = TextDataset(ids[:cut], block, stride=block)
    windows = TextDataset(ids, block, stride=args.stride)
    order = list(range(len(windows)))
    random.Random(args.seed).shuffle(order)
    n_val = int(len(order) * VAL_FRACTION)
    leaky_val = [windows[i] for i in order[:n_val]]
    leaky_train = [windows[i] for i in order[n_val:]]
    # Which characters of the book some training window covers, in each scheme.
    covered = np.zeros(len(ids), dtype=bool)
    for i in order[n_val:]:
        covered[i * args.stride : i * args.stride + block + 1] = True
    val_positions = np.concatenate(
        [np.arange(i * args.stride, i * args.stride + block + 1) for i in order[:n_val]]
    )
    leaky_seen = float(covered[val_positions].mean())
    print(
        f"{origin} GPT ({base.num_parameters():,} parameters) on book {args.book} "
        f"({len(ids):,} characters, {mapped} mapped); leaky: {len(leaky_train):,} train / "
        f"{len(leaky_val):,} validation windows {args.stride} apart; held out: the last "
        f"{len(ids) - cut:,} characters; run folder {out}"
    )
    print(
        f"{leaky_seen:.1%} of the characters in the leaky validation windows are also in "
        "training windows; 0% of the held-out ones"
    )

    def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {
            "input_ids": torch.stack([w[0] for w in batch]),
            "labels": torch.stack([w[1] for w in batch]),
        }

    curves: dict[str, list[dict[str, float]]] = {}
    writer = make_writer(out)
    try:
        for scheme, train_set, val_fn in (
            ("leaky", leaky_train, lambda m: windows_loss(m, leaky_val)),
            (
                "held_out",
                honest_train,
                lambda m: evaluate_lm(m, ids[cut:], block, 256, device)["loss"],
            ),
        ):
            model = set_trainable(GPT(base.config), "full").to(device)
            model.load_state_dict(base.state_dict())
            cfg = FinetuneConfig(
                max_steps=args.steps,
                batch_size=args.batch_size,
                lr=args.lr,
                min_lr=args.lr / 10,
                warmup_steps=20,
                eval_interval=args.eval_interval,
                seed=args.seed,
                metric="val_loss",
                save_checkpoints=False,
                progress=not args.no_progress,
            )
            print(f"\n{scheme} validation:")
            fit = finetune(
                model,
                train_set,
                collate,
                cfg,
                lambda m, fn=val_fn: {"val_loss": fn(m)},
                lm_loss,
                writer=None,
            )
            curves[scheme] = fit["evals"]
            for e in fit["evals"]:
                writer.add_scalar(f"{scheme}/val_perplexity", perplexity(e["val_loss"]), e["step"])
    finally:
        writer.close()

    def ppl(scheme: str) -> list[float]:
        return [perplexity(e["val_loss"]) for e in curves[scheme]]

    steps = [e["step"] for e in curves["leaky"]]
    png = plot_curves(
        {
            "random overlapping windows (leaky)": ppl("leaky"),
            "last 10 %, held out": ppl("held_out"),
        },
        out / "leaky_vs_heldout.png",
        xs={"random overlapping windows (leaky)": steps, "last 10 %, held out": steps},
        title=f"validation perplexity, book {args.book}: the same model and training",
        xlabel="optimiser step",
        ylabel="validation perplexity (per character)",
    )
    best = {s: min(ppl(s)) for s in curves}
    last = {s: ppl(s)[-1] for s in curves}
    print(f"\n{'validation':28s} {'start':>8s} {'best':>8s} {'final':>8s}")
    for scheme, label in (
        ("leaky", "random overlapping windows"),
        ("held_out", "held-out last 10 %"),
    ):
        print(f"{label:28s} {ppl(scheme)[0]:8.3f} {best[scheme]:8.3f} {last[scheme]:8.3f}")
    summary = {
        "origin": origin,
        "book": args.book,
        "stride": args.stride,
        "steps": args.steps,
        "epochs": args.steps * args.batch_size * block / len(ids),
        "leaky_val_chars_in_train": leaky_seen,
        "leaky_start": ppl("leaky")[0],
        "leaky_best": best["leaky"],
        "leaky_final": last["leaky"],
        "held_out_start": ppl("held_out")[0],
        "held_out_best": best["held_out"],
        "held_out_final": last["held_out"],
        "held_out_best_step": steps[ppl("held_out").index(best["held_out"])],
        "curves": curves,
        "png": str(png),
        "wall_seconds": time.perf_counter() - t_start,
        "out_dir": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"done in {summary['wall_seconds']:.0f} s; {png}")
    return summary


if __name__ == "__main__":
    raise SystemExit(run(main))
