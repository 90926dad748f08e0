"""Smoke tests of the sprint-07 scripts: each runs small and returns the figures it printed."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import load_script

PKG = "sprints.07_transformer_block.results"


def test_layer_norm_script() -> None:
    out = load_script(f"{PKG}.01_layer_norm").main(["--d-model", "32", "--seq-len", "4"])
    assert out["mean_after_max_abs"] < 1e-5
    assert abs(out["std_after_mean"] - 1) < 1e-3
    assert max(out[k] for k in out if k.endswith("max_diff")) < 1e-4
    assert out["layernorm_batch_dependence"] == 0.0 < out["batchnorm_batch_dependence"]
    assert Path(out["figure"]).is_file()


def test_residual_script_shows_residuals_help() -> None:
    out = load_script(f"{PKG}.02_residual_add_norm").main(
        ["--depth", "12", "--d-model", "32", "--batch", "4", "--seq-len", "8", "--steps", "60"]
    )
    assert out["post_norm_formula_diff"] < 1e-5 and out["pre_norm_formula_diff"] < 1e-5
    # With a residual path the input survives the stack and the task is learned far better.
    assert out["post_norm_input_cosine"] > 0.3 > abs(out["no_residual_input_cosine"])
    assert out["pre_norm_final_loss"] < 0.5 * out["no_residual_final_loss"]
    assert out["post_norm_final_loss"] < 0.5 * out["no_residual_final_loss"]
    assert all(Path(out[k]).is_file() for k in ("std_figure", "grad_figure", "loss_figure"))


def test_feed_forward_script() -> None:
    out = load_script(f"{PKG}.03_feed_forward").main(["--d-model", "16", "--d-ff", "64"])
    assert out["n_params"] == out["formula_params"] == 2 * 16 * 64 + 64 + 16
    assert out["position_wise_diff"] < 1e-5 and out["torch_parity_diff"] < 1e-5
    assert out["train_mode_stochastic"] == 1.0
    assert 1e-5 < out["gelu_tanh_max_gap"] < 1e-3
    assert Path(out["figure"]).is_file()


def test_encoder_block_script() -> None:
    out = load_script(f"{PKG}.04_encoder_block").main(["--n-layers", "2", "--seq-len", "6"])
    assert out["padding_leak"] < 1e-6
    assert out["post_norm_parity_diff"] < 1e-5 and out["pre_norm_parity_diff"] < 1e-5
    assert out["output_shape_ok"] == 1.0
    assert Path(out["figure"]).is_file()


def test_decoder_block_script() -> None:
    out = load_script(f"{PKG}.05_decoder_block").main(["--n-layers", "2"])
    assert out["causal_leak"] < 1e-6 < out["unmasked_change"]
    assert out["post_norm_parity_diff"] < 1e-5 and out["pre_norm_parity_diff"] < 1e-5
    assert out["output_shape_ok"] == 1.0
    assert Path(out["self_attention_figure"]).is_file()
