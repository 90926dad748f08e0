"""Smoke test of benchmarks/bench_quantization.py: every method builds, is scored and timed."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

from llmlab.errors import LLMLabError


def test_bench_quantization_tiny_and_sprint09(sprint09_run) -> None:
    bench = importlib.import_module("benchmarks.bench_quantization")
    methods = "fp32,bf16,torch_ao_dynamic,smoothquant_int8_token,torchao_int8_dynamic,gguf_q8_0,gguf_q4_0_head_q8"
    out = bench.main(["--models", "tiny,sprint09", "--methods", methods, "--tokens", "256",
                      "--char-tokens", "512", "--calib-tokens", "128", "--repeats", "1",
                      "--repeats-b8", "1"])  # fmt: skip
    assert [m["model"] for m in out["models"]] == ["tiny", "sprint09"]
    for res in out["models"]:
        rows = res["rows"]
        assert list(rows) == methods.split(",")
        assert rows["fp32"]["speedup_b1"] == 1.0 and rows["fp32"]["delta_pct"] == 0.0
        assert all(math.isfinite(r["perplexity"]) for r in rows.values())
        assert "ms_b1" not in rows["gguf_q8_0"]  # no GGUF kernel: size and quality only
        assert rows["gguf_q4_0_head_q8"]["mib"] < rows["gguf_q8_0"]["mib"] < rows["fp32"]["mib"]
        assert rows["torch_ao_dynamic"]["mib"] < rows["bf16"]["mib"] < rows["fp32"]["mib"]
        assert rows["fp32"]["tokens_per_s_b8"] == pytest.approx(
            8 * res["window"] / (rows["fp32"]["ms_b8"] / 1e3)
        )
        assert isinstance(res["meets_target"], list)
    assert Path(out["png"]).is_file()
    assert "| method | MiB |" in Path(out["table"]).read_text()
    assert json.loads(Path(out["table"]).with_name("summary.json").read_text())["models"]


def test_bench_quantization_without_a_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    bench = importlib.import_module("benchmarks.bench_quantization")
    monkeypatch.setenv("LLMLAB_RUNS", str(tmp_path))  # no sprint-09 run: skipped with a note
    with pytest.raises(LLMLabError, match="no model was benchmarked"):
        bench.main(["--models", "sprint09"])
    assert "skipping the sprint-09 model" in capsys.readouterr().out
