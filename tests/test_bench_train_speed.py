"""Smoke test of benchmarks/bench_train_speed.py: both models train and get timed."""

from __future__ import annotations

import importlib
import math

import pytest


@pytest.mark.slow  # imports transformers and builds two models: ~15-30 s on 2 busy cores
def test_bench_train_speed_smoke() -> None:
    bench = importlib.import_module("benchmarks.bench_train_speed")
    out = bench.main(["--shapes", "tiny", "--batch-size", "2", "--block-size", "16",
                      "--warmup", "1", "--steps", "2"])  # fmt: skip
    assert out["tiny_ours_tokens_per_s"] > 0 and out["tiny_hf_tokens_per_s"] > 0
    ratio = out["tiny_ours_over_hf"]
    assert math.isfinite(ratio) and ratio > 0
    assert ratio == out["tiny_ours_tokens_per_s"] / out["tiny_hf_tokens_per_s"]
    assert "tiny_ours_mfu" not in out  # MFU only on a GPU
