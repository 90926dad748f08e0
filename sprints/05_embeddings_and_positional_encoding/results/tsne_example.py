"""t-SNE of SmolLM2's real token embeddings for groups of words (numbers, colours, days, ...).

t-SNE keeps each word's nearest neighbours close (and says little about distances between groups).
Run: python -m sprints.05_embeddings_and_positional_encoding.results.tsne_example --neighbours 10
"""

from __future__ import annotations

import argparse

from llmlab.cli import run

from ._neighbour_maps import build_parser as _build_parser
from ._neighbour_maps import neighbour_map


def build_parser() -> argparse.ArgumentParser:
    return _build_parser("tsne", __doc__.splitlines()[0])


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    return neighbour_map("tsne", build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(run(main))
