"""What the sprint-15 training scripts share: their flags, the thread setting, and training
several variants over several seeds into one table (mean ± standard deviation) and one plot.

The training itself is `llmlab.seq2seq_training`; this module only turns flags into configs
and runs into tables, so that scripts 02-06 differ only in what they compare.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from llmlab.cli import non_negative_int, positive_float, positive_int
from llmlab.data.seq_tasks import TASKS, SeqBatch
from llmlab.plotting import plot_curves
from llmlab.runs import make_writer
from llmlab.seq2seq_training import Seq2SeqTrainConfig, mean_std, measure_run

SPRINT = "15_encoder_decoder"
TEST_SEED = 20_000  # the test examples are the same for every run, method and seed
COLUMNS = {  # figure -> table header (the legend is printed under the table)
    "fr_token_acc": "free-run acc",
    "tf_token_acc": "forced acc",
    "fr_exact": "exact match",
    "fr_auc": "curve mean",
    "recovery": "after mistake",
}
LEGEND = (
    "free-run acc / forced acc: token accuracy reading its own outputs / the gold prefix; "
    "exact match: whole output right (the same in both modes); curve mean: free-run "
    "validation accuracy averaged over the run's checks (how early it learned); after mistake: "
    "free-run accuracy after one forced wrong token; s/run, CPU s: wall-clock and CPU seconds "
    "of one training run (CPU time stays close to the time alone on a busy machine)"
)


def add_training_args(
    parser: argparse.ArgumentParser, task: str | None = "running_sum", steps: int = 300
) -> None:
    """The flags of one training run (task, model, optimisation) and of the seed sweep;
    `task=None` leaves out `--task` (for a script that takes several tasks)."""
    g = parser.add_argument_group("task")
    if task is not None:
        g.add_argument("--task", default=task, help=f"one of {', '.join(sorted(TASKS))}")
    g.add_argument("--symbols", type=positive_int, default=10, help="symbols in the alphabet")
    g.add_argument("--length", type=positive_int, default=10, help="(longest) source length")
    g.add_argument(
        "--min-length",
        type=positive_int,
        default=None,
        help="shortest source length (default: --length, i.e. fixed-length sequences)",
    )
    g = parser.add_argument_group("model and training")
    g.add_argument("--layers", type=positive_int, default=1, help="encoder and decoder layers")
    g.add_argument("--d-model", type=positive_int, default=64, help="model width")
    g.add_argument("--heads", type=positive_int, default=4, help="attention heads")
    g.add_argument("--d-ff", type=positive_int, default=256, help="feed-forward width")
    g.add_argument("--steps", type=positive_int, default=steps, help="optimiser steps per run")
    g.add_argument("--batch-size", type=positive_int, default=64, help="sequences per step")
    g.add_argument("--lr", type=positive_float, default=2e-3, help="AdamW learning rate")
    g.add_argument("--warmup", type=non_negative_int, default=20, help="linear warmup steps")
    g = parser.add_argument_group("seeds and measurement")
    g.add_argument("--seed", type=int, default=0, help="first seed (weights and data stream)")
    g.add_argument(
        "--n-seeds", type=positive_int, default=3, help="seeds --seed .. --seed + n - 1 per variant"
    )
    g.add_argument(
        "--eval-every", type=positive_int, default=25, help="steps between validation checks"
    )
    g.add_argument(
        "--eval-size", type=positive_int, default=256, help="validation examples (learning curves)"
    )
    g.add_argument(
        "--test-size", type=positive_int, default=1000, help="test examples (final figures)"
    )
    g.add_argument(
        "--inject-at",
        type=positive_int,
        default=3,
        help="output position of the forced mistake in the recovery test",
    )
    g = parser.add_argument_group("system")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    g.add_argument(
        "--threads",
        type=non_negative_int,
        default=1,
        help="CPU threads for PyTorch (0 = its default); 1 because a second thread made these "
        "small models 2-12x slower on a busy 2-core machine",
    )
    g.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")


def base_config(args: argparse.Namespace, **overrides: Any) -> Seq2SeqTrainConfig:
    """The run the flags describe (`overrides` set the method and its knobs, or the seed)."""
    fields = dict(
        task=getattr(args, "task", "copy"),  # scripts over several tasks override it
        n_symbols=args.symbols,
        min_len=args.min_length or args.length,
        max_len=args.length,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup,
        seed=args.seed,
        d_model=args.d_model,
        n_heads=args.heads,
        d_ff=args.d_ff,
        n_layers=args.layers,
        model_max_len=max(32, args.length + 1),
        eval_every=args.eval_every,
        eval_size=args.eval_size,
        device="cpu" if args.device == "auto" and not torch.cuda.is_available() else args.device,
        progress=not args.no_progress,
    )
    return Seq2SeqTrainConfig(**(fields | overrides))


def seeds(args: argparse.Namespace) -> list[int]:
    return list(range(args.seed, args.seed + args.n_seeds))


def test_batch(cfg: Seq2SeqTrainConfig, size: int) -> SeqBatch:
    """The test examples of a run's task: one fixed seed, so every method and seed (and every
    task of the same lengths: same sources) is scored on the same inputs."""
    return cfg.make_task().sample(size, torch.Generator().manual_seed(TEST_SEED))


def compare(
    args: argparse.Namespace, variants: dict[str, dict[str, Any]], out: Path, title: str
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Train every variant (config overrides) with every seed on the same data and budget.

    Prints one table (mean ± std over seeds), writes TensorBoard runs under
    `out/<variant>_seed<k>/`, `free_running_curves.png` and `summary.json`. Returns
    (figures: flat `<variant>/<figure>_mean|_std` dict, runs: the per-seed measurements).
    """
    runs: dict[str, list[dict[str, Any]]] = {}
    for label, overrides in variants.items():
        runs[label] = []
        for seed in seeds(args):
            cfg = base_config(args, seed=seed, **overrides)
            writer = make_writer(out / f"{label}_seed{seed}")
            try:
                result = measure_run(cfg, test_batch(cfg, args.test_size), writer, args.inject_at)
            finally:
                writer.close()
            result.pop("model")
            runs[label].append(result)
    figures = summarise(runs)
    print_table(args, runs, figures, title)
    steps = {label: [h["step"] for h in r[0]["history"]] for label, r in runs.items()}
    curves = {
        label: [
            mean_std([run["history"][i]["fr_token_acc"] for run in r])[0]
            for i in range(len(steps[label]))
        ]
        for label, r in runs.items()
    }
    figures["curves_png"] = str(
        plot_curves(
            curves,
            out / "free_running_curves.png",
            title=f"{title}\nfree-running token accuracy (validation, mean of {args.n_seeds} seeds)",
            ylabel="token accuracy",
            xs=steps,
        )
    )
    summary = {"args": vars(args), "figures": figures}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return figures, runs


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for label, results in runs.items():
        for key in (*COLUMNS, "seconds", "cpu_seconds"):
            mean, std = mean_std([r[key] for r in results])
            figures[f"{label}/{key}_mean"], figures[f"{label}/{key}_std"] = mean, std
        figures[f"{label}/per_seed_fr_token_acc"] = [r["fr_token_acc"] for r in results]
    return figures


