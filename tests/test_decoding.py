"""Sprint 10: every decoding strategy equals Hugging Face's `generate` (no download).

The models are tiny random ones: our `GPT` and its `to_hf()` export (GPT-2 for learned
positions, GPT-NeoX for RoPE), so the reference sees exactly our weights.
"""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llmlab.errors import LLMLabError
from llmlab.generate import (
    beam_search,
    generate,
    iter_tokens,
    min_p_filter,
    repetition_penalty,
    stream,
    temperature_scale,
    top_k_filter,
    top_p_filter,
)
from llmlab.gpt import GPT, GPTConfig
from llmlab.tokenizers import gpt2_tokenizer

VOCAB = 97


def _scores(seed: int = 0) -> torch.Tensor:
    """Random logits with the awkward cases: ties, a row of equal values, -inf entries and a
    row that is entirely -inf (what a previous filter can leave behind)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(6, VOCAB, generator=g) * 3
    s[1, :10] = s[1, 10]  # ties at the top
    s[2] = 0.5  # all equal
    s[3, ::3] = float("-inf")
    s[4] = float("-inf")
    s[5, 5:] = torch.round(s[5, 5:])  # many ties everywhere
    return s


@pytest.mark.parametrize("seed", [0, 1])
def test_processors_equal_transformers(seed: int) -> None:
    scores = _scores(seed)
    ids = torch.randint(0, VOCAB, (6, 12), generator=torch.Generator().manual_seed(seed))
    for t in (0.3, 1.0, 1.7):
        torch.testing.assert_close(
            temperature_scale(scores, t), TemperatureLogitsWarper(t)(ids, scores)
        )
    for keep in (1, 2):
        for k in (1, 5, 50, VOCAB + 3):
            ref = TopKLogitsWarper(k, min_tokens_to_keep=keep)(ids, scores)
            assert torch.equal(top_k_filter(scores, k, keep), ref)
        for p in (0.05, 0.3, 0.9, 0.999):
            ref = TopPLogitsWarper(p, min_tokens_to_keep=keep)(ids, scores)
            assert torch.equal(top_p_filter(scores, p, keep), ref)
        for p in (0.0, 0.05, 0.5, 1.0):
            ref = MinPLogitsWarper(p, min_tokens_to_keep=keep)(ids, scores)
            assert torch.equal(min_p_filter(scores, p, keep), ref)
    for penalty in (0.7, 1.3, 2.0):
        ref = RepetitionPenaltyLogitsProcessor(penalty)(ids, scores.clone())
        assert torch.equal(repetition_penalty(ids, scores, penalty), ref)


def _pair(pos_encoding: str, seed: int = 0) -> tuple[GPT, torch.nn.Module]:
    torch.manual_seed(seed)
    cfg = GPTConfig(
        vocab_size=VOCAB, block_size=64, n_layer=2, n_head=4, n_embd=48, pos_encoding=pos_encoding
    )
    ours = GPT(cfg).eval()
    return ours, ours.to_hf().eval()


POS = ["learned", "rope"]
SAMPLING = [
    dict(temperature=0.8, top_k=20, top_p=0.9),
    dict(temperature=1.3, top_k=0, top_p=1.0, min_p=0.05),
    dict(temperature=1.0, top_k=0, repetition_penalty=1.5),
]


def _hf_kwargs(settings: dict) -> dict:
    # transformers quietly applies top_k=50 when sampling unless told otherwise: 0 = off.
    return {"top_k": 0, **settings}


@pytest.mark.parametrize("pos", POS)
@pytest.mark.parametrize("settings", SAMPLING, ids=["t-k-p", "t-minp", "penalty"])
def test_sampled_tokens_equal_transformers(pos: str, settings: dict) -> None:
    ours, hf = _pair(pos)
    prompt = torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(1))
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        ref = hf.generate(prompt, do_sample=True, max_new_tokens=25, **_hf_kwargs(settings))
        torch.manual_seed(seed)
        mine = generate(ours, prompt, 25, **settings)
        torch.manual_seed(seed)
        mine_on_hf = generate(hf, prompt, 25, **settings)  # the same loop on their model
        assert torch.equal(mine, ref), f"seed {seed}"
        assert torch.equal(mine_on_hf, ref), f"seed {seed}"


@pytest.mark.parametrize("pos", POS)
def test_left_padded_batch_equals_each_prompt_alone_and_transformers(pos: str) -> None:
    ours, hf = _pair(pos, seed=3)
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(1, VOCAB, (n,), generator=g) for n in (9, 4, 6)]
    width = max(len(p) for p in prompts)
    batch = torch.zeros(3, width, dtype=torch.long)  # pad id 0, on the left
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        batch[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    mine = generate(ours, batch, 12, greedy=True, attention_mask=mask)
    ref = hf.generate(batch, attention_mask=mask, do_sample=False, max_new_tokens=12)
    assert torch.equal(mine, ref)
    for i, p in enumerate(prompts):
        alone = generate(ours, p[None], 12, greedy=True)
        assert torch.equal(mine[i, width:], alone[0, len(p) :])
    # The HF model through our loop gives the same tokens too.
    assert torch.equal(generate(hf, batch, 12, greedy=True, attention_mask=mask), ref)


def _frequent_token(ours: GPT, prompt: torch.Tensor) -> int:
    """A token greedy decoding produces early, used as EOS so that beams really end."""
    greedy = generate(ours, prompt, 6, greedy=True)[:, prompt.shape[1] :]
    return int(greedy[0, 2])


@pytest.mark.parametrize("pos", POS)
@pytest.mark.parametrize("num_beams", [2, 4])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_search_equals_transformers(pos: str, num_beams: int, length_penalty: float) -> None:
    ours, hf = _pair(pos, seed=5)
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(6))
    for eos in (None, _frequent_token(ours, prompt)):
        ref = hf.generate(
            prompt,
            do_sample=False,
            num_beams=num_beams,
            max_new_tokens=10,
            length_penalty=length_penalty,
            eos_token_id=eos,
            pad_token_id=eos,
            output_scores=True,
            return_dict_in_generate=True,
        )
        seqs, scores = beam_search(
            ours, prompt, num_beams, 10, length_penalty=length_penalty, eos_token_id=eos
        )
        assert torch.equal(seqs, ref.sequences), f"eos={eos}"
        torch.testing.assert_close(scores, ref.sequences_scores, atol=1e-5, rtol=1e-5)


def test_beam_search_returns_several_sequences_and_one_beam_is_greedy() -> None:
    ours, hf = _pair("rope", seed=7)
    prompt = torch.randint(0, VOCAB, (1, 4), generator=torch.Generator().manual_seed(8))
    seqs, scores = beam_search(ours, prompt, 4, 8, num_return_sequences=3)
    ref = hf.generate(
        prompt,
        num_beams=4,
        num_return_sequences=3,
        max_new_tokens=8,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert torch.equal(seqs, ref.sequences)
    assert scores[0] >= scores[1] >= scores[2]
    one, _ = beam_search(ours, prompt, 1, 8)
    assert torch.equal(one, generate(ours, prompt, 8, greedy=True))


def test_static_cache_equals_recomputing_the_context() -> None:
    ours, _ = _pair("learned", seed=9)
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(9))
    cached = generate(ours, prompt, 30, greedy=True)
    plain = generate(ours, prompt, 30, greedy=True, use_cache=False)
    assert torch.equal(cached, plain)


class _Scripted(torch.nn.Module):
    """A stand-in LM (llmlab interface) that emits a fixed token sequence, then repeats it."""

    def __init__(self, script: list[int], vocab: int) -> None:
        super().__init__()
        self.script, self.vocab = script, vocab
        self.h = torch.nn.ModuleList()
        self.config = GPTConfig(vocab_size=vocab, block_size=512, n_layer=1, n_head=1, n_embd=2)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, idx, kv_caches=None, **kwargs):
        logits = torch.full((idx.shape[0], 1, self.vocab), -10.0)
        logits[:, 0, self.script[self.calls % len(self.script)]] = 10.0
        self.calls += 1
        return logits, None


def test_stream_never_splits_a_multibyte_character() -> None:
    tok = gpt2_tokenizer()
    emoji = tok.encode("🙂")  # 4 bytes in two tokens, neither a character on its own
    assert len(emoji) == 2 and all("\ufffd" in tok.decode([t]) for t in emoji)
    script = tok.encode(" naïve café") + emoji + tok.encode(" done")
    text = tok.decode(script)
    assert text == " naïve café🙂 done"
    model = _Scripted(script, tok.vocab_size)
    pieces = list(stream(model, tok, torch.tensor([[0]]), len(script), greedy=True))
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert len(pieces) == len(script) - 1  # the emoji's first byte-token is held back


def test_eos_stop_strings_and_should_stop_end_generation() -> None:
    tok = gpt2_tokenizer()
    script = tok.encode(" one two three four five six")
    model = _Scripted(script, tok.vocab_size)
    out = generate(model, torch.tensor([[0]]), 20, greedy=True, eos_token_id=script[2])
    assert out.shape[1] == 1 + 3  # stopped right after the EOS token
    model.calls = 0
    out = generate(
        model, torch.tensor([[0]]), 20, greedy=True, stop_strings=["four"], decode=tok.decode
    )
    assert tok.decode(out[0, 1:].tolist()) == " one two three four"
    model.calls = 0
    polls = iter([False, False, False, True])
    out = generate(model, torch.tensor([[0]]), 20, greedy=True, should_stop=lambda: next(polls))
    assert out.shape[1] == 1 + 3  # three steps ran, the fourth poll said stop


def test_finished_rows_are_padded_while_others_continue() -> None:
    ours, hf = _pair("learned", seed=11)
    prompt = torch.randint(0, VOCAB, (4, 3), generator=torch.Generator().manual_seed(12))
    eos = _frequent_token(ours, prompt)
    torch.manual_seed(0)
    mine = generate(ours, prompt, 15, temperature=1.5, top_k=0, eos_token_id=eos, pad_token_id=1)
    torch.manual_seed(0)
    ref = hf.generate(
        prompt, do_sample=True, temperature=1.5, top_k=0, max_new_tokens=15,
        eos_token_id=eos, pad_token_id=1,
    )  # fmt: skip
    assert torch.equal(mine, ref)


def test_bad_decoding_arguments_are_clear_errors() -> None:
    ours, _ = _pair("learned")
    prompt = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(LLMLabError, match="num_beams"):
        beam_search(ours, prompt, 0, 5)
    with pytest.raises(LLMLabError, match="LEFT"):
        generate(ours, prompt, 3, attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]))
    with pytest.raises(LLMLabError, match="min_p"):
        generate(ours, prompt, 3, min_p=1.5)
    with pytest.raises(LLMLabError, match="decode"):
        list(iter_tokens(ours, prompt, 3, stop_strings=["x"]))
    with pytest.raises(LLMLabError, match="one sequence"):
        list(stream(ours, gpt2_tokenizer(), prompt, 3))


def test_gemv_layout_is_restored_and_changes_no_result(tmp_path) -> None:
    from llmlab.generate import gemv_layout

    ours, _ = _pair("rope", seed=13)
    prompt = torch.randint(0, VOCAB, (1, 5), generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        before = ours(prompt)[0]
        with gemv_layout(ours) as n:
            assert n == 2 * 4 + 1  # 2 blocks x (c_attn, c_proj, c_fc, c_proj) + the tied head
            assert ours.lm_head.weight.stride() == (1, VOCAB)  # (in, out) contiguous
            during = ours(prompt)[0]
    torch.testing.assert_close(during, before, atol=1e-5, rtol=0)
    assert all(p.is_contiguous() for p in ours.parameters())
    generate(ours, prompt, 3, greedy=True)
    assert all(p.is_contiguous() for p in ours.parameters())
    ours.save(tmp_path / "after_generate")  # safetensors needs the usual layout back
