"""GRPO, Group Relative Policy Optimization, from scratch (sprint 16).

The maths, piece by piece (each one pinned to `trl` 1.16's `GRPOTrainer` by a test):

- `group_advantages(rewards, group_size, scale)`: each completion's reward minus the mean
  reward of its group (the completions of the same prompt), divided by the group's standard
  deviation (`scale="group"`), the batch's (`"batch"`) or nothing (`"none"`, Dr. GRPO).
  The group mean is the baseline a critic network would otherwise have to learn.
- `token_logprobs(logits, tokens, temperature)`: log pi(token | prefix) for chosen tokens.
- `kl_k3(logp, ref_logp)`: the per-token k3 estimator of KL(pi || pi_ref), always >= 0.
- `clipped_objective(logp, old_logp, advantages, epsilon, epsilon_high)`: PPO's clipped
  surrogate, per token, as a loss (negated).
- `aggregate(per_token_loss, mask, loss_type)`: how token losses become one number:
  `grpo` (mean per sequence, then over sequences), `bnpo` (mean over the batch's tokens),
  `dr_grpo` (sum / (sequences x max length)), `dapo` (sum / tokens of the whole generation
  batch, which matters with gradient accumulation).
- `grpo_loss(...)`: all of the above: the loss `GRPOTrainer._compute_loss` returns, plus
  statistics (KL, clipped fractions).

And a GRPO loop for our own `llmlab.gpt.GPT` (sprint 08) on prompts of equal length:

- `GRPOConfig`: the knobs (group size, prompts per step, beta, epsilon, loss type, ...).
- `completion_mask(completions, eos_id)`: 1 up to and including the first end token.
- `completion_logprobs(model, prompts, completions, temperature)`: per-token log-probs.
- `train_grpo(policy, sample_prompts, reward_fn, config, ref_model)`: sample a group of
  completions per prompt, score them, turn rewards into advantages, take
  `num_iterations` clipped policy-gradient steps with a KL penalty to the frozen reference;
  returns the per-step history (reward, KL, clip fraction, length, ...).
- `supervised_warmup(model, make_batch, steps, lr)`: the brief supervised start that gives
  RL something to improve and the KL term a meaningful reference.

The maths is in `sprints/16_grpo_reasoning/notes/`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from llmlab.errors import LLMLabError
from llmlab.generate import generate

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")


# --- the maths -------------------------------------------------------------------------------


def group_advantages(
    rewards: torch.Tensor | Sequence[float],
    group_size: int,
    scale: str = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """(N,) rewards laid out group by group -> (N,) advantages.

    `rewards[g * group_size : (g + 1) * group_size]` are the completions of prompt g.
    A = (r - mean of its group) / (std + eps), the std (with Bessel's correction, as trl)
    taken over the group (`"group"`), the whole batch (`"batch"`) or not at all (`"none"`).
    A group whose completions all scored the same gets advantage 0: it teaches nothing.
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise LLMLabError(
            f"group_size must be an integer >= 2, got {group_size!r}: GRPO's baseline is the "
            "mean reward of several completions of the same prompt"
        )
    if scale not in SCALE_REWARDS:
        raise LLMLabError(f"scale must be one of {SCALE_REWARDS}, got {scale!r}")
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if r.dim() != 1 or r.numel() == 0 or r.numel() % group_size:
        raise LLMLabError(
            f"expected a flat list of rewards, a multiple of group_size={group_size} long, "
            f"got shape {tuple(r.shape)}"
        )
    if not torch.isfinite(r).all():
        raise LLMLabError("a reward is NaN or infinite: make every reward function return numbers")
    grouped = r.view(-1, group_size)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "group":
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        advantages = advantages / ((r.std() if r.numel() > 1 else r.new_zeros(())) + eps)
    return advantages.reshape(-1)


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log pi(token) for each chosen token: (..., V) logits and (...) ids -> (...) log-probs.

    The logits are divided by the sampling temperature first, as trl does: the ratio
    pi / pi_old must compare the distribution the completions were actually sampled from.
    """
    logps = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logps.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref) from samples of pi (Schulman, 2020).

    With d = log pi_ref - log pi: k3 = exp(d) - d - 1. Unbiased (E_pi[exp(d)] = 1), never
    negative (e^x >= 1 + x) and, unlike -d, low-variance: the estimator GRPO uses.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def clipped_objective(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate as a per-token loss, and the ratio pi / pi_old.

    loss = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A): once a token's
    probability moved past the trust region in the direction A asks for, it gets no gradient.
    """
    high = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(logp - old_logp)
    adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + high) * adv
    return -torch.min(unclipped, clipped), ratio


