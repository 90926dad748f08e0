"""Exposure bias, measured: teacher-forced vs free-running accuracy per position and task.

Trains the seq2seq transformer with plain teacher forcing (maximum likelihood) on copy,
reverse, sort and running_sum, three seeds each, and measures every few steps the token
accuracy when the decoder reads the gold prefix (teacher forcing) and when it reads its own
greedy outputs (free running). It shows where the two differ (exposure bias), by position
and over training, and why: after one forced mistake, a model that computes each output
from the source gets back on track; one that builds on its previous output does not.

Run: python -m sprints.15_encoder_decoder.results.02_exposure_bias
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llmlab.cli import run, torch_threads
from llmlab.data.seq_tasks import TASKS
from llmlab.errors import LLMLabError
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir
from llmlab.seq2seq_training import mean_std

from ._common import SPRINT, add_training_args, compare

SCRIPT = "02_exposure_bias"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["copy", "reverse", "sort", "running_sum"],
        help=f"tasks to train on, from {', '.join(sorted(TASKS))}",
    )
    add_training_args(parser, task=None)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        raise LLMLabError(f"unknown task(s) {unknown}: choose from {', '.join(sorted(TASKS))}")
    with torch_threads(args.threads):
        return measure(args)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    out = run_dir(SPRINT, SCRIPT)
    variants = {task: {"task": task} for task in args.tasks}
    figures, runs = compare(args, variants, out, "teacher forcing (MLE), test set at the end")
    print(
        "\nduring training (validation set, mean over seeds), at the check where the "
        "teacher-forced minus free-running gap was largest:"
    )
    print(f"{'':<13}{'step':>6}{'forced acc':>12}{'free-run acc':>14}{'gap':>8}{'gap at end':>12}")
    identity = 0.0
    for task, results in runs.items():
        history = [r["history"] for r in results]
        identity = max(
            identity, *(abs(h["tf_exact"] - h["fr_exact"]) for hs in history for h in hs)
        )
        gaps = [
            mean_std([hs[i]["tf_token_acc"] - hs[i]["fr_token_acc"] for hs in history])[0]
            for i in range(len(history[0]))
        ]
        i = max(range(len(gaps)), key=gaps.__getitem__)
        step = history[0][i]["step"]
        tf = mean_std([hs[i]["tf_token_acc"] for hs in history])[0]
        fr = mean_std([hs[i]["fr_token_acc"] for hs in history])[0]
        end_gap = figures[f"{task}/tf_token_acc_mean"] - figures[f"{task}/fr_token_acc_mean"]
        print(f"{task:<13}{step:>6}{tf:>12.3f}{fr:>14.3f}{tf - fr:>8.3f}{end_gap:>12.3f}")
        figures |= {
            f"{task}/largest_gap_step": step,
            f"{task}/largest_gap": tf - fr,
            f"{task}/largest_gap_tf_acc": tf,
            f"{task}/largest_gap_fr_acc": fr,
            f"{task}/end_gap": end_gap,
            f"{task}/recovery_by_offset": _mean_lists([r["recovery_by_offset"] for r in results]),
        }
        png, errors = _plot_positions(task, history, i, results, out)
        figures[f"{task}/error_by_position_png"] = str(png)
        figures[f"{task}/tf_error_by_position_at_gap"] = errors[0]
        figures[f"{task}/fr_error_by_position_at_gap"] = errors[1]
    print("\ntoken error by output position at that check (teacher-forced / free-running):")
    for task in runs:
        pairs = zip(
            figures[f"{task}/tf_error_by_position_at_gap"],
            figures[f"{task}/fr_error_by_position_at_gap"],
            strict=True,
        )
        print(f"{task:<13}" + " ".join(f"{tf:.2f}/{fr:.2f}" for tf, fr in pairs))
    print(
        "exact match is the same number in both modes (greedy decoding): largest difference "
        f"between them over all checks = {identity:.4f}"
    )
    print("\nfree-running accuracy at 1, 2, 3, ... outputs after one forced mistake (mean):")
    for task in runs:
        cells = " ".join(f"{a:.2f}" for a in figures[f"{task}/recovery_by_offset"])
        print(f"{task:<13}{cells}")
    recovery = {task: figures[f"{task}/recovery_by_offset"] for task in runs}
    figures["recovery_png"] = str(
        plot_curves(
            recovery,
            out / "recovery_after_mistake.png",
            title="free-running accuracy after one forced mistake (end of training)",
            xlabel="outputs after the mistake",
            ylabel="token accuracy",
            xs={t: range(1, len(v) + 1) for t, v in recovery.items()},
        )
    )
    figures["exact_match_identity_max_diff"] = identity
    print(f"\nfigures and TensorBoard runs: {out}")
    return figures


def _mean_lists(lists: list[list[float]]) -> list[float]:
    return [mean_std(list(column))[0] for column in zip(*lists, strict=True)]


def _plot_positions(
    task: str, history: list[list[dict]], i: int, results: list[dict], out: Path
) -> tuple[Path, list[list[float]]]:
    """Error (1 - accuracy) by output position: at the largest-gap check and at the end.
    Returns the PNG and the four curves (teacher-forced, free-running at the check; at end)."""
    step = history[0][i]["step"]
    curves = {
        f"teacher-forced, step {step}": _mean_lists([hs[i]["tf_by_position"] for hs in history]),
        f"free-running, step {step}": _mean_lists([hs[i]["fr_by_position"] for hs in history]),
        "teacher-forced, end": _mean_lists([r["tf_by_position"] for r in results]),
        "free-running, end": _mean_lists([r["fr_by_position"] for r in results]),
    }
    errors = {name: [1.0 - a for a in accs] for name, accs in curves.items()}
    png = plot_curves(
        errors,
        out / f"error_by_position_{task}.png",
        title=f"{task}: token error by output position (mean over seeds)",
        xlabel="output position",
        ylabel="error rate",
        xs={name: range(1, len(e) + 1) for name, e in errors.items()},
    )
    return png, list(errors.values())


if __name__ == "__main__":
    raise SystemExit(run(main))
