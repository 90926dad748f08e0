"""Smoke tests of the sprint-05 scripts: each checks the figures the script returned."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmlab.errors import LLMLabError

PKG = "sprints.05_embeddings_and_positional_encoding.results."


def test_embedding_from_scratch_equals_nn_embedding(script) -> None:
    r = script(PKG + "embedding_from_scratch").main(["--vocab", "12", "--dim", "5"])
    assert r["forward_max_diff"] == 0 and r["one_hot_max_diff"] < 1e-6
    assert r["grad_max_diff"] < 1e-6
    assert r["padding_row_grad_abs_sum"] == 0 and r["unused_rows_grad_abs_sum"] == 0
    with pytest.raises(LLMLabError, match="--padding-idx"):
        script(PKG + "embedding_from_scratch").main(["--vocab", "5", "--padding-idx", "5"])


def test_sinusoidal_pe_example_shows_offset_invariance(script) -> None:
    r = script(PKG + "sinusoidal_pe_example").main(["--length", "60", "--dim", "32"])
    assert r["offset_dot_max_deviation"] < 1e-4
    assert r["similarity_adjacent"] > r["similarity_far"]
    assert r["module_add_max_diff"] == 0
    for key in ("table_png", "similarity_png", "distance_png"):
        assert Path(r[key]).stat().st_size > 0
    with pytest.raises(LLMLabError, match="--offset"):
        script(PKG + "sinusoidal_pe_example").main(["--length", "5", "--offset", "5"])


def test_rope_example_matches_transformers(script) -> None:
    r = script(PKG + "rope_example").main(["--head-dim", "16", "--length", "12"])
    assert r["parity_max_diff"] < 1e-5
    assert r["diagonal_max_deviation"] < 1e-4 and r["norm_max_change"] < 1e-4
    assert Path(r["scores_png"]).is_file() and Path(r["cos_png"]).is_file()
    with pytest.raises(LLMLabError, match="even"):
        script(PKG + "rope_example").main(["--head-dim", "7"])


@pytest.mark.slow
def test_learned_pe_example_positions_are_needed(script) -> None:
    r = script(PKG + "learned_pe_example").main(
        ["--steps", "120", "--seq-len", "6", "--d-model", "16"]
    )
    assert r["accuracy_learned"] > 0.9 and r["accuracy_sinusoidal"] > 0.9
    assert r["accuracy_none"] < r["accuracy_learned"] - 0.3  # order is invisible without PE
    assert r["accuracy_none"] > r["chance"] - 0.05
    assert Path(r["loss_png"]).is_file() and Path(r["learned_similarity_png"]).is_file()


# The three pictures of SmolLM2's embeddings share one model conversion per test session.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["pca_example", "tsne_example", "umap_example"])
def test_embedding_pictures_cluster_by_meaning(script, name: str) -> None:
    r = script(PKG + name).main([])
    assert r["silhouette"] > r["silhouette_shuffled"] + 0.3
    assert r["knn_purity"] > r["knn_purity_shuffled"] + 0.4
    assert Path(r["png"]).stat().st_size > 0
    if name == "pca_example":
        assert r["sklearn_max_diff"] < 1e-4 and 0 < r["explained_variance_2d"] < 1
    else:
        assert r["knn_purity"] > 0.85  # t-SNE / UMAP keep neighbours together


def test_projection_scripts_reject_bad_neighbours(script, monkeypatch) -> None:
    import torch

    from llmlab import pretrained

    fake = (torch.randn(6, 4), list("abcdef"), ["x", "x", "x", "y", "y", "y"])
    shared = script(PKG + "_neighbour_maps")
    monkeypatch.setattr(shared, "word_embeddings", lambda **kwargs: fake)
    for name in ("tsne_example", "umap_example"):
        module = script(PKG + name)
        with pytest.raises(LLMLabError, match="--neighbours"):
            module.main(["--neighbours", "6"])
    assert pretrained.WORD_GROUPS  # the real groups are untouched
