"""From-scratch int8 quantization (`llmlab.quantization`) pinned to PyTorch's quantizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from llmlab import quantization as Q
from llmlab.errors import LLMLabError
from llmlab.gpt import GPT, GPTConfig


def heavy_tailed(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen)
    x.view(-1)[:: max(1, x.numel() // 7)] *= 40  # a few large values
    return x


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # give the norms non-trivial weights, so folding into them is tested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()


# --- the maths, against torch.ao's observers and quantize ops --------------------------------

OBSERVER_CASES = [
    # (our scheme, torch observer, torch dtype)
    (Q.QScheme(), MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                  quant_min=-127, quant_max=127), torch.qint8),
    (Q.QScheme(narrow=False), MinMaxObserver(dtype=torch.qint8,
                                             qscheme=torch.per_tensor_symmetric), torch.qint8),
    (Q.QScheme(symmetric=False), MinMaxObserver(dtype=torch.quint8,
                                                qscheme=torch.per_tensor_affine), torch.quint8),
    (Q.QScheme(per_channel=True), PerChannelMinMaxObserver(
        ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127,
        quant_max=127), torch.qint8),
    (Q.QScheme(per_channel=True, symmetric=False), PerChannelMinMaxObserver(
        ch_axis=0, dtype=torch.quint8, qscheme=torch.per_channel_affine), torch.quint8),
]  # fmt: skip


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # torch.ao's own API
@pytest.mark.parametrize(("scheme", "observer", "dtype"), OBSERVER_CASES)
def test_qparams_and_integers_equal_torch(scheme, observer, dtype) -> None:
    x = heavy_tailed((24, 40)) + 0.3  # off-centre, so asymmetric zero points are not trivial
    observer(x)
    ref_scale, ref_zp = observer.calculate_qparams()
    scale, zp = Q.qparams(*Q.observe_range(x, scheme), scheme)
    assert torch.equal(scale, ref_scale.float().reshape(scale.shape))
    assert torch.equal(zp, ref_zp.long().reshape(zp.shape))
    q = Q.quantize(x, scale, zp, scheme)
    if scheme.per_channel:
        ref_q = torch.quantize_per_channel(x, ref_scale, ref_zp, 0, dtype)
        ref_fake = torch.fake_quantize_per_channel_affine(
            x, ref_scale.float(), ref_zp.int(), 0, scheme.qmin, scheme.qmax
        )
    else:
        ref_q = torch.quantize_per_tensor(x, float(ref_scale), int(ref_zp), dtype)
        ref_fake = torch.fake_quantize_per_tensor_affine(
            x, float(ref_scale), int(ref_zp), scheme.qmin, scheme.qmax
        )
    assert torch.equal(q, ref_q.int_repr().int())  # every integer equal
    assert torch.equal(Q.dequantize(q, scale, zp), ref_q.dequantize())
    assert torch.equal(Q.fake_quantize(x, scheme), ref_fake)


def test_percentile_calibration_is_the_nearest_rank_percentile() -> None:
    x = heavy_tailed((4, 1000), seed=3)
    for p in (99.0, 99.9):
        scheme = Q.QScheme(calibration="percentile", percentile=p, per_channel=True)
        lo, hi = Q.observe_range(x, scheme)
        ref = np.percentile(x.abs().numpy(), p, axis=1, method="inverted_cdf")
        assert np.array_equal(hi.numpy(), ref.astype(np.float32)) and torch.equal(lo, -hi)
        asym = Q.QScheme(calibration="percentile", percentile=p, symmetric=False)
        lo, hi = Q.observe_range(x, asym)
        assert lo.item() == np.percentile(x.numpy(), 100 - p, method="inverted_cdf")
        assert hi.item() == np.percentile(x.numpy(), p, method="inverted_cdf")


def test_percentile_clipping_helps_only_when_the_outlier_does_not_matter() -> None:
    """4 bits, one moderate outlier: clipping it buys finer steps for everyone else. A massive
    outlier carries most of the signal: clipping it costs more than coarse steps do."""
    gauss = torch.randn(1, 4096, generator=torch.Generator().manual_seed(6))

    def errors(bits: int, outlier: float) -> tuple[float, float]:
        x = gauss.clone()
        x[0, 100] = outlier
        return tuple(
            Q.quant_error(x, Q.fake_quantize(x, s))["rel_error"]
            for s in (
                Q.QScheme(bits=bits),
                Q.QScheme(bits=bits, calibration="percentile", percentile=99.9),
            )
        )

    absmax, pct = errors(4, 20.0)
    assert pct < absmax / 2  # measured: 0.28 vs 0.75
    absmax, pct = errors(8, 1000.0)
    assert absmax < pct / 10  # measured: 0.064 vs 0.99


def test_quant_error_and_sqnr() -> None:
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    e = Q.quant_error(x, Q.fake_quantize(x, Q.QScheme()))
    assert e["sqnr_db"] == pytest.approx(-20 * np.log10(e["rel_error"]))
    assert 30 < e["sqnr_db"] < 45  # ~6 dB per bit, less the Gaussian's wide absmax
    assert Q.quant_error(x, x)["sqnr_db"] == float("inf")


def test_scheme_validation() -> None:
    assert (Q.QScheme().qmin, Q.QScheme().qmax) == (-127, 127)
    assert (Q.QScheme(narrow=False).qmin, Q.QScheme(symmetric=False).qmax) == (-128, 255)
    for bad in ({"bits": 1}, {"calibration": "mse"}, {"percentile": 30.0}):
        with pytest.raises(LLMLabError):
            Q.QScheme(**bad)


# --- simulated and real int8 linear layers ------------------------------------------------


def test_fake_quant_linear_matches_torch_ao_dynamic_linear() -> None:
    """Emulating torch.ao's dynamic int8 Linear (per-tensor weights in [-128, 127], per-tensor
    asymmetric 7-bit activations) gives its outputs to float rounding."""
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(2, 5, 64) * 3
    model, counts = Q.eager_dynamic(nn.Sequential(linear))
    assert counts == {"quantized": 1, "float_linear": 0, "conv1d_skipped": 0}
    ours = Q.FakeQuantLinear(
        linear, Q.QScheme(narrow=False), "tensor", Q.QScheme(bits=7, symmetric=False)
    )
    ref = model(x)
    diff = (ours(x) - ref).abs().max().item()
    assert diff < 1e-4 * ref.abs().max().item()  # measured: ~1e-6 relative


def test_int8_linear_equals_its_simulation_and_keeps_outlier_columns() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 32, bias=False)
    x = torch.randn(3, 7, 64)
    x[:, 0, 5] = 300.0  # a massive activation on one token, one channel
    # Without VNNI (AVX2 only) 8-bit activations overflow fbgemm's int16 sums: use 7 bits there
    # (measured on an AVX2 EPYC: the split layer's error 0.0145 with 8 bits, 0.0010 with 7).
    rr = Q.reduce_range_needed()
    act = Q.QScheme(bits=7 if rr else 8, symmetric=False)
    sim = Q.FakeQuantLinear(linear, act="tensor", act_scheme=act)
    real = Q.Int8Linear(linear, reduce_range=rr)
    ref = linear(x)
    assert (real(x) - sim(x)).abs().max().item() < 1e-4 * ref.abs().max().item()
    plain = Q.quant_error(ref, real(x))["rel_error"]
    split_layer = Q.Int8Linear(linear, torch.tensor([5]), reduce_range=rr)
    split = Q.quant_error(ref, split_layer(x))["rel_error"]
    llm_int8 = Q.quant_error(ref, Q.FakeQuantLinear(linear, outlier_threshold=6.0)(x))
    # measured (VNNI) 0.0005, 0.003, 0.023; (AVX2, 7 bits) 0.0010, 0.003, 0.044
    assert split < plain / 10 and llm_int8["rel_error"] < plain / 5
    with pytest.raises(LLMLabError, match="outlier columns"):
        Q.Int8Linear(linear, torch.tensor([64]))
    from transformers.pytorch_utils import Conv1D

    for layer in (Q.Int8Linear, Q.FakeQuantLinear):  # an unsupported layer type: one line
        with pytest.raises(LLMLabError, match="Conv1D stores its weight transposed"):
            layer(Conv1D(8, 4))
        with pytest.raises(LLMLabError, match="only nn.Linear"):
            layer(nn.Conv2d(1, 1, 3))


def test_per_token_activations_survive_a_massive_token() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    x = torch.randn(1, 16, 64)
    x[0, 0] *= 500  # the first token is huge (an attention sink)
    ref = linear(x)[:, 1:]
    per_tensor = Q.FakeQuantLinear(linear, act="tensor")(x)[:, 1:]
    per_token = Q.FakeQuantLinear(linear, act="token")(x)[:, 1:]
    assert Q.quant_error(ref, per_token)["rel_error"] < 0.02
    assert Q.quant_error(ref, per_tensor)["rel_error"] > 0.2


def test_static_activation_range_clips() -> None:
    linear = nn.Linear(8, 4)
    layer = Q.FakeQuantLinear(linear, act="static", static_range=(-1.0, 1.0))
    assert layer.quantize_input(torch.full((1, 8), 5.0)).max().item() == pytest.approx(1.0)
    with pytest.raises(LLMLabError, match="static_range"):
        Q.FakeQuantLinear(linear, act="static")
    with pytest.raises(LLMLabError, match="unknown activation mode"):
        Q.FakeQuantLinear(linear, act="channel")


# --- statistics, outliers, SmoothQuant ----------------------------------------------------


def test_input_stats_are_the_largest_magnitudes() -> None:
    model = tiny_gpt()
    batches = [
        torch.randint(64, (2, 16), generator=torch.Generator().manual_seed(i)) for i in (0, 1)
    ]
    seen = []
    handle = model.h[0].mlp.c_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    stats = Q.collect_input_stats(model, batches)
    handle.remove()
    x = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen])
    st = stats["h.0.mlp.c_proj"]
    assert torch.equal(st.channel_absmax, x.abs().amax(dim=0))
    assert torch.equal(st.tokens(), x.abs().amax(dim=1)) and st.absmax == x.abs().max().item()
    assert set(stats) == {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    big = Q.outlier_channels(st, st.absmax / 2)
    assert big.numel() >= 1 and (st.channel_absmax[big] >= st.absmax / 2).all()


@pytest.mark.parametrize("which", ["llama", "gpt"])
def test_smoothquant_folding_keeps_the_function_and_flattens_inputs(which: str) -> None:
    model = tiny_llama() if which == "llama" else tiny_gpt()
    vocab = 96 if which == "llama" else 64
    idx = torch.randint(vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    before = Q.LMAdapter(model)(idx)[0]
    stats = Q.collect_input_stats(model, [idx])
    names = Q.fold_smoothquant_(model, stats, alpha=0.5)
    after = Q.LMAdapter(model)(idx)[0]
    assert (after - before).abs().max().item() < 1e-4
    expected = 2 * (5 if which == "llama" else 2)  # per block: q,k,v,gate,up,down | c_attn,c_fc
    assert len(names) == expected + (2 if which == "llama" else 0)
    new = Q.collect_input_stats(model, [idx])
    for name in names:  # channel maxima now equal max|X|^a max|W|^(1-a): flatter than before
        spread = lambda s: (s.channel_absmax.max() / s.channel_absmax.median()).item()  # noqa: E731
        assert spread(new[name]) <= spread(stats[name]) * 1.001
    with pytest.raises(LLMLabError, match="alpha"):
        Q.smoothquant_scales(torch.ones(3), [torch.ones(2, 3)], alpha=1.5)
    with pytest.raises(LLMLabError, match="Llama-style"):
        Q.fold_smoothquant_(nn.Sequential(nn.Linear(4, 4)), {})


def test_smoothquant_scales_formula() -> None:
    act, w = torch.tensor([4.0, 1.0, 100.0]), torch.tensor([[1.0, 4.0, 0.25]])
    s = Q.smoothquant_scales(act, [w], alpha=0.5)
    assert torch.allclose(s, torch.tensor([2.0, 0.5, 20.0]))
    assert torch.allclose(act / s, w.abs()[0] * s)  # alpha 0.5: both sides end up equal


# --- finding layers, PyTorch's and torchao's paths -------------------------------------------


def test_linear_layers_refuses_conv1d_and_empty_matches() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(LLMLabError, match="Conv1D"):
        Q.linear_layers(hf)
    assert list(Q.linear_layers(hf, include="lm_head")) == ["lm_head"]
    with pytest.raises(LLMLabError, match="no nn.Linear"):
        Q.linear_layers(tiny_gpt(), include="nothing_here")
    # quantize_dynamic skips the Conv1D layers silently; the count shows it
    _, counts = Q.eager_dynamic(hf)
    assert counts == {"quantized": 1, "float_linear": 0, "conv1d_skipped": 4}
    qconfig = torch.ao.quantization.default_dynamic_qconfig
    _, counts = Q.eager_dynamic(tiny_gpt(), {"h.0": qconfig})  # a layer name: block 0 only
    assert counts["quantized"] == 4 and counts["float_linear"] == 5
    _, counts = Q.eager_dynamic(tiny_gpt(), {nn.Linear: qconfig, "lm_head": None})
    assert counts["quantized"] == 8 and counts["float_linear"] == 1  # names override types


def test_replace_linears_unties_the_head_and_shrinks_the_model() -> None:
    model = GPT(GPTConfig(vocab_size=512, block_size=32, n_layer=2, n_head=4, n_embd=128))
    size = Q.state_dict_bytes(model)
    replaced = Q.replace_linears_(model, lambda n, lin: Q.Int8Linear(lin), exclude="lm_head")
    assert len(replaced) == 8 and isinstance(model.h[0].attn.c_attn, Q.Int8Linear)
    assert Q.state_dict_bytes(model) < 0.55 * size  # int8 blocks, float embedding


def test_torchao_int8_dynamic_is_close_and_bad_names_fail() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32)).eval()
    x = torch.randn(4, 64)
    ref = model(x)
    Q.torchao_quantize(model, "int8_dynamic")
    assert Q.quant_error(ref, model(x))["rel_error"] < 0.05
    with pytest.raises(LLMLabError, match="unknown torchao method"):
        Q.torchao_quantize(model, "int3")


def test_engine_context_restores_and_rejects_unknown() -> None:
    before = torch.backends.quantized.engine
    with Q.quantized_engine("qnnpack"):
        assert torch.backends.quantized.engine == "qnnpack"
    assert torch.backends.quantized.engine == before
    with pytest.raises(LLMLabError, match="not available"), Q.quantized_engine("tpu"):
        pass


def test_heldout_tokens_and_adapter() -> None:
    from llmlab.tokenizers import CharTokenizer

    text_chars = CharTokenizer("".join(chr(c) for c in range(32, 127)) + "\n")
    ids = Q.heldout_tokens(text_chars, 100)
    assert ids.shape == (101,) and text_chars.decode(ids[:6]) == "ACT I."
    with pytest.raises(LLMLabError, match="not in the model's vocabulary"):
        Q.heldout_tokens(CharTokenizer("abc"), 10)
    with pytest.raises(LLMLabError, match="fewer than"):
        Q.heldout_tokens(text_chars, 10**7)
    model = tiny_gpt()
    idx = torch.randint(64, (1, 8))
    logits, loss = Q.LMAdapter(model)(idx, idx)
    assert torch.equal(logits, model(idx)[0]) and torch.allclose(loss, model(idx, idx)[1])
    times = Q.time_forward({"a": model, "b": model}, idx, repeats=2)
    assert set(times) == {"a", "b"} and all(t > 0 for t in times.values())
