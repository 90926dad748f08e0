"""REINFORCE with a baseline against plain teacher forcing, same task, data and budget.

After a warm start of maximum likelihood (the same steps as the MLE run), the model samples
an output for each source, gets a sequence-level reward (the fraction of its tokens that
are right) and follows the policy gradient -(R - b) grad log p(sample), with b the batch's
mean reward; optionally mixed with MLE: loss = (1 - w) MLE + w REINFORCE. Three seeds.

Run: python -m sprints.15_encoder_decoder.results.05_reinforce
"""

from __future__ import annotations

import argparse
from typing import Any

from llmlab.cli import probability, run, torch_threads
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir

from ._common import SPRINT, add_training_args, compare, mean_curve, print_deltas

SCRIPT = "05_reinforce"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--rl-weights",
        nargs="+",
        type=float,
        default=[0.5, 1.0],
        help="weights w of REINFORCE in (1 - w) MLE + w REINFORCE, one variant each "
        "(1.0 = REINFORCE alone after the warm start)",
    )
    parser.add_argument(
        "--warm-start",
        type=probability,
        default=0.5,
        help="fraction of the steps trained with plain MLE before REINFORCE starts",
    )
    add_training_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        out = run_dir(SPRINT, SCRIPT)
        variants: dict[str, dict[str, Any]] = {"mle": {"method": "mle"}}
        for w in args.rl_weights:
            variants[f"reinforce_w{w:g}"] = {
                "method": "reinforce",
                "rl_weight": w,
                "warm_start": args.warm_start,
            }
        figures, runs = compare(args, variants, out, f"{args.task}, REINFORCE vs MLE")
        print_deltas(figures, runs)
        rewards = {label: mean_curve(r, "reward") for label, r in runs.items() if label != "mle"}
        rewards = {label: sv for label, sv in rewards.items() if sv[0]}
        if rewards:
            figures["reward_png"] = str(
                plot_curves(
                    {label: v for label, (_, v) in rewards.items()},
                    out / "reward.png",
                    title="mean sequence reward of the sampled outputs",
                    ylabel="reward (fraction of right tokens)",
                    xs={label: s for label, (s, _) in rewards.items()},
                )
            )
        print(f"\nfigures and TensorBoard runs: {out}")
        return figures


if __name__ == "__main__":
    raise SystemExit(run(main))
