"""Graph neural networks from scratch, pinned to PyG (sprint 17).

Graphs are stored the way PyG stores them: node features `x` (N, F) and an `edge_index`
(2, E) of (source, target) pairs; an undirected graph lists both directions. Messages flow
source -> target, so a dense adjacency matrix is indexed `A[target, source]`.

- `check_edge_index`: a one-line error for a bad edge index (shape, dtype, out of range).
- `add_remaining_self_loops`, `gcn_norm`: PyG's self-loop rule and the symmetric
  normalisation, as a list of weighted edges (the sparse form).
- `dense_adjacency`, `normalized_adjacency`: the same as matrices,
  $\\hat A = \\hat D^{-1/2}(A + I)\\hat D^{-1/2}$ (the dense form).
- `GCNConv`: $\\hat A X W + b$, sparse (`forward`) or dense (`forward_dense`);
  equal to `torch_geometric.nn.GCNConv` (same parameter names: copy its `state_dict`).
- `segment_softmax`: a softmax over the edges that enter each node.
- `GATConv`: multi-head graph attention (LeakyReLU scores, softmax per node, heads
  concatenated or averaged), sparse or dense; equal to `torch_geometric.nn.GATConv`.
- `GCN`, `GAT`: stacks of those layers (`embed` gives the last hidden layer);
  `train_node_classifier`, `accuracy`: full-batch training on a few labelled nodes.
- Link prediction: `split_edges`, `NegativeSampler` / `negative_sampling`, `adamic_adar`, `roc_auc`,
  `link_logits`, `train_link_predictor` (a graph auto-encoder).
- `karate_club()`: Zachary's karate club (networkx's edges and 2 clubs, PyG's 4 communities).

Notes: `sprints/17_gnn/notes/` (message passing, the normalised adjacency, GCN vs GAT,
over-smoothing, link prediction).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import LLMLabError

# --- graphs as edge lists ----------------------------------------------------------------------


def check_edge_index(edge_index: torch.Tensor, num_nodes: int) -> None:
    """Raise a one-line `LLMLabError` unless `edge_index` is a (2, E) integer tensor of node
    ids in [0, num_nodes)."""
    if (
        not isinstance(edge_index, torch.Tensor)
        or edge_index.dim() != 2
        or edge_index.shape[0] != 2
    ):
        shape = (
            tuple(edge_index.shape) if isinstance(edge_index, torch.Tensor) else type(edge_index)
        )
        raise LLMLabError(f"edge_index must have shape (2, num_edges), got {shape}")
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool:
        raise LLMLabError(f"edge_index must hold integer node ids, got dtype {edge_index.dtype}")
    if edge_index.numel():
        low, high = (int(v) for v in torch.aminmax(edge_index))
        if low < 0 or high >= num_nodes:
            raise LLMLabError(
                f"edge_index refers to node {low if low < 0 else high}, but the graph has "
                f"{num_nodes} nodes (ids 0..{num_nodes - 1}): fix the edge list or num_nodes"
            )


def _weights(
    edge_index: torch.Tensor, edge_weight: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    if edge_weight is None:
        return torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
    if edge_weight.shape != (edge_index.shape[1],):
        raise LLMLabError(
            f"edge_weight must have one value per edge ({edge_index.shape[1]}), "
            f"got shape {tuple(edge_weight.shape)}"
        )
    return edge_weight.to(dtype)


def add_remaining_self_loops(
    edge_index: torch.Tensor,
    num_nodes: int,
    edge_weight: torch.Tensor | None = None,
    fill_value: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Give every node exactly one self-loop (PyG's rule): existing loops are moved to the end
    and keep their weight, the missing ones get `fill_value`. Returns (edge_index, weights)."""
    check_edge_index(edge_index, num_nodes)
    edge_index = edge_index.long()
    weight = _weights(edge_index, edge_weight, dtype)
    src, dst = edge_index
    keep = src != dst
    loop_weight = torch.full((num_nodes,), fill_value, dtype=weight.dtype, device=weight.device)
    loop_weight[src[~keep]] = weight[~keep]
    loops = torch.arange(num_nodes, device=edge_index.device).repeat(2, 1)
    return torch.cat([edge_index[:, keep], loops], 1), torch.cat([weight[keep], loop_weight])


