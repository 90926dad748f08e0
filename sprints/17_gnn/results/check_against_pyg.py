"""Our GCN and GAT layers against PyG's GCNConv and GATConv: same weights in, same numbers out.

For random graphs (self-loops, isolated nodes, one-way edges, edge weights) and the karate
club, in float32 and float64, each of our layers gets a copy of a PyG layer's `state_dict`
(the parameter names are the same) and we report the largest difference of the outputs and
of the gradients (input, weights, attention vectors, bias). Then the time of a forward +
backward pass, ours (sparse and dense) vs PyG, on the karate club and a bigger random graph.

Run: python -m sprints.17_gnn.results.check_against_pyg --nodes 2000 --edges 20000
"""

from __future__ import annotations

import argparse
import time

import torch

from llmlab import gnn
from llmlab.cli import positive_int, run
from llmlab.device import get_device

from ._common import add_common_args, with_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--nodes", type=positive_int, default=2000, help="random graph: nodes")
    parser.add_argument("--edges", type=positive_int, default=20000, help="random graph: edges")
    parser.add_argument("--features", type=positive_int, default=64, help="input width")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed passes")
    add_common_args(parser, "seed of the graphs and weights")
    return parser


def random_graph(n: int, e: int, g: torch.Generator) -> torch.Tensor:
    """Directed random edges among the first n-3 nodes (the last 3 stay isolated), plus a few
    self-loops; weights later."""
    edges = torch.randint(0, n - 3, (2, e), generator=g)
    loops = torch.randint(0, n - 3, (3,), generator=g).unique().repeat(2, 1)
    edges = edges[:, edges[0] != edges[1]]
    return torch.unique(torch.cat([edges, loops], 1), dim=1)


def forward(layer, x: torch.Tensor, graph: dict, form: str) -> torch.Tensor:
    """Call a layer on a graph: PyG's and our sparse form read the edge list, our dense form
    the matrix (A-hat for GCN, the adjacency for GAT)."""
    if form == "dense":
        matrix = graph["a_hat"] if isinstance(layer, gnn.GCNConv) else graph["adjacency"]
        return layer.forward_dense(x, matrix)
    if type(layer).__name__ == "GATConv":  # ours or PyG's: no edge weights
        return layer(x, graph["edge_index"])
    return layer(x, graph["edge_index"], graph["weight"])


def compare(ours, ref, form: str, graph: dict, x, upstream) -> tuple[float, float]:
    """(max |output difference|, max |gradient difference|) of two layers with equal weights."""
    results = []
    for layer, layer_form in ((ref, "sparse"), (ours, form)):
        xi = x.clone().requires_grad_(True)
        layer.zero_grad()
        out = forward(layer, xi, graph, layer_form)
        (out * upstream).sum().backward()
        results.append((out.detach(), [xi.grad] + [p.grad for p in layer.parameters()]))
    out_gap = float((results[0][0] - results[1][0]).abs().max())
    grad_gap = max(
        float((a - b).abs().max()) for a, b in zip(results[0][1], results[1][1], strict=True)
    )
    return out_gap, grad_gap


def pass_time(layer, x: torch.Tensor, graph: dict, form: str, repeats: int) -> float:
    """Median seconds of forward + backward (the dense form builds its matrix every time)."""

    def once() -> None:
        if form == "dense":
            graph["a_hat"] = gnn.normalized_adjacency(graph["edge_index"], x.shape[0])
        forward(layer, x, graph, form).sum().backward()

    return timed(once, repeats)


