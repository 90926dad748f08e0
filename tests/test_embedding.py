"""The from-scratch `Embedding` (sprint 05) against `torch.nn.Embedding`, shared weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmlab.embedding import Embedding
from llmlab.errors import LLMLabError


@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding_matches_nn_embedding_forward_and_gradients(padding_idx: int | None) -> None:
    torch.manual_seed(0)
    ref = nn.Embedding(11, 6, padding_idx=padding_idx)
    mine = Embedding.from_pretrained(ref.weight.detach(), padding_idx=padding_idx)
    pad = 10 if padding_idx == -1 else padding_idx
    ids = torch.tensor([[1, 3, 3, 0], [10, 2, 3, 7]])  # repeated ids accumulate gradient
    out, ref_out = mine(ids), ref(ids)
    torch.testing.assert_close(out, ref_out, atol=0, rtol=0)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref_out.backward(grad)
    torch.testing.assert_close(mine.weight.grad, ref.weight.grad, atol=1e-6, rtol=1e-6)
    assert mine.weight.grad[3].abs().sum() > 0  # id 3 occurs three times
    assert (mine.weight.grad[4] == 0).all()  # id 4 never occurs
    if pad is not None:
        assert (mine.weight.grad[pad] == 0).all()


def test_padding_row_starts_at_zero_and_stays_there_in_training() -> None:
    torch.manual_seed(0)
    emb = Embedding(5, 3, padding_idx=2)
    assert (emb.weight[2] == 0).all()
    opt = torch.optim.SGD(emb.parameters(), lr=1.0)
    emb(torch.tensor([2, 2, 1])).pow(2).sum().backward()
    opt.step()
    assert (emb.weight[2] == 0).all() and (emb.weight[1] != 0).all()


def test_embedding_shape_and_one_hot_equivalence() -> None:
    torch.manual_seed(0)
    emb = Embedding(7, 4)
    ids = torch.tensor([[0, 6, 2]])
    assert emb(ids).shape == (1, 3, 4)
    one_hot = torch.nn.functional.one_hot(ids, 7).float()
    torch.testing.assert_close(emb(ids), one_hot @ emb.weight)


def test_embedding_rejects_bad_ids_and_sizes() -> None:
    emb = Embedding(5, 3)
    with pytest.raises(LLMLabError, match=r"\[0, 5\).*max 5"):
        emb(torch.tensor([0, 5]))
    with pytest.raises(LLMLabError, match="min -1"):
        emb(torch.tensor([-1]))
    with pytest.raises(LLMLabError, match="integer"):
        emb(torch.tensor([0.0]))
    with pytest.raises(LLMLabError, match="padding_idx"):
        Embedding(5, 3, padding_idx=5)
    with pytest.raises(LLMLabError, match="positive"):
        Embedding(0, 3)


def test_pca_matches_sklearn_up_to_sign() -> None:
    from sklearn.decomposition import PCA

    from llmlab.embedding import pca

    torch.manual_seed(0)
    x = torch.randn(40, 6) @ torch.randn(6, 6)  # correlated features
    points, ratio = pca(x, 3)
    ref = PCA(3).fit(x.numpy())
    ref_points = torch.as_tensor(ref.transform(x.numpy()), dtype=torch.float32)
    signs = torch.sign((points * ref_points).sum(dim=0))
    torch.testing.assert_close(points, ref_points * signs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        ratio,
        torch.as_tensor(ref.explained_variance_ratio_, dtype=torch.float32),
        atol=1e-5,
        rtol=1e-4,
    )
    assert ratio[0] >= ratio[1] >= ratio[2]
    with pytest.raises(LLMLabError, match="k="):
        pca(x, 7)


def test_cluster_quality_separates_real_groups_from_shuffled() -> None:
    from llmlab.embedding import cluster_quality, project_2d

    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + torch.randn(15, 2) for c in centres])
    groups = ["a"] * 15 + ["b"] * 15 + ["c"] * 15
    scores = cluster_quality(points, groups)
    assert scores["silhouette"] > 0.6 and scores["knn_purity"] > 0.95
    assert abs(scores["silhouette_shuffled"]) < 0.1 and scores["knn_purity_shuffled"] < 0.5
    # unstructured points: no better than shuffled labels
    noise = cluster_quality(torch.randn(45, 2), groups)
    assert noise["silhouette"] < 0.1
    assert project_2d(torch.randn(20, 8), "pca").shape == (20, 2)
    with pytest.raises(LLMLabError, match="unknown projection"):
        project_2d(torch.randn(20, 8), "lda")
    with pytest.raises(LLMLabError, match="one group label per point"):
        cluster_quality(points, groups[:-1])
