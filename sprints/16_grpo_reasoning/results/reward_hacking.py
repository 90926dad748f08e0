"""Reward hacking, shown: the same GRPO run with three rewards for the same task.

One supervised start (the toy GPT of `grpo_digit_sum`), then one GRPO run per reward:
`exact` (the task: three digits summing to a + b), `closeness` (dense: 1 - |sum - target| / 27)
and `progress` (dense: min(sum, target) / target, "how much of the target you reached").
The reward each run optimises is plotted next to what we actually want, the greedy accuracy:
with `progress`, the reward climbs to its maximum while accuracy collapses, because any sum
at or above the target scores 1 (`999` reaches every target). `reward_hacking.png` puts the three runs side by side.

Run: python -m sprints.16_grpo_reasoning.results.reward_hacking
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import time
from collections import Counter

import matplotlib.pyplot as plt

import llmlab.plotting  # noqa: F401  (selects the headless Agg backend)
from llmlab.cli import run, torch_threads
from llmlab.device import get_device, seed_everything
from llmlab.generate import generate
from llmlab.grpo import train_grpo
from llmlab.rewards import TOY_REWARDS, DigitSumTask
from llmlab.runs import make_writer, run_dir

# The toy model, its flags and its supervised start are grpo_digit_sum's (same sprint).
digit_sum = importlib.import_module(
    f"{__package__ or 'sprints.16_grpo_reasoning.results'}.grpo_digit_sum"
)

SPRINT, SCRIPT = "16_grpo_reasoning", "reward_hacking"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--rewards", nargs="+", choices=TOY_REWARDS, default=list(TOY_REWARDS), help="runs"
    )
    digit_sum.add_toy_arguments(p, steps=150, eval_every=10)
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    seed_everything(args.seed)
    device = get_device(args.device)
    config = digit_sum.grpo_config(args)
    task = DigitSumTask(args.held_out)
    out = run_dir(SPRINT, SCRIPT)
    start = time.perf_counter()
    start_model, _ = digit_sum.supervised_start(task, args, device)
    before = task.evaluate(start_model)
    print(
        f"supervised start: greedy accuracy {before['greedy_acc_train']:.3f} (training prompts), "
        f"{before['greedy_acc_heldout']:.3f} (held-out)"
    )
    writer = make_writer(out)
    runs: dict[str, list[dict[str, float]]] = {}
    figures: dict[str, float | str] = {}
    try:
        for kind in args.rewards:
            model = copy.deepcopy(start_model)

            def log(step: int, record: dict[str, float], kind: str = kind) -> None:
                for key in ("reward", "kl", "greedy_acc_train", "greedy_acc_heldout"):
                    if key in record:
                        writer.add_scalar(f"{kind}/{key}", record[key], step)

            runs[kind] = train_grpo(
                model,
                task.sample_prompts,
                task.reward_fn(kind),
                config,
                evaluate=task.evaluate,
                on_step=log,
                seed=args.seed,
                progress=not args.no_progress,
            )
            answers = generate(model, task.prompts(task.train_pairs).to(device), 3, greedy=True)
            texts = [task.decode(a) for a in answers[:, 3:].tolist()]
            common, count = Counter(texts).most_common(1)[0]
            sums = [sum(int(c) for c in t) if t.isdigit() else None for t in texts]
            targets = [a + b for a, b in task.train_pairs]
            over = sum(s is not None and s > t for s, t in zip(sums, targets, strict=True))
            last = runs[kind][-1]
            figures |= {
                f"{kind}_reward_last10": sum(h["reward"] for h in runs[kind][-10:]) / 10,
                f"{kind}_greedy_acc_train": last["greedy_acc_train"],
                f"{kind}_greedy_acc_heldout": last["greedy_acc_heldout"],
                f"{kind}_overshoot_share": over / len(texts),
                f"{kind}_top_answer": common,
                f"{kind}_top_answer_share": count / len(texts),
            }
    finally:
        writer.close()

    print(
        f"\n{'reward':10s} {'reward (last 10)':>16s} {'greedy acc train':>16s} "
        f"{'held-out':>9s} {'sum > target':>12s}  most common greedy answer"
    )
    for kind in args.rewards:
        print(
            f"{kind:10s} {figures[f'{kind}_reward_last10']:16.3f} "
            f"{figures[f'{kind}_greedy_acc_train']:16.3f} "
            f"{figures[f'{kind}_greedy_acc_heldout']:9.3f} "
            f"{figures[f'{kind}_overshoot_share']:12.0%}  "
            f"{figures[f'{kind}_top_answer']!r} ({figures[f'{kind}_top_answer_share']:.0%} of prompts)"
        )

    fig, axes = plt.subplots(
        1, len(runs), figsize=(4.2 * len(runs), 3.6), sharey=True, squeeze=False
    )
    for ax, (kind, history) in zip(axes[0], runs.items(), strict=True):
        evals = [h for h in history if "greedy_acc_train" in h]
        steps = [0] + [h["step"] for h in evals]
        ax.plot(
            [h["step"] for h in history],
            [h["reward"] for h in history],
            label="reward it maximises",
        )
        ax.plot(
            steps,
            [before["greedy_acc_train"]] + [h["greedy_acc_train"] for h in evals],
            label="true accuracy (greedy)",
        )
        ax.set(title=f"{kind} reward", xlabel="GRPO step", ylim=(-0.02, 1.05))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("reward / accuracy")
    axes[0][0].legend(loc="lower left", fontsize=8)
    png = out / "reward_hacking.png"
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    (out / "summary.json").write_text(json.dumps(figures, indent=1))
    print(f"{time.perf_counter() - start:.0f} s; picture {png}")
    return figures | {"before": before, "runs": runs, "png": str(png), "run_dir": str(out)}


if __name__ == "__main__":
    raise SystemExit(run(main))
