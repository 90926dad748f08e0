"""Over-smoothing: stack more graph convolutions and every node ends up looking the same.

Part 1 applies the normalised adjacency k times to the karate club's one-hot features (no
weights, no training: pure message passing) and measures how alike the node vectors become:
their mean pairwise cosine similarity, and how far each is from the limit, the top eigenvector
of A-hat (proportional to the square root of the degree). Part 2 trains GCNs of growing depth
on the 4-community task (4 labelled members) over several seeds: accuracy falls with depth.

Run: python -m sprints.17_gnn.results.oversmoothing --depths 1 2 4 8 16
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from llmlab import gnn
from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.plotting import plot_curves
from llmlab.runs import make_writer, run_dir

from ._common import SPRINT, add_common_args, fmt, spread, with_threads

HOPS = (0, 1, 2, 4, 8, 16, 32, 64)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--depths", type=positive_int, nargs="+", default=[1, 2, 4, 8, 16], help="GCN depths"
    )
    parser.add_argument("--seeds", type=positive_int, default=5, help="seeds per depth")
    parser.add_argument("--epochs", type=positive_int, default=200, help="epochs per model")
    parser.add_argument("--hidden", type=positive_int, default=16, help="hidden width")
    add_common_args(parser, "first seed")
    return parser


def mean_cosine(h: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of distinct rows."""
    unit = F.normalize(h, dim=1)
    sim = unit @ unit.T
    n = h.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    return with_threads(build_parser().parse_args(argv), _main)


def _main(args: argparse.Namespace) -> dict[str, float | str]:
    start = time.perf_counter()
    karate = gnn.karate_club()
    folder = run_dir(SPRINT, "oversmoothing")
    writer = make_writer(folder)
    a_hat = gnn.normalized_adjacency(karate.edge_index, 34, dtype=torch.float64)
    # The limit of A-hat^k x: its top eigenvector, sqrt(degree + 1) up to scale.
    limit = F.normalize(
        gnn.dense_adjacency(karate.edge_index, 34).sum(1).add(1).sqrt().double(), dim=0
    )
    print("Part 1 - k rounds of message passing, no weights (karate club, one-hot features)")
    print(f"{'k':>4s} {'mean cosine':>12s} {'max distance to the limit':>26s}")
    h = karate.x.double()
    cosines, gaps, figures = [], [], {}
    for k in range(max(HOPS) + 1):
        if k in HOPS:
            unit = F.normalize(h, dim=0)  # each feature column vs the limit direction
            gap = float((unit - limit[:, None] * torch.sign(unit.T @ limit)).abs().max())
            cosines.append(mean_cosine(h))
            gaps.append(gap)
            writer.add_scalar("propagation/mean_cosine", cosines[-1], k)
            print(f"{k:4d} {cosines[-1]:12.3f} {gap:26.2e}")
        h = a_hat @ h
    figures |= {f"cosine_after_{k}": c for k, c in zip(HOPS, cosines, strict=True)}

    print(f"\nPart 2 - GCN depth vs accuracy on the other 30 members ({args.seeds} seeds)")
    accuracy: dict[int, list[float]] = {}
    similarity: dict[int, list[float]] = {}
    for depth in args.depths:
        for seed in range(args.seed, args.seed + args.seeds):
            seed_everything(seed)
            model = gnn.GCN(34, args.hidden, 4, num_layers=depth)
            gnn.train_node_classifier(
                model,
                karate.x,
                karate.edge_index,
                karate.communities,
                karate.train_mask,
                epochs=args.epochs,
            )
            with torch.no_grad():
                logits = model(karate.x, karate.edge_index)
                accuracy.setdefault(depth, []).append(
                    gnn.accuracy(logits, karate.communities, ~karate.train_mask)
                )
                similarity.setdefault(depth, []).append(
                    mean_cosine(model.embed(karate.x, karate.edge_index))
                    if depth > 1
                    else float("nan")
                )
        writer.add_scalar("depth/accuracy_mean", spread(accuracy[depth])["mean"], depth)
        sim = spread([s for s in similarity[depth] if s == s]) if depth > 1 else None
        sim_text = f"; last hidden layer, mean cosine {sim['mean']:.2f}" if sim else ""
        print(f"  {depth:2d} layers: accuracy {fmt(accuracy[depth])}{sim_text}")
        figures |= {f"depth_{depth}_accuracy_{k}": v for k, v in spread(accuracy[depth]).items()}
    figures["cosine_png"] = str(
        plot_curves(
            {"mean cosine between nodes": cosines},
            folder / "propagation.png",
            xs={"mean cosine between nodes": list(HOPS)},
            title="A-hat^k X: all nodes converge to one direction",
            xlabel="rounds of message passing k",
            ylabel="mean pairwise cosine",
        )
    )
    figures["depth_png"] = str(
        plot_curves(
            {"accuracy (mean over seeds)": [spread(accuracy[d])["mean"] for d in args.depths]},
            folder / "depth.png",
            xs={"accuracy (mean over seeds)": args.depths},
            title="deeper GCNs over-smooth",
            xlabel="layers",
            ylabel="accuracy",
        )
    )
    writer.close()
    figures["seconds"] = time.perf_counter() - start
    print(f"\npictures and TensorBoard logs in {folder} ({figures['seconds']:.0f} s)")
    return figures


if __name__ == "__main__":
    raise SystemExit(run(main))
