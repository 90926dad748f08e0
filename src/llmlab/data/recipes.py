"""Checkable numeric questions for GRPO (sprint 16): recipe questions and word problems.

No package ships recipe questions, so we generate them: templates filled with random (but
seeded) dishes, ingredients and quantities, each with one numeric answer and its worked
solution, so a reward function can check an answer exactly.

- `recipe_questions(n, seed)`: scaling a recipe to more or fewer servings, batches, unit
  conversions (the factor is stated in the question), cooking-time arithmetic, leftovers and
  whole packs to buy; the first 75 % `train`, the rest `test`.
- `arithmetic_problems(n, seed)`: small one-step word problems (add, subtract, multiply,
  share; numbers up to 20), the same format; generated on the fly.
- `write_jsonl(items, path)` (atomic) and `read_jsonl(path)` (validated, one-line errors).
- `recipes_path()`: the committed file `data/recipes/recipes.jsonl`, written by
  `sprints/16_grpo_reasoning/results/make_recipe_dataset.py` with the default seed;
  `load_recipes(split)` reads it.

Every item is a dict: `id`, `kind`, `question`, `answer` (int or float), `unit`,
`solution` (how to get there, one line) and `split` (`train` or `test`).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from llmlab.checkpoint import atomic_write
from llmlab.errors import LLMLabError
from llmlab.paths import repo_root

RECIPES_SEED = 16
RECIPES_COUNT = 400
TRAIN_FRACTION = 0.75
FIELDS = ("id", "kind", "question", "answer", "unit", "solution", "split")
SPLITS = ("train", "test", "all")

DISHES = [
    "pancake",
    "tomato soup",
    "banana bread",
    "lentil curry",
    "apple pie",
    "risotto",
    "chocolate cake",
    "vegetable stew",
    "pizza dough",
    "fried rice",
    "lemon tart",
    "chili",
]
# (ingredient, unit, quantities that make sense for one recipe)
INGREDIENTS = [
    ("flour", "g", [120, 150, 200, 250, 300, 400, 500]),
    ("sugar", "g", [40, 50, 60, 75, 80, 100, 150]),
    ("butter", "g", [30, 40, 50, 60, 80, 100, 125]),
    ("milk", "ml", [100, 150, 200, 250, 300, 400, 500]),
    ("rice", "g", [150, 200, 250, 300, 360]),
    ("stock", "ml", [250, 300, 400, 500, 600, 750]),
    ("cheese", "g", [50, 60, 80, 100, 120, 150]),
    ("eggs", "eggs", [2, 3, 4, 6]),
    ("onions", "onions", [1, 2, 3, 4]),
    ("olive oil", "ml", [15, 20, 30, 45, 60]),
]
BAKES = [
    ("cookies", "cookies"),
    ("muffins", "muffins"),
    ("scones", "scones"),
    ("dumplings", "dumplings"),
    ("tortillas", "tortillas"),
]
# (from unit plural, singular, factor, to unit, ingredient)
CONVERSIONS = [
    ("cups", "cup", 240, "ml", "milk"),
    ("tablespoons", "tablespoon", 3, "teaspoons", "sugar"),
    ("kilograms", "kilogram", 1000, "g", "potatoes"),
    ("litres", "litre", 1000, "ml", "water"),
    ("ounces", "ounce", 28, "g", "chocolate"),
    ("pounds", "pound", 16, "ounces", "beef"),
    ("cups", "cup", 16, "tablespoons", "cream"),
    ("sticks", "stick", 113, "g", "butter"),
]


def _number(x: float) -> int | float:
    """An answer as an int when it is whole (300, not 300.0), else rounded to 2 places."""
    return int(round(x)) if abs(x - round(x)) < 1e-9 else round(x, 2)


def _fmt(x: float) -> str:
    return str(_number(x))


def _a(word: str) -> str:
    """The indefinite article for `word`: "an apple pie", "a risotto"."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _scale(rng: random.Random) -> dict[str, Any]:
    dish = rng.choice(DISHES)
    name, unit, amounts = rng.choice(INGREDIENTS)
    while True:
        n, m = rng.choice([2, 4, 6, 8]), rng.choice([1, 2, 3, 4, 5, 6, 8, 10, 12])
        q = rng.choice(amounts)
        if m != n and (q * m) % n == 0:
            break
    unit_text = name if unit == name else f"{unit} of {name}"
    ask = name if unit == name else f"{unit} of {name}"
    return {
        "kind": "scale",
        "question": f"{_a(dish).capitalize()} recipe for {n} servings uses {q} {unit_text}. "
        f"How many {ask} do you need for {m} servings?",
        "answer": _number(q * m / n),
        "unit": unit,
        "solution": f"{q} / {n} = {_fmt(q / n)} per serving; {_fmt(q / n)} x {m} = "
        f"{_fmt(q * m / n)}",
    }


