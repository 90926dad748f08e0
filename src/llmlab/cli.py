"""Command-line plumbing shared by every results script (all sprints).

- `run(main)`: call a script's `main()`, print an `LLMLabError` as one line, exit non-zero.
- `positive_int`, `positive_float`, `probability`: argparse types that reject bad values
  with a clear message instead of failing later with a traceback.
- `torch_threads(n)`: run a block with `n` torch CPU threads and restore the count after
  (tests call many scripts' `main()` in one process; the setting is process-wide).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from llmlab.errors import LLMLabError


def run(main: Callable[..., Any], argv: list[str] | None = None) -> int:
    """Run `main(argv)` as a script entry point and return the process exit code.

    Expected failures print `error: <message>` on stderr and return 2; Ctrl-C returns 130.
    """
    try:
        main(argv)
    except LLMLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use `n` torch CPU threads inside the block (0 or None: keep the current count), then
    restore the previous count, even if the block raises."""
    import torch  # lazily: `--help` of every script stays fast

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def probability(text: str) -> float:
    """argparse type: a float in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value
