"""The frozen-prefix cache scores exactly what the whole model scores, and only caches what
cannot change (llmlab.prefix_cache, sprint 12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmlab.evaluation import CausalLMAdapter, evaluate_lm
from llmlab.finetune import set_trainable
from llmlab.prefix_cache import FrozenPrefixLM
from tests.conftest import tiny_llama_config


def tiny_llama(seed: int = 0, layers: int = 4) -> CausalLMAdapter:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return CausalLMAdapter(LlamaForCausalLM(tiny_llama_config(layers)).eval())


TEXT = np.random.default_rng(0).integers(0, 64, size=700).astype(np.int64)


def test_cached_scoring_equals_the_whole_model_and_skips_the_frozen_blocks() -> None:
    model = set_trainable(tiny_llama(), "last_blocks", n_blocks=1, head_names=())
    cached = FrozenPrefixLM(model)
    assert cached.frozen_blocks() == 3  # embeddings and blocks 0-2 frozen, block 3 trains
    whole = evaluate_lm(model, TEXT, 16, 8)
    first = evaluate_lm(cached, TEXT, 16, 8)
    assert first["tokens"] == whole["tokens"] == 699
    assert first["loss"] == pytest.approx(whole["loss"], abs=1e-5)
    assert (cached.hits, cached.misses) == (0, 7)  # 43 windows of 16, 1 of 11: 7 batches
    calls = []
    hook = model.model.model.layers[0].register_forward_hook(lambda *a: calls.append(1))
    again = evaluate_lm(cached, TEXT, 16, 8)
    hook.remove()
    assert calls == [] and cached.hits == 7  # the frozen blocks did not run again
    assert again["loss"] == pytest.approx(whole["loss"], abs=1e-5)
    # train the top block: the cached scoring follows it (only the prefix is cached)
    with torch.no_grad():
        for p in model.model.model.layers[3].parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = evaluate_lm(model, TEXT, 16, 8)
    assert moved["loss"] != pytest.approx(whole["loss"], abs=1e-4)
    assert evaluate_lm(cached, TEXT, 16, 8)["loss"] == pytest.approx(moved["loss"], abs=1e-5)


def test_the_cache_empties_when_a_frozen_weight_changes_and_never_caches_with_grad() -> None:
    model = set_trainable(tiny_llama(), "last_blocks", n_blocks=2, head_names=())
    cached = FrozenPrefixLM(model)
    evaluate_lm(cached, TEXT, 16, 8)
    assert len(cached.cache) == 7
    with torch.no_grad():  # e.g. a checkpoint loaded into the frozen part: in place
        model.model.model.layers[0].mlp.up_proj.weight.mul_(1.5)
    expected = evaluate_lm(model, TEXT, 16, 8)
    assert evaluate_lm(cached, TEXT, 16, 8)["loss"] == pytest.approx(expected["loss"], abs=1e-5)
    assert cached.hits == 0  # stale states were dropped, not reused
    x = torch.from_numpy(TEXT[:33]).view(1, -1)
    before = len(cached.cache)
    logits, loss = cached(x[:, :-1], x[:, 1:])  # grad mode: training goes through the model
    assert loss is not None and loss.requires_grad and len(cached.cache) == before


def test_nothing_is_cached_when_nothing_is_frozen_or_for_our_own_gpt() -> None:
    full = FrozenPrefixLM(set_trainable(tiny_llama(), "full"))
    assert full.frozen_blocks() == 0
    evaluate_lm(full, TEXT, 16, 8)
    assert not full.cache
    from llmlab.gpt import GPT, GPTConfig

    gpt = CausalLMAdapter(GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2,
                                         n_embd=16)))  # fmt: skip
    ours = FrozenPrefixLM(gpt)
    assert not ours.enabled and ours.frozen_blocks() == 0
    assert not FrozenPrefixLM(gpt.model).enabled  # the bare GPT, as sprint 12 passes it
    assert evaluate_lm(ours, TEXT, 16, 8)["loss"] == pytest.approx(
        evaluate_lm(gpt, TEXT, 16, 8)["loss"]
    )


def test_a_model_the_swap_does_not_fit_switches_caching_off() -> None:
    model = set_trainable(tiny_llama(), "last_blocks", n_blocks=1, head_names=())
    cached = FrozenPrefixLM(model)
    inner = model.model.model
    original = inner.forward

    def scaled(*args, inputs_embeds=None, **kwargs):  # Gemma-style: rescales its input
        if inputs_embeds is not None:
            inputs_embeds = inputs_embeds * 2.0
        return original(*args, inputs_embeds=inputs_embeds, **kwargs)

    inner.forward = scaled
    with pytest.warns(UserWarning, match="caching switched off"):
        result = evaluate_lm(cached, TEXT, 16, 8)
    assert not cached.enabled and not cached.cache
    assert result["loss"] == pytest.approx(evaluate_lm(model, TEXT, 16, 8)["loss"], abs=1e-5)
