"""Smoke tests of the sprint-08 scripts (the tokenizer demo is tested with the tokenizers)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import load_script

PKG = "sprints.08_gpt2_assembly.results"


def test_build_gpt2_tiny() -> None:
    out = load_script(f"{PKG}.build_gpt2").main(["--new-tokens", "5"])
    assert out["n_params"] == out["formula_params"] == out["hf_params"]
    assert out["reload_max_logit_diff"] == 0.0
    assert out["cache_matches_no_cache"] == 1.0
    assert out["new_tokens"] == 5
    assert (Path(out["checkpoint"]) / "model.safetensors").is_file()


def test_build_gpt2_parameter_formula_matches_gpt2_small() -> None:
    from llmlab.gpt import GPTConfig

    formula = load_script(f"{PKG}.build_gpt2").parameter_formula
    assert formula(GPTConfig()) == 124_439_808


def test_check_against_hf() -> None:
    out = load_script(f"{PKG}.check_against_hf").main(["--new-tokens", "10"])
    assert out["n_shapes"] == 3
    assert out["hf_to_ours_max_diff"] < 1e-5 and out["ours_to_hf_max_diff"] < 1e-5
    assert out["hf_to_ours_greedy_agreement"] == out["ours_to_hf_greedy_agreement"] == 1.0


def test_build_gpt2_rejects_a_prompt_past_the_context(capsys) -> None:
    from llmlab.cli import run

    module = load_script(f"{PKG}.build_gpt2")
    assert run(module.main, ["--new-tokens", "500"]) == 2
    assert "context of 128 tokens" in capsys.readouterr().err