def timed(fn, repeats: int) -> float:
    """Median seconds of forward + backward."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> dict[str, float]:
    return with_threads(build_parser().parse_args(argv), _main)


def _main(args: argparse.Namespace) -> dict[str, float]:
    from torch_geometric.nn import GATConv, GCNConv

    device = get_device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    karate = gnn.karate_club(communities=False)
    graphs = {
        "random (60 nodes)": (random_graph(60, 240, g), 60),
        "karate club": (karate.edge_index, 34),
    }
    figures: dict[str, float] = {}
    print(f"{'layer':28s} {'graph':18s} {'dtype':8s} {'max |d out|':>12s} {'max |d grad|':>12s}")
    for dtype in (torch.float32, torch.float64):
        name_dtype = str(dtype).removeprefix("torch.")
        for graph_name, (edge_index, n) in graphs.items():
            edge_index = edge_index.to(device)
            weight = (torch.rand(edge_index.shape[1], dtype=dtype, generator=g) + 0.1).to(device)
            graph = {
                "edge_index": edge_index,
                "weight": weight,
                "a_hat": gnn.normalized_adjacency(edge_index, n, weight, dtype),
                "adjacency": gnn.dense_adjacency(edge_index, n, dtype=dtype),
            }
            x = torch.randn(n, 8, dtype=dtype, generator=g).to(device)
            ref = GCNConv(8, 5).to(device, dtype)
            ours = gnn.GCNConv(8, 5).to(device, dtype)
            ours.load_state_dict(ref.state_dict())
            with torch.no_grad():
                ref.bias.normal_()  # a zero bias would hide a bias bug
                ours.bias.copy_(ref.bias)
            cases = [("GCN sparse, weighted", ours, ref, "sparse", 5)]
            cases.append(("GCN dense, weighted", ours, ref, "dense", 5))
            for concat in (True, False):
                ref_gat = GATConv(8, 4, heads=3, concat=concat).to(device, dtype)
                ours_gat = gnn.GATConv(8, 4, heads=3, concat=concat).to(device, dtype)
                ours_gat.load_state_dict(ref_gat.state_dict())
                label, width = ("concat", 12) if concat else ("mean", 4)
                for form in ("sparse", "dense"):
                    cases.append((f"GAT {form}, 3 heads {label}", ours_gat, ref_gat, form, width))
            for name, o, r, form, width in cases:
                upstream = torch.randn(n, width, dtype=dtype, generator=g).to(device)
                out_gap, grad_gap = compare(o, r, form, graph, x, upstream)
                print(
                    f"{name:28s} {graph_name:18s} {name_dtype:8s} {out_gap:12.1e} {grad_gap:12.1e}"
                )
                for key, value in (("out", out_gap), ("grad", grad_gap)):
                    k = f"max_{key}_gap_{name_dtype}"
                    figures[k] = max(figures.get(k, 0.0), value)

    print(f"\nforward + backward, median of {args.repeats} (ours / PyG time; < 1 = ours faster)")
    big = random_graph(args.nodes, args.edges, g).to(device)
    speed_graphs = {
        "karate": (karate.edge_index.to(device), 34),
        "random": (big, args.nodes),
    }
    for short, (edge_index, n) in speed_graphs.items():
        graph = {"edge_index": edge_index, "weight": None}
        x = torch.randn(n, args.features, generator=g).to(device)
        ref, ours = GCNConv(args.features, 64).to(device), gnn.GCNConv(args.features, 64).to(device)
        ref_gat = GATConv(args.features, 8, heads=8).to(device)
        ours_gat = gnn.GATConv(args.features, 8, heads=8).to(device)
        seconds = {
            "GCN (PyG)": pass_time(ref, x, graph, "sparse", args.repeats),
            "GCN (ours, sparse)": pass_time(ours, x, graph, "sparse", args.repeats),
            "GCN (ours, dense)": pass_time(ours, x, graph, "dense", args.repeats),
            "GAT (PyG)": pass_time(ref_gat, x, graph, "sparse", args.repeats),
            "GAT (ours, sparse)": pass_time(ours_gat, x, graph, "sparse", args.repeats),
        }
        print(
            f"  {short} ({n} nodes, {edge_index.shape[1]} edges): "
            + ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in seconds.items())
        )
        for key in ("GCN (ours, sparse)", "GCN (ours, dense)", "GAT (ours, sparse)"):
            layer, variant = key.split(" ")[0], key.split(", ")[1].rstrip(")")
            ratio = seconds[key] / seconds[f"{layer} (PyG)"]
            figures[f"{short}_{layer.lower()}_{variant}_time_ratio"] = ratio
            print(f"    {key} / {layer} (PyG) = {ratio:.2f}")
    return figures


if __name__ == "__main__":
    raise SystemExit(run(main))
