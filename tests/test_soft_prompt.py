"""llmlab.soft_prompt on tiny random models (a transformers Llama and an llmlab GPT): virtual
tokens equal to real token vectors change nothing, the loss and label scores equal hand
computations, greedy decoding equals `transformers`' `generate`, only the projection learns,
and a frozen model comes back exactly as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmlab import soft_prompt as sp
from llmlab.errors import LLMLabError


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def gpt():
    from llmlab.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=16)
    config.pos_encoding = "rope"
    model = GPT(config).eval()
    # Token vectors of a trained model's size (GPT-2's init, std 0.02, makes every logit ~0).
    torch.nn.init.normal_(model.wte.weight, std=1.0)
    return model


MODELS = ["llama", "gpt"]


@pytest.mark.parametrize("name", MODELS)
def test_real_token_vectors_as_virtual_tokens_change_nothing(name, request) -> None:
    model = request.getfixturevalue(name)
    ids = torch.tensor([[3, 7, 1, 9, 4, 2], [5, 5, 8, 1, 3, 6]])
    table = sp.input_embedding(model).weight
    vectors = table[ids[:, 2:4]].detach()  # the vectors of positions 2 and 3
    placeholder = ids.clone()
    placeholder[:, 2:4] = sp.PLACEHOLDER_ID
    with torch.no_grad():
        expected = sp.lm_logits(model, ids)
        with sp.virtual_tokens(model, vectors, position=2):
            got = sp.lm_logits(model, placeholder)
        plain = sp.lm_logits(model, placeholder)  # the hook is gone after the block
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(plain, expected, atol=1e-3)


@pytest.mark.parametrize("name", MODELS)
def test_loss_and_label_scores_equal_hand_computations(name, request) -> None:
    model = request.getfixturevalue(name)
    table = sp.input_embedding(model).weight
    before, after = [3, 4], [5]
    virtual_ids = torch.tensor([[7, 8], [9, 10]])
    vectors = table[virtual_ids].detach()
    targets = [[11, 12, 13], [14]]  # ragged: the second row is padded
    loss = sp.soft_prompt_loss(model, vectors, targets, before, after)
    manual = []
    for row, target in enumerate(targets):
        full = torch.tensor([before + virtual_ids[row].tolist() + after + target])
        logits = sp.lm_logits(model, full)[0]
        start = len(before) + 2 + len(after)
        manual.append(
            F.cross_entropy(
                logits[start - 1 : start - 1 + len(target)], torch.tensor(target), reduction="sum"
            )
        )
    assert loss.item() == pytest.approx((sum(manual) / 4).item(), rel=1e-5)  # 4 target tokens

    scores = sp.label_log_probs(model, vectors, [[11, 12], [14]], before, after)
    for row in range(2):
        for c, cand in enumerate([[11, 12], [14]]):
            full = torch.tensor([before + virtual_ids[row].tolist() + after + cand])
            logp = sp.lm_logits(model, full)[0].log_softmax(-1)
            start = len(before) + 2 + len(after)
            want = sum(logp[start - 1 + k, t] for k, t in enumerate(cand))
            assert scores[row, c].item() == pytest.approx(want.item(), abs=1e-4)


def test_greedy_decoding_equals_transformers_generate(llama) -> None:
    table = sp.input_embedding(llama).weight
    prompt = [3, 4, 7, 8, 5]
    vectors = table[torch.tensor([[7, 8]])].detach()
    ours = sp.greedy_continuations(llama, vectors, 6, before=[3, 4], after=[5])
    reference = llama.generate(
        torch.tensor([prompt]),
        max_new_tokens=6,
        do_sample=False,
        attention_mask=torch.ones(1, 5, dtype=torch.long),
    )
    assert ours == reference[:, 5:].tolist()
    assert sp.greedy_continuations(llama, None, 6, before=prompt) == ours  # text only


def test_only_the_projection_learns_and_the_model_is_restored(gpt) -> None:
    flags = {n: p.requires_grad for n, p in gpt.named_parameters()}
    weights = {n: p.detach().clone() for n, p in gpt.named_parameters()}
    torch.manual_seed(0)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # two "nodes"
    targets = [[5], [7]]  # each must make the frozen model say its own token
    prompt = sp.SoftPrompt(2, 16, n_tokens=2, scale=sp.embedding_scale(gpt))
    optimizer = torch.optim.Adam(prompt.parameters(), lr=0.05)
    with sp.frozen(gpt):
        losses = []
        for _ in range(60):
            loss = sp.soft_prompt_loss(gpt, prompt(z), targets, before=[1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert all(p.grad is None for p in gpt.parameters())
        said = sp.greedy_continuations(gpt, prompt(z).detach(), 1, before=[1])
    assert losses[-1] < 0.01 * losses[0]
    assert said == targets
    assert {n: p.requires_grad for n, p in gpt.named_parameters()} == flags
    assert all(torch.equal(p, weights[n]) for n, p in gpt.named_parameters())


def test_frozen_restores_flags_after_an_error(gpt) -> None:
    flags = [p.requires_grad for p in gpt.parameters()]
    with pytest.raises(RuntimeError), sp.frozen(gpt):
        assert not any(p.requires_grad for p in gpt.parameters())
        raise RuntimeError("boom")
    assert [p.requires_grad for p in gpt.parameters()] == flags


def test_bad_input_gets_one_line_errors(gpt) -> None:
    too_short = torch.zeros(1, 3, dtype=torch.long)
    with (
        pytest.raises(LLMLabError, match="at least 4 positions"),
        sp.virtual_tokens(gpt, torch.zeros(1, 3, 16), position=1),
    ):
        sp.lm_logits(gpt, too_short)
    with pytest.raises(LLMLabError, match="one non-empty target per row"):
        sp.soft_prompt_loss(gpt, torch.zeros(2, 1, 16), [[1]])
    with pytest.raises(LLMLabError, match="no input-embedding module"):
        sp.input_embedding(torch.nn.Linear(2, 2))
    with pytest.raises(LLMLabError, match="positive sizes"):
        sp.SoftPrompt(0, 16)


def test_encode_reads_both_kinds_of_tokenizer() -> None:
    from llmlab.tokenizers import CharTokenizer

    chars = CharTokenizer.from_text("abc ")
    assert sp.encode(chars, "ab c") == chars.encode("ab c")
