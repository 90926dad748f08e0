"""Smoke test of benchmarks/bench_step_speed.py: our step and the plain reference get timed
side by side, the profile splits a step into components, the reference trains."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch

from llmlab.data.shakespeare import prepare
from llmlab.lm_training import TrainConfig


def test_step_speed_side_by_side_and_profile(tmp_path: Path) -> None:
    bench = importlib.import_module("benchmarks.bench_step_speed")
    out = bench.main(["--batch-size", "2", "--block-size", "16", "--warmup", "1",
                      "--rounds", "2", "--chunk", "1", "--profile", "--profile-steps", "2",
                      "--variant", "adamw:optimizer=adamw,mlp_act=gelu",
                      "--variant", "ns3:muon_ns_steps=3"])  # fmt: skip
    for name in ("plain", "ours", "adamw", "ns3"):
        assert out[f"{name}_ms_per_step"] > 0 and math.isfinite(out[f"{name}_tokens_per_s"])
    assert out["ours_over_plain"] == pytest.approx(
        out["plain_ms_per_step"] / out["ours_ms_per_step"]
    )
    assert out["plain_over_plain"] == 1.0 and out["threads"] == 1
    profile = out["profile_ms"]
    for part in ("matrix products", "attention kernel (SDPA)", "optimizer", "data (get_batch)"):
        assert profile[part] > 0, part
    assert torch.get_num_threads() == 1  # restored (conftest runs tests with 1 thread)
    run_, _ = bench.make_ours(
        TrainConfig(data_dir=str(prepare("tiny", "char")), out_dir=str(tmp_path), batch_size=2,
                    block_size=16, muon_ns_steps=3, progress=False, save_checkpoints=False)
    )  # fmt: skip
    assert [g.get("ns_steps") for g in run_.optimizer.param_groups] == [3, 3]


@pytest.mark.slow  # trains the reference twice and scores the whole validation split: ~10 s
def test_reference_is_the_same_shape_and_learns() -> None:
    bench = importlib.import_module("benchmarks.bench_step_speed")
    cfg = TrainConfig()
    ref = bench.PlainGPT(77, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd)
    blocks = sum(p.numel() for n, p in ref.named_parameters() if n.startswith("h."))
    assert blocks == cfg.n_layer * 12 * cfg.n_embd**2 + cfg.n_layer * 2 * cfg.n_embd
    # the nanoGPT schedule: warmup from lr/(warmup+1), cosine to min_lr at the last step
    r = bench.NANOGPT_RECIPE
    assert bench.nanogpt_lr(0, 1.0, 0.1, 100, 3500) == pytest.approx(1 / 101)
    assert bench.nanogpt_lr(3500, 1.0, 0.1, 100, 3500) == pytest.approx(0.1)
    assert r["lr"] == 6e-3 and r["steps"] == 3500
    out = bench.main(["--train-reference", "--ref-steps", "60", "--seeds", "1,2"])
    assert set(out) >= {"ref_val_loss_seed1", "ref_val_loss_seed2", "ref_val_loss_mean"}
    assert out["ref_val_loss_mean"] < math.log(77) - 0.8  # it learned (uniform: ln 77 = 4.34)
    assert out["ref_val_loss_spread"] == pytest.approx(
        abs(out["ref_val_loss_seed1"] - out["ref_val_loss_seed2"])
    )
