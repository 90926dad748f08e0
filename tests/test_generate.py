"""Generation with and without the KV cache, sampling filters, and bad arguments."""

from __future__ import annotations

import pytest
import torch

from llmlab.attention import KVCache
from llmlab.errors import LLMLabError
from llmlab.generate import filter_top_k, filter_top_p, generate, sample_next
from llmlab.gpt import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=61, block_size=24, n_layer=2, n_head=2, n_embd=32, dropout=0.1)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG)


def test_cached_logits_equal_full_recompute(model: GPT) -> None:
    model.eval()
    idx = torch.randint(0, 61, (2, 15), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full, _ = model(idx)
        caches = [KVCache() for _ in model.h]
        steps = [model(idx[:, :5], kv_caches=caches)[0]]  # the prompt, then one token at a time
        steps += [model(idx[:, t : t + 1], kv_caches=caches)[0] for t in range(5, 15)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_greedy_with_cache_equals_without(model: GPT) -> None:
    idx = torch.randint(0, 61, (3, 4), generator=torch.Generator().manual_seed(1))
    model.train()
    cached = generate(model, idx, 20, greedy=True, use_cache=True)
    plain = generate(model, idx, 20, greedy=True, use_cache=False)
    assert cached.shape == (3, 24)
    assert torch.equal(cached, plain)
    assert torch.equal(cached[:, :4], idx)
    assert model.training  # the caller's mode is restored


def test_sampling_is_reproducible_with_a_generator(model: GPT) -> None:
    idx = torch.zeros(1, 1, dtype=torch.long)
    runs = [
        generate(model, idx, 15, top_k=10, generator=torch.Generator().manual_seed(s))
        for s in (3, 3, 4)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    # Sampling with and without the cache draws the same tokens from the same seed.
    plain = generate(
        model, idx, 15, top_k=10, use_cache=False, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(runs[0], plain)


def test_without_cache_the_window_slides_past_the_context(model: GPT) -> None:
    idx = torch.randint(0, 61, (1, 30))  # longer than block_size=24: cropped each step
    assert generate(model, idx, 10, greedy=True, use_cache=False).shape == (1, 40)


def test_top_k_and_top_p_restrict_the_support() -> None:
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    assert torch.isfinite(filter_top_k(logits, 2)).tolist() == [[False, True, False, True]]
    # 0.5 + 0.3 reaches 0.75: token 2 (0.15) and token 0 (0.05) are dropped.
    assert torch.isfinite(filter_top_p(logits, 0.75)).tolist() == [[False, True, False, True]]
    assert torch.isfinite(filter_top_p(logits, 0.4)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 1.0)).all()
    gen = torch.Generator().manual_seed(0)
    many = logits.expand(2000, 4)
    drawn_k = sample_next(many, top_k=2, generator=gen).unique().tolist()
    drawn_p = sample_next(many, top_p=0.75, generator=gen).unique().tolist()
    drawn_all = sample_next(many, generator=gen).unique().tolist()
    assert drawn_k == drawn_p == [1, 3]
    assert drawn_all == [0, 1, 2, 3]
    assert sample_next(logits, greedy=True).item() == 1


def test_bad_arguments_are_clear_errors(model: GPT) -> None:
    idx = torch.zeros(1, 20, dtype=torch.long)
    with pytest.raises(LLMLabError, match="exceeds the context"):
        generate(model, idx, 10)  # 20 + 10 > block_size 24 with the cache
    with pytest.raises(LLMLabError, match="temperature"):
        generate(model, idx[:, :2], 3, temperature=0.0)
    with pytest.raises(LLMLabError, match="top_k"):
        generate(model, idx[:, :2], 3, top_k=-1)  # (0 turns top-k off, as in transformers)
    with pytest.raises(LLMLabError, match="top_p"):
        generate(model, idx[:, :2], 3, top_p=1.5)
    with pytest.raises(LLMLabError, match="batch, time"):
        generate(model, torch.zeros(3, dtype=torch.long), 3)
    with pytest.raises(LLMLabError, match="token ids"):
        generate(model, torch.tensor([[61]]), 3)


def test_a_compiled_model_decodes_with_its_plain_module(model: GPT) -> None:
    idx = torch.randint(0, 61, (1, 3), generator=torch.Generator().manual_seed(2))
    compiled = torch.compile(model)  # lazy: generate unwraps it, so nothing is compiled
    assert torch.equal(
        generate(compiled, idx, 5, greedy=True), generate(model, idx, 5, greedy=True)
    )
