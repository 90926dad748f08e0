"""Smoke tests for sprint 03: modules, losses, optimizers, the training and evaluation loops."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import load_script

S = "sprints.03_models_and_training_loops.results."


def test_modules_weights_and_non_linearity() -> None:
    mod = load_script(S + "01_define_nn_module")
    out = mod.main(["--steps", "150", "--samples", "200"])
    assert (out["mlp_logits_rows"], out["mlp_logits_cols"]) == (4, 10)
    assert out["mlp_parameters"] == 784 * 32 + 32 + 32 * 10 + 10
    assert out["weight_relative_error"] < 0.05  # known weights recovered within 5%
    assert out["relu_loss"] * 10 < out["linear_only_loss"]  # ReLU net fits the curve far better
    assert out["collapse_max_diff"] < 1e-5  # stacked Linear layers == one Linear layer
    model = mod.SimpleMLP(hidden=16)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert {n for n, _ in model.named_parameters()} == {
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    }


def test_cross_entropy_beats_mse_for_classification() -> None:
    out = load_script(S + "02_loss_functions").main(["--steps", "60", "--samples", "100"])
    assert out["mse_manual_diff"] < 1e-6 and out["ce_manual_diff"] < 1e-5
    assert out["ce_nll_diff"] < 1e-6
    assert abs(out["ce_grad"]) > 100 * abs(out["mse_sigmoid_grad"])  # MSE+sigmoid saturates
    assert out["ce_accuracy"] > 0.9 and out["ce_accuracy"] > out["mse_accuracy"] + 0.5


def test_adam_beats_sgd_on_ill_conditioned_problem() -> None:
    out = load_script(S + "03_optimizers").main(["--steps", "100"])
    assert out["condition_number"] > 50
    for name in ("sgd", "momentum", "adam"):
        assert out[f"{name}_final_loss"] < out["initial_loss"] / 10
    assert out["adam_final_loss"] < out["sgd_final_loss"]
    assert out["momentum_final_loss"] < out["sgd_final_loss"]
    assert Path(out["curves_png"]).is_file()


def test_training_loop_lowers_train_and_val_loss() -> None:
    out = load_script(S + "04_training_loop").main(
        ["--source", "subset", "--epochs", "2", "--limit", "800", "--hidden", "32", "--lr", "3e-3"]
    )
    assert out["final_train_loss"] < out["first_train_loss"]
    assert out["final_val_loss"] < out["first_val_loss"]
    assert out["val_accuracy"] > 0.6  # chance is 0.1
    assert Path(out["curves_png"]).is_file()


def test_evaluation_eval_mode_and_no_grad() -> None:
    out = load_script(S + "05_basic_evaluation").main(
        ["--source", "subset", "--epochs", "1", "--limit", "800", "--hidden", "32", "--lr", "3e-3"]
    )
    assert out["untrained_accuracy"] < 0.3
    assert out["test_accuracy"] > 0.5 and out["test_loss"] < 2.0  # chance: 0.1 and 2.303
    assert out["train_mode_outputs_differ"] == 1.0 and out["eval_mode_outputs_equal"] == 1.0
    assert out["requires_grad_without_no_grad"] == 1.0
    assert out["requires_grad_with_no_grad"] == 0.0
    assert Path(out["confusion_png"]).is_file()


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("01_define_nn_module", ["--steps", "0"]),
        ("03_optimizers", ["--sgd-lr", "-0.1"]),
        ("04_training_loop", ["--epochs", "0"]),
        ("04_training_loop", ["--val-fraction", "1.5"]),
        ("05_basic_evaluation", ["--batch-size", "0"]),
    ],
)
def test_bad_input_is_rejected(name: str, bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        load_script(S + name).main(bad)
