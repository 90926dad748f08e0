"""Smoke tests for sprint 01: tensors, autograd vs finite differences, hand-written backprop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import load_script

S = "sprints.01_setup_and_basics.results."


def test_tensor_basics_facts() -> None:
    out = load_script(S + "01_tensor_basics").main(["--device", "cpu"])
    assert out["matmul_trace"] == 14.0 + 77.0  # [[1,2,3],[4,5,6]] @ its transpose
    assert out["broadcast_sum"] == 21.0 + 2 * (10 + 20 + 30)
    assert out["masked_count"] == 3.0
    assert out["shares_numpy_memory"] == 1.0 and out["view_shares_storage"] == 1.0
    assert out["permute_contiguous"] == 0.0 and out["view_after_permute_ok"] == 0.0
    assert out["nchw_channels"] == 3.0 and out["device_roundtrip_ok"] == 1.0


def test_scalar_autograd_matches_finite_differences() -> None:
    out = load_script(S + "02b_autograd_scalar_example").main(["--points", "7", "--seed", "3"])
    assert out["max_abs_diff"] < 1e-4
    assert out["max_abs_diff_formula"] < 1e-10  # autograd is exact; the formula agrees
    assert out["accumulation_ratio"] == pytest.approx(2.0)
    assert out["gd_final_w"] == pytest.approx(3.0, abs=1e-3)


def test_network_autograd_matches_finite_differences() -> None:
    out = load_script(S + "02c_neural_network_gradients").main(["--hidden", "3", "--steps", "50"])
    assert out["num_parameters"] == 3 * 3 + 3 + 3 + 1
    assert out["max_abs_diff"] < 1e-4
    assert out["loss_after"] < out["loss_before"]


def test_hand_written_backprop_trains() -> None:
    out = load_script(S + "02d_hidden_layer_network").main(["--epochs", "400", "--hidden", "32"])
    assert out["grad_check_max_diff"] < 1e-10  # manual gradients == autograd's
    assert out["initial_loss"] / out["final_loss"] >= 10.0
    assert Path(out["loss_curve_png"]).stat().st_size > 1000


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--hidden", "-1"], ["--lr", "0"]])
def test_bad_sizes_are_rejected(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        load_script(S + "02d_hidden_layer_network").main(bad)
