"""Node embeddings of the karate club: do they cluster by community? PCA, t-SNE and UMAP.

Three ways to embed the 34 members: a GCN with random weights (no training at all), the hidden
layer of a GCN trained on the 4 labelled members, and a graph auto-encoder trained only to
predict friendships (no labels). For each: clustering quality in the embedding space over
several seeds (silhouette by community, adjusted Rand index of k-means clusters against the
communities and against the two clubs), next to a classic non-neural reference (greedy
modularity communities of networkx), and one picture per embedding and projection.

Run: python -m sprints.17_gnn.results.node_embeddings --methods pca tsne umap
"""

from __future__ import annotations

import argparse
import time

import networkx as nx
import torch

from llmlab import gnn
from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.embedding import cluster_quality, project_2d
from llmlab.runs import run_dir

from ._common import SPRINT, add_common_args, fmt, spread, with_threads

EMBEDDINGS = ("untrained GCN", "trained GCN (4 labels)", "auto-encoder (no labels)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=["pca", "tsne", "umap"],
        default=["pca", "tsne", "umap"],
        help="2-D projections to draw (UMAP's first call compiles for ~20-45 s)",
    )
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds for the scores")
    parser.add_argument("--dim", type=positive_int, default=16, help="embedding width")
    parser.add_argument("--neighbours", type=positive_int, default=8, help="t-SNE/UMAP neighbours")
    add_common_args(parser, "first seed")
    return parser


