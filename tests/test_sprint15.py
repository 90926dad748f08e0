"""Smoke tests of the sprint-15 scripts: each runs small and returns the figures it printed.

Tiny task (4 symbols-long sequences over 5 symbols), tiny model, tens of steps: enough for a
model to beat chance (1/5 per token), not to solve the task.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmlab.errors import LLMLabError
from tests.conftest import load_script

PKG = "sprints.15_encoder_decoder.results"
TINY = [
    "--length", "4", "--symbols", "5", "--d-model", "32", "--d-ff", "64", "--batch-size", "32",
    "--n-seeds", "1", "--test-size", "64", "--eval-size", "64", "--eval-every", "30",
    "--inject-at", "2", "--no-progress",
]  # fmt: skip
CHANCE = 1 / 5


@pytest.fixture(scope="module")
def reversal_run() -> dict:
    """01_encoder_decoder once: parity, a trained reversal model, its checkpoint."""
    return load_script(f"{PKG}.01_encoder_decoder").main([*TINY, "--steps", "60"])


def test_encoder_decoder_script(reversal_run: dict) -> None:
    out = reversal_run
    for name in ("post_norm", "pre_norm"):
        assert out[f"{name}_logit_diff"] < 1e-5 and out[f"{name}_grad_diff"] < 1e-5
    assert out["cache_same_tokens"] == 1.0 and out["cache_logit_diff"] < 1e-5
    assert out["beam_score_diff_mean"] < 1e-4  # beam scores are the sequences' log-probs
    assert out["fr_token_acc_mean"] > CHANCE + 0.1
    assert Path(out["cross_attention_png"]).is_file()
    assert (Path(out["checkpoint"]) / "task.json").is_file()


def test_exposure_bias_script() -> None:
    out = load_script(f"{PKG}.02_exposure_bias").main(
        [*TINY, "--tasks", "copy", "running_sum", "--steps", "60"]
    )
    assert out["copy/fr_token_acc_mean"] > CHANCE + 0.2
    assert out["exact_match_identity_max_diff"] < 1e-9  # same number in both modes
    assert out["copy/largest_gap"] >= out["copy/end_gap"] - 1e-9
    assert len(out["running_sum/recovery_by_offset"]) == 2  # outputs 3 and 4 after output 2
    assert Path(out["copy/error_by_position_png"]).is_file() and Path(out["recovery_png"]).is_file()
    with pytest.raises(LLMLabError, match="unknown task"):
        load_script(f"{PKG}.02_exposure_bias").main(["--tasks", "reverse", "flip"])


@pytest.mark.slow
def test_scheduled_sampling_script() -> None:
    out = load_script(f"{PKG}.03_scheduled_sampling").main(
        [*TINY, "--task", "copy", "--steps", "40", "--schedules", "linear", "--floor", "0.5"]
    )
    assert out["mle/fr_token_acc_mean"] > CHANCE and out["ss_linear/fr_token_acc_mean"] > CHANCE
    assert "ss_linear/delta_fr_token_acc_mean" in out
    assert Path(out["schedules_png"]).is_file() and Path(out["fed_back_png"]).is_file()


@pytest.mark.slow
def test_professor_forcing_script() -> None:
    out = load_script(f"{PKG}.04_professor_forcing").main(
        [*TINY, "--task", "copy", "--steps", "40", "--warm-start", "0.5"]
    )
    assert out["professor/fr_token_acc_mean"] > CHANCE
    assert 0.0 <= out["discriminator_acc_last"] <= 1.0
    assert Path(out["discriminator_png"]).is_file()


@pytest.mark.slow
def test_reinforce_script() -> None:
    out = load_script(f"{PKG}.05_reinforce").main(
        [*TINY, "--task", "copy", "--steps", "40", "--rl-weights", "0.5"]
    )
    assert out["reinforce_w0.5/fr_token_acc_mean"] > CHANCE
    assert Path(out["reward_png"]).is_file()


def test_flip_baseline_script_on_the_saved_checkpoint(reversal_run: dict) -> None:
    script = load_script(f"{PKG}.06_flip_baseline")
    ckpt = reversal_run["checkpoint"]
    args = ["--checkpoint", ckpt, "--symbols", "5", "--length", "4", "--min-length", "4",
            "--test-length", "6", "--test-size", "64", "--no-progress"]  # fmt: skip
    out = script.main(args)
    assert out["flip_seen_exact"] == 1.0 and out["flip_longer_exact"] == 1.0
    assert out["naive_flip_longer_exact"] < 1.0  # flipping a padded batch moves the padding
    assert out["model_seen_fr_token_acc_mean"] > CHANCE
    assert len(out["exact_by_length"]) == 3  # lengths 4 (trained), 5 and 6 (never seen)
    with pytest.raises(LLMLabError, match="vocabulary mismatch"):
        script.main([*args[:2], "--symbols", "7", "--length", "4"])
    with pytest.raises(LLMLabError, match="max_len"):
        script.main([*args[:2], "--symbols", "5", "--length", "4", "--test-length", "40"])


def test_flip_baseline_script_trains_its_own() -> None:
    out = load_script(f"{PKG}.06_flip_baseline").main(
        [*TINY, "--steps", "40", "--test-length", "6"]
    )
    assert out["flip_longer_exact"] == 1.0
    assert out["model_seen_fr_token_acc_mean"] > CHANCE
