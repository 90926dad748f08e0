"""Plumbing shared by the sprint-17 scripts: the common flags, a run under a chosen number of
torch threads, mean +- spread over seeds, and a picture of a graph (networkx layout)."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmlab.cli import non_negative_int, torch_threads

SPRINT = "17_gnn"


def add_common_args(parser: argparse.ArgumentParser, seed_help: str = "random seed") -> None:
    """--seed, --device, --threads (every results script of the course has them)."""
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=1,
        help="CPU threads for PyTorch (0 = its default, one per core); 1 by default because "
        "small graphs gain nothing from more and a busy machine makes them much slower",
    )


def with_threads(args: argparse.Namespace, body: Callable[[argparse.Namespace], Any]) -> Any:
    """Run `body(args)` with `args.threads` torch threads, then give the old count back (a
    process-wide setting, and the tests run every script in one process)."""
    with torch_threads(args.threads):
        return body(args)


def spread(values: Sequence[float]) -> dict[str, float]:
    """mean, std (sample), min and max of a list of per-seed figures."""
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


def fmt(values: Sequence[float], digits: int = 3) -> str:
    """'0.730 +- 0.037 [0.633, 0.767]' (mean +- std [min, max])."""
    s = spread(values)
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} [{s['min']:.{digits}f}, {s['max']:.{digits}f}]"


def plot_graph(
    graph,
    path: Path | str,
    groups: Sequence[str],
    title: str = "",
    sizes: Sequence[float] | None = None,
    labels: dict[Any, str] | None = None,
    edge_widths: Sequence[float] | None = None,
    seed: int = 0,
) -> Path:
    """Draw a networkx graph with a force-directed (spring) layout, nodes coloured by group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    nodes = list(graph.nodes())
    pos = nx.spring_layout(graph, seed=seed, weight="weight")
    fig, ax = plt.subplots(figsize=(8, 7))
    nx.draw_networkx_edges(
        graph, pos, ax=ax, alpha=0.25, width=list(edge_widths) if edge_widths else 0.8
    )
    palette = plt.get_cmap("tab10")
    for k, group in enumerate(dict.fromkeys(groups)):
        members = [n for n, g in zip(nodes, groups, strict=True) if g == group]
        size = [sizes[nodes.index(n)] for n in members] if sizes is not None else 80
        nx.draw_networkx_nodes(
            graph,
            pos,
            nodelist=members,
            node_color=[palette(k % 10)],
            node_size=size,
            label=group,
            ax=ax,
        )
    if labels:
        nx.draw_networkx_labels(graph, pos, labels=labels, font_size=7, ax=ax)
    ax.legend(fontsize=7, markerscale=0.6)
    ax.set_title(title)
    ax.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
