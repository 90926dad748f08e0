"""GRPO from scratch on our own GPT: "write three digits whose sum is a + b".

A 100k-parameter GPT (sprint 08) first learns the answer format from a few hundred supervised
steps on correct examples (about half its greedy answers are then right), then GRPO
(`llmlab.grpo.train_grpo`) samples 8 answers per prompt, rewards the correct ones and pushes
the policy toward them, with a KL penalty to the supervised model. 20 of the 100 prompts are
held out from both stages: their greedy accuracy shows whether the model learned to add or
memorised answers. Reward curve and accuracies go to TensorBoard and `reward_curve.png`.

Run: python -m sprints.16_grpo_reasoning.results.grpo_digit_sum
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from llmlab.cli import non_negative_int, positive_float, positive_int, run, torch_threads
from llmlab.device import get_device, seed_everything
from llmlab.generate import generate
from llmlab.gpt import GPT
from llmlab.grpo import LOSS_TYPES, SCALE_REWARDS, GRPOConfig, supervised_warmup, train_grpo
from llmlab.plotting import plot_curves
from llmlab.rewards import TOY_REWARDS, DigitSumTask
from llmlab.runs import make_writer, run_dir

SPRINT, SCRIPT = "16_grpo_reasoning", "grpo_digit_sum"


def add_toy_arguments(p: argparse.ArgumentParser, steps: int, eval_every: int) -> None:
    """The flags of the toy model, its supervised start and its GRPO run."""
    p.add_argument("--n-layer", type=positive_int, default=2, help="GPT blocks")
    p.add_argument("--n-embd", type=positive_int, default=64, help="GPT width")
    p.add_argument("--n-head", type=positive_int, default=4, help="attention heads")
    p.add_argument("--held-out", type=non_negative_int, default=20, help="prompts never trained")
    p.add_argument("--sft-steps", type=non_negative_int, default=300, help="supervised steps")
    p.add_argument("--sft-batch", type=positive_int, default=32, help="supervised batch size")
    p.add_argument("--sft-lr", type=positive_float, default=3e-3, help="supervised learning rate")
    p.add_argument("--steps", type=positive_int, default=steps, help="GRPO steps")
    p.add_argument("--prompts-per-step", type=positive_int, default=16, help="prompts per step")
    p.add_argument("--group-size", type=int, default=8, help="completions per prompt (G >= 2)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="GRPO learning rate (AdamW)")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (0 = none)")
    p.add_argument("--epsilon", type=float, default=0.2, help="clipping epsilon (low)")
    p.add_argument("--epsilon-high", type=float, default=None, help="upper epsilon (DAPO: 0.28)")
    p.add_argument("--loss-type", choices=LOSS_TYPES, default="dapo", help="token averaging")
    p.add_argument("--scale-rewards", choices=SCALE_REWARDS, default="group", help="advantage std")
    p.add_argument(
        "--num-iterations",
        type=positive_int,
        default=1,
        help="policy updates per sampled batch (mu); > 1 makes clipping matter",
    )
    p.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature")
    p.add_argument(
        "--eval-every", type=positive_int, default=eval_every, help="steps between evals"
    )
    p.add_argument("--seed", type=int, default=0, help="seed (weights, sampling)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=non_negative_int, default=1, help="CPU threads (0 = all)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--reward", choices=TOY_REWARDS, default="exact", help="what GRPO maximises")
    add_toy_arguments(p, steps=600, eval_every=25)
    return p


def grpo_config(args: argparse.Namespace) -> GRPOConfig:
    return GRPOConfig(
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        group_size=args.group_size,
        max_new_tokens=DigitSumTask.COMPLETION_LEN,
        temperature=args.temperature,
        lr=args.lr,
        beta=args.beta,
        epsilon=args.epsilon,
        epsilon_high=args.epsilon_high,
        loss_type=args.loss_type,
        scale_rewards=args.scale_rewards,
        num_iterations=args.num_iterations,
        eval_every=args.eval_every,
    )


def supervised_start(
    task: DigitSumTask, args: argparse.Namespace, device: torch.device
) -> tuple[GPT, list[float]]:
    """A fresh toy GPT after `--sft-steps` supervised steps on correct training examples."""
    model = GPT(task.model_config(args.n_layer, args.n_head, args.n_embd)).to(device)
    losses = supervised_warmup(
        model,
        lambda g: task.supervised_batch(args.sft_batch, g),
        args.sft_steps,
        lr=args.sft_lr,
        seed=args.seed,
        progress=not args.no_progress,
    )
    return model, losses


def greedy_examples(task: DigitSumTask, model: GPT, pairs: list[tuple[int, int]]) -> list[str]:
    """`ab= xyz (sum s)` for each pair, with a tick when the sum is right."""
    device = next(model.parameters()).device
    out = generate(model, task.prompts(pairs).to(device), 3, greedy=True)[:, 3:].tolist()
    lines = []
    for (a, b), answer in zip(pairs, out, strict=True):
        digits = task.digits(answer)
        total = "not digits" if digits is None else f"sum {sum(digits)}"
        mark = "ok" if task.exact_reward(answer, a + b) else "wrong"
        lines.append(f"{a}{b}= {task.decode(answer)} ({total}, want {a + b}: {mark})")
    return lines


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    seed_everything(args.seed)
    device = get_device(args.device)
    config = grpo_config(args)  # validates the GRPO flags before any work
    task = DigitSumTask(args.held_out)
    out = run_dir(SPRINT, SCRIPT)
    start, cpu_start = time.perf_counter(), time.process_time()

    model, sft_losses = supervised_start(task, args, device)
    before = task.evaluate(model)
    shown = task.held_out[:5] or task.train_pairs[:5]
    before_examples = greedy_examples(task, model, shown)
    print(
        f"GPT with {model.num_parameters():,} parameters; {len(task.train_pairs)} training "
        f"prompts, {len(task.held_out)} held out"
    )
    if sft_losses:
        print(
            f"supervised start: {args.sft_steps} steps, loss {sft_losses[0]:.3f} -> "
            f"{sum(sft_losses[-20:]) / len(sft_losses[-20:]):.3f}"
        )
    print(
        f"greedy accuracy before GRPO: training prompts {before['greedy_acc_train']:.3f}, "
        f"held-out {before['greedy_acc_heldout']:.3f}"
    )

    writer = make_writer(out)
    for key, value in before.items():
        writer.add_scalar(f"eval/{key}", value, 0)

    def log(step: int, record: dict[str, float]) -> None:
        for key, value in record.items():
            if key != "step":
                writer.add_scalar(("eval/" if "_acc_" in key else "grpo/") + key, value, step)

    try:
        history = train_grpo(
            model,
            task.sample_prompts,
            task.reward_fn(args.reward),
            config,
            # The supervised model, frozen: the KL is measured (and logged) even with --beta 0.
            ref_model=copy.deepcopy(model),
            evaluate=task.evaluate,
            on_step=log,
            seed=args.seed,
            progress=not args.no_progress,
        )
    finally:
        writer.close()
    after = {k: history[-1][k] for k in before}
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start

    print(
        f"\n{'step':>5s} {'reward':>7s} {'KL':>7s} {'greedy train':>12s} {'greedy held-out':>15s}"
    )
    evals = [h for h in history if "greedy_acc_train" in h]
    for h in evals:
        print(
            f"{int(h['step']):5d} {h['reward']:7.3f} {h.get('kl', 0.0):7.3f} "
            f"{h['greedy_acc_train']:12.3f} {h['greedy_acc_heldout']:15.3f}"
        )
    print("held-out prompts, greedy, before -> after GRPO:")
    for b, a in zip(before_examples, greedy_examples(task, model, shown), strict=True):
        print(f"  {b:42s} -> {a}")

    window = min(10, len(history))
    rewards = [h["reward"] for h in history]
    smooth = [
        sum(rewards[max(0, i - window + 1) : i + 1]) / min(i + 1, window)
        for i in range(len(rewards))
    ]
    eval_steps = [0] + [h["step"] for h in evals]
    curves = {
        f"mean reward of the samples ({window}-step average)": smooth,
        "greedy accuracy, training prompts": [before["greedy_acc_train"]]
        + [h["greedy_acc_train"] for h in evals],
        "greedy accuracy, held-out prompts": [before["greedy_acc_heldout"]]
        + [h["greedy_acc_heldout"] for h in evals],
    }
    xs = {name: eval_steps for name in curves}
    xs[next(iter(curves))] = [h["step"] for h in history]
    png = plot_curves(
        curves,
        out / "reward_curve.png",
        title=f"GRPO on digit sums ({args.reward} reward)",
        ylabel="reward / accuracy",
        xs=xs,
    )
    summary = {
        "reward": args.reward,
        "params": model.num_parameters(),
        "sft_loss_first": sft_losses[0] if sft_losses else float("nan"),
        "sft_loss_last": sum(sft_losses[-20:]) / max(1, len(sft_losses[-20:])),
        **{f"before_{k}": v for k, v in before.items()},
        **{f"after_{k}": v for k, v in after.items()},
        "reward_first10": sum(rewards[:10]) / len(rewards[:10]),
        "reward_last10": sum(rewards[-10:]) / len(rewards[-10:]),
        "kl_last10": sum(h.get("kl", 0.0) for h in history[-10:]) / len(history[-10:]),
        "clip_fraction_mean": sum(h["clip_region"] for h in history) / len(history),
        "zero_std_first10": sum(h["frac_reward_zero_std"] for h in history[:10])
        / len(history[:10]),
        "zero_std_last10": sum(h["frac_reward_zero_std"] for h in history[-10:])
        / len(history[-10:]),
        "seconds": wall,
        "cpu_seconds": cpu,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(
        f"reward {summary['reward_first10']:.3f} (first 10 steps) -> "
        f"{summary['reward_last10']:.3f} (last 10); greedy accuracy training prompts "
        f"{before['greedy_acc_train']:.3f} -> {after['greedy_acc_train']:.3f}, held-out "
        f"{before['greedy_acc_heldout']:.3f} -> {after['greedy_acc_heldout']:.3f}"
    )
    print(f"{wall:.0f} s ({cpu:.0f} s of CPU); picture {png}")
    return summary | {"history": history, "reward_png": str(png), "run_dir": str(out)}


if __name__ == "__main__":
    raise SystemExit(run(main))
