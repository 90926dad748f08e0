"""PCA of SmolLM2's real token embeddings for groups of words (numbers, colours, days, ...):
our from-scratch PCA equals scikit-learn's, and the 2-D picture already groups some meanings.

Run: python -m sprints.05_embeddings_and_positional_encoding.results.pca_example
(first run converts the bundled SmolLM2 model once, ~20-80 s)
"""

from __future__ import annotations

import argparse

import torch

from llmlab.cli import run
from llmlab.embedding import pca, word_map
from llmlab.pretrained import word_embeddings
from llmlab.runs import run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="smollm2",
        help="'smollm2' (offline, bundled), a model folder, or a hub name such as gpt2 (downloads)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the shuffled-label baseline")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    from sklearn.decomposition import PCA

    vectors, words, groups = word_embeddings(name_or_path=args.model)
    unit = torch.nn.functional.normalize(vectors, dim=1)  # direction = meaning (cosine)
    print(
        f"{len(words)} single-token words in {len(set(groups))} groups, {vectors.shape[1]}-D vectors"
    )

    points, ratio = pca(unit, 2)
    ref = torch.as_tensor(PCA(2).fit_transform(unit.numpy()), dtype=torch.float32)
    # SVD fixes each direction only up to its sign: compare after matching signs.
    signs = torch.sign((points * ref).sum(dim=0))
    parity = (points - ref * signs).abs().max().item()
    full_ratio = pca(unit, min(unit.shape))[1]
    print(
        f"max |ours - sklearn PCA| = {parity:.1e}; the 2 components explain "
        f"{ratio.sum():.1%} of the variance ({ratio[0]:.1%} + {ratio[1]:.1%}); "
        f"10 would explain {full_ratio[:10].sum():.1%}"
    )

    folder = run_dir("05_embeddings_and_positional_encoding", "pca_example")
    title = f"PCA of {args.model} token embeddings ({ratio.sum():.0%} of variance)"
    scores = word_map(points, words, groups, folder / "pca_words.png", title, seed=args.seed)
    return {
        "sklearn_max_diff": parity,
        "explained_variance_2d": ratio.sum().item(),
        **scores,
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
