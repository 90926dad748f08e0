"""Our GPT against Hugging Face's GPT2LMHeadModel, checkpoints, and bad input.

Conversion is tested the minGPT way, but on RANDOMLY initialised HF models (no download):
same weights in, logits equal within atol=1e-5 / rtol=1e-4 (float32 on CPU; measured
differences are ~1e-7) and 20 greedy tokens identical, in both directions.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

import llmlab.checkpoint as checkpoint
from llmlab.errors import LLMLabError
from llmlab.generate import generate
from llmlab.gpt import GPT, GPTConfig
from llmlab.positional import sinusoidal_table

TINY = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)
SHAPES = [  # (vocab, context, layers, heads, width)
    (97, 48, 1, 1, 16),
    (128, 64, 2, 4, 32),
    (301, 40, 3, 6, 48),
]


def random_hf(vocab: int, ctx: int, layers: int, heads: int, width: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=ctx,
        n_layer=layers,
        n_head=heads,
        n_embd=width,
        bos_token_id=None,
        eos_token_id=None,
    )
    return GPT2LMHeadModel(config).eval()


def hf_greedy(hf: GPT2LMHeadModel, idx: torch.Tensor, n: int) -> torch.Tensor:
    return hf.generate(idx, max_new_tokens=n, do_sample=False, pad_token_id=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_from_hf_matches_hf_logits_and_greedy_tokens(shape: tuple[int, ...]) -> None:
    hf = random_hf(*shape)
    ours = GPT.from_hf(hf).eval()
    idx = torch.randint(0, shape[0], (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-4)
    assert torch.equal(generate(ours, idx, 20, greedy=True), hf_greedy(hf, idx, 20))


@pytest.mark.parametrize("shape", SHAPES)
def test_to_hf_matches_our_logits_and_greedy_tokens(shape: tuple[int, ...]) -> None:
    vocab, ctx, layers, heads, width = shape
    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab, ctx, layers, heads, width)).eval()
    hf = ours.to_hf().eval()
    idx = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx)[0], atol=1e-5, rtol=1e-4)
    assert torch.equal(hf_greedy(hf, idx, 20), generate(ours, idx, 20, greedy=True))
    # And back again: HF -> ours gives the very same weights.
    back = GPT.from_hf(hf)
    for (name, a), b in zip(ours.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_from_hf_state_dict_needs_n_head() -> None:
    hf = random_hf(*SHAPES[1])
    with pytest.raises(LLMLabError, match="n_head"):
        GPT.from_hf(hf.state_dict())
    state = dict(hf.state_dict())
    # Older transformers versions keep causal-mask buffers in the state dict: skipped.
    state["transformer.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64, dtype=torch.bool))
    state["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    ours = GPT.from_hf(state, n_head=4).eval()
    idx = torch.randint(0, SHAPES[1][0], (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-4)


def test_non_gpt2_shapes_do_not_convert() -> None:
    # (Exporting goes every way since sprint 10: see tests/test_hf_export.py. Importing
    # a GPT-2 whose MLP differs from ours must still refuse.)
    hf_relu = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, activation_function="relu")
    )
    with pytest.raises(LLMLabError, match="activation_function"):
        GPT.from_hf(hf_relu)


@pytest.mark.slow  # builds two 124M-parameter models (~10-20 s on a busy 2-core CPU)
def test_gpt2_small_parameter_count_equals_hugging_face() -> None:
    ours = GPT(GPTConfig()).num_parameters()
    hf = sum(p.numel() for p in GPT2LMHeadModel(GPT2Config()).parameters())
    assert ours == hf == 124_439_808


def test_config_validation_is_clear() -> None:
    with pytest.raises(LLMLabError, match="divisible"):
        GPTConfig(n_embd=100, n_head=12)
    with pytest.raises(LLMLabError, match="positive"):
        GPTConfig(n_layer=0)
    with pytest.raises(LLMLabError, match="positive integer"):
        GPTConfig.from_dict({"n_layer": "12"})  # e.g. a hand-edited config.json
    with pytest.raises(LLMLabError, match="dropout"):
        GPTConfig(dropout=1.0)
    with pytest.raises(LLMLabError, match="pos_encoding"):
        GPTConfig(pos_encoding="alibi")
    with pytest.raises(LLMLabError, match="unknown"):
        GPTConfig.from_dict({"n_layers": 3})


def test_tied_head_and_sinusoidal_option() -> None:
    model = GPT(TINY)
    assert model.lm_head.weight is model.wte.weight
    sin = GPT(GPTConfig(**{**TINY.to_dict(), "pos_encoding": "sinusoidal"}))
    assert not hasattr(sin, "wpe")
    torch.testing.assert_close(sin.pe_table, sinusoidal_table(32, 32))
    assert model.num_parameters() - sin.num_parameters() == 32 * 32  # the learned table
    logits, loss = sin(torch.randint(0, 97, (2, 10)), torch.randint(0, 97, (2, 10)))
    assert logits.shape == (2, 10, 97)
    # Random init predicts ~uniformly: loss close to ln(vocab).
    assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.3


def test_bad_input_is_a_clear_error() -> None:
    model = GPT(TINY)
    with pytest.raises(LLMLabError, match="longer than the model's context"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(LLMLabError, match="token ids must be in"):
        model(torch.tensor([[1, 2, 97]]))
    with pytest.raises(LLMLabError, match="token ids must be in"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(LLMLabError, match="batch, time"):
        model(torch.tensor([1, 2, 3]))


# --- checkpoints ---------------------------------------------------------------------------


def test_save_load_round_trip_is_exact(tmp_path) -> None:
    torch.manual_seed(0)
    model = GPT(TINY)
    model.save(tmp_path / "ckpt", training_state={"step": 7})
    loaded, state = GPT.load_with_state(tmp_path / "ckpt")
    assert loaded.config == model.config and state == {"step": 7}
    assert loaded.lm_head.weight is loaded.wte.weight  # tying survives the round trip
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    idx = torch.randint(0, 97, (2, 9))
    assert torch.equal(model.eval()(idx)[0], GPT.load(tmp_path / "ckpt").eval()(idx)[0])


def test_missing_truncated_and_mismatched_checkpoints_are_clear_errors(tmp_path) -> None:
    with pytest.raises(LLMLabError, match="not a model checkpoint folder"):
        GPT.load(tmp_path / "nothing-here")
    GPT(TINY).save(tmp_path / "cut")
    weights = tmp_path / "cut" / checkpoint.MODEL_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(LLMLabError, match="truncated"):
        GPT.load(tmp_path / "cut")
    (tmp_path / "cut" / checkpoint.MODEL_FILE).unlink()
    with pytest.raises(LLMLabError, match="incomplete"):
        GPT.load(tmp_path / "cut")
    # Weights of one shape with the config of another.
    GPT(TINY).save(tmp_path / "other")
    bigger = GPTConfig(**{**TINY.to_dict(), "n_embd": 64})
    (tmp_path / "other" / checkpoint.CONFIG_FILE).write_text(json.dumps(bigger.to_dict()))
    with pytest.raises(LLMLabError, match="another configuration|another model"):
        GPT.load(tmp_path / "other")


def test_failing_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    old = GPT(TINY)
    old.save(tmp_path / "ckpt", training_state={"step": 1})
    before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}

    def crash(*args, **kwargs):  # dies after the weights and config of the new one are written
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        GPT(TINY).save(tmp_path / "ckpt", training_state={"step": 2})
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary leftovers
    loaded, state = GPT.load_with_state(tmp_path / "ckpt")
    assert state == {"step": 1}
    assert torch.equal(loaded.wte.weight, old.wte.weight)


def test_rope_option_matches_llama_rotation_and_caches_exactly() -> None:
    """RoPE GPT: q/k rotated as in transformers' Llama; KV-cache decoding == full recompute."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from llmlab.generate import generate

    torch.manual_seed(0)
    cfg = GPTConfig(**{**TINY.to_dict(), "pos_encoding": "rope"})
    model = GPT(cfg).eval()
    assert not hasattr(model, "wpe") and not hasattr(model, "pe_table")
    assert GPT(TINY).num_parameters() - model.num_parameters() == 32 * 32
    # the attention's rotation equals Llama's for the same cos/sin tables
    head = cfg.n_embd // cfg.n_head
    q, k = torch.randn(2, cfg.n_head, 7, head), torch.randn(2, cfg.n_head, 7, head)
    cos, sin = model.rotary.cos_table[:7], model.rotary.sin_table[:7]
    from llmlab.positional import apply_rotary

    ours = apply_rotary(q, k, cos, sin)
    theirs = apply_rotary_pos_emb(q, k, cos[None], sin[None])
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)
    prompt = torch.randint(0, cfg.vocab_size, (2, 6))
    cached = generate(model, prompt, 20, greedy=True, use_cache=True)
    full = generate(model, prompt, 20, greedy=True, use_cache=False)
    assert torch.equal(cached, full)
    # positions are used at all: swapping two earlier tokens changes the last logits
    x = torch.randint(0, cfg.vocab_size, (1, 10))
    y = x.clone()
    y[0, [2, 5]] = x[0, [5, 2]]
    assert not torch.allclose(model(x)[0][0, -1], model(y)[0][0, -1])


