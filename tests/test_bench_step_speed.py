"""Smoke test of benchmarks/bench_step_speed.py: our step and the plain reference get timed
side by side, the profile splits a step into components, the reference trains."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
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
    for name in ("plain", "plain-muon", "ours", "adamw", "ns3"):
        assert out[f"{name}_ms_per_step"] > 0 and math.isfinite(out[f"{name}_tokens_per_s"])
    assert out["ours_over_plain"] == pytest.approx(
        out["plain_ms_per_step"] / out["ours_ms_per_step"]
    )
    assert out["ours_over_plain_muon"] == pytest.approx(
        out["plain-muon_ms_per_step"] / out["ours_ms_per_step"]
    )
    # the wall-clock phases: every contender, every phase, none negative
    phases = out["phases_ms"]
    assert set(phases) == {"plain", "plain-muon", "ours", "adamw", "ns3"}
    for times in phases.values():
        assert set(times) == {*bench.PHASES, "step"}
        assert min(times.values()) >= 0 and times["step"] > 0
    assert torch.nn.utils.clip_grad_norm_.__name__ == "clip_grad_norm_"  # unhooked
    assert out["plain_over_plain"] == 1.0 and out["threads"] == 1
    profile = out["profile_ms"]
    for part in ("matrix products", "attention kernel (SDPA)", "optimizer", "data (get_batch)"):
        assert profile[part] > 0, part
    assert torch.get_num_threads() == 1  # restored (conftest runs tests with 1 thread)
    run_, _ = bench.make_ours(
        TrainConfig(data_dir=str(prepare("tiny", "char")), out_dir=str(tmp_path), batch_size=2,
                    block_size=16, muon_ns_steps=3, muon_ns_schedule="polar_express",
                    progress=False, save_checkpoints=False)
    )  # fmt: skip
    assert [g.get("ns_steps") for g in run_.optimizer.param_groups] == [3, 3]
    assert run_.optimizer.param_groups[0]["ns_schedule"] == "polar_express"


def test_plain_muon_reference_groups_like_our_default() -> None:
    """The equal-work reference: the plain stack with our MuonAdamW, its blocks' matrices on
    Muon (QKV as three blocks), embeddings and norms on AdamW, at the default's two rates."""
    bench = importlib.import_module("benchmarks.bench_step_speed")
    cfg = TrainConfig(block_size=16, batch_size=2)
    train = np.arange(200, dtype=np.uint16) % 77
    model, opt, step = bench.make_reference(train, 77, cfg, optimizer="muon")
    muon, adam = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert muon["use_muon"] and not adam["use_muon"]
    assert sorted(names[id(p)].split(".")[-2] for p in muon["params"]) == sorted(
        ["c_attn", "c_proj", "c_fc", "mlp_proj"] * cfg.n_layer
    )
    assert sum(muon["split"]) == 4 * cfg.n_layer + 2 * cfg.n_layer  # c_attn counts 3
    assert muon["peak_lr"] == cfg.muon_lr and adam["peak_lr"] == cfg.lr
    assert {names[id(p)] for p in adam["params"]} >= {"wte.weight", "wpe.weight", "ln_f.weight"}
    losses = [step() for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    phases = bench.time_phases({"p": (model, opt, step)}, rounds=1, chunk=2)["p"]
    assert phases["optimiser"] > 0 and phases["forward + loss"] > 0
    # the timers are instance attributes, removed afterwards: the methods show again
    assert "forward" not in vars(model) and "step" not in vars(opt)


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
