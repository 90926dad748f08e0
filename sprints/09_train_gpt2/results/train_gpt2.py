"""Train a GPT on Shakespeare: the course's main job.

The default run (no arguments) prepares the tiny Shakespeare corpus if it is missing, trains
a small character-level GPT on the CPU in about two minutes and scores it on every token of
the validation split. `--preset gpt2` is GPT-2 small with the GPT-2 tokenizer, for a GPU.

Run:   python -m sprints.09_train_gpt2.results.train_gpt2
       python -m sprints.09_train_gpt2.results.train_gpt2 --resume runs/09_train_gpt2/train_gpt2/<run>/checkpoints/last
       torchrun --nproc_per_node=2 -m sprints.09_train_gpt2.results.train_gpt2 --batch-size 16
Watch: tensorboard --logdir runs
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from llmlab.cli import (
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    run,
    torch_threads,
)
from llmlab.data.shakespeare import default_dir, prepare
from llmlab.device import keep_freed_memory
from llmlab.errors import LLMLabError
from llmlab.lm_training import TrainConfig, train
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir

# Presets fill every flag the user did not give. "tiny" is tuned for a 2-core CPU: see the
# sprint README for the curve and the recipe search behind these numbers.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        corpus="tiny",
        tokenizer="char",
        n_layer=2,
        n_head=4,
        n_embd=128,
        block_size=64,
        dropout=0.0,
        bias=False,
        pos_encoding="rope",
        mlp_act="gelu_erf",  # the exact GELU: the same curve, cheaper on a CPU
        qk_norm=False,
        tie_embeddings=True,
        batch_size=16,
        grad_accum=1,
        max_steps=2500,
        optimizer="muon",
        muon_lr=0.01,
        muon_momentum=0.95,
        muon_ns_steps=5,
        muon_ns_schedule="jordan",
        lr=8e-3,
        min_lr=5e-4,
        lr_schedule="cosine",
        warmup_steps=50,
        weight_decay=0.0,
        beta2=0.99,
        eval_interval=500,
        eval_batches=20,
        sample_tokens=200,
    ),
    "gpt2": dict(
        corpus="full",
        tokenizer="gpt2",
        n_layer=12,
        n_head=12,
        n_embd=768,
        block_size=1024,
        dropout=0.0,
        bias=True,
        pos_encoding="learned",
        mlp_act="gelu",
        qk_norm=False,
        tie_embeddings=True,
        batch_size=16,
        grad_accum=4,
        max_steps=2000,
        optimizer="adamw",
        lr=6e-4,
        min_lr=6e-5,
        lr_schedule="cosine",
        warmup_steps=100,
        weight_decay=0.1,
        beta2=0.95,
        eval_interval=250,
        eval_batches=20,
        sample_tokens=200,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train a GPT on Shakespeare (flags override the preset's values).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tiny",
        help="tiny: char-level CPU recipe; gpt2: GPT-2 small for a GPU",
    )
    d = p.add_argument_group("data")
    d.add_argument("--corpus", choices=["tiny", "full"], help="tiny (~1.2 MB) or all plays")
    d.add_argument("--tokenizer", choices=["char", "gpt2"], help="character-level or GPT-2 BPE")
    d.add_argument(
        "--data-dir",
        type=Path,
        help="a prepared dataset folder (default: data/shakespeare/<corpus>_<tokenizer>, "
        "prepared automatically when missing)",
    )
    m = p.add_argument_group("model")
    m.add_argument("--n-layer", type=positive_int, help="transformer blocks")
    m.add_argument("--n-head", type=positive_int, help="attention heads per block")
    m.add_argument("--n-embd", type=positive_int, help="embedding width (multiple of --n-head)")
    m.add_argument("--block-size", type=positive_int, help="context length in tokens")
    m.add_argument("--dropout", type=probability, help="dropout probability")
    m.add_argument(
        "--bias",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="biases in Linear and LayerNorm layers",
    )
    m.add_argument(
        "--pos-encoding",
        choices=["learned", "sinusoidal", "rope"],
        default=None,
        help="positional encoding",
    )
    m.add_argument(
        "--mlp-act",
        choices=["gelu", "gelu_erf", "relu2"],
        help="MLP activation (gelu: GPT-2's tanh form; gelu_erf: exact; relu2: ReLU^2)",
    )
    m.add_argument(
        "--qk-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="LayerNorm on each head's queries and keys",
    )
    m.add_argument(
        "--tie-embeddings",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the LM head reuses the token embedding (--no-tie-embeddings: its own matrix)",
    )
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=positive_int, help="sequences per micro-step per process")
    o.add_argument("--grad-accum", type=positive_int, help="micro-steps per optimiser step")
    o.add_argument("--max-steps", type=positive_int, help="optimiser steps (the schedule's length)")
    o.add_argument(
        "--optimizer",
        choices=["adamw", "muon"],
        help="adamw; or muon: Muon for the blocks' matrices, AdamW (--lr) for the rest",
    )
    o.add_argument("--lr", type=positive_float, help="peak learning rate (AdamW)")
    o.add_argument("--muon-lr", type=positive_float, help="peak learning rate of Muon")
    o.add_argument("--muon-momentum", type=probability, help="Muon's momentum")
    o.add_argument(
        "--muon-ns-steps", type=positive_int, help="Newton-Schulz iterations per Muon update"
    )
    o.add_argument(
        "--muon-ns-schedule",
        choices=["jordan", "polar_express"],
        help="Newton-Schulz coefficients: Keller Jordan's at every step, or Polar Express's "
        "(one set per step)",
    )
    o.add_argument("--min-lr", type=float, help="final learning rate of the decay (AdamW)")
    o.add_argument(
        "--lr-schedule",
        choices=["cosine", "wsd"],
        help="cosine: warmup + cosine decay; wsd: warmup, flat, linear decay at the end",
    )
    o.add_argument(
        "--decay-frac", type=probability, help="wsd: fraction of the steps spent decaying"
    )
    o.add_argument("--warmup-steps", type=non_negative_int, help="linear warmup steps")
    o.add_argument("--weight-decay", type=float, help="AdamW weight decay (matrices only)")
    o.add_argument("--beta2", type=float, help="AdamW beta2")
    o.add_argument(
        "--grad-clip", type=float, default=1.0, help="clip the global grad norm (0: off)"
    )
    e = p.add_argument_group("evaluation and logging")
    e.add_argument(
        "--eval-interval", type=positive_int, help="steps between evaluations/checkpoints"
    )
    e.add_argument("--eval-batches", type=positive_int, help="batches per periodic loss estimate")
    e.add_argument("--log-interval", type=positive_int, default=10, help="steps between log lines")
    e.add_argument("--sample-tokens", type=non_negative_int, help="tokens per generated sample")
    e.add_argument(
        "--eval-stride",
        type=non_negative_int,
        default=0,
        help="also score the validation split with a sliding window of this stride (every "
        "token then sees >= block_size - stride tokens of context); 0: off",
    )
    e.add_argument(
        "--no-final-eval",
        action="store_true",
        help="skip the full-validation-split evaluation at the end",
    )
    e.add_argument(
        "--out-dir",
        type=Path,
        help="run folder (default: runs/09_train_gpt2/train_gpt2/<time>, or the "
        "resumed checkpoint's run)",
    )
    s = p.add_argument_group("system")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    s.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help="CPU threads for torch; 0: torch's default (one per core: the fastest on a quiet "
        "machine); use 1 when other processes share the cores",
    )
    s.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="autocast dtype (auto: bfloat16 on CUDA, float32 on CPU)",
    )
    s.add_argument("--compile", action="store_true", help="torch.compile the model")
    s.add_argument("--seed", type=int, default=1337, help="random seed")
    s.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower)")
    s.add_argument(
        "--resume", type=Path, help="a checkpoint folder (.../checkpoints/last) to continue"
    )
    s.add_argument(
        "--stop-at-step",
        type=non_negative_int,
        default=0,
        help="stop after this step as if interrupted (the schedule still ends at "
        "--max-steps); 0: run to the end",
    )
    s.add_argument("--no-checkpoints", action="store_true", help="do not write checkpoints")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument(
        "--peak-tflops",
        type=float,
        default=0.0,
        help="the device's peak TFLOP/s, to log model FLOPs utilisation (e.g. 989 for "
        "an H100 in bf16)",
    )
    return p


def resolve(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any]]:
    """Merge preset and flags into a `TrainConfig`; return it with the data settings."""
    values = dict(PRESETS[args.preset])
    values.update({k: v for k, v in vars(args).items() if v is not None})
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(
        **{
            k: v
            for k, v in values.items()
            if k in names and k not in ("data_dir", "out_dir", "resume")
        }
    )
    cfg.final_eval = not args.no_final_eval
    cfg.save_checkpoints = not args.no_checkpoints
    cfg.progress = not args.no_progress
    cfg.resume = str(args.resume) if args.resume else ""
    if args.resume and not args.out_dir:
        out = args.resume.resolve().parent.parent  # <run>/checkpoints/last -> <run>
    elif args.out_dir:
        out = args.out_dir
    else:
        out = run_dir("09_train_gpt2", "train_gpt2")
    cfg.out_dir = str(out)
    return cfg, {"corpus": values["corpus"], "tokenizer": values["tokenizer"]}


def prepared_data(corpus: str, tokenizer: str, timeout_s: float = 900.0) -> Path:
    """The prepared dataset folder, building it first when missing (on rank 0 only).

    Under torchrun the other ranks wait for rank 0's `meta.json` (written last) instead of
    preparing the same files at the same time.
    """
    folder = default_dir(corpus, tokenizer)
    if int(os.environ.get("RANK", "0")) == 0:
        if not (folder / "meta.json").is_file():
            print(f"preparing {corpus} Shakespeare ({tokenizer} tokens) in {folder}")
        return prepare(corpus, tokenizer)
    deadline = time.monotonic() + timeout_s
    while not (folder / "meta.json").is_file():
        if time.monotonic() > deadline:
            raise LLMLabError(
                f"rank 0 did not prepare {folder} in {timeout_s:.0f} s: run prepare_data first"
            )
        time.sleep(0.5)
    return folder


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    # Reuse freed activation buffers instead of page-faulting fresh memory in every step
    # (glibc's malloc; ~5 % of a step of the default model on this course's 2-core VM).
    keep_freed_memory()
    with torch_threads(args.threads):
        return _main(args)


def _main(args: argparse.Namespace) -> dict[str, Any]:
    cfg, data = resolve(args)
    if args.data_dir:
        cfg.data_dir = str(args.data_dir)
    else:
        cfg.data_dir = str(prepared_data(data["corpus"], data["tokenizer"]))
    if args.resume and not args.resume.is_dir():
        raise LLMLabError(f"--resume {args.resume}: no such checkpoint folder")

    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return summary
    out = Path(cfg.out_dir)
    h, ev = summary["history"], summary["evals"]
    summary["loss_png"] = str(
        plot_curves(
            {
                "train (batch)": h["train_loss"],
                "train (eval)": ev["train_loss"],
                "val (eval)": ev["val_loss"],
            },
            out / "loss.png",
            title="GPT on Shakespeare",
            ylabel="cross-entropy (nats/token)",
            xs={"train (batch)": h["step"], "train (eval)": ev["step"], "val (eval)": ev["step"]},
        )
    )
    summary["lr_png"] = str(
        plot_curves(
            {"lr": h["lr"]},
            out / "lr_schedule.png",
            title="warmup + cosine",
            ylabel="learning rate",
            xs={"lr": h["step"]},
        )
    )
    if summary.get("sample"):
        print("\n--- sample ---\n" + summary["sample"] + "\n--------------")
    if "val_loss" in summary:
        print(
            f"done: {summary['steps']} steps, val loss {summary['val_loss']:.4f} nats/token over "
            f"all {summary['val_tokens']:,} validation tokens (perplexity "
            f"{summary['val_perplexity']:.2f}), {summary['tokens_per_s']:,.0f} tokens/s, "
            f"{summary['wall_time_s']:.0f} s; run folder {out}"
        )
        if "val_loss_sliding" in summary:
            print(
                f"sliding-window val loss (stride {cfg.eval_stride}): "
                f"{summary['val_loss_sliding']:.4f}"
            )
    else:
        print(f"stopped at step {summary['steps']}; resume with --resume {out}/checkpoints/last")
    return summary


if __name__ == "__main__":
    raise SystemExit(run(main))
