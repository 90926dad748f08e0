"""Sprint 10 scripts: smoke runs on the session's tiny sprint-09 model (no SmolLM2 needed).

The demo has its own end-to-end tests in tests/test_demo.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmlab.hf_export import ensure_export
from llmlab.pretrained import latest_run_checkpoint
from tests.conftest import load_script

PKG = "sprints.10_pretrained_generation_demo.results"


def test_load_models_reads_your_model_and_teaches_pad(sprint09_run) -> None:
    out = load_script(f"{PKG}.load_models").main(["--models", "sprint09", "--new-tokens", "5"])
    assert out["sprint09"]["class"] == "GPTNeoXForCausalLM"
    assert out["sprint09"]["pad_token"] is None and out["sprint09"]["continuation"]
    pad = out["pad"]
    assert "padding token" in pad["pad_error"]  # what happens before the fix
    assert pad["rows_after"] == pad["rows_before"] + 1 == pad["pad_id"] + 1
    assert pad["batched_equals_single"] is True


def test_export_to_hf_gives_the_same_model(sprint09_run, tmp_path) -> None:
    out = load_script(f"{PKG}.export_to_hf").main(
        ["--out", str(tmp_path / "export"), "--text", "KING:\nWhat", "--new-tokens", "8"]
    )
    assert out["hf_class"] == "GPTNeoXForCausalLM" and out["same_token_ids"]
    assert out["max_logit_diff"] < 1e-5 and out["same_greedy_tokens"]
    assert (tmp_path / "export" / "tokenizer.json").is_file()


def test_decoding_strategies_show_what_each_filter_keeps(sprint09_run) -> None:
    out = load_script(f"{PKG}.decoding_strategies").main(
        ["--model", "sprint09", "--prompt", "KING:", "--new-tokens", "8", "--top", "10"]
    )
    kept = out["kept_at_step_1"]
    assert kept["raw softmax"] == kept["temperature 0.5"] == 77  # temperature removes nothing
    assert kept["top-k 10"] == 10
    assert 1 <= kept["min-p 0.1"] <= kept["raw softmax"] and 1 <= kept["top-p 0.9"] < 77
    rows = out["strategies"]
    assert len(rows) == 9 and all(0 <= r["repeated_bigrams"] <= 1 for r in rows.values())
    # Greedy picks the likeliest token at each step: its mean log-prob beats hot sampling's.
    assert rows["greedy"]["mean_logprob"] > rows["temperature 1.5"]["mean_logprob"]
    assert Path(out["png"]).is_file()


def test_streaming_from_both_engines_spells_the_same_text(sprint09_run) -> None:
    out = load_script(f"{PKG}.streaming").main(
        ["--model", "sprint09", "--prompt", "KING:", "--new-tokens", "12", "--quiet"]
    )
    assert out["same_text"] and out["llmlab"]["pieces"] >= 2
    assert out["transformers"]["first_piece_s"] <= out["transformers"]["total_s"]


def test_bits_per_character_agree_across_two_paths_to_the_same_model(sprint09_run) -> None:
    # Your model scored as an llmlab GPT and as its Hugging Face export (through the adapter):
    # the same numbers, and for a char-level model bits/char = nats/char / ln 2.
    export = ensure_export(latest_run_checkpoint())
    out = load_script(f"{PKG}.evaluate_models").main(
        ["--models", f"sprint09,{export}", "--chars", "400"]
    )
    ours, theirs = out["models"]["sprint09"], out["models"][str(export)]
    assert ours["chars_per_token"] == pytest.approx(1.0)
    assert ours["bits_per_char"] == pytest.approx(ours["loss_per_token"] / math.log(2))
    assert theirs["tokens"] == ours["tokens"]
    assert theirs["bits_per_char"] == pytest.approx(ours["bits_per_char"], abs=1e-5)


def test_generation_benchmark_runs_and_compares_equal_outputs() -> None:
    out = load_script("benchmarks.bench_generate").main(
        ["--shapes", "tiny", "--new-tokens", "8", "--prompt", "4", "--repeats", "1",
         "--vocab", "101"]
    )  # fmt: skip
    assert out["tiny_t1_cache_speedup"] > 0 and out["tiny_t1_ours_over_hf"] > 0
    assert out["tiny_t1_ours_tokens_per_s"] > 0