def _batch(rng: random.Random) -> dict[str, Any]:
    item, _ = rng.choice(BAKES)
    name, unit, amounts = rng.choice(INGREDIENTS[:4] + INGREDIENTS[6:8])
    k, j, q = rng.choice([6, 8, 10, 12, 16, 20, 24]), rng.randint(2, 6), rng.choice(amounts)
    unit_text = name if unit == name else f"{unit} of {name}"
    return {
        "kind": "batch",
        "question": f"One batch of {item} makes {k} {item} and needs {q} {unit_text}. "
        f"How many {unit_text} do you need to make {k * j} {item}?",
        "answer": q * j,
        "unit": unit,
        "solution": f"{k * j} / {k} = {j} batches; {j} x {q} = {q * j}",
    }


def _convert(rng: random.Random) -> dict[str, Any]:
    plural, singular, factor, to, name = rng.choice(CONVERSIONS)
    x = rng.choice([1.5, 2, 2.5, 3, 4, 5, 6]) if factor % 2 == 0 else rng.randint(2, 8)
    return {
        "kind": "convert",
        "question": f"A recipe needs {_fmt(x)} {plural if x != 1 else singular} of {name}. "
        f"One {singular} is {factor} {to}. How many {to} of {name} is that?",
        "answer": _number(x * factor),
        "unit": to,
        "solution": f"{_fmt(x)} x {factor} = {_fmt(x * factor)}",
    }


def _total_time(rng: random.Random) -> dict[str, Any]:
    dish = rng.choice(DISHES)
    prep, cook, rest = (
        rng.choice([10, 15, 20, 25, 30]),
        rng.randint(4, 18) * 5,
        rng.randint(1, 4) * 5,
    )
    return {
        "kind": "total_time",
        "question": f"Making {dish} takes {prep} minutes of preparation, {cook} minutes of "
        f"cooking and {rest} minutes of resting. How many minutes is that from start to finish?",
        "answer": prep + cook + rest,
        "unit": "minutes",
        "solution": f"{prep} + {cook} + {rest} = {prep + cook + rest}",
    }


def _roast(rng: random.Random) -> dict[str, Any]:
    meat = rng.choice(["chicken", "leg of lamb", "pork shoulder", "turkey", "beef joint"])
    per_kg, extra = rng.choice([20, 30, 40, 45, 50]), rng.choice([10, 15, 20, 25])
    weight = rng.choice([1, 1.5, 2, 2.5, 3, 4])
    total = per_kg * weight + extra
    return {
        "kind": "roast_time",
        "question": f"Roast a {meat} for {per_kg} minutes per kilogram plus {extra} minutes. "
        f"How many minutes does a {_fmt(weight)} kg {meat} need?",
        "answer": _number(total),
        "unit": "minutes",
        "solution": f"{per_kg} x {_fmt(weight)} = {_fmt(per_kg * weight)}; "
        f"{_fmt(per_kg * weight)} + {extra} = {_fmt(total)}",
    }


def _trays(rng: random.Random) -> dict[str, Any]:
    item, _ = rng.choice(BAKES[:3])
    trays, bake, swap = rng.randint(2, 5), rng.choice([8, 10, 12, 15, 20]), rng.choice([2, 3, 5])
    total = trays * bake + (trays - 1) * swap
    return {
        "kind": "trays",
        "question": f"The oven holds one tray at a time. Each tray of {item} bakes for {bake} "
        f"minutes and changing trays takes {swap} minutes. How many minutes does it take to "
        f"bake {trays} trays?",
        "answer": total,
        "unit": "minutes",
        "solution": f"{trays} x {bake} = {trays * bake}; {trays - 1} changes x {swap} = "
        f"{(trays - 1) * swap}; total {total}",
    }


def _leftover(rng: random.Random) -> dict[str, Any]:
    name, unit, amounts = rng.choice([INGREDIENTS[0], INGREDIENTS[1], INGREDIENTS[3]])
    each = rng.choice(amounts)
    n = rng.randint(2, 4)
    pack = rng.choice([1000, 1500, 2000])
    while pack < n * each:
        n -= 1
    return {
        "kind": "leftover",
        "question": f"A pack holds {pack} {unit} of {name}. Each batch of {rng.choice(DISHES)} "
        f"uses {each} {unit}. How many {unit} of {name} are left after {n} batches?",
        "answer": pack - n * each,
        "unit": unit,
        "solution": f"{n} x {each} = {n * each}; {pack} - {n * each} = {pack - n * each}",
    }


def _packs(rng: random.Random) -> dict[str, Any]:
    dish = rng.choice(DISHES)
    eggs, n, k = rng.choice([2, 3, 4]), rng.choice([2, 4]), rng.randint(2, 6)
    m, needed = n * k, eggs * k
    boxes = math.ceil(needed / 6)
    return {
        "kind": "packs",
        "question": f"{_a(dish).capitalize()} recipe for {n} people needs {eggs} eggs. Eggs come in boxes of 6. "
        f"How many boxes do you need to buy to cook for {m} people?",
        "answer": boxes,
        "unit": "boxes",
        "solution": f"{eggs} x {m} / {n} = {needed} eggs; {needed} / 6 rounded up = {boxes}",
    }


RECIPE_KINDS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "scale": _scale,
    "batch": _batch,
    "convert": _convert,
    "total_time": _total_time,
    "roast_time": _roast,
    "trays": _trays,
    "leftover": _leftover,
    "packs": _packs,
}


NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana"]
THINGS = ["apples", "stickers", "marbles", "pencils", "cookies", "books", "shells", "cards"]


def _word_problem(rng: random.Random) -> dict[str, Any]:
    """One small one-step problem: numbers up to 20, products and shares of digits."""
    name, things = rng.choice(NAMES), rng.choice(THINGS)
    kind = rng.choice(["add", "subtract", "multiply", "share"])
    if kind == "add":
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        question = (
            f"{name} has {a} {things} and gets {b} more. How many {things} does {name} have now?"
        )
        answer, solution = a + b, f"{a} + {b} = {a + b}"
    elif kind == "subtract":
        a = rng.randint(5, 20)
        b = rng.randint(1, a - 1)
        question = f"{name} has {a} {things} and gives {b} away. How many {things} are left?"
        answer, solution = a - b, f"{a} - {b} = {a - b}"
    elif kind == "multiply":
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        question = f"{name} has {a} bags with {b} {things} in each bag. How many {things} is that?"
        answer, solution = a * b, f"{a} x {b} = {a * b}"
    else:
        a, b = rng.randint(2, 5), rng.randint(2, 9)
        question = (
            f"{name} shares {a * b} {things} equally among {a} friends. "
            f"How many {things} does each friend get?"
        )
        answer, solution = b, f"{a * b} / {a} = {b}"
    return {
        "kind": kind,
        "question": question,
        "answer": answer,
        "unit": things,
        "solution": solution,
    }


def _generate(
    make: Callable[[random.Random, int], dict[str, Any]], n: int, seed: int, prefix: str
) -> list[dict[str, Any]]:
    """n distinct questions (by text), ids `<prefix>-0000`..., the first 75 % `train`."""
    if n < 1:
        raise LLMLabError(f"the number of questions must be >= 1, got {n}")
    rng, items, seen = random.Random(seed), [], set()
    for _ in range(200 * n):  # duplicates are skipped; give up if the templates run dry
        item = make(rng, len(items))
        if item["question"] in seen:
            continue
        seen.add(item["question"])
        items.append(item)
        if len(items) == n:
            break
    else:
        raise LLMLabError(f"could not generate {n} distinct questions: ask for fewer")
    n_train = max(1, int(n * TRAIN_FRACTION)) if n > 1 else 1
    return [
        {"id": f"{prefix}-{i:04d}", **item, "split": "train" if i < n_train else "test"}
        for i, item in enumerate(items)
    ]


def recipe_questions(n: int = RECIPES_COUNT, seed: int = RECIPES_SEED) -> list[dict[str, Any]]:
    """n recipe questions of every kind in `RECIPE_KINDS` (drawn round-robin), deterministic."""
    kinds = list(RECIPE_KINDS.values())
    return _generate(lambda rng, i: kinds[i % len(kinds)](rng), n, seed, "recipe")


def arithmetic_problems(n: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """n everyday arithmetic word problems, deterministic for a seed."""
    return _generate(lambda rng, _: _word_problem(rng), n, seed, "arith")


def write_jsonl(items: Iterable[dict[str, Any]], path: Path | str) -> Path:
    """Write items as JSON lines (sorted keys: byte-identical for identical items), atomically."""
    text = "".join(json.dumps(item, sort_keys=True, ensure_ascii=False) + "\n" for item in items)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Read and validate a questions file: every line an object with the `FIELDS`."""
    path = Path(path)
    if not path.is_file():
        raise LLMLabError(
            f"{path} not found: rebuild it with "
            "`uv run python -m sprints.16_grpo_reasoning.results.make_recipe_dataset`"
        )
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LLMLabError(f"{path}:{number} is not valid JSON ({exc.msg})") from None
        missing = [f for f in FIELDS if not isinstance(item, dict) or f not in item]
        if missing:
            raise LLMLabError(f"{path}:{number} lacks the fields {missing}")
        if isinstance(item["answer"], bool) or not isinstance(item["answer"], int | float):
            raise LLMLabError(f"{path}:{number}: the answer must be a number")
        items.append(item)
    if not items:
        raise LLMLabError(f"{path} holds no questions: rebuild it or pass another file")
    return items


def recipes_path() -> Path:
    """The committed recipe questions, `<repo>/data/recipes/recipes.jsonl`."""
    return repo_root() / "data" / "recipes" / "recipes.jsonl"


def select_split(items: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """The items of one split (`train`, `test` or `all`), with a clear error if none."""
    if split not in SPLITS:
        raise LLMLabError(f"split must be one of {SPLITS}, got {split!r}")
    chosen = items if split == "all" else [q for q in items if q["split"] == split]
    if not chosen:
        raise LLMLabError(f"no questions in the {split!r} split: the dataset is empty there")
    return chosen


def load_recipes(split: str = "all", path: Path | str | None = None) -> list[dict[str, Any]]:
    """The recipe questions of a split, from the committed JSONL file (or `path`)."""
    return select_split(read_jsonl(recipes_path() if path is None else path), split)