def aggregate(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "dapo",
    max_completion_length: int | None = None,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Average (N, T) token losses into one number, the four ways trl offers.

    - `grpo`: each sequence's mean, then the mean over sequences: a token of a short
      completion weighs more than one of a long completion (the length bias).
    - `bnpo`: the mean over every completion token in this batch.
    - `dr_grpo`: the sum divided by a constant, N x `max_completion_length`.
    - `dapo`: the sum divided by `num_items`, the completion tokens of the WHOLE generation
      batch (defaults to this batch's): with gradient accumulation every micro-batch then
      shares one normaliser, so the update is the same however the batch is split.
    """
    if loss_type not in LOSS_TYPES:
        raise LLMLabError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    mask = mask.to(per_token_loss.dtype)
    total = (per_token_loss * mask).sum()
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return total / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        length = per_token_loss.size(1) if max_completion_length is None else max_completion_length
        return total / (per_token_loss.size(0) * length)
    items = mask.sum() if num_items is None else torch.as_tensor(num_items, dtype=total.dtype)
    return total / items.clamp(min=1.0)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "dapo",
    max_completion_length: int | None = None,
    num_items: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss of a batch of completions, and its statistics.

    `logp`, `old_logp`, `ref_logp`, `mask`: (N, T) over completion tokens (`old_logp=None`
    means "sampled from the current policy": ratio 1, as trl with one iteration);
    `advantages`: (N,). Per token: clipped surrogate + beta * k3 KL to the reference, then
    `aggregate`d. Returns (loss, {"kl", "clip_low", "clip_high", "clip_region"}) where the
    clip fractions count tokens whose ratio left the trust region in the direction that
    stops their gradient.
    """
    if logp.dim() != 2 or mask.shape != logp.shape:
        raise LLMLabError(
            f"logp and mask must both be (completions, tokens), got {tuple(logp.shape)} "
            f"and {tuple(mask.shape)}"
        )
    if advantages.shape[0] != logp.shape[0]:
        raise LLMLabError(
            f"{advantages.shape[0]} advantages for {logp.shape[0]} completions: one per completion"
        )
    if beta and ref_logp is None:
        raise LLMLabError("beta > 0 needs the reference model's log-probs (ref_logp)")
    old = logp.detach() if old_logp is None else old_logp
    per_token, ratio = clipped_objective(logp, old, advantages, epsilon, epsilon_high)
    stats: dict[str, float] = {}
    m = mask.to(per_token.dtype)
    if ref_logp is not None:
        kl = kl_k3(logp, ref_logp)
        if beta:
            per_token = per_token + beta * kl
        stats["kl"] = ((kl.detach() * m).sum() / m.sum().clamp(min=1.0)).item()
    loss = aggregate(per_token, mask, loss_type, max_completion_length, num_items)
    adv = advantages.view(-1, 1)
    high = epsilon if epsilon_high is None else epsilon_high
    low_clipped = (ratio < 1 - epsilon) & (adv < 0)
    high_clipped = (ratio > 1 + high) & (adv > 0)
    n_tokens = m.sum().clamp(min=1.0)
    stats["clip_low"] = ((low_clipped * m).sum() / n_tokens).item()
    stats["clip_high"] = ((high_clipped * m).sum() / n_tokens).item()
    stats["clip_region"] = stats["clip_low"] + stats["clip_high"]
    return loss, stats


# --- a GRPO loop for our GPT ------------------------------------------------------------------


@dataclass
class GRPOConfig:
    """One GRPO run of `train_grpo`. Defaults: the sprint-16 digit-sum recipe."""

    steps: int = 300
    prompts_per_step: int = 16
    group_size: int = 8
    max_new_tokens: int = 3
    temperature: float = 1.0
    lr: float = 2e-3
    beta: float = 0.04
    epsilon: float = 0.2
    epsilon_high: float | None = None
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    num_iterations: int = 1  # policy updates per sampled batch (mu in the paper)
    grad_clip: float = 1.0
    eos_id: int | None = None  # tokens after the first eos_id are masked out
    eval_every: int = 25

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "max_new_tokens", "num_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LLMLabError(f"GRPOConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise LLMLabError(f"GRPOConfig.group_size must be an integer, got {self.group_size!r}")
        if self.group_size < 2:
            raise LLMLabError(
                f"group_size must be >= 2, got {self.group_size}: GRPO's baseline is the mean "
                "reward of several completions of the same prompt"
            )
        if self.loss_type not in LOSS_TYPES:
            raise LLMLabError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise LLMLabError(
                f"scale_rewards must be one of {SCALE_REWARDS}, got {self.scale_rewards!r}"
            )
        for name in ("temperature", "lr"):
            if not getattr(self, name) > 0:
                raise LLMLabError(f"GRPOConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.beta < 0 or not 0 <= self.epsilon < 1:
            raise LLMLabError(
                f"need beta >= 0 and 0 <= epsilon < 1, got beta={self.beta}, epsilon={self.epsilon}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# sample_prompts(n, generator) -> ((n, P) prompt ids, n per-prompt answers for the reward)
PromptSampler = Callable[[int, torch.Generator], tuple[torch.Tensor, Sequence[Any]]]
# reward_fn(completion ids (N, L), mask (N, L), answers (N,)) -> N rewards
RewardFn = Callable[[torch.Tensor, torch.Tensor, Sequence[Any]], Sequence[float] | torch.Tensor]


def completion_mask(completions: torch.Tensor, eos_id: int | None = None) -> torch.Tensor:
    """(N, L) float mask: 1 for every token up to and including the first `eos_id`."""
    if eos_id is None:
        return torch.ones_like(completions, dtype=torch.float32)
    is_eos = completions == eos_id
    # Tokens strictly after the first eos: some earlier position (exclusive cumsum) is eos.
    after = (is_eos.int().cumsum(dim=1) - is_eos.int()) > 0
    return (~after).float()


def completion_logprobs(
    model: nn.Module,
    prompts: torch.Tensor,
    completions: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """(N, P) prompts + (N, L) completions -> (N, L) log pi(completion token | prefix)."""
    ids = torch.cat([prompts, completions], dim=1)
    logits, _ = model(ids[:, :-1])  # the last token predicts nothing we need
    return token_logprobs(logits[:, prompts.size(1) - 1 :], completions, temperature)


def check_rewards(values: Any, n: int, name: str = "reward_fn") -> torch.Tensor:
    """A reward function's output as an (n,) float tensor, or a one-line error saying why not."""
    try:
        rewards = torch.as_tensor(
            values.detach().cpu() if isinstance(values, torch.Tensor) else list(values),
            dtype=torch.float32,
        )
    except (TypeError, ValueError) as exc:
        raise LLMLabError(
            f"reward function {name!r} must return one number per completion, got "
            f"{type(values).__name__} ({exc})"
        ) from None
    if rewards.dim() != 1 or rewards.numel() != n:
        raise LLMLabError(
            f"reward function {name!r} returned {rewards.numel()} values with shape "
            f"{tuple(rewards.shape)} for {n} completions: return exactly one per completion"
        )
    if not torch.isfinite(rewards).all():
        raise LLMLabError(f"reward function {name!r} returned NaN or infinity: return numbers")
    return rewards


def call_reward(fn: Callable[..., Any], n: int, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Call a reward function, turning its exceptions and bad outputs into one-line errors."""
    name = getattr(fn, "__name__", type(fn).__name__)
    try:
        values = fn(*args, **kwargs)
    except LLMLabError:
        raise
    except Exception as exc:  # a user's reward function: any bug must not crash the loop blind
        raise LLMLabError(
            f"reward function {name!r} raised {type(exc).__name__}: {exc}: fix it and rerun"
        ) from exc
    return check_rewards(values, n, name)


@torch.no_grad()
def sample_completions(
    model: nn.Module,
    prompts: torch.Tensor,
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`group_size` sampled completions per prompt: (repeated prompts, completions, mask)."""
    repeated = prompts.repeat_interleave(group_size, dim=0)
    out = generate(model, repeated, max_new_tokens, temperature=temperature, generator=generator)
    completions = out[:, prompts.size(1) :]
    return repeated, completions, completion_mask(completions, eos_id)


def train_grpo(
    policy: nn.Module,
    sample_prompts: PromptSampler,
    reward_fn: RewardFn,
    config: GRPOConfig,
    ref_model: nn.Module | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train `policy` in place with GRPO; return one dict of figures per step.

    Each step: draw `prompts_per_step` prompts, sample `group_size` completions of each
    (no gradient), score them with `reward_fn`, compute group-relative advantages, then
    take `num_iterations` AdamW steps on `grpo_loss` (old log-probs = those at sampling
    time). With `beta > 0` and no `ref_model`, a frozen copy of the starting policy is the
    reference. `evaluate(policy)` (every `eval_every` steps and at the end) adds its
    figures to that step's record; `on_step(step, record)` sees every record (TensorBoard).
    """
    device = next(policy.parameters()).device
    if config.beta > 0 and ref_model is None:
        ref_model = copy.deepcopy(policy)
    if ref_model is not None:
        ref_model.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
    generator = torch.Generator(device=device).manual_seed(seed)
    prompt_generator = torch.Generator().manual_seed(seed + 1)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), desc="GRPO", disable=not progress, leave=False)
    for step in bar:
        prompts, answers = sample_prompts(config.prompts_per_step, prompt_generator)
        if prompts.dim() != 2 or prompts.size(0) != config.prompts_per_step:
            raise LLMLabError(
                f"sample_prompts must return ({config.prompts_per_step}, prompt_len) token ids, "
                f"got {tuple(prompts.shape)}"
            )
        if len(answers) != config.prompts_per_step:
            raise LLMLabError(
                f"sample_prompts returned {len(answers)} answers for "
                f"{config.prompts_per_step} prompts: return one per prompt"
            )
        prompts = prompts.to(device)
        repeated, completions, mask = sample_completions(
            policy,
            prompts,
            config.group_size,
            config.max_new_tokens,
            config.temperature,
            config.eos_id,
            generator,
        )
        group_answers = [a for a in answers for _ in range(config.group_size)]
        rewards = call_reward(reward_fn, len(group_answers), completions, mask, group_answers)
        advantages = group_advantages(rewards, config.group_size, config.scale_rewards).to(device)
        with torch.no_grad():
            old_logp = (
                completion_logprobs(policy, repeated, completions, config.temperature)
                if config.num_iterations > 1
                else None
            )
            ref_logp = (
                completion_logprobs(ref_model, repeated, completions, config.temperature)
                if ref_model is not None
                else None
            )
        policy.train()
        for _ in range(config.num_iterations):
            logp = completion_logprobs(policy, repeated, completions, config.temperature)
            loss, stats = grpo_loss(
                logp,
                old_logp,
                ref_logp,
                advantages,
                mask,
                beta=config.beta,
                epsilon=config.epsilon,
                epsilon_high=config.epsilon_high,
                loss_type=config.loss_type,
                max_completion_length=config.max_new_tokens,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
            optimizer.step()
        grouped = rewards.view(-1, config.group_size)
        record = {
            "step": float(step),
            "reward": rewards.mean().item(),
            "reward_std": rewards.std().item() if rewards.numel() > 1 else 0.0,
            "frac_reward_zero_std": (grouped.std(dim=1) == 0).float().mean().item(),
            "loss": loss.item(),
            "grad_norm": float(grad_norm),
            "completion_length": mask.sum(dim=1).mean().item(),
            "time_s": time.perf_counter() - start,
            **stats,
        }
        if evaluate is not None and (step % config.eval_every == 0 or step == config.steps):
            record.update(evaluate(policy))
        if not math.isfinite(record["loss"]):
            raise LLMLabError(f"the GRPO loss became {record['loss']} at step {step}: lower --lr")
        history.append(record)
        if on_step is not None:
            on_step(step, record)
        bar.set_postfix(reward=f"{record['reward']:.3f}", kl=f"{record.get('kl', 0.0):.3f}")
    return history


def supervised_warmup(
    model: nn.Module,
    make_batch: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """A few supervised steps: `make_batch(generator)` -> (input ids, targets with -1 where
    no loss is wanted); returns the losses. The model learns the answer format (and some of
    the task), which RL then improves: GRPO only strengthens what the model sometimes does."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="supervised warm-up", disable=not progress, leave=False):
        idx, targets = make_batch(generator)
        _, loss = model(idx.to(device), targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
