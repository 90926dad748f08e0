"""Write the recipe-question dataset, `data/recipes/recipes.jsonl`, from its generator.

The committed file is exactly what this script writes with the defaults (a test checks it),
so anyone can see how every question was made and rebuild it: scaling a recipe to more or
fewer servings, batches, unit conversions, cooking-time arithmetic, leftovers and packs to
buy, each with one numeric answer and a one-line worked solution.

Run: python -m sprints.16_grpo_reasoning.results.make_recipe_dataset
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from llmlab.cli import positive_int, run
from llmlab.data.recipes import (
    RECIPES_COUNT,
    RECIPES_SEED,
    read_jsonl,
    recipe_questions,
    recipes_path,
    write_jsonl,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--n", type=positive_int, default=RECIPES_COUNT, help="number of questions")
    p.add_argument("--seed", type=int, default=RECIPES_SEED, help="generator seed")
    p.add_argument(
        "--out", type=Path, default=None, help="output file (default: data/recipes/recipes.jsonl)"
    )
    return p


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = build_parser().parse_args(argv)
    items = recipe_questions(args.n, args.seed)
    path = write_jsonl(items, args.out or recipes_path())
    assert read_jsonl(path) == items  # what we wrote reads back identically
    kinds = Counter(q["kind"] for q in items)
    splits = Counter(q["split"] for q in items)
    print(f"wrote {len(items)} questions to {path}: {dict(splits)}")
    for kind, count in sorted(kinds.items()):
        example = next(q for q in items if q["kind"] == kind)
        print(f"  {kind:11s} {count:4d}  e.g. {example['question']} -> {example['answer']}")
    return {"path": str(path), "n": len(items), "kinds": dict(kinds), "splits": dict(splits)}


if __name__ == "__main__":
    raise SystemExit(run(main))
