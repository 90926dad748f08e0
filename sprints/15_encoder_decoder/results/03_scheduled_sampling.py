"""Scheduled sampling against plain teacher forcing, same task, data and budget, 3 seeds.

Scheduled sampling (Bengio et al., 2015) feeds the decoder its own predictions instead of
some gold tokens, more and more often as training goes on: the probability of a gold token
follows a linear, exponential or inverse-sigmoid schedule down to a floor. For a
transformer the predictions come from a first, teacher-forced pass (the two-pass method of
Mihaylova & Martins, 2019). Every variant sees the same batches, seeds and step count.

Run: python -m sprints.15_encoder_decoder.results.03_scheduled_sampling
"""

from __future__ import annotations

import argparse
from typing import Any

from llmlab.cli import probability, run, torch_threads
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir
from llmlab.seq2seq_training import SCHEDULES, teacher_prob

from ._common import SPRINT, add_training_args, compare, mean_curve, print_deltas

SCRIPT = "03_scheduled_sampling"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--schedules",
        nargs="+",
        choices=SCHEDULES,
        default=list(SCHEDULES),
        help="decay schedules of the probability of feeding a gold token",
    )
    parser.add_argument(
        "--floor",
        type=probability,
        default=0.75,
        help="lowest probability of feeding a gold token (the schedules end there)",
    )
    add_training_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        out = run_dir(SPRINT, SCRIPT)
        schedules = {
            s: [teacher_prob(s, step, args.steps, args.floor) for step in range(args.steps + 1)]
            for s in args.schedules
        }
        schedule_png = plot_curves(
            schedules,
            out / "schedules.png",
            title=f"probability of feeding the gold token (floor {args.floor})",
            ylabel="P(gold input)",
            xs={s: range(args.steps + 1) for s in schedules},
        )
        variants: dict[str, dict[str, Any]] = {"mle": {"method": "mle"}}
        for s in args.schedules:
            variants[f"ss_{s}"] = {"method": f"ss_{s}", "ss_floor": args.floor}
        figures, runs = compare(args, variants, out, f"{args.task}, scheduled sampling vs MLE")
        print_deltas(figures, runs)
        # What scheduled sampling really trains on: inputs that are the model's predictions,
        # and among them the wrong ones (a right prediction is the gold token again).
        fed: dict[str, list[float]] = {}
        steps: dict[str, list[int]] = {}
        for label, results in runs.items():
            for key, name in (("fed_back", "fed back"), ("fed_back_wrong", "fed back and wrong")):
                at, values = mean_curve(results, key)
                if at:
                    fed[f"{label}: {name}"], steps[f"{label}: {name}"] = values, at
        if fed:
            figures["fed_back_png"] = str(
                plot_curves(
                    fed,
                    out / "fed_back.png",
                    title="decoder inputs replaced by the model's predictions (fraction)",
                    ylabel="fraction of decoder inputs",
                    xs=steps,
                )
            )
            wrong_end = {k: v[-1] for k, v in fed.items() if k.endswith("and wrong")}
            print(
                "fraction of inputs that were wrong predictions at the last check: "
                + ", ".join(f"{k.split(':')[0]} {v:.3f}" for k, v in wrong_end.items())
            )
            figures |= {f"{k.split(':')[0]}/fed_back_wrong_last": v for k, v in wrong_end.items()}
        print(f"\nfigures and TensorBoard runs: {out}")
        return figures | {"schedules_png": str(schedule_png)}


if __name__ == "__main__":
    raise SystemExit(run(main))
