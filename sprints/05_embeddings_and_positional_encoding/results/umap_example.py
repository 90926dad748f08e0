"""UMAP of SmolLM2's real token embeddings for groups of words (numbers, colours, days, ...).

UMAP builds a neighbour graph (cosine) and lays it out in 2-D; the first fit compiles numba code (~10-50 s).
Run: python -m sprints.05_embeddings_and_positional_encoding.results.umap_example --neighbours 10
"""

from __future__ import annotations

import argparse

from llmlab.cli import run

from ._neighbour_maps import build_parser as _build_parser
from ._neighbour_maps import neighbour_map


def build_parser() -> argparse.ArgumentParser:
    return _build_parser("umap", __doc__.splitlines()[0])


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    return neighbour_map("umap", build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(run(main))
