"""Smoke tests of the sprint-13 scripts: the full vs LoRA comparison, LoRA against peft, and
merging for inference (on the tiny sprint-09 run and tiny random models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmlab.cli import run
from llmlab.lora import inject_lora, save_adapter
from llmlab.pretrained import load_gpt_checkpoint
from tests.conftest import load_script

PKG = "sprints.13_peft_lora.results"
SMALL = ["--model", "sprint09", "--block-size", "32", "--batch-size", "8", "--eval-tokens", "600"]


def test_compare_finetuning_searches_rates_and_measures_every_method(
    sprint09_run, tmp_path: Path
) -> None:
    main = load_script(f"{PKG}.compare_finetuning").main
    argv = [
        *SMALL, "--in-process", "--steps", "8", "--warmup-steps", "1", "--seeds", "0,1",
        "--methods", "base,full,peft-attn-r4,ours-attn-r4,ours-all-r4",
        "--lr-full", "3e-3", "--lr-lora", "3e-2,3e-3", "--no-progress", "--out-dir", str(tmp_path),
    ]  # fmt: skip
    out = main(argv)
    rows = {r["method"]: r for r in out["methods"]}
    base = rows["base"]["val_perplexity"]
    for name in ("full", "peft-attn-r4", "ours-attn-r4", "ours-all-r4"):
        row = rows[name]
        assert row["val_perplexity"] < base, name  # every method learned something
        assert row["seeds"] == [0, 1] and row["val_perplexity_std"] > 0
        assert row["cpu_s_per_step"] > 0 and row["s_per_step"] > 0
        if name in ("peft-attn-r4", "ours-all-r4"):  # searched: the best rate on seed 0
            assert len(row["lr_search"]) == 2
            assert row["lr_search"][f"{row['lr']:g}"] == min(row["lr_search"].values())
    assert rows["ours-attn-r4"]["lr"] == rows["peft-attn-r4"]["lr"]  # reused: same maths
    assert (
        rows["ours-attn-r4"]["trainable"] == rows["peft-attn-r4"]["trainable"] == 1 * 4 * (32 + 96)
    )
    assert rows["ours-all-r4"]["trainable"] > rows["ours-attn-r4"]["trainable"]
    assert rows["full"]["trainable"] == rows["full"]["total"]
    assert rows["ours-attn-r4"]["checkpoint_bytes"] < rows["full"]["checkpoint_bytes"] / 10
    assert out["memory_kind"].startswith("not measured")
    assert out["threads"] == 0  # the cpu preset: every core (grid: 1, for CPU s/step)
    assert Path(out["png"]).is_file() and "| ours-all-r4 |" in Path(out["table_md"]).read_text()
    # base 1; full 2 seeds; peft-attn and ours-all: 2 rates + 1 seed; ours-attn: 2 seeds
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 1 + 2 + 3 + 3 + 2
    (kept,) = (tmp_path / "checkpoints").glob("ours-attn-r4_lr*_seed0")
    assert (kept / "adapter_model.safetensors").is_file()
    again = main([*argv, "--report-only"])  # a finished run folder: tabulated, nothing trains
    assert [r["val_perplexity"] for r in again["methods"]] == [
        r["val_perplexity"] for r in out["methods"]
    ]
    part = main([*argv, "--report-only", "--methods", "base,peft-attn-r8"])
    assert [r["method"] for r in part["methods"]] == ["base"]  # r8 never ran: left out
    assert part["missing"] == ["peft-attn-r8_lr0.03_seed0", "peft-attn-r8_lr0.003_seed0"]


@pytest.mark.slow
def test_compare_finetuning_measures_peak_memory_in_a_child_process(
    sprint09_run, tmp_path: Path
) -> None:
    out = load_script(f"{PKG}.compare_finetuning").main(
        [*SMALL, "--steps", "2", "--methods", "full", "--lr-full", "1e-3", "--seeds", "0",
         "--threads", "1", "--no-progress", "--out-dir", str(tmp_path)]
    )  # fmt: skip
    row = out["methods"][0]
    record = json.loads((tmp_path / "runs.jsonl").read_text())
    assert row["peak_mib"] > 100 and record["rss_after_load_mib"] > 100  # torch alone is more
    assert "peak RSS" in out["memory_kind"]
    assert (
        row["checkpoint_bytes"] > 0
        and not (tmp_path / "checkpoints" / "full_lr0.001_seed0").exists()
    )


def test_compare_finetuning_bad_input_is_one_line(capsys) -> None:
    main = load_script(f"{PKG}.compare_finetuning").main
    assert run(main, ["--methods", "full,lora-r8"]) == 2
    assert "unknown method 'lora-r8'" in capsys.readouterr().err
    assert run(main, ["--lr-lora", "fast"]) == 2
    assert "--lr-lora takes comma-separated numbers" in capsys.readouterr().err
    assert run(main, ["--seeds", "1,1"]) == 2
    assert "distinct" in capsys.readouterr().err
    assert run(main, ["--report-only"]) == 2
    assert "give its --out-dir" in capsys.readouterr().err


def test_lora_vs_peft_parity_counts_and_pitfalls(tmp_path: Path) -> None:
    out = load_script(f"{PKG}.lora_vs_peft").main(
        ["--gpt", "tiny", "--no-smollm2", "--out-dir", str(tmp_path)]
    )
    for name, p in out["parity"].items():
        assert max(p["forward"], p["grad"], p["merged_weight"]) < 1e-5, name
        assert p["merged_vs_adapter"] < 1e-4 * max(1.0, p["logit_scale"]), name
    assert out["parity"]["gpt2 all-linear"]["layers"] == 4 * 2  # c_attn, c_proj, c_fc, c_proj
    by = {(c["targets"], c["r"]): c for c in out["counts"]}
    attn8 = by[("attn (c_attn)", 8)]
    assert attn8["trainable"] == 2 * 8 * (64 + 192)  # layers x r x (in + out)
    assert by[("attn (c_attn)", 16)]["trainable"] == 2 * attn8["trainable"]
    assert attn8["adapter_bytes"] >= 4 * attn8["trainable"]  # float32 factors + header
    assert out["typo"]["peft_layers_wrapped"] == 2  # c_attn only: the typo vanished
    assert "'c_fcc' matches no module" in out["typo"]["ours"]
    assert "trained on another base model" in out["other_base"]["ours"]
    assert out["other_base"]["reload_max_abs_err"] == 0.0


def test_merge_for_inference_equals_the_adapter_model(sprint09_run, tmp_path: Path) -> None:
    main = load_script(f"{PKG}.merge_for_inference").main
    short = ["--model", "sprint09", "--prompt-tokens", "12", "--new-tokens", "8", "--rounds", "1"]
    out = main([*short, "--targets", "all-linear", "--out-dir", str(tmp_path / "a")])
    assert out["max_abs_logit_diff_merged_vs_adapter"] < 1e-4
    assert out["max_abs_logit_diff_adapter_vs_base"] > 1e-2  # the noisy B does change things
    assert out["greedy_tokens_equal"] == 8 and out["merged_has_base_state_dict_keys"]
    assert out["unmerge_max_abs_err"] < 1e-5
    assert set(out["decode_ratio_to_base"]) == {"base", "adapter (unmerged)", "merged"}
    gpt, _ = load_gpt_checkpoint("sprint09")
    save_adapter(inject_lora(gpt, ["c_attn"], r=2), tmp_path / "adapter", base_name="sprint09")
    out = main([*short, "--adapter", str(tmp_path / "adapter"), "--out-dir", str(tmp_path / "b")])
    assert out["lora_params"] == 2 * (32 + 96) and out["greedy_tokens_equal"] == 8
    assert run(main, [*short, "--adapter", str(tmp_path)]) == 2  # not an adapter folder
    assert run(main, [*short, "--prompt-tokens", "40"]) == 2  # longer than the context
