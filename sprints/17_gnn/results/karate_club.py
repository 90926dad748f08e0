"""Zachary's karate club: our GCN and GAT against PyG's, over many seeds, from 4 labelled nodes.

Task 1: PyG's 4 communities, the usual one labelled member per community, accuracy on the other
30. Every seed builds our GCN (sparse and dense) and a GCN of PyG's `GCNConv` layers with the
SAME initial weights, and the same for GAT, so the columns differ only by the implementation.
An MLP (a GCN given no edges) shows what the graph adds. Task 2: the two clubs the karate club
split into, from 2 labelled members (the instructor, node 0, and the administrator, node 33).
Task 3: a GCN with random weights and no training already separates the communities (the
classic picture of Kipf's blog post).

Run: python -m sprints.17_gnn.results.karate_club --seeds 10
"""

from __future__ import annotations

import argparse
import time

import networkx as nx
import torch

from llmlab import gnn
from llmlab.cli import positive_float, positive_int, probability, run
from llmlab.device import get_device, seed_everything
from llmlab.embedding import cluster_quality
from llmlab.plotting import plot_curves, plot_heatmap, plot_scatter
from llmlab.runs import make_writer, run_dir

from ._common import SPRINT, add_common_args, fmt, plot_graph, spread, with_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seeds", type=positive_int, default=10, help="seeds per model")
    parser.add_argument("--epochs", type=positive_int, default=200, help="full-batch epochs")
    parser.add_argument("--hidden", type=positive_int, default=16, help="GCN hidden width")
    parser.add_argument("--lr", type=positive_float, default=0.01, help="GCN Adam learning rate")
    parser.add_argument("--dropout", type=probability, default=0.5, help="GCN dropout")
    parser.add_argument(
        "--weight-decay", type=float, default=5e-4, help="Adam weight decay (GCN and GAT)"
    )
    parser.add_argument("--gat-heads", type=positive_int, default=8, help="GAT heads, layer 1")
    parser.add_argument("--gat-hidden", type=positive_int, default=8, help="GAT width per head")
    parser.add_argument("--gat-lr", type=positive_float, default=0.005, help="GAT learning rate")
    parser.add_argument("--gat-dropout", type=probability, default=0.6, help="GAT dropout")
    add_common_args(parser, "first seed (runs seed, seed+1, ..., seed+seeds-1)")
    return parser


def train_and_score(model, karate, y, mask, epochs, lr, wd, device, edge_index=None):
    """Train on the `mask` nodes, return (accuracy on the others, losses, eval logits)."""
    x = karate.x.to(device)
    ei = (karate.edge_index if edge_index is None else edge_index).to(device)
    losses = gnn.train_node_classifier(model, x, ei, y.to(device), mask.to(device), epochs, lr, wd)
    with torch.no_grad():
        logits = model(x, ei).cpu()
    return gnn.accuracy(logits, y, ~mask), losses, logits


def untrained_picture(karate, seeds: list[int], folder) -> dict[str, float | str]:
    """Random 3-layer GCN (34 -> 4 -> 4 -> 2, tanh), no training: where do the nodes land?"""
    scores, points = [], None
    groups = [karate.club_names[int(c)] for c in karate.club]
    for seed in seeds:
        torch.manual_seed(seed)
        convs = [gnn.GCNConv(34, 4), gnn.GCNConv(4, 4), gnn.GCNConv(4, 2)]
        h = karate.x
        with torch.no_grad():
            for conv in convs:
                h = torch.tanh(conv(h, karate.edge_index))
        scores.append(cluster_quality(h, groups, seed=seed))
        points = h if points is None else points
    # The same random weights without the graph: each node only sees its own one-hot row.
    torch.manual_seed(seeds[0])
    lin = [gnn.GCNConv(34, 4), gnn.GCNConv(4, 4), gnn.GCNConv(4, 2)]
    h = karate.x
    no_edges = torch.empty(2, 0, dtype=torch.long)
    with torch.no_grad():
        for conv in lin:
            h = torch.tanh(conv(h, no_edges))
    blind = cluster_quality(h, groups, seed=seeds[0])
    labels = [str(i) for i in range(34)]
    png = plot_scatter(
        points.numpy(),
        folder / "untrained_gcn.png",
        labels=labels,
        groups=groups,
        title="3-layer GCN with random weights, no training (coloured by club)",
    )
    return {
        "untrained_silhouette": spread([s["silhouette"] for s in scores])["mean"],
        "untrained_silhouette_shuffled": spread([s["silhouette_shuffled"] for s in scores])["mean"],
        "untrained_knn_purity": spread([s["knn_purity"] for s in scores])["mean"],
        "no_graph_silhouette": blind["silhouette"],
        "untrained_png": str(png),
    }


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    return with_threads(build_parser().parse_args(argv), _main)