def print_table(
    args: argparse.Namespace,
    runs: dict[str, list[dict[str, Any]]],
    figures: dict[str, Any],
    title: str,
) -> None:
    print(
        f"\n{title}: length {args.min_length or args.length}-{args.length}, {args.steps} steps of "
        f"{args.batch_size}, seeds {seeds(args)}, {args.test_size} test examples "
        f"(mean ± std over seeds; forced mistake at output {args.inject_at})"
    )
    width = max(len(label) for label in runs) + 2
    header = "".join(f"{h:>17}" for h in COLUMNS.values())
    print(f"{'':<{width}}{header}{'s/run':>8}{'CPU s':>7}")
    for label in runs:
        cells = "".join(
            f"{figures[f'{label}/{k}_mean']:>9.3f} ± {figures[f'{label}/{k}_std']:.3f}"
            for k in COLUMNS
        )
        seconds = figures[f"{label}/seconds_mean"], figures[f"{label}/cpu_seconds_mean"]
        print(f"{label:<{width}}{cells}{seconds[0]:>8.1f}{seconds[1]:>7.1f}")
    print(LEGEND)


def print_deltas(
    figures: dict[str, Any], runs: dict[str, list[dict[str, Any]]], baseline: str = "mle"
) -> dict[str, float]:
    """Each variant minus the baseline, seed by seed (same seed = same data and initial
    weights), as mean ± std: the paired difference is what says "helped" or "did not"."""
    print(f"\ndifference from {baseline}, paired by seed (mean ± std):")
    deltas: dict[str, float] = {}
    for label in runs:
        if label == baseline:
            continue
        cells = []
        for key in ("fr_token_acc", "fr_exact", "fr_auc"):
            diffs = [r[key] - b[key] for r, b in zip(runs[label], runs[baseline], strict=True)]
            mean, std = mean_std(diffs)
            deltas[f"{label}/delta_{key}_mean"], deltas[f"{label}/delta_{key}_std"] = mean, std
            cells.append(f"{COLUMNS[key]} {mean:+.3f} ± {std:.3f}")
        print(f"  {label}: " + ", ".join(cells))
    figures |= deltas
    return deltas


def mean_curve(results: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, mean over seeds) of a logged value, at the checks where every seed has it."""
    steps = [h["step"] for h in results[0]["history"] if key in h]
    values = [
        mean_std([next(h[key] for h in r["history"] if h["step"] == step) for r in results])[0]
        for step in steps
    ]
    return steps, values
