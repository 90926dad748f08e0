"""Our GRPO loss = trl's: same log-probs in, same loss and same gradients out.

For each averaging variant (grpo, bnpo, dr_grpo, dapo), with and without the KL penalty and
with clipping active (the new log-probs are far enough from the old ones that many ratios
leave [1 - eps, 1 + eps_high]), builds random per-token log-probs, old and reference log-probs,
rewards of groups of completions of different lengths (as one of two micro-batches, so
dapo's whole-batch normaliser differs from bnpo's), and compares `llmlab.grpo.grpo_loss`
with `trl`'s `GRPOTrainer._compute_loss` on exactly those tensors: the loss, its gradient
with respect to every log-prob, and trl's logged KL and clip fractions.

trl 1.16 has no standalone loss function: `_compute_loss` is a private method, called here
on a stand-in `self` whose log-prob method returns our tensors. It was written against
trl 1.16.0 (the version in `uv.lock`); a newer trl may rename what the stand-in provides.

Run: python -m sprints.16_grpo_reasoning.results.check_against_trl
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import torch

from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.grpo import LOSS_TYPES, group_advantages, grpo_loss

TRL_VERSION_CHECKED = "1.16.0"


def trl_compute_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    epsilon: float,
    epsilon_high: float,
    loss_type: str,
    max_completion_length: int,
    num_items: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """trl's loss for these tensors: `GRPOTrainer._compute_loss` run on a stand-in trainer.

    The stand-in provides exactly the attributes `_compute_loss` reads in trl 1.16 with
    plain GRPO settings (token-level ratios, no vLLM, no entropy masking, no auxiliary
    loss, one process, no gradient accumulation); its log-prob method returns `logp`.
    Returns (loss, trl's logged metrics: kl, clip_ratio/...).
    """
    from trl import GRPOTrainer

    n, length = logp.shape
    metrics: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    stand_in = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (
            logp,
            torch.zeros_like(logp),
            None,
        ),
        top_entropy_quantile=1.0,
        aux_loss_enabled=False,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type=loss_type,
        epsilon_low=epsilon,
        epsilon_high=epsilon_high,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=max_completion_length,
        accelerator=SimpleNamespace(
            num_processes=1,
            reduce=lambda tensor, reduction="sum": tensor,
            gather=lambda tensor: tensor,
            gather_for_metrics=lambda tensor: tensor,
        ),
        _entropy_bonus_enabled=False,
        _metrics=metrics,
    )
    inputs: dict[str, Any] = {
        "prompt_ids": torch.zeros(n, 1, dtype=torch.long),
        "prompt_mask": torch.ones(n, 1, dtype=torch.long),
        "completion_ids": torch.zeros(n, length, dtype=torch.long),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old_logp,
        "ref_per_token_logps": ref_logp,
        "num_items_in_batch": torch.tensor(float(num_items)),
    }
    loss = GRPOTrainer._compute_loss(stand_in, None, inputs)
    return loss, {name: values[-1] for name, values in metrics["train"].items()}


def random_case(
    n_prompts: int, group_size: int, length: int, drift: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Log-probs of completions of different lengths, with `drift` between new and old
    (large enough that clipping is active) and between new and reference."""
    n = n_prompts * group_size
    old = -torch.rand(n, length, generator=generator) * 3 - 0.05
    logp = old + drift * torch.randn(n, length, generator=generator)
    ref = logp + drift * torch.randn(n, length, generator=generator)
    lengths = torch.randint(1, length + 1, (n,), generator=generator)
    mask = (torch.arange(length) < lengths[:, None]).float()
    rewards = torch.randint(0, 3, (n,), generator=generator).float() / 2
    return {
        "logp": logp.clamp(max=0.0),
        "old_logp": old,
        "ref_logp": ref.clamp(max=0.0),
        "mask": mask,
        "advantages": group_advantages(rewards, group_size),
    }


def compare(
    case: dict[str, torch.Tensor], loss_type: str, beta: float, epsilon: float, eps_high: float
) -> dict[str, float]:
    """|ours - trl's| for the loss, the gradient, the KL and the clip fractions."""
    length = case["logp"].shape[1]
    kwargs = dict(beta=beta, epsilon=epsilon, epsilon_high=eps_high, loss_type=loss_type)
    # As if this batch were one of two equal micro-batches of a generation batch: only dapo
    # normalises by the tokens of the whole generation batch, so only dapo sees the difference.
    num_items = 2 * case["mask"].sum().item()
    ours_in = case["logp"].clone().requires_grad_(True)
    ours, stats = grpo_loss(
        ours_in,
        case["old_logp"],
        case["ref_logp"],
        case["advantages"],
        case["mask"],
        max_completion_length=length,
        num_items=num_items,
        **kwargs,
    )
    ours.backward()
    trl_in = case["logp"].clone().requires_grad_(True)
    theirs, metrics = trl_compute_loss(
        trl_in,
        case["old_logp"],
        case["ref_logp"],
        case["advantages"],
        case["mask"],
        max_completion_length=length,
        num_items=num_items,
        **kwargs,
    )
    theirs.backward()
    return {
        "loss": theirs.item(),
        "loss_diff": abs(ours.item() - theirs.item()),
        "grad_diff": (ours_in.grad - trl_in.grad).abs().max().item(),
        "grad_scale": trl_in.grad.abs().max().item(),
        "kl_diff": abs(stats["kl"] - metrics["kl"]) if beta else 0.0,
        "clip_diff": max(
            abs(stats["clip_low"] - metrics["clip_ratio/low_mean"]),
            abs(stats["clip_high"] - metrics["clip_ratio/high_mean"]),
        ),
        "clip_region": metrics["clip_ratio/region_mean"],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--prompts", type=positive_int, default=3, help="prompts per case")
    parser.add_argument("--group-size", type=positive_int, default=4, help="completions each")
    parser.add_argument("--length", type=positive_int, default=7, help="max completion tokens")
    parser.add_argument("--drift", type=float, default=0.4, help="std of log pi - log pi_old")
    parser.add_argument("--epsilon", type=float, default=0.2, help="lower clipping epsilon")
    parser.add_argument(
        "--epsilon-high", type=float, default=0.28, help="upper clipping epsilon (DAPO's value)"
    )
    parser.add_argument(
        "--beta", type=float, default=0.04, help="KL coefficient of the beta>0 cases"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random tensors")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    import trl

    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    case = random_case(args.prompts, args.group_size, args.length, args.drift, generator)
    print(
        f"trl {trl.__version__} (stand-in written for {TRL_VERSION_CHECKED}); "
        f"{args.prompts} prompts x {args.group_size} completions, lengths 1..{args.length}"
    )
    print(
        f"{'loss_type':9s} {'beta':>5s} {'trl loss':>10s} {'|dloss|':>9s} {'|dgrad|':>9s} "
        f"{'|dKL|':>9s} {'|dclip|':>8s} {'clipped':>8s}"
    )
    worst = {"max_loss_diff": 0.0, "max_grad_diff": 0.0, "max_kl_diff": 0.0, "max_clip_diff": 0.0}
    min_clipped = 1.0
    for loss_type in LOSS_TYPES:
        for beta in (0.0, args.beta):
            r = compare(case, loss_type, beta, args.epsilon, args.epsilon_high)
            print(
                f"{loss_type:9s} {beta:5.2f} {r['loss']:10.5f} {r['loss_diff']:9.1e} "
                f"{r['grad_diff']:9.1e} {r['kl_diff']:9.1e} {r['clip_diff']:8.1e} "
                f"{r['clip_region']:8.1%}"
            )
            for key in ("loss", "grad", "kl", "clip"):
                worst[f"max_{key}_diff"] = max(worst[f"max_{key}_diff"], r[f"{key}_diff"])
            min_clipped = min(min_clipped, r["clip_region"])
    print(
        f"largest differences: loss {worst['max_loss_diff']:.1e}, gradient "
        f"{worst['max_grad_diff']:.1e}; at least {min_clipped:.0%} of tokens clipped in every case"
    )
    return worst | {"min_clipped_fraction": min_clipped, "n_cases": 2.0 * len(LOSS_TYPES)}


if __name__ == "__main__":
    raise SystemExit(run(main))
