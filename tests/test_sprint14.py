"""Smoke tests of the sprint-14 scripts: tiny random models for the code paths, the real
SmolLM2 (session fixture) where only it shows the effect."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmlab import quantization as Q
from llmlab.cli import run
from llmlab.errors import LLMLabError
from tests.conftest import load_script

PKG = "sprints.14_quantization.results"


@pytest.fixture
def use_smollm2(smollm2, monkeypatch: pytest.MonkeyPatch):
    """Scripts asking for "smollm2" get the session's copy (the scripts never modify the
    model they load: every quantized variant is a deep copy)."""
    model, tok = smollm2
    real = Q.load_lm

    def load(name: str, seed: int = 0):
        return (
            (model, tok, model.config.max_position_embeddings)
            if name == "smollm2"
            else real(name, seed)
        )

    monkeypatch.setattr(Q, "load_lm", load)
    return model


def test_int8_from_scratch_tiny() -> None:
    out = load_script(f"{PKG}.int8_from_scratch").main(["--model", "tiny", "--calib-tokens", "128"])
    assert out["parity_mismatches"] == {"per-channel sym": 0, "per-tensor asym": 0}
    assert out["layers"] == 15  # 2 blocks x 7 + the LM head
    assert out["weight_sym per-channel_mean"] < out["weight_sym per-tensor_mean"]
    assert out["act_sym per-token_mean"] < out["act_sym per-tensor_mean"]
    assert Path(out["weights_png"]).is_file() and Path(out["inputs_png"]).is_file()


def test_find_outliers_tiny() -> None:
    out = load_script(f"{PKG}.find_outliers").main(["--model", "tiny", "--calib-tokens", "256"])
    assert len(out["rows"]) == 15 and out["worst_max"] == max(r["max"] for r in out["rows"])
    assert all(Path(p).is_file() for p in out["pngs"])


@pytest.mark.slow
def test_find_outliers_sees_smollm2s_massive_activation(use_smollm2) -> None:
    out = load_script(f"{PKG}.find_outliers").main(["--calib-tokens", "128"])
    assert out["worst_layer"].endswith("mlp.down_proj")
    assert out["worst_max"] > 1000 and out["worst_token"] <= 1  # the first tokens
    assert out["worst_over_median"] > 1000


def test_outlier_fixes_tiny() -> None:
    out = load_script(f"{PKG}.outlier_fixes").main(
        ["--model", "tiny", "--tokens", "256", "--calib-tokens", "128",
         "--methods", "float,w8,per_tensor,llm_int8,smooth_token"]
    )  # fmt: skip
    rows = out["rows"]
    assert set(rows) == {"float", "w8", "per_tensor", "llm_int8", "smooth_token"}
    assert rows["float"]["perplexity"] == out["base_perplexity"]
    # a random tiny model has no outliers: every variant stays within 1 %
    assert all(abs(r["delta_pct"]) < 1 for r in rows.values())


@pytest.mark.slow
def test_outlier_fixes_on_smollm2(use_smollm2) -> None:
    """The lesson on 2 windows of Macbeth: per-tensor W8A8 is wrecked, per-token and
    SmoothQuant + per-token win most of it back."""
    out = load_script(f"{PKG}.outlier_fixes").main(
        [
            "--tokens",
            "256",
            "--calib-tokens",
            "256",
            "--methods",
            "per_tensor,per_token,smooth_token",
        ]
    )
    rows = out["rows"]
    assert rows["per_tensor"]["delta_pct"] > 30
    assert rows["per_token"]["delta_pct"] < 15 and rows["smooth_token"]["delta_pct"] < 15


def test_int8_recipe_tiny() -> None:
    out = load_script(f"{PKG}.int8_recipe").main(
        ["--model", "tiny", "--tokens", "256", "--calib-tokens", "128", "--repeats", "1",
         "--calibration-plays", "hamlet_gut.txt,lear_gut.txt"]
    )  # fmt: skip
    assert set(out["rows"]) == {"torch_ao_dynamic", "int8_tensor", "int8_token",
                                "int8_token_outliers", "smoothquant_int8_token"}  # fmt: skip
    for recipe in Q.CALIBRATED:
        assert len(out["robustness"][recipe]["deltas_pct"]) == 2
    assert all(r["speedup_b1"] > 0 and abs(r["delta_pct"]) < 1 for r in out["rows"].values())
    with pytest.raises(LLMLabError, match="alpha"):
        load_script(f"{PKG}.int8_recipe").main(["--model", "tiny", "--alpha", "2"])


def test_eager_dynamic_tiny_and_the_conv1d_trap() -> None:
    out = load_script(f"{PKG}.eager_dynamic").main(
        ["--model", "tiny", "--tokens", "256", "--gpt-shape", "tiny", "--repeats", "1"]
    )
    rows = out["rows"]
    assert rows["all_per_tensor"]["quantized"] == 15 and rows["all_per_tensor"]["float_linear"] == 0
    assert rows["no_lm_head"]["float_linear"] == 1
    assert rows["no_down_proj"]["float_linear"] == 3  # lm_head + 2 down_proj
    assert rows["attention_only"]["quantized"] == 8
    assert rows["all_per_tensor"]["mib"] < out["base_mib"]
    trap = out["conv1d"]
    assert trap["float_logits_max_diff"] < 1e-4  # the same model twice
    assert trap["hf_counts"] == {"quantized": 1, "float_linear": 0, "conv1d_skipped": 8}
    assert trap["ours_counts"]["quantized"] == trap["converted_counts"]["quantized"] == 9
    assert isinstance(out["reduce_range_needed"], bool)


def test_eager_static_mlp_and_cnn() -> None:
    out = load_script(f"{PKG}.eager_static").main(
        ["--engines", "x86,qnnpack", "--train-images", "512", "--calib-batches", "2",
         "--repeats", "2", "--mlp-batch", "64"]
    )  # fmt: skip
    mlp, cnn = out["mlp"], out["cnn"]
    assert set(mlp["ms"]) == {"float32", "packed for x86", "packed for qnnpack",
                              "x86, qnnpack's 8-bit qconfig", "x86, stubs around every layer"}  # fmt: skip
    # x86's qconfig keeps 7 activation bits (reduce_range), qnnpack's all 8: less error with
    # VNNI; without it (AVX2) the 8 bits overflow fbgemm's int16 sums, which is what
    # reduce_range guards against (measured on an AVX2 EPYC: 0.127 vs 0.029)
    eight, seven = mlp["errors"]["x86, qnnpack's 8-bit qconfig"], mlp["errors"]["packed for x86"]
    assert seven < 0.1
    assert (eight > seven) if Q.reduce_range_needed() else (eight < seven)
    acc = cnn["accuracy"]
    assert acc["float32"] > 0.5 and abs(acc["int8 (x86)"] - acc["float32"]) < 0.03
    assert cnn["mib"]["int8 (x86)"] < cnn["mib"]["float32"] / 3
    with pytest.raises(LLMLabError, match="4,000"):
        load_script(f"{PKG}.eager_static").main(["--train-images", "5000"])


def test_torchao_quant_tiny() -> None:
    out = load_script(f"{PKG}.torchao_quant").main(
        ["--model", "tiny", "--tokens", "256", "--repeats", "1"]
    )
    rows = out["rows"]
    assert rows["float32"]["tied"] and rows["bf16"]["tied"]
    assert not rows["torchao_int8_dynamic"]["tied"]  # torchao quantizes the head separately
    assert rows["torchao_int8_dynamic"]["weights"] == {"Int8Tensor": 15}
    assert rows["torchao_int4_g32"]["weights"] == {"Int4OpaqueTensor": 15}
    assert all(abs(r["delta_pct"]) < 1 for r in rows.values())
    assert set(out["int4_trap_ms"]) == {"float32", "int4, float32 activations",
                                        "int4, bfloat16 activations"}  # fmt: skip


def test_torchao_quant_leaves_out_the_emulated_int8_kernel_only_when_asked(monkeypatch) -> None:
    module = load_script(f"{PKG}.torchao_quant")
    monkeypatch.setattr(module.Q, "reduce_range_needed", lambda: True)  # an AVX2-only CPU
    chosen, skipped = module.choose_variants("auto", "smollm2")
    assert skipped == ["torchao_int8_dynamic"] and "torchao_int8_dynamic" not in chosen
    assert module.choose_variants("auto", "tiny") == (list(module.VARIANTS), [])
    assert module.choose_variants("all", "smollm2") == (list(module.VARIANTS), [])
    monkeypatch.setattr(module.Q, "reduce_range_needed", lambda: False)  # VNNI
    assert module.choose_variants("auto", "smollm2") == (list(module.VARIANTS), [])
    assert module.choose_variants("bf16, torchao_int4_g32", "smollm2") == (
        ["bf16", "torchao_int4_g32"],
        [],
    )
    with pytest.raises(LLMLabError, match="--variants"):
        module.choose_variants("int3", "smollm2")


def test_gguf_formats_on_the_sprint09_model(sprint09_run) -> None:
    out = load_script(f"{PKG}.gguf_formats").main(["--models", "sprint09", "--char-tokens", "512"])
    rows = out["sprint09"]
    assert rows["Q8_0"]["weight_rel_error"] < rows["Q4_1"]["weight_rel_error"]
    assert rows["Q4_1"]["weight_rel_error"] < rows["Q4_0"]["weight_rel_error"]
    assert rows["Q4_0"]["mib"] < rows["Q4_1"]["mib"] < rows["Q4_1+Q8_0head"]["mib"]
    assert rows["Q4_1+Q8_0head"]["mib"] < rows["Q8_0"]["mib"]
    assert abs(rows["Q8_0"]["delta_pct"]) < 1
    assert Path(out["png"]).is_file()


@pytest.mark.slow
def test_gguf_formats_on_smollm2(use_smollm2) -> None:
    out = load_script(f"{PKG}.gguf_formats").main(
        ["--models", "smollm2", "--tokens", "128", "--parity-layers", "1",
         "--variants", "Q4_0,Q4_1,Q4_1+Q8_0head"]
    )  # fmt: skip
    assert all(r["differing_bytes"] == 0 for r in out["parity"].values())
    bundled = out["bundled"]
    assert bundled["tensor_types"] == {"Q8_0": 1, "Q4_1": 210, "F32": 61}
    assert bundled["weights_equal"] == bundled["weights_compared"] == 211
    assert bundled["requantised_same_bytes"] > 0.999
    rows = out["smollm2"]
    # The baseline IS the file: Q4_1 weights + Q8_0 head give back the same numbers exactly,
    # while a 4-bit head (which the file does not have) costs real perplexity.
    assert rows["Q4_1+Q8_0head"]["delta_pct"] == 0.0
    assert rows["Q4_1"]["delta_pct"] > 1 and rows["Q4_0"]["delta_pct"] > rows["Q4_1"]["delta_pct"]


def test_bad_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert run(load_script(f"{PKG}.outlier_fixes").main, ["--model", "tiny", "--alpha", "3"]) == 2
    with pytest.raises(SystemExit):
        load_script(f"{PKG}.find_outliers").main(["--model", "gpt5"])
    with pytest.raises(SystemExit):
        load_script(f"{PKG}.gguf_formats").main(["--models", "llama"])
    monkeypatch.setenv("LLMLAB_RUNS", str(tmp_path))  # no sprint-09 run here
    with pytest.raises(LLMLabError, match="train one first"):
        load_script(f"{PKG}.int8_from_scratch").main(["--model", "sprint09"])