def test_a_text_file_as_training_state_is_a_clear_error(tmp_path) -> None:
    folder = GPT(TINY).save(tmp_path / "ckpt")
    (folder / "training.pt").write_text("hello")
    with pytest.raises(LLMLabError, match="not a checkpoint"):
        GPT.load_with_state(folder)


# --- sprint 09's speed-run options: ReLU^2, QK-norm, untied embeddings -----------------------


def test_relu2_equals_hugging_face_relu_squared() -> None:
    from transformers.activations import ACT2FN

    from llmlab.gpt import MLP, relu2

    x = torch.randn(4, 7, 64) * 3
    torch.testing.assert_close(relu2(x), ACT2FN["relu2"](x), atol=0, rtol=0)
    assert relu2(torch.tensor([-2.0, 0.0, 3.0])).tolist() == [0.0, 0.0, 9.0]
    mlp = MLP(GPTConfig(**{**TINY.to_dict(), "mlp_act": "relu2"}))
    h = torch.randn(2, 5, 32)
    torch.testing.assert_close(mlp(h), mlp.c_proj(F.relu(mlp.c_fc(h)) ** 2))
    with pytest.raises(LLMLabError, match="mlp_act"):
        GPTConfig(mlp_act="swiglu")


def test_exact_gelu_equals_hugging_face_gelu_and_round_trips_through_gpt2() -> None:
    """`mlp_act="gelu_erf"` is Hugging Face's `"gelu"` (not GPT-2's tanh `"gelu_new"`, which
    differs by up to ~5e-4), and a GPT-2 with `activation_function="gelu"` loads back as it."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.activations import ACT2FN

    from llmlab.gpt import gelu_erf

    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(gelu_erf(x), ACT2FN["gelu"](x), atol=0, rtol=0)
    gap = float((gelu_erf(x) - ACT2FN["gelu_new"](x)).abs().max())
    assert 1e-4 < gap < 1e-3, gap
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                   activation_function="gelu")
    ).eval()  # fmt: skip
    gpt = GPT.from_hf(hf).eval()
    assert gpt.config.mlp_act == "gelu_erf"
    idx = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(gpt(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-4)


def test_qk_norm_normalises_each_heads_queries_and_keys() -> None:
    """With QK-norm, attention logits no longer grow with the size of q and k: scaling the
    query/key rows of c_attn by 100 leaves the output unchanged (without: it changes)."""
    torch.manual_seed(0)
    for qk_norm in (True, False):
        cfg = GPTConfig(**{**TINY.to_dict(), "pos_encoding": "rope", "bias": False,
                           "qk_norm": qk_norm})  # fmt: skip
        model = GPT(cfg).eval()
        idx = torch.randint(0, 97, (2, 12))
        before = model(idx)[0]
        with torch.no_grad():
            for block in model.h:
                block.attn.c_attn.weight[: 2 * cfg.n_embd] *= 100  # q and k rows, not v
        after = model(idx)[0]
        assert torch.allclose(before, after, atol=1e-4) == qk_norm
    attn = model.h[0].attn
    assert attn.q_norm is None and attn.k_norm is None  # off by default: GPT-2's attention
    normed = GPT(GPTConfig(**{**TINY.to_dict(), "qk_norm": True, "pos_encoding": "rope"}))
    assert normed.h[0].attn.q_norm.normalized_shape == (TINY.n_embd // TINY.n_head,)
    # the cache still equals recomputing (queries and keys are normalised before caching)
    prompt = torch.randint(0, 97, (2, 5))
    assert torch.equal(
        generate(normed.eval(), prompt, 12, greedy=True, use_cache=True),
        generate(normed, prompt, 12, greedy=True, use_cache=False),
    )


def test_untied_head_is_its_own_matrix_and_survives_a_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY.to_dict(), "tie_embeddings": False}))
    assert model.lm_head.weight is not model.wte.weight
    assert model.num_parameters() == GPT(TINY).num_parameters() + 97 * 32  # one more matrix
    model.save(tmp_path / "ckpt")
    loaded = GPT.load(tmp_path / "ckpt")
    assert loaded.lm_head.weight is not loaded.wte.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    idx = torch.randint(0, 97, (2, 9))
    assert torch.equal(model.eval()(idx)[0], loaded.eval()(idx)[0])


def test_a_checkpoint_from_before_the_new_options_loads_as_before(tmp_path) -> None:
    """Old config.json files lack mlp_act / qk_norm / tie_embeddings: the defaults are GPT-2's,
    so the model is rebuilt exactly (tied head, GELU, no QK-norm) with the same logits."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY.to_dict(), "pos_encoding": "rope"}))
    model.save(tmp_path / "ckpt")
    config_file = tmp_path / "ckpt" / "config.json"
    old = {k: v for k, v in json.loads(config_file.read_text()).items()
           if k not in ("mlp_act", "qk_norm", "tie_embeddings")}  # fmt: skip
    config_file.write_text(json.dumps(old))
    loaded = GPT.load(tmp_path / "ckpt")
    assert (loaded.config.mlp_act, loaded.config.qk_norm, loaded.config.tie_embeddings) == (
        "gelu",
        False,
        True,
    )
    assert loaded.lm_head.weight is loaded.wte.weight
    idx = torch.randint(0, 97, (2, 9))
    assert torch.equal(model.eval()(idx)[0], loaded.eval()(idx)[0])
