"""Professor forcing against plain teacher forcing, same task, data and budget, 3 seeds.

Professor forcing (Lamb et al., 2016) trains a discriminator to tell the decoder's hidden
states when it reads the gold prefix (teacher forcing) from those when it reads its own
outputs (free running), and adds to the model's loss a term that rewards fooling it: the
free-running dynamics are pulled towards the teacher-forced ones. After a warm start of
plain maximum likelihood (the same steps as the MLE run), both are trained together.

Run: python -m sprints.15_encoder_decoder.results.04_professor_forcing
"""

from __future__ import annotations

import argparse
from typing import Any

from llmlab.cli import positive_float, probability, run, torch_threads
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir

from ._common import SPRINT, add_training_args, compare, mean_curve, print_deltas

SCRIPT = "04_professor_forcing"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--pf-weight",
        type=positive_float,
        default=0.1,
        help="weight of the fooling term in the model's loss (NLL + weight * fool)",
    )
    parser.add_argument(
        "--warm-start",
        type=probability,
        default=0.5,
        help="fraction of the steps trained with plain MLE before the discriminator joins",
    )
    add_training_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        out = run_dir(SPRINT, SCRIPT)
        variants = {
            "mle": {"method": "mle"},
            "professor": {
                "method": "professor",
                "pf_weight": args.pf_weight,
                "warm_start": args.warm_start,
            },
        }
        figures, runs = compare(args, variants, out, f"{args.task}, professor forcing vs MLE")
        print_deltas(figures, runs)
        steps, d_acc = mean_curve(runs["professor"], "d_acc")
        if steps:
            print(
                f"discriminator accuracy (1/2 = it cannot tell the two apart): first "
                f"{d_acc[0]:.2f} at step {steps[0]}, last {d_acc[-1]:.2f}"
            )
            figures["discriminator_acc_last"] = d_acc[-1]
            figures["discriminator_png"] = str(
                plot_curves(
                    {"discriminator accuracy": d_acc},
                    out / "discriminator.png",
                    title="teacher-forced vs free-running hidden states: discriminator accuracy",
                    ylabel="accuracy",
                    xs={"discriminator accuracy": steps},
                )
            )
        print(f"\nfigures and TensorBoard runs: {out}")
        return figures


if __name__ == "__main__":
    raise SystemExit(run(main))
