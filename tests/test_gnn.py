"""llmlab.gnn: GCN and GAT equal PyG's layers (same weights in, same numbers and gradients out),
the normalised adjacency by hand, link-prediction helpers against networkx and scikit-learn."""

from __future__ import annotations

import pytest
import torch

from llmlab import gnn
from llmlab.errors import LLMLabError

pyg_nn = pytest.importorskip("torch_geometric.nn")


def random_graph(
    n: int, e: int, seed: int, loops: int = 2, isolated: int = 3, undirected: bool = False
) -> torch.Tensor:
    """A random directed multigraph on n nodes: some self-loops, the last `isolated` nodes
    without any edge, possibly repeated edges."""
    g = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, n - isolated, (2, e), generator=g)
    loop_nodes = torch.randint(0, n - isolated, (loops,), generator=g)
    edges = torch.cat([edges, loop_nodes.repeat(2, 1)], dim=1)
    if undirected:
        edges = torch.cat([edges, edges.flip(0)], dim=1)
    return edges


def unique_loops(edge_index: torch.Tensor) -> torch.Tensor:
    """At most one self-loop per node (which one PyG keeps among repeats is unspecified)."""
    loops = edge_index[0] == edge_index[1]
    return torch.cat([edge_index[:, ~loops], torch.unique(edge_index[:, loops], dim=1)], dim=1)


def grads(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.grad.clone() for t in tensors]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


CASES = [  # dtype, tolerance
    (torch.float32, 2e-6),
    (torch.float64, 1e-12),
]


