"""Smoke tests of the sprint-06 scripts: parity numbers and pictures they returned."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmlab.errors import LLMLabError

PKG = "sprints.06_multi_head_attention.results."


def test_sdpa_script_parity_and_no_nan(script) -> None:
    r = script(PKG + "scaled_dot_product_attention").main(["--seq-len", "5", "--pad", "2"])
    for name in ("none", "causal", "padding", "causal+padding"):
        assert r[f"max_abs_diff_{name}"] < 1e-5
    assert r["fully_masked_row_nan"] == 0 and r["fully_masked_row_abs_sum"] == 0
    assert Path(r["weights_png"]).stat().st_size > 0
    with pytest.raises(LLMLabError, match="--pad"):
        script(PKG + "scaled_dot_product_attention").main(["--seq-len", "4", "--pad", "4"])


def test_multi_head_attention_script_parity(script) -> None:
    r = script(PKG + "02_multi_head_attention").main(["--d-model", "24", "--heads", "3"])
    assert len(r) == 7
    for name, value in r.items():
        assert value < 1e-5, name
    with pytest.raises(LLMLabError, match="multiple"):
        script(PKG + "02_multi_head_attention").main(["--d-model", "10", "--heads", "3"])


@pytest.mark.slow
def test_attention_maps_reverser_learns_the_anti_diagonal(script) -> None:
    r = script(PKG + "attention_maps").main(["--seq-len", "6", "--steps", "150"])
    assert r["reverse_accuracy"] > 0.9
    assert r["anti_diagonal_weight"] > 0.5 > r["uniform_weight"]
    for key in (
        "mask_causal_png",
        "mask_padding_png",
        "mask_causal_and_padding_png",
        "reverser_attention_png",
    ):
        assert Path(r[key]).stat().st_size > 0
