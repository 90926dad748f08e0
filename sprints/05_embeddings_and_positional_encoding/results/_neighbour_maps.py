"""The shared body of `tsne_example` and `umap_example`: both lay out the same words with a
neighbour-based method and differ only in the method (and the name of its neighbour knob)."""

from __future__ import annotations

import argparse

from llmlab.cli import positive_int
from llmlab.embedding import project_2d, word_map
from llmlab.errors import LLMLabError
from llmlab.pretrained import word_embeddings
from llmlab.runs import run_dir

LABELS = {"tsne": ("t-SNE", "perplexity"), "umap": ("UMAP", "n_neighbors")}


def build_parser(method: str, description: str) -> argparse.ArgumentParser:
    label, knob = LABELS[method]
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--model",
        default="smollm2",
        help="'smollm2' (offline, bundled), a model folder, or a hub name such as gpt2 (downloads)",
    )
    parser.add_argument(
        "--neighbours",
        type=positive_int,
        default=10,
        help=f"{label} {knob}: how many neighbours each word pays attention to",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help=f"seed of {label} and of the shuffled-label baseline"
    )
    return parser


def neighbour_map(method: str, args: argparse.Namespace) -> dict[str, float | str]:
    """Embed the word groups, project them with `method`, score and draw the map."""
    label, knob = LABELS[method]
    vectors, words, groups = word_embeddings(name_or_path=args.model)
    if args.neighbours >= len(words):
        raise LLMLabError(f"--neighbours must be below the number of words ({len(words)})")
    print(
        f"{len(words)} single-token words in {len(set(groups))} groups, {vectors.shape[1]}-D vectors"
    )
    points = project_2d(vectors, method, seed=args.seed, neighbours=args.neighbours)
    folder = run_dir("05_embeddings_and_positional_encoding", f"{method}_example")
    title = f"{label} of {args.model} token embeddings ({knob}={args.neighbours})"
    return word_map(points, words, groups, folder / f"{method}_words.png", title, seed=args.seed)
