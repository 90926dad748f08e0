"""Smoke tests of the sprint-17 scripts: each runs `main()` small and checks what it returned."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from llmlab.cli import run
from llmlab.errors import LLMLabError

PKG = "sprints.17_gnn.results."


def test_check_against_pyg(script) -> None:
    r = script(PKG + "check_against_pyg").main(
        ["--nodes", "200", "--edges", "800", "--repeats", "2"]
    )
    assert r["max_out_gap_float32"] < 1e-5 and r["max_grad_gap_float32"] < 1e-4
    assert r["max_out_gap_float64"] < 1e-12 and r["max_grad_gap_float64"] < 1e-11
    assert all(r[f"{g}_gcn_sparse_time_ratio"] > 0 for g in ("karate", "random"))


def test_karate_club_ours_equals_pyg_and_beats_no_graph(script) -> None:
    r = script(PKG + "karate_club").main(["--seeds", "2", "--epochs", "60"])
    for stat in ("mean", "min", "max"):
        assert r[f"gcn_ours_{stat}"] == r[f"gcn_pyg_{stat}"] == r[f"gcn_ours_dense_{stat}"]
        assert r[f"gat_ours_{stat}"] == r[f"gat_pyg_{stat}"]
    assert r["same_accuracy_as_pyg_seeds"] == 2 and r["max_logit_gap_after_training"] < 1e-4
    assert r["gcn_ours_mean"] > 0.5 > r["mlp_mean"]  # 4 communities: chance is about 0.3
    assert r["club_gcn_ours_mean"] > 0.85
    assert r["untrained_silhouette"] > r["untrained_silhouette_shuffled"] + 0.1
    for key in ("untrained_png", "graph_png", "accuracy_png", "gat_attention_png"):
        assert Path(r[key]).stat().st_size > 0


def test_oversmoothing_converges_to_one_direction(script) -> None:
    r = script(PKG + "oversmoothing").main(
        ["--depths", "2", "16", "--seeds", "2", "--epochs", "80"]
    )
    cosines = [r[f"cosine_after_{k}"] for k in (0, 1, 2, 4, 8, 16, 32, 64)]
    assert cosines[0] == pytest.approx(0.0) and cosines[-1] > 0.999
    assert all(a < b for a, b in zip(cosines, cosines[1:], strict=False))
    assert r["depth_2_accuracy_mean"] > r["depth_16_accuracy_mean"]


def test_link_prediction_on_the_karate_club(script) -> None:
    r = script(PKG + "link_prediction").main(["--graph", "karate", "--karate-seeds", "3"])
    assert r["karate_gae_auc_mean"] > 0.65 and r["karate_adamic_adar_auc_mean"] > 0.55
    assert Path(r["karate_roc_png"]).is_file()


def test_node_embeddings_cluster_by_community(script) -> None:
    r = script(PKG + "node_embeddings").main(["--methods", "pca", "tsne", "--seeds", "1"])
    for name in ("untrained", "trained", "autoencoder"):
        assert r[f"{name}_ari_communities_mean"] > 0.3  # 0 = random clusters
        assert r[f"{name}_pca_knn_purity"] > r[f"{name}_pca_knn_purity_shuffled"] + 0.2
    assert r["modularity_ari_communities"] > 0.5
    assert Path(r["grid_png"]).stat().st_size > 0


def test_shakespeare_graph_grows_incrementally(script) -> None:
    r = script(PKG + "shakespeare_graph").main(
        ["--plays", "hamlet,othello,lear,twelfth_night", "--add", "macbeth", "--steps", "40",
         "--projection", "pca", "--query", "hamlet:Hamlet", "--query", "othello:Iago"]
    )  # fmt: skip
    assert r["plays"] == 5 and r["added_characters"] > 20
    assert r["incremental_max_gap"] < 1e-5  # appending = recomputing everything
    assert r["neighbour_lists_changed"] > 0
    assert all(
        n.startswith("macbeth:") for hits in r["cross_play_answers"].values() for n, _ in hits
    )
    assert r["gold_speech_accuracy"]["hamlet"] > 0.97 and r["unlinked_rate"] < 0.1
    assert r["loss_last"] < r["loss_first"]
    assert Path(r["play_graph_png"]).is_file() and Path(r["embedding_png"]).is_file()


def test_shakespeare_graph_rejects_unknown_names(script, capsys) -> None:
    module = script(PKG + "shakespeare_graph")
    with pytest.raises(LLMLabError, match="unknown play"):
        module.main(["--plays", "hamlet,hamlett", "--add", ""])
    code = run(module.main, ["--plays", "hamlet", "--add", "", "--steps", "2", "--projection",
                             "pca", "--query", "Yorick"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no character 'Yorick'" in err[0]


def test_graph_soft_prompt_with_the_learners_gpt(script, sprint09_run) -> None:
    # The tiny sprint-09 model of the fixture: char-level, context 32.
    r = script(PKG + "graph_soft_prompt").main(
        ["--lm", str(sprint09_run), "--seeds", "1", "--steps", "5", "--gae-steps", "20",
         "--before", " m", "--after", " is", "--no-text-baseline", "--new-tokens", "3"]
    )  # fmt: skip
    assert r["final_loss_mean"] < r["first_loss_mean"]
    assert 0.0 <= r["soft_prompt_generated_mean"] <= 1.0
    assert r["majority_generated_mean"] == pytest.approx(0.5, abs=0.1)
    with pytest.raises(LLMLabError, match="context of 32"):
        script(PKG + "graph_soft_prompt").main(
            ["--lm", str(sprint09_run), "--seeds", "1", "--steps", "1", "--before", "x" * 30]
        )


@pytest.mark.slow
def test_graph_soft_prompt_with_smollm2(script, smollm2, monkeypatch) -> None:
    module = script(PKG + "graph_soft_prompt")
    model, tokenizer = smollm2
    flags = [p.requires_grad for p in model.parameters()]
    first = copy.deepcopy(next(model.parameters()).detach())
    monkeypatch.setattr(module, "load_pretrained", lambda name, device: (model, tokenizer))
    r = module.main(["--seeds", "1", "--steps", "12", "--no-text-baseline"])
    assert r["final_loss_mean"] < 0.5 * r["first_loss_mean"]
    assert r["soft_prompt_choice_mean"] > 0.7  # the likelier of the two labels, held out
    assert r["prompt_only_generated_mean"] == 0.0  # without the graph it says neither
    assert [p.requires_grad for p in model.parameters()] == flags  # the shared model is intact
    assert next(model.parameters()).equal(first)


@pytest.mark.slow
def test_node_embeddings_umap_picture(script) -> None:
    r = script(PKG + "node_embeddings").main(["--methods", "umap", "--seeds", "1"])
    assert r["autoencoder_umap_knn_purity"] > r["autoencoder_umap_knn_purity_shuffled"] + 0.2


@pytest.mark.slow
def test_link_prediction_on_the_shakespeare_graph(script) -> None:
    r = script(PKG + "link_prediction").main(
        ["--graph", "shakespeare", "--shakespeare-seeds", "1", "--steps", "100"]
    )
    # Measured (3 splits, 200 steps): auto-encoder 0.859, Adamic-Adar 0.923: the heuristic wins.
    assert r["shakespeare_gae_auc_mean"] > 0.75 and r["shakespeare_adamic_adar_auc_mean"] > 0.85
