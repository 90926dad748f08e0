"""UMAP of SmolLM2's real token embeddings for groups of words (numbers, colours, days, ...).

UMAP builds a neighbour graph (cosine) and lays it out in 2-D; the first fit compiles numba code (~10-50 s).
Run: python -m sprints.05_embeddings_and_positional_encoding.results.umap_example --neighbours 10
"""

from __future__ import annotations

import argparse

from llmlab.cli import positive_int, run
from llmlab.embedding import project_2d, word_map
from llmlab.errors import LLMLabError
from llmlab.pretrained import word_embeddings
from llmlab.runs import run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="smollm2",
        help="'smollm2' (offline, bundled), a model folder, or a hub name such as gpt2 (downloads)",
    )
    parser.add_argument(
        "--neighbours",
        type=positive_int,
        default=10,
        help="UMAP n_neighbors: how many neighbours each word pays attention to",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of UMAP and of the shuffled-label baseline"
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    vectors, words, groups = word_embeddings(name_or_path=args.model)
    if args.neighbours >= len(words):
        raise LLMLabError(f"--neighbours must be below the number of words ({len(words)})")
    print(
        f"{len(words)} single-token words in {len(set(groups))} groups, {vectors.shape[1]}-D vectors"
    )
    points = project_2d(vectors, "umap", seed=args.seed, neighbours=args.neighbours)
    folder = run_dir("05_embeddings_and_positional_encoding", "umap_example")
    title = f"UMAP of {args.model} token embeddings (n_neighbors={args.neighbours})"
    return word_map(points, words, groups, folder / "umap_words.png", title, seed=args.seed)


if __name__ == "__main__":
    raise SystemExit(run(main))