@pytest.mark.parametrize(("dtype", "tol"), CASES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("undirected", [False, True])
def test_gcn_sparse_and_dense_equal_pyg(dtype, tol, weighted, undirected) -> None:
    n = 40
    edge_index = unique_loops(random_graph(n, 120, seed=1, undirected=undirected))
    weight = torch.rand(edge_index.shape[1], dtype=dtype) + 0.1 if weighted else None
    torch.manual_seed(0)
    ref = pyg_nn.GCNConv(6, 5).to(dtype)
    ours = gnn.GCNConv(6, 5).to(dtype)
    ours.load_state_dict(ref.state_dict())  # same parameter names, same weights
    with torch.no_grad():
        ref.bias.normal_()  # a zero bias would hide a bias bug
        ours.bias.copy_(ref.bias)
    x = torch.randn(n, 6, dtype=dtype)
    upstream = torch.randn(n, 5, dtype=dtype)
    outs, all_grads = [], []
    for run in ("pyg", "sparse", "dense"):
        layer = ref if run == "pyg" else ours
        xi = x.clone().requires_grad_(True)
        layer.zero_grad()
        if run == "dense":
            out = ours.forward_dense(xi, gnn.normalized_adjacency(edge_index, n, weight, dtype))
        else:
            out = layer(xi, edge_index, weight)
        (out * upstream).sum().backward()
        outs.append(out.detach())
        all_grads.append([xi.grad, *grads(layer.lin.weight, layer.bias)])
    for i in (1, 2):
        assert float((outs[i] - outs[0]).abs().max()) < tol
        assert max_diff(all_grads[i], all_grads[0]) < tol * 10
    # The isolated nodes see only themselves: out = x W + b.
    alone = x[-3:] @ ours.lin.weight.T + ours.bias
    assert torch.allclose(outs[1][-3:], alone.detach(), atol=tol)


def test_normalized_adjacency_by_hand() -> None:
    # Path 0 - 1 - 2 plus self-loops: degrees 2, 3, 2.
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    a_hat = gnn.normalized_adjacency(edge_index, 3, dtype=torch.float64)
    s6 = 1 / 6**0.5
    expected = torch.tensor([[1 / 2, s6, 0], [s6, 1 / 3, s6], [0, s6, 1 / 2]], dtype=torch.float64)
    assert torch.allclose(a_hat, expected)
    # A directed edge 0 -> 1 only: row 1 (target) reads column 0; in-degrees 1, 2.
    directed = gnn.normalized_adjacency(torch.tensor([[0], [1]]), 2, dtype=torch.float64)
    assert directed[1, 0] == pytest.approx(1 / 2**0.5) and directed[0, 1] == 0
    # An existing self-loop keeps its weight instead of getting a second one.
    loop_index, loop_weight = gnn.add_remaining_self_loops(torch.tensor([[0], [0]]), 2)
    looped = gnn.dense_adjacency(loop_index, 2, loop_weight)
    assert looped.tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(("dtype", "tol"), CASES)
@pytest.mark.parametrize("concat", [True, False])
def test_gat_sparse_and_dense_equal_pyg(dtype, tol, concat) -> None:
    n, heads = 30, 3
    edge_index = torch.unique(random_graph(n, 90, seed=2), dim=1)  # dense form: no repeats
    torch.manual_seed(0)
    ref = pyg_nn.GATConv(6, 4, heads=heads, concat=concat).to(dtype)
    ours = gnn.GATConv(6, 4, heads=heads, concat=concat).to(dtype)
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        ref.bias.normal_()
        ours.bias.copy_(ref.bias)
    x = torch.randn(n, 6, dtype=dtype)
    width = 4 * heads if concat else 4
    upstream = torch.randn(n, width, dtype=dtype)
    adjacency = gnn.dense_adjacency(edge_index, n, dtype=dtype)
    results = {}
    for run in ("pyg", "sparse", "dense"):
        layer = ref if run == "pyg" else ours
        xi = x.clone().requires_grad_(True)
        layer.zero_grad()
        if run == "pyg":
            out, (att_index, alpha) = ref(xi, edge_index, return_attention_weights=True)
        elif run == "sparse":
            out, (att_index, alpha) = ours(xi, edge_index, return_attention=True)
        else:
            out, alpha_dense = ours.forward_dense(xi, adjacency, return_attention=True)
            alpha = alpha_dense[:, att_index[1], att_index[0]].T  # read at PyG's edges
        (out * upstream).sum().backward()
        results[run] = (out.detach(), alpha.detach(), [xi.grad, *grads(*layer.parameters())])
        if run == "pyg":
            ref_index = att_index
        else:
            assert torch.equal(att_index, ref_index)
    for run in ("sparse", "dense"):
        out, alpha, g = results[run]
        assert float((out - results["pyg"][0]).abs().max()) < tol
        assert float((alpha - results["pyg"][1]).abs().max()) < tol
        assert max_diff(g, results["pyg"][2]) < tol * 10


def test_gat_attention_is_a_distribution_over_neighbours() -> None:
    edge_index = random_graph(12, 30, seed=3)  # repeats and self-loops allowed
    layer = gnn.GATConv(4, 3, heads=2)
    _, (index, alpha) = layer(torch.randn(12, 4), edge_index, return_attention=True)
    total = torch.zeros(12, 2).index_add_(0, index[1], alpha)
    assert torch.allclose(total, torch.ones(12, 2), atol=1e-6)  # isolated nodes: self only
    assert int((index[0] == index[1]).sum()) == 12  # exactly one self-loop per node


def test_segment_softmax_matches_a_loop() -> None:
    scores = torch.randn(9, 2, dtype=torch.float64)
    index = torch.tensor([0, 0, 1, 2, 2, 2, 4, 4, 4])
    out = gnn.segment_softmax(scores, index, 5)
    for node in range(5):
        rows = index == node
        if rows.any():
            assert torch.allclose(out[rows], scores[rows].softmax(dim=0))


def test_karate_club_edges_equal_pyg_and_models_agree() -> None:
    from torch_geometric.datasets import KarateClub

    karate = gnn.karate_club()
    data = KarateClub()[0]
    ours = set(map(tuple, karate.edge_index.T.tolist()))
    assert ours == set(map(tuple, data.edge_index.T.tolist())) and len(ours) == 156
    assert karate.club[0] == 0 and karate.club[33] == 1 and int(karate.club.sum()) == 17
    assert torch.equal(karate.communities, data.y) and int(karate.train_mask.sum()) == 4
    # A whole 2-layer model with PyG layers, given our weights, computes the same logits.
    torch.manual_seed(0)
    mine = gnn.GCN(34, 16, 4).eval()
    theirs = gnn.GCN(34, 16, 4, conv=pyg_nn.GCNConv).eval()
    theirs.load_state_dict(mine.state_dict())
    dense = gnn.GCN(34, 16, 4, dense=True).eval()
    dense.load_state_dict(mine.state_dict())
    x, ei = karate.x, karate.edge_index
    assert torch.allclose(mine(x, ei), theirs(x, ei), atol=1e-6)
    assert torch.allclose(dense(x, ei), theirs(x, ei), atol=1e-6)


def test_training_fits_the_labelled_nodes() -> None:
    karate = gnn.karate_club()
    torch.manual_seed(0)
    model = gnn.GCN(34, 16, 4)
    losses = gnn.train_node_classifier(
        model, karate.x, karate.edge_index, karate.communities, karate.train_mask, epochs=100
    )
    assert losses[-1] < 0.5 * losses[0]  # noisy: dropout is on while training
    logits = model(karate.x, karate.edge_index)
    assert gnn.accuracy(logits, karate.communities, karate.train_mask) == 1.0
    assert gnn.accuracy(logits, karate.communities, ~karate.train_mask) > 0.4  # chance ~0.3


def test_bad_graph_input_gets_one_line_errors() -> None:
    layer = gnn.GCNConv(3, 2)
    x = torch.randn(4, 3)
    with pytest.raises(LLMLabError, match="refers to node 4, but the graph has 4 nodes"):
        layer(x, torch.tensor([[0, 1], [1, 4]]))
    with pytest.raises(LLMLabError, match="refers to node -1"):
        layer(x, torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(LLMLabError, match=r"shape \(2, num_edges\)"):
        layer(x, torch.tensor([0, 1, 2]))
    with pytest.raises(LLMLabError, match="integer node ids"):
        layer(x, torch.tensor([[0.0], [1.0]]))
    with pytest.raises(LLMLabError, match="one value per edge"):
        layer(x, torch.tensor([[0, 1], [1, 2]]), torch.ones(3))
    with pytest.raises(LLMLabError, match="no labelled nodes"):
        gnn.train_node_classifier(
            gnn.GCN(3, 4, 2),
            x,
            torch.tensor([[0], [1]]),
            torch.zeros(4, dtype=torch.long),
            torch.zeros(4, dtype=torch.bool),
        )
    with pytest.raises(LLMLabError, match="non-edges"):
        gnn.negative_sampling(torch.tensor([[0, 1, 0], [1, 2, 2]]), 3, 1)  # a triangle is full


def test_adamic_adar_and_roc_auc_equal_the_references() -> None:
    import networkx as nx
    from sklearn.metrics import roc_auc_score

    karate = gnn.karate_club(communities=False)
    pairs = torch.tensor([[0, 0, 5, 32, 2, 9], [33, 1, 6, 33, 24, 15]])
    ours = gnn.adamic_adar(karate.edge_index, 34, pairs)
    graph = nx.karate_club_graph()
    theirs = [s for _, _, s in nx.adamic_adar_index(graph, pairs.T.tolist())]
    assert torch.allclose(ours, torch.tensor(theirs, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (200,), generator=g).double()  # many ties
    labels = torch.rand(200, generator=g) < 0.3
    assert gnn.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert gnn.roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0
    with pytest.raises(LLMLabError, match="positive and one negative"):
        gnn.roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([1, 1]))


def test_split_edges_and_negatives() -> None:
    karate = gnn.karate_club(communities=False)
    split = gnn.split_edges(karate.edge_index, 34, 0.1, 0.2, seed=0)
    key = lambda p: set(map(tuple, p.sort(dim=0).values.T.tolist()))  # noqa: E731
    everything = key(karate.edge_index)
    train = key(split.train_edge_index)
    assert len(key(split.test_pos)) == round(78 * 0.2) and len(key(split.val_pos)) == 8
    assert not train & key(split.test_pos) and not train & key(split.val_pos)
    assert len(train) + len(key(split.test_pos)) + len(key(split.val_pos)) == 78
    negatives = key(split.test_neg) | key(split.val_neg)
    assert len(negatives) == 16 + 8 and not negatives & everything
    # Within groups: both ends of every negative share the group.
    groups = (torch.arange(34) >= 17).long()
    neg = gnn.negative_sampling(
        karate.edge_index, 34, 100, torch.Generator().manual_seed(1), groups
    )
    assert neg.shape == (2, 100) and bool((groups[neg[0]] == groups[neg[1]]).all())
    assert len(key(neg)) == 100 and not key(neg) & everything


def test_graph_auto_encoder_beats_chance_on_held_out_edges() -> None:
    karate = gnn.karate_club(communities=False)
    aucs = []
    for seed in range(3):
        split = gnn.split_edges(karate.edge_index, 34, 0.0, 0.2, seed=seed)
        torch.manual_seed(seed)
        encoder = gnn.GCN(34, 32, 2, dropout=0.0)  # the sprint's recipe: a 2-D bottleneck
        losses = gnn.train_link_predictor(
            encoder,
            karate.x,
            split.train_edge_index,
            steps=100,
            generator=torch.Generator().manual_seed(seed),
        )
        assert losses[-1] < losses[0]
        with torch.no_grad():
            z = encoder(karate.x, split.train_edge_index)
        pairs = torch.cat([split.test_pos, split.test_neg], dim=1)
        labels = torch.cat(
            [torch.ones(split.test_pos.shape[1]), torch.zeros(split.test_neg.shape[1])]
        )
        aucs.append(gnn.roc_auc(gnn.link_logits(z, pairs), labels))
    assert sum(aucs) / 3 > 0.65  # chance is 0.5