def _main(args: argparse.Namespace) -> dict[str, float | str]:
    from torch_geometric.nn import GATConv as PyGGATConv
    from torch_geometric.nn import GCNConv as PyGGCNConv

    start = time.perf_counter()
    device = get_device(args.device)
    karate = gnn.karate_club()
    folder = run_dir(SPRINT, "karate_club")
    writer = make_writer(folder)
    seeds = list(range(args.seed, args.seed + args.seeds))
    y, mask = karate.communities, karate.train_mask
    no_edges = torch.empty(2, 0, dtype=torch.long)
    gcn_kw = {"epochs": args.epochs, "lr": args.lr, "wd": args.weight_decay, "device": device}
    gat_kw = {**gcn_kw, "lr": args.gat_lr}
    keys = {  # printed name -> key of the returned figures
        "GCN (ours, sparse)": "gcn_ours",
        "GCN (ours, dense)": "gcn_ours_dense",
        "GCN (PyG)": "gcn_pyg",
        "GAT (ours)": "gat_ours",
        "GAT (PyG)": "gat_pyg",
        "MLP (GCN, no edges)": "mlp",
    }
    names = list(keys)
    acc: dict[str, list[float]] = {n: [] for n in names}
    club_acc: dict[str, list[float]] = {"GCN (ours)": [], "GCN (PyG)": []}
    drift, losses0, gat_attention = 0.0, {}, None
    club_mask = torch.zeros(34, dtype=torch.bool)
    club_mask[[0, 33]] = True

    print(f"Karate club: 34 members, 78 friendships; {args.seeds} seeds, {args.epochs} epochs")
    for seed in seeds:
        seed_everything(seed)

        def gcn(**kw):
            return gnn.GCN(34, args.hidden, 4, dropout=args.dropout, **kw).to(device)

        ours = gcn()
        twins = {"GCN (ours, dense)": gcn(dense=True), "GCN (PyG)": gcn(conv=PyGGCNConv)}
        for twin in twins.values():
            twin.load_state_dict(ours.state_dict())  # the same initial weights
        mlp = gcn()
        mlp.load_state_dict(ours.state_dict())
        # The same dropout masks for every copy: reseed before each training run.
        seed_everything(seed)
        a, losses, logits = train_and_score(ours, karate, y, mask, **gcn_kw)
        acc["GCN (ours, sparse)"].append(a)
        losses0.setdefault("GCN (ours)", losses)
        for name, model in twins.items():
            seed_everything(seed)
            a, losses, other = train_and_score(model, karate, y, mask, **gcn_kw)
            acc[name].append(a)
            drift = max(drift, float((other - logits).abs().max()))
            losses0.setdefault(name, losses)
        seed_everything(seed)
        acc["MLP (GCN, no edges)"].append(
            train_and_score(mlp, karate, y, mask, **gcn_kw, edge_index=no_edges)[0]
        )

        seed_everything(seed)
        g_ours = gnn.GAT(34, args.gat_hidden, 4, args.gat_heads, dropout=args.gat_dropout)
        g_pyg = gnn.GAT(
            34, args.gat_hidden, 4, args.gat_heads, dropout=args.gat_dropout, conv=PyGGATConv
        )
        g_pyg.load_state_dict(g_ours.state_dict())
        for name, model in (("GAT (ours)", g_ours), ("GAT (PyG)", g_pyg)):
            seed_everything(seed)
            a, losses, _ = train_and_score(model.to(device), karate, y, mask, **gat_kw)
            acc[name].append(a)
            losses0.setdefault(name, losses)
        if gat_attention is None:
            with torch.no_grad():
                h = g_ours.embed(karate.x.to(device), karate.edge_index.to(device))
                adjacency = gnn.dense_adjacency(karate.edge_index, 34).to(device)
                _, alpha = g_ours.conv2.forward_dense(h, adjacency, return_attention=True)
            gat_attention = alpha.mean(0).cpu()

        # The club split from the two leaders alone.
        seed_everything(seed)
        c_ours = gnn.GCN(34, args.hidden, 2, dropout=args.dropout).to(device)
        c_pyg = gnn.GCN(34, args.hidden, 2, dropout=args.dropout, conv=PyGGCNConv).to(device)
        c_pyg.load_state_dict(c_ours.state_dict())
        for name, model in (("GCN (ours)", c_ours), ("GCN (PyG)", c_pyg)):
            seed_everything(seed)
            club_acc[name].append(
                train_and_score(model, karate, karate.club, club_mask, **gcn_kw)[0]
            )
        for name in names:
            writer.add_scalar(f"accuracy_4_communities/{name}", acc[name][-1], seed)
        writer.add_scalar("accuracy_2_clubs/GCN (ours)", club_acc["GCN (ours)"][-1], seed)

    print(
        "\nTask 1 - 4 communities, 4 labelled nodes, accuracy on the other 30 (mean ± std [min, max])"
    )
    for name in names:
        print(f"  {name:22s} {fmt(acc[name])}")
    same = [a == b for a, b in zip(acc["GCN (ours, sparse)"], acc["GCN (PyG)"], strict=True)]
    same_gat = [a == b for a, b in zip(acc["GAT (ours)"], acc["GAT (PyG)"], strict=True)]
    print(
        f"  same accuracy as PyG on {sum(same)}/{len(same)} seeds (GCN), "
        f"{sum(same_gat)}/{len(same_gat)} (GAT); largest logit gap after training, ours vs "
        f"PyG / dense: {drift:.1e}"
    )
    print(
        "\nTask 2 - the 2 clubs, labelled: member 0 (Mr. Hi) and 33 (Officer); accuracy on the other 32"
    )
    for name, values in club_acc.items():
        print(f"  {name:22s} {fmt(values)}")

    figures: dict[str, float | str] = {}
    for name in names:
        figures |= {f"{keys[name]}_{k}": v for k, v in spread(acc[name]).items()}
    for name, key in (("GCN (ours)", "club_gcn_ours"), ("GCN (PyG)", "club_gcn_pyg")):
        figures |= {f"{key}_{k}": v for k, v in spread(club_acc[name]).items()}
    figures["same_accuracy_as_pyg_seeds"] = float(sum(same))
    figures["same_accuracy_as_pyg_gat_seeds"] = float(sum(same_gat))
    figures["max_logit_gap_after_training"] = drift

    untrained = untrained_picture(karate, seeds, folder)
    print(
        f"\nTask 3 - untrained 3-layer GCN: silhouette of the 2 clubs {untrained['untrained_silhouette']:.2f} "
        f"(shuffled labels {untrained['untrained_silhouette_shuffled']:.2f}; the same random "
        f"weights without the graph {untrained['no_graph_silhouette']:.2f}), "
        f"3-NN purity {untrained['untrained_knn_purity']:.2f}"
    )
    figures.update(untrained)

    community_names = [f"community {int(c)}" for c in y]
    graph = nx.karate_club_graph()
    figures["graph_png"] = str(
        plot_graph(
            graph,
            folder / "karate_graph.png",
            community_names,
            title="Karate club: PyG's 4 communities (labelled nodes in bold)",
            sizes=[300 if bool(m) else 120 for m in mask],
            labels={i: str(i) for i in range(34)},
            seed=args.seed,
        )
    )
    figures["accuracy_png"] = str(
        plot_curves(
            {n: acc[n] for n in names},
            folder / "accuracy_per_seed.png",
            xs={n: seeds for n in names},
            title="accuracy on the 30 unlabelled members",
            xlabel="seed",
            ylabel="accuracy",
        )
    )
    figures["loss_png"] = str(
        plot_curves(
            losses0,
            folder / "loss.png",
            title=f"training loss, seed {seeds[0]}",
            xlabel="epoch",
            ylabel="cross-entropy on the 4 labelled nodes",
        )
    )
    # How evenly does a node spread its attention? Entropy / log(number of neighbours + itself):
    # 1 = uniform like a mean (GCN-like), 0 = all on one neighbour.
    mask = gat_attention > 0
    entropy = -(gat_attention.clamp(min=1e-12).log() * gat_attention).sum(1)
    evenness = float((entropy / mask.sum(1).float().log()).mean())
    strongest = float(gat_attention.max(1).values.mean())
    print(
        f"GAT layer-2 attention (seed {seeds[0]}): evenness {evenness:.2f} (1 = uniform over the "
        f"neighbours), mean largest weight per node {strongest:.2f}"
    )
    figures["gat_attention_evenness"] = evenness
    figures["gat_attention_max_weight"] = strongest
    figures["gat_attention_png"] = str(
        plot_heatmap(
            gat_attention.numpy(),
            folder / "gat_attention.png",
            title="GAT layer 2 attention, mean of heads (row i attends to column j)",
            xlabel="source j",
            ylabel="target i",
        )
    )
    writer.close()
    figures["seconds"] = time.perf_counter() - start
    print(f"\npictures and TensorBoard logs in {folder} ({figures['seconds']:.0f} s)")
    return figures


if __name__ == "__main__":
    raise SystemExit(run(main))
