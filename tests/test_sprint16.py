"""Smoke tests of the sprint-16 scripts (GRPO from scratch, reward hacking, trl, the data)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmlab.cli import run
from llmlab.data.recipes import recipes_path
from tests.conftest import load_script, tiny_llama_config

PKG = "sprints.16_grpo_reasoning.results"


def test_check_against_trl() -> None:
    out = load_script(f"{PKG}.check_against_trl").main([])
    assert out["n_cases"] == 8
    assert out["max_loss_diff"] < 1e-6 and out["max_grad_diff"] < 1e-6
    assert out["max_kl_diff"] < 1e-6 and out["max_clip_diff"] < 1e-6
    assert out["min_clipped_fraction"] > 0.1


def test_grpo_digit_sum_learns_and_generalises() -> None:
    out = load_script(f"{PKG}.grpo_digit_sum").main(
        ["--sft-steps", "150", "--steps", "80", "--eval-every", "40", "--no-progress"]
    )
    assert out["reward_last10"] > out["reward_first10"] + 0.1
    assert out["after_greedy_acc_train"] > out["before_greedy_acc_train"] + 0.1
    assert out["after_greedy_acc_heldout"] > out["before_greedy_acc_heldout"]  # never trained on
    assert len(out["history"]) == 80 and all(h["kl"] >= 0 for h in out["history"])
    assert Path(out["reward_png"]).is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set(EventAccumulator(out["run_dir"]).Reload().Tags()["scalars"])
    assert {"grpo/reward", "grpo/kl", "eval/greedy_acc_heldout"} <= tags


def test_reward_hacking_progress_reward_is_gamed() -> None:
    out = load_script(f"{PKG}.reward_hacking").main(
        ["--rewards", "exact", "progress", "--sft-steps", "150", "--steps", "40"]
        + ["--eval-every", "20", "--no-progress"]
    )
    assert out["progress_reward_last10"] > 0.9  # the proxy says "solved"
    # it is not: accuracy at most halves (this smoke run on an AVX2 EPYC: 0.075 -> 0.0375)
    assert out["progress_greedy_acc_train"] <= out["before"]["greedy_acc_train"] / 2
    assert out["progress_overshoot_share"] > 0.8  # how: answers whose sum overshoots
    assert out["exact_greedy_acc_train"] > 3 * out["progress_greedy_acc_train"]
    assert Path(out["png"]).is_file()


def test_toy_scripts_reject_bad_input(capsys) -> None:
    module = load_script(f"{PKG}.grpo_digit_sum")
    assert run(module.main, ["--group-size", "1", "--no-progress"]) == 2
    assert "group_size must be >= 2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer: trl's code path in seconds."""
    from transformers import LlamaForCausalLM

    from llmlab.pretrained import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = load_tokenizer("smollm2")
    torch.manual_seed(0)
    config = tiny_llama_config(
        2,
        vocab_size=len(tokenizer),
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_grpo_trl_runs_and_matches_our_maths(tiny_llama: Path, monkeypatch) -> None:
    module = load_script(f"{PKG}.grpo_trl")
    # A random model never writes the tags, so every reward would be 0 and every advantage 0;
    # score length instead, so the parity check compares non-trivial advantages and losses.
    monkeypatch.setattr(module, "format_reward", lambda text: (len(text) % 7) / 6)
    out = module.main(
        ["--model", str(tiny_llama), "--steps", "2", "--eval-items", "3"]
        + ["--max-completion-length", "6", "--train-blocks", "1", "--parity-steps", "2"]
        + ["--no-progress", "--device", "cpu"]
    )
    assert out["steps"] == 2 and out["parity_steps"] == 2
    assert any(h["reward_std"] > 0 for h in out["history"])  # the check saw real advantages
    assert out["parity_adv_diff"] < 1e-5 and out["parity_loss_diff"] < 1e-5
    assert "kl" in out["history"][0]  # beta > 0 by default: trl built a reference model
    assert out["before"]["n"] == out["after"]["n"] == 3
    assert 0 < out["trainable_params"] < 1_700_000
    for key in ("rewards_png", "kl_png", "length_png"):
        assert Path(out[key]).is_file()
    assert (Path(out["run_dir"]) / "answers.json").is_file()


def test_grpo_trl_rejects_bad_input(capsys) -> None:
    module = load_script(f"{PKG}.grpo_trl")
    assert run(module.main, ["--num-generations", "1"]) == 2
    assert "--num-generations must be >= 2" in capsys.readouterr().err


def test_make_recipe_dataset_rebuilds_the_committed_file(tmp_path: Path) -> None:
    out = load_script(f"{PKG}.make_recipe_dataset").main(["--out", str(tmp_path / "r.jsonl")])
    assert out["n"] == 400 and out["splits"] == {"train": 300, "test": 100}
    assert (tmp_path / "r.jsonl").read_bytes() == recipes_path().read_bytes()
