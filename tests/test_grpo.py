"""llmlab.grpo: advantages, KL, clipping, averaging, parity with trl, and the GRPO loop."""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.errors import LLMLabError
from llmlab.gpt import GPT, GPTConfig
from llmlab.grpo import (
    LOSS_TYPES,
    GRPOConfig,
    aggregate,
    call_reward,
    completion_logprobs,
    completion_mask,
    group_advantages,
    grpo_loss,
    kl_k3,
    token_logprobs,
    train_grpo,
)
from tests.conftest import load_script

PARITY = "sprints.16_grpo_reasoning.results.check_against_trl"


def test_group_advantages_by_hand() -> None:
    rewards = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    adv = group_advantages(rewards, 4)
    std = math.sqrt(4 * 0.25 / 3)  # Bessel-corrected, as trl's nanstd
    expected = torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]) / (std + 1e-4)
    assert torch.allclose(adv[:4], expected[:4], atol=1e-6)
    assert adv[4:].abs().max() == 0  # a group that all scored the same teaches nothing
    assert torch.allclose(group_advantages(rewards, 4, "none")[:4], expected[:4] * (std + 1e-4))
    batch_std = torch.tensor(rewards).std()
    assert torch.allclose(
        group_advantages(rewards, 4, "batch"),
        group_advantages(rewards, 4, "none") / (batch_std + 1e-4),
    )


@pytest.mark.parametrize(
    ("rewards", "group_size", "message"),
    [
        ([1.0, 0.0], 1, "group_size must be an integer >= 2"),
        ([1.0, 0.0, 1.0], 2, "multiple of group_size"),
        ([1.0, float("nan")], 2, "NaN"),
    ],
)
def test_group_advantages_rejects_bad_input(rewards, group_size, message) -> None:
    with pytest.raises(LLMLabError, match=message):
        group_advantages(rewards, group_size)


def test_kl_k3_is_an_unbiased_non_negative_estimate() -> None:
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(6), 0)
    q = torch.softmax(torch.randn(6), 0)
    exact = (p * (p / q).log()).sum()
    samples = torch.multinomial(p, 200_000, replacement=True)
    k3 = kl_k3(p.log()[samples], q.log()[samples])
    assert (k3 >= 0).all()
    assert k3.mean().item() == pytest.approx(exact.item(), rel=0.03)
    assert kl_k3(torch.tensor([-1.0]), torch.tensor([-1.0])).item() == 0.0


def test_token_logprobs_and_temperature() -> None:
    logits = torch.randn(2, 3, 5)
    tokens = torch.randint(0, 5, (2, 3))
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens[..., None]).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, tokens, 0.7), expected)


def test_aggregation_variants_differ_as_documented() -> None:
    loss = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert aggregate(loss, mask, "grpo").item() == pytest.approx((1 + 3) / 2)  # per sequence
    assert aggregate(loss, mask, "bnpo").item() == pytest.approx(7 / 5)  # per token
    assert aggregate(loss, mask, "dr_grpo").item() == pytest.approx(7 / (2 * 4))
    assert aggregate(loss, mask, "dr_grpo", max_completion_length=10).item() == pytest.approx(
        7 / 20
    )
    assert aggregate(loss, mask, "dapo").item() == pytest.approx(7 / 5)
    assert aggregate(loss, mask, "dapo", num_items=10).item() == pytest.approx(7 / 10)
    with pytest.raises(LLMLabError, match="loss_type"):
        aggregate(loss, mask, "ppo")


def test_clipping_stops_the_gradient_outside_the_trust_region() -> None:
    old = torch.zeros(4, 1)
    logp = torch.log(torch.tensor([[1.5], [1.5], [0.5], [1.1]])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])
    loss, stats = grpo_loss(logp, old, None, adv, torch.ones(4, 1), loss_type="bnpo")
    loss.backward()
    grad = logp.grad.squeeze(1)
    assert grad[0] == 0  # ratio 1.5 > 1.2 and A > 0: already pushed far enough
    assert grad[2] == 0  # ratio 0.5 < 0.8 and A < 0: already pushed far enough
    assert grad[1] != 0 and grad[3] != 0  # the other side of the clip, and inside it
    assert stats["clip_high"] == 0.25 and stats["clip_low"] == 0.25


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradients_equal_trl(loss_type: str, beta: float) -> None:
    """Parity with trl's GRPOTrainer._compute_loss, a PRIVATE method called on a stand-in
    trainer (see check_against_trl.py). Written against trl 1.16.0, the version in uv.lock:
    if trl is upgraded and this fails, re-read `_compute_loss` before trusting either side."""
    import trl

    parity = load_script(PARITY)
    assert trl.__version__ == parity.TRL_VERSION_CHECKED, "re-check the stand-in for this trl"
    generator = torch.Generator().manual_seed(1)
    case = parity.random_case(3, 4, 7, 0.4, generator)
    r = parity.compare(case, loss_type, beta, 0.2, 0.28)
    assert r["clip_region"] > 0.1  # clipping really is active in this case
    assert r["loss_diff"] < 1e-6
    assert r["grad_diff"] < 1e-6 * max(1.0, r["grad_scale"])
    assert r["kl_diff"] < 1e-6 and r["clip_diff"] < 1e-6