def embeddings(karate: gnn.KarateClub, dim: int, seed: int) -> dict[str, torch.Tensor]:
    """The three embeddings of one seed, each (34, dim)."""
    out = {}
    seed_everything(seed)
    untrained = gnn.GCN(34, dim, dim, num_layers=3, dropout=0.0).eval()
    with torch.no_grad():
        out[EMBEDDINGS[0]] = untrained(karate.x, karate.edge_index)
    seed_everything(seed)
    model = gnn.GCN(34, dim, 4)
    gnn.train_node_classifier(
        model, karate.x, karate.edge_index, karate.communities, karate.train_mask
    )
    with torch.no_grad():
        out[EMBEDDINGS[1]] = model.embed(karate.x, karate.edge_index)
    seed_everything(seed)
    encoder = gnn.GCN(34, 32, dim, dropout=0.0)
    gnn.train_link_predictor(
        encoder, karate.x, karate.edge_index, 200, generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        out[EMBEDDINGS[2]] = encoder(karate.x, karate.edge_index)
    return out


def scores(z: torch.Tensor, karate: gnn.KarateClub, seed: int) -> dict[str, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    unit = torch.nn.functional.normalize(z, dim=1).numpy()  # cosine geometry, as the pictures
    communities, club = karate.communities.numpy(), karate.club.numpy()
    k4 = KMeans(4, n_init=10, random_state=seed).fit_predict(unit)
    k2 = KMeans(2, n_init=10, random_state=seed).fit_predict(unit)
    return {
        "silhouette": float(silhouette_score(unit, communities)),
        "ari_communities": float(adjusted_rand_score(communities, k4)),
        "ari_clubs": float(adjusted_rand_score(club, k2)),
    }


def draw_grid(points: dict[tuple[str, str], torch.Tensor], groups: list[str], path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(dict.fromkeys(k[0] for k in points))
    cols = list(dict.fromkeys(k[1] for k in points))
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(4 * len(cols), 3.6 * len(rows)), squeeze=False
    )
    palette = plt.get_cmap("tab10")
    names = sorted(set(groups))
    for (r, c), pts in points.items():
        ax = axes[rows.index(r)][cols.index(c)]
        for k, g in enumerate(names):
            idx = [i for i, x in enumerate(groups) if x == g]
            ax.scatter(pts[idx, 0], pts[idx, 1], s=22, color=palette(k), label=g)
        for i, (x, y) in enumerate(pts.tolist()):
            ax.annotate(str(i), (x, y), fontsize=6, alpha=0.7)
        ax.set_title(f"{r}: {c.upper()}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    return with_threads(build_parser().parse_args(argv), _main)


def _main(args: argparse.Namespace) -> dict[str, float | str]:
    from sklearn.metrics import adjusted_rand_score

    start = time.perf_counter()
    karate = gnn.karate_club()
    folder = run_dir(SPRINT, "node_embeddings")
    seeds = list(range(args.seed, args.seed + args.seeds))
    per_seed = {s: embeddings(karate, args.dim, s) for s in seeds}
    results: dict[str, dict[str, list[float]]] = {}
    for s, embs in per_seed.items():
        for name, z in embs.items():
            for metric, value in scores(z, karate, s).items():
                results.setdefault(name, {}).setdefault(metric, []).append(value)

    modularity = nx.community.greedy_modularity_communities(nx.karate_club_graph())
    found = torch.zeros(34, dtype=torch.long)
    for c, members in enumerate(modularity):
        found[list(members)] = c
    reference = float(adjusted_rand_score(karate.communities.numpy(), found.numpy()))
    reference_club = float(adjusted_rand_score(karate.club.numpy(), (found > 0).long().numpy()))

    print(
        f"clustering quality in the {args.dim}-D embedding space, {len(seeds)} seeds (mean ± std [min, max])"
    )
    print(
        f"{'embedding':26s} {'silhouette (4 comm.)':>26s} {'ARI k-means vs 4 comm.':>26s} {'ARI k-means vs 2 clubs':>26s}"
    )
    figures: dict[str, float | str] = {}
    keys = {EMBEDDINGS[0]: "untrained", EMBEDDINGS[1]: "trained", EMBEDDINGS[2]: "autoencoder"}
    for name, metrics in results.items():
        print(
            f"{name:26s} {fmt(metrics['silhouette'], 2):>26s} {fmt(metrics['ari_communities'], 2):>26s} "
            f"{fmt(metrics['ari_clubs'], 2):>26s}"
        )
        for metric, values in metrics.items():
            figures[f"{keys[name]}_{metric}_mean"] = spread(values)["mean"]
    print(
        f"{'greedy modularity (networkx)':26s} {'':>26s} {reference:26.2f} {reference_club:26.2f}"
        f"   ({len(modularity)} communities; ARI vs clubs: its first community vs the rest)"
    )
    figures["modularity_ari_communities"] = reference

    groups = [f"community {int(c)}" for c in karate.communities]
    points = {}
    for name, z in per_seed[seeds[0]].items():
        for method in args.methods:
            pts = project_2d(z, method, seed=seeds[0], neighbours=args.neighbours)
            points[(name, method)] = pts
            quality = cluster_quality(pts, groups, seed=seeds[0])
            figures[f"{keys[name]}_{method}_knn_purity"] = quality["knn_purity"]
            figures[f"{keys[name]}_{method}_knn_purity_shuffled"] = quality["knn_purity_shuffled"]
    print("\n3-NN purity of the 2-D pictures (shuffled-label baseline in brackets), seed", seeds[0])
    for name in EMBEDDINGS:
        line = ", ".join(
            f"{m.upper()} {figures[f'{keys[name]}_{m}_knn_purity']:.2f} "
            f"({figures[f'{keys[name]}_{m}_knn_purity_shuffled']:.2f})"
            for m in args.methods
        )
        print(f"  {name:26s} {line}")
    figures["grid_png"] = str(
        draw_grid(
            points,
            groups,
            folder / "karate_embeddings.png",
            "Karate club node embeddings, coloured by PyG's 4 communities",
        )
    )
    figures["seconds"] = time.perf_counter() - start
    print(f"\npicture in {figures['grid_png']} ({figures['seconds']:.0f} s)")
    return figures


if __name__ == "__main__":
    raise SystemExit(run(main))