def gcn_norm(
    edge_index: torch.Tensor,
    num_nodes: int,
    edge_weight: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-loops + symmetric normalisation: edge j -> i gets weight $w_{ij}/\\sqrt{d_i d_j}$,
    $d$ = weighted in-degree counting the self-loop. Returns (edge_index, weights)."""
    edge_index, weight = add_remaining_self_loops(edge_index, num_nodes, edge_weight, dtype=dtype)
    src, dst = edge_index
    degree = weight.new_zeros(num_nodes).index_add_(0, dst, weight)
    inv_sqrt = degree.pow(-0.5).masked_fill(degree == 0, 0.0)  # a zero-weight loop: no NaN
    return edge_index, inv_sqrt[src] * weight * inv_sqrt[dst]


def dense_adjacency(
    edge_index: torch.Tensor,
    num_nodes: int,
    edge_weight: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The (N, N) matrix with `A[target, source]` = summed weight of the edges source -> target."""
    check_edge_index(edge_index, num_nodes)
    edge_index = edge_index.long()
    weight = _weights(edge_index, edge_weight, dtype)
    adj = torch.zeros(num_nodes, num_nodes, dtype=weight.dtype, device=edge_index.device)
    return adj.index_put_((edge_index[1], edge_index[0]), weight, accumulate=True)


def normalized_adjacency(
    edge_index: torch.Tensor,
    num_nodes: int,
    edge_weight: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """$\\hat A = \\hat D^{-1/2}(A + I)\\hat D^{-1/2}$ as a dense (N, N) matrix, with
    $\\hat D_{ii} = \\sum_j (A + I)_{ij}$. A node that already has a self-loop keeps its weight
    instead of getting a second one (PyG's rule)."""
    edge_index, weight = add_remaining_self_loops(edge_index, num_nodes, edge_weight, dtype=dtype)
    a_hat = dense_adjacency(edge_index, num_nodes, weight, dtype)
    degree = a_hat.sum(dim=1)
    inv_sqrt = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
    return inv_sqrt[:, None] * a_hat * inv_sqrt[None, :]


def _glorot_(tensor: torch.Tensor) -> torch.Tensor:
    """PyG's `glorot`: uniform in +-sqrt(6 / (fan_in + fan_out)) from the last two dimensions."""
    bound = math.sqrt(6.0 / (tensor.size(-2) + tensor.size(-1)))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


# --- GCN -----------------------------------------------------------------------------------------


class GCNConv(nn.Module):
    """One graph convolution (Kipf & Welling, 2017): $H' = \\hat A (H W) + b$.

    Each node averages its neighbours' transformed features (and its own), weighted by
    $1/\\sqrt{d_i d_j}$. `forward` walks the edge list (memory O(E)); `forward_dense`
    multiplies by the precomputed matrix of `normalized_adjacency` (O(N^2), simplest).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.lin = nn.Linear(in_channels, out_channels, bias=False)  # named as in PyG
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot_(self.lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sparse form: one message per edge, summed at its target."""
        return self.forward_normalized(x, *gcn_norm(edge_index, x.shape[0], edge_weight, x.dtype))

    def forward_normalized(
        self, x: torch.Tensor, edge_index: torch.Tensor, norm: torch.Tensor
    ) -> torch.Tensor:
        """Sparse form with the output of `gcn_norm` computed once (every layer of a GCN shares
        it)."""
        h = self.lin(x)  # transform first: the messages are then out_channels wide
        src, dst = edge_index
        out = h.new_zeros(x.shape[0], h.shape[1]).index_add_(0, dst, norm.unsqueeze(1) * h[src])
        return out if self.bias is None else out + self.bias

    def forward_dense(self, x: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
        """Dense form: `a_hat` is `normalized_adjacency(...)` (computed once per graph)."""
        out = a_hat @ self.lin(x)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}"


# --- GAT -----------------------------------------------------------------------------------------


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Softmax of `scores` (E, ...) over the groups of rows that share `index` (E,), e.g. over
    the edges entering each node. Each group's maximum is subtracted first, for stability."""
    expand = index.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    group_max = scores.new_zeros(num_nodes, *scores.shape[1:]).scatter_reduce(
        0, expand, scores.detach(), reduce="amax", include_self=False
    )
    exp = (scores - group_max[index]).exp()
    total = exp.new_zeros(num_nodes, *scores.shape[1:]).index_add_(0, index, exp)
    return exp / (total[index] + 1e-16)  # 1e-16 as PyG (an empty group never divides by 0)


class GATConv(nn.Module):
    """Graph attention (Velickovic et al., 2018), `heads` independent attention heads.

    For the edge j -> i: $e_{ij} = \\text{LeakyReLU}(a_{dst} \\cdot W h_i + a_{src} \\cdot W h_j)$,
    $\\alpha_{ij} = \\text{softmax}_j(e_{ij})$ over the neighbours of i (itself included),
    $h'_i = \\sum_j \\alpha_{ij} W h_j$; heads are concatenated (`concat=True`) or averaged.
    Like sprint 06's attention, but scores come from a learned vector, not a query-key product,
    and the mask is the graph.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.negative_slope, self.dropout = concat, negative_slope, dropout
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        width = heads * out_channels if concat else out_channels
        self.bias = nn.Parameter(torch.zeros(width)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot_(self.lin.weight)
        _glorot_(self.att_src)
        _glorot_(self.att_dst)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.lin(x).view(x.shape[0], self.heads, self.out_channels)
        return h, (h * self.att_src).sum(-1), (h * self.att_dst).sum(-1)  # (N,H,C), (N,H) x2

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        out = out.reshape(out.shape[0], -1) if self.concat else out.mean(dim=1)
        return out if self.bias is None else out + self.bias

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Sparse form. With `return_attention`, also (edge_index with self-loops, alpha (E, H))."""
        n = x.shape[0]
        check_edge_index(edge_index, n)
        edge_index = edge_index.long()
        # Every node attends to itself exactly once: drop given loops, append one per node.
        edge_index = edge_index[:, edge_index[0] != edge_index[1]]
        loops = torch.arange(n, device=edge_index.device).repeat(2, 1)
        edge_index = torch.cat([edge_index, loops], dim=1)
        src, dst = edge_index
        h, a_src, a_dst = self._project(x)
        scores = F.leaky_relu(a_src[src] + a_dst[dst], self.negative_slope)  # (E, H)
        alpha = segment_softmax(scores, dst, n)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        out = h.new_zeros(h.shape).index_add_(0, dst, alpha.unsqueeze(-1) * h[src])
        out = self._finish(out)
        return (out, (edge_index, alpha)) if return_attention else out

    def forward_dense(
        self, x: torch.Tensor, adjacency: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Dense form: masked attention over an (N, N) matrix (`A[target, source]` non-zero
        where an edge exists). With `return_attention`, also alpha (H, N, N)."""
        n = x.shape[0]
        if adjacency.shape != (n, n):
            raise LLMLabError(f"adjacency must be ({n}, {n}), got {tuple(adjacency.shape)}")
        mask = (adjacency != 0) | torch.eye(n, dtype=torch.bool, device=adjacency.device)
        h, a_src, a_dst = self._project(x)
        # scores[h, i, j]: node i (target) looking at node j (source).
        scores = F.leaky_relu(a_dst.T[:, :, None] + a_src.T[:, None, :], self.negative_slope)
        alpha = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        out = self._finish(torch.einsum("hij,jhc->ihc", alpha, h))
        return (out, alpha) if return_attention else out

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, heads={self.heads}, concat={self.concat}"


# --- models --------------------------------------------------------------------------------------


class GCN(nn.Module):
    """`num_layers` graph convolutions with ReLU and dropout between them.

    `conv` builds each layer from (in, out): our `GCNConv` by default, or e.g. PyG's `GCNConv`
    (the same call signature), so one model class compares both. `dense=True` multiplies by
    the normalised adjacency matrix instead of walking the edges (our layer only).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        dense: bool = False,
        conv: Callable[[int, int], nn.Module] = GCNConv,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise LLMLabError(f"a GCN needs at least one layer, got num_layers={num_layers}")
        sizes = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList(conv(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.ours = all(isinstance(c, GCNConv) for c in self.convs)
        if dense and not self.ours:
            raise LLMLabError("dense=True needs llmlab's GCNConv layers")
        self.dropout, self.dense = dropout, dense

    def _layer(self, conv: nn.Module, h: torch.Tensor, graph: tuple) -> torch.Tensor:
        if self.dense:
            return conv.forward_dense(h, graph[0])
        if self.ours:
            return conv.forward_normalized(h, *graph)
        return conv(h, *graph)

    def _graph(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None):
        """What every layer needs, computed once per call: the normalised adjacency (dense),
        the normalised edge list (our sparse layers), or the raw graph (other layers)."""
        if self.dense:
            return (normalized_adjacency(edge_index, x.shape[0], edge_weight, dtype=x.dtype),)
        if self.ours:
            return gcn_norm(edge_index, x.shape[0], edge_weight, dtype=x.dtype)
        return (edge_index,) if edge_weight is None else (edge_index, edge_weight)

    def _hidden(self, x: torch.Tensor, graph: tuple) -> torch.Tensor:
        for conv in self.convs[:-1]:
            x = F.dropout(x, self.dropout, self.training)
            x = F.relu(self._layer(conv, x, graph))
        return x

    def embed(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The representation entering the last layer (after its ReLU)."""
        return self._hidden(x, self._graph(x, edge_index, edge_weight))

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        graph = self._graph(x, edge_index, edge_weight)
        h = F.dropout(self._hidden(x, graph), self.dropout, self.training)
        return self._layer(self.convs[-1], h, graph)


class GAT(nn.Module):
    """Two graph-attention layers (the GAT paper's node classifier): `heads` heads of width
    `hidden_channels` concatenated, ELU, then one head (averaged heads if `out_heads` > 1)."""

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        heads: int = 8,
        out_heads: int = 1,
        dropout: float = 0.6,
        conv: Callable[..., nn.Module] = GATConv,
    ) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, hidden_channels, heads=heads, dropout=dropout)
        self.conv2 = conv(
            hidden_channels * heads, out_channels, heads=out_heads, concat=False, dropout=dropout
        )
        self.dropout = dropout

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = F.dropout(x, self.dropout, self.training)
        return F.elu(self.conv1(h, edge_index))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = F.dropout(self.embed(x, edge_index), self.dropout, self.training)
        return self.conv2(h, edge_index)


def accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Share of nodes (of `mask`, default all) whose highest logit is their label."""
    pred = logits.argmax(dim=-1)
    if mask is not None:
        pred, y = pred[mask], y[mask]
    return float((pred == y).float().mean()) if y.numel() else float("nan")


def train_node_classifier(
    model: nn.Module,
    x: torch.Tensor,
    edge_index: torch.Tensor,
    y: torch.Tensor,
    train_mask: torch.Tensor,
    epochs: int = 200,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
) -> list[float]:
    """Full-batch training: every epoch runs the whole graph, the loss reads only the labelled
    nodes (semi-supervised). Returns the loss per epoch; leaves the model in eval mode."""
    if train_mask.dtype != torch.bool or train_mask.shape != y.shape:
        raise LLMLabError("train_mask must be a boolean tensor with one entry per node")
    if not bool(train_mask.any()):
        raise LLMLabError("no labelled nodes (train_mask is all False): label at least one node")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    model.train()
    for _ in range(epochs):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x, edge_index)[train_mask], y[train_mask])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


# --- link prediction -----------------------------------------------------------------------------


def _undirected_pairs(edge_index: torch.Tensor) -> torch.Tensor:
    """Each undirected edge once, as (2, M) with the smaller id first (no self-loops)."""
    a, b = edge_index.long()
    keep = a != b
    pairs = torch.stack([torch.minimum(a, b)[keep], torch.maximum(a, b)[keep]])
    return torch.unique(pairs, dim=1)


def _both_directions(pairs: torch.Tensor) -> torch.Tensor:
    return torch.cat([pairs, pairs.flip(0)], dim=1)


class NegativeSampler:
    """Draws node pairs that are NOT edges (either direction) and not self-loops, uniformly;
    with `groups` (one id per node) both ends share a group (e.g. two characters of the same
    play). The edge set is indexed once, so drawing fresh negatives every step is cheap."""

    def __init__(
        self, edge_index: torch.Tensor, num_nodes: int, groups: torch.Tensor | None = None
    ) -> None:
        check_edge_index(edge_index, num_nodes)
        edge_index = edge_index.long()
        self.num_nodes = num_nodes
        self.existing = torch.cat(
            [edge_index[0] * num_nodes + edge_index[1], edge_index[1] * num_nodes + edge_index[0]]
        )
        if groups is None:
            groups = torch.zeros(num_nodes, dtype=torch.long)
        if groups.shape != (num_nodes,):
            raise LLMLabError(
                f"groups must hold one id per node ({num_nodes}), got {tuple(groups.shape)}"
            )
        self.order = torch.argsort(groups, stable=True)  # each group's members, contiguous
        _, self.sizes = torch.unique_consecutive(groups[self.order], return_counts=True)
        self.starts = torch.cumsum(self.sizes, 0) - self.sizes
        self.n_pairs = self.sizes * (self.sizes - 1) // 2
        linked = _undirected_pairs(edge_index)
        same = int((groups[linked[0]] == groups[linked[1]]).sum())
        self.available = int(self.n_pairs.sum()) - same

    def __call__(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(2, num_samples) distinct non-edges."""
        if num_samples > self.available:
            raise LLMLabError(
                f"asked for {num_samples} non-edges but the graph has only "
                f"{max(self.available, 0)}: use fewer negatives"
            )
        n = self.num_nodes
        found = torch.empty(0, dtype=torch.long)
        while len(found) < num_samples:
            batch = 2 * num_samples + 16
            # A group in proportion to its number of pairs, then two members of it.
            g = torch.multinomial(
                self.n_pairs.double(), batch, replacement=True, generator=generator
            )
            i = (torch.rand(batch, generator=generator) * self.sizes[g]).long()
            j = (torch.rand(batch, generator=generator) * self.sizes[g]).long()
            u, v = self.order[self.starts[g] + i], self.order[self.starts[g] + j]
            ok = (u != v) & ~torch.isin(u * n + v, self.existing)
            key = torch.minimum(u, v)[ok] * n + torch.maximum(u, v)[ok]
            found = torch.unique(torch.cat([found, key]))  # sorted: shuffled below
        found = found[torch.randperm(len(found), generator=generator)[:num_samples]]
        return torch.stack([found // n, found % n])


def negative_sampling(
    edge_index: torch.Tensor,
    num_nodes: int,
    num_samples: int,
    generator: torch.Generator | None = None,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """`num_samples` distinct non-edges (2, num_samples): see `NegativeSampler`."""
    return NegativeSampler(edge_index, num_nodes, groups)(num_samples, generator)


@dataclass
class EdgeSplit:
    """Held-out edges for link prediction. `train_edge_index` lists the training edges in both
    directions (the graph the model may see); the `*_pos` and `*_neg` tensors are (2, M) node
    pairs: held-out real edges and non-edges of the full graph, one negative per positive."""

    train_edge_index: torch.Tensor
    val_pos: torch.Tensor
    val_neg: torch.Tensor
    test_pos: torch.Tensor
    test_neg: torch.Tensor


def split_edges(
    edge_index: torch.Tensor,
    num_nodes: int,
    val_fraction: float = 0.05,
    test_fraction: float = 0.15,
    seed: int = 0,
    groups: torch.Tensor | None = None,
) -> EdgeSplit:
    """Hold out a random share of the undirected edges for validation and test."""
    check_edge_index(edge_index, num_nodes)
    pairs = _undirected_pairs(edge_index)
    n = pairs.shape[1]
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n_test < 1 or n - n_test - n_val < 1:
        raise LLMLabError(
            f"cannot hold out {test_fraction:.0%} + {val_fraction:.0%} of {n} edges and keep "
            "some for training: change the fractions"
        )
    generator = torch.Generator().manual_seed(seed)
    pairs = pairs[:, torch.randperm(n, generator=generator)]
    test, val, train = (
        pairs[:, :n_test],
        pairs[:, n_test : n_test + n_val],
        pairs[:, n_test + n_val :],
    )
    negatives = negative_sampling(edge_index, num_nodes, n_test + n_val, generator, groups)
    return EdgeSplit(
        _both_directions(train), val, negatives[:, n_test:], test, negatives[:, :n_test]
    )


def adamic_adar(edge_index: torch.Tensor, num_nodes: int, pairs: torch.Tensor) -> torch.Tensor:
    """Adamic-Adar score of each pair (u, v): $\\sum_{w \\in N(u) \\cap N(v)} 1/\\ln|N(w)|$
    on the undirected, unweighted graph `edge_index` (no learning: a classic baseline)."""
    check_edge_index(edge_index, num_nodes)
    und = _both_directions(_undirected_pairs(edge_index))
    adj = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    adj[und[0], und[1]] = 1.0
    degree = adj.sum(1)
    # A common neighbour of two distinct nodes has degree >= 2, so log(degree) > 0 there.
    inv_log = torch.where(degree > 1, 1.0 / degree.clamp(min=2).log(), torch.zeros_like(degree))
    u, v = pairs.long()
    return (adj[u] * adj[v] * inv_log).sum(dim=1)


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve = the chance that a random positive outscores a random negative
    (ties count one half), computed from ranks (Mann-Whitney U)."""
    scores, labels = scores.double().flatten(), labels.flatten().bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise LLMLabError("ROC-AUC needs at least one positive and one negative example")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # Tied scores share the average of their ranks.
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    first = torch.cumsum(counts, 0) - counts + 1
    average = (first + first + counts - 1).double() / 2
    ranks[order] = average[inverse]
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def link_logits(z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Inner-product decoder: the logit that u and v are linked is $z_u \\cdot z_v$."""
    return (z[pairs[0]] * z[pairs[1]]).sum(dim=-1)


def train_link_predictor(
    encoder: nn.Module,
    x: torch.Tensor,
    train_edge_index: torch.Tensor,
    steps: int = 200,
    lr: float = 0.01,
    edge_weight: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Graph auto-encoder training: embed the nodes with `encoder(x, edge_index[, weight])`,
    score the training edges and as many fresh random non-edges (`groups`: drawn within a
    group) with `link_logits`, minimise binary cross-entropy. Returns the loss per step."""
    num_nodes = x.shape[0]
    positives = _undirected_pairs(train_edge_index)
    if positives.shape[1] == 0:
        raise LLMLabError("no training edges: the graph needs edges to learn link prediction")
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    sampler = NegativeSampler(train_edge_index, num_nodes, groups)
    # One negative per positive, or every non-edge when a dense graph has fewer.
    n_neg = min(positives.shape[1], sampler.available)
    targets = torch.cat([torch.ones(positives.shape[1]), torch.zeros(n_neg)])
    graph = (train_edge_index,) if edge_weight is None else (train_edge_index, edge_weight)
    losses = []
    encoder.train()
    for _ in range(steps):
        negatives = sampler(n_neg, generator)
        optimizer.zero_grad(set_to_none=True)
        z = encoder(x, *graph)
        logits = torch.cat([link_logits(z, positives), link_logits(z, negatives)])
        loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    encoder.eval()
    return losses


# --- Zachary's karate club -----------------------------------------------------------------------


@dataclass
class KarateClub:
    """Zachary's karate club (1977): 34 members, 78 friendships, and the two clubs it split
    into. `communities` are PyG's 4 labels (modularity classes) and `train_mask` its usual
    4 labelled nodes (the first member of each community); `club` is 0 = Mr. Hi's club
    (node 0, the instructor), 1 = the Officer's (node 33, the administrator)."""

    x: torch.Tensor
    edge_index: torch.Tensor
    club: torch.Tensor
    club_names: tuple[str, str]
    communities: torch.Tensor | None
    train_mask: torch.Tensor | None

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]


def karate_club(communities: bool = True) -> KarateClub:
    """Load the karate club offline: edges and clubs from networkx (fast to import); with
    `communities`, PyG's 4-class labels too (imports torch_geometric, a few seconds)."""
    import networkx as nx

    graph = nx.karate_club_graph()
    names = ("Mr. Hi", "Officer")
    club = torch.tensor([names.index(graph.nodes[i]["club"]) for i in range(34)])
    pairs = torch.tensor(sorted(graph.edges()), dtype=torch.long).T
    edge_index = _both_directions(pairs)
    y = mask = None
    if communities:
        from torch_geometric.datasets import KarateClub as PyGKarate

        data = PyGKarate()[0]
        y, mask = data.y.clone(), data.train_mask.clone()
    return KarateClub(torch.eye(34), edge_index, club, names, y, mask)


__all__ = [
    "GAT",
    "GATConv",
    "GCN",
    "GCNConv",
    "EdgeSplit",
    "KarateClub",
    "NegativeSampler",
    "accuracy",
    "adamic_adar",
    "add_remaining_self_loops",
    "check_edge_index",
    "dense_adjacency",
    "gcn_norm",
    "karate_club",
    "link_logits",
    "negative_sampling",
    "normalized_adjacency",
    "roc_auc",
    "segment_softmax",
    "split_edges",
    "train_link_predictor",
    "train_node_classifier",
]