def test_completion_mask_stops_after_the_first_eos() -> None:
    completions = torch.tensor([[5, 2, 7, 2], [5, 5, 5, 5], [2, 5, 5, 5]])
    mask = completion_mask(completions, eos_id=2)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert completion_mask(completions).sum() == 12


def test_completion_logprobs_equal_the_models_cross_entropy() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(11, 8, 1, 2, 16)).eval()
    prompts, completions = torch.randint(0, 11, (3, 3)), torch.randint(0, 11, (3, 4))
    logp = completion_logprobs(model, prompts, completions)
    ids = torch.cat([prompts, completions], 1)
    targets = ids[:, 1:].clone()
    targets[:, :2] = -1  # no loss on the prompt
    _, ce = model(ids[:, :-1], targets)
    assert (-logp.mean()).item() == pytest.approx(ce.item(), abs=1e-6)


def _first_token_task(target: int = 3):
    """Prompts are one token; reward 1 when the completion starts with `target`."""

    def sample(n: int, generator: torch.Generator):
        return torch.randint(0, 5, (n, 1), generator=generator), [target] * n

    def reward(completions, mask, answers):
        return (completions[:, 0] == torch.tensor(answers)).float()

    return sample, reward


def test_train_grpo_raises_the_reward() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(8, 4, 1, 2, 16))
    sample, reward = _first_token_task()
    config = GRPOConfig(steps=40, prompts_per_step=4, group_size=8, max_new_tokens=2, lr=1e-2)
    history = train_grpo(model, sample, reward, config, progress=False)
    assert len(history) == 40
    first = sum(h["reward"] for h in history[:5]) / 5
    last = sum(h["reward"] for h in history[-5:]) / 5
    assert first < 0.4 and last > 0.8  # from about 1/8 by chance to almost always
    assert all(h["kl"] >= 0 for h in history)  # beta > 0: a frozen copy is the reference
    assert history[-1]["kl"] > history[0]["kl"]


def test_several_iterations_per_batch_make_clipping_bite() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(8, 4, 1, 2, 16))
    sample, reward = _first_token_task()
    config = GRPOConfig(
        steps=10, prompts_per_step=4, group_size=8, max_new_tokens=2, lr=3e-2, num_iterations=3
    )
    history = train_grpo(model, sample, reward, config, progress=False)
    assert max(h["clip_region"] for h in history) > 0


def test_bad_reward_functions_get_one_line_errors() -> None:
    model = GPT(GPTConfig(8, 4, 1, 2, 16))
    sample, _ = _first_token_task()
    config = GRPOConfig(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=2)

    def broken(completions, mask, answers):
        raise KeyError("answer")

    def short(completions, mask, answers):
        return [1.0]

    with pytest.raises(LLMLabError, match="'broken' raised KeyError"):
        train_grpo(model, sample, broken, config, progress=False)
    with pytest.raises(LLMLabError, match="'short' returned 1 values .* for 4 completions"):
        train_grpo(model, sample, short, config, progress=False)
    with pytest.raises(LLMLabError, match="NaN"):
        call_reward(lambda *a: [float("nan")], 1)
    with pytest.raises(LLMLabError, match="one number per completion"):
        call_reward(lambda *a: "high", 1)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("group_size", 1, "group_size must be >= 2"),
        ("loss_type", "ppo", "loss_type"),
        ("steps", 0, "steps must be a positive integer"),
        ("beta", -1.0, "beta >= 0"),
    ],
)
def test_grpo_config_rejects_bad_values(field: str, value, message: str) -> None:
    with pytest.raises(LLMLabError, match=message):
        GRPOConfig(**{field: value})
