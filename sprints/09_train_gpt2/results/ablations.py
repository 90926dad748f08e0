"""What made training faster: the default recipe against itself minus one idea, several seeds.

Each variant is the default sprint-09 recipe (`TrainConfig`'s defaults = the `tiny` preset of
`train_gpt2`) with a few settings changed, trained on the same token files and scored on every
token of the validation split, once per seed. Variants get the same wall-clock budget, not the
same number of steps: a slower step trains fewer steps (`steps` below, from the step times
that `benchmarks/bench_step_speed.py` measured side by side). Prints mean, spread (max - min)
and every seed's loss per variant; writes `ablations.json`, the curves (`curves.png`) and a
TensorBoard run per training run under `runs/09_train_gpt2/ablations/<time>/`.

The default compares the issue's old recipe with the new default on one seed (two runs of a
few minutes each, one thread); the sprint README's table is `--preset full`
(every variant on 3 held-out seeds: 27 runs, over an hour on a CPU; `--reuse` skips the
runs an interrupted call already finished).

Run: python -m sprints.09_train_gpt2.results.ablations
     python -m sprints.09_train_gpt2.results.ablations --preset full
     python -m sprints.09_train_gpt2.results.ablations --variants default,adamw --seeds 1,2,3
     python -m sprints.09_train_gpt2.results.ablations --preset full --reuse  # skip finished runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from llmlab.cli import positive_float, positive_int, run, torch_threads
from llmlab.data.shakespeare import prepare
from llmlab.device import keep_freed_memory
from llmlab.errors import LLMLabError
from llmlab.lm_training import TrainConfig, parse_overrides, train
from llmlab.plotting import plot_curves
from llmlab.runs import run_dir

# The recipe (the sprint-09 default before Muon): AdamW with weight decay 0.1 on the
# matrices; the model and the schedule are the default's.
BASELINE = dict(optimizer="adamw", weight_decay=0.1)
# name -> (what changes, TrainConfig overrides). Every variant gets the default run's time
# budget: its `max_steps` is 2500 x (default step time / its step time), the step times
# measured side by side by benchmarks/bench_step_speed.py (CPU time, one thread, see the
# sprint README); "baseline" keeps its own 3000 steps (the old default: a little MORE time).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("the default: Muon for the matrices, AdamW for the rest", {}),
    "baseline": ("the issue's recipe (AdamW, 3000 steps)", dict(BASELINE, max_steps=3000)),
    "adamw": ("AdamW for the matrices too (no Muon)",
              dict(optimizer="adamw", weight_decay=0.1, max_steps=2780)),
    "relu2": ("ReLU^2 instead of GELU in the MLP", dict(mlp_act="relu2", max_steps=2400)),
    "qk_norm": ("QK-norm in attention", dict(qk_norm=True, max_steps=2350)),
    "untied": ("an LM head of its own (untied)", dict(tie_embeddings=False, max_steps=2475)),
    "wsd": ("warmup-stable-decay (last 30 % decays) instead of cosine",
            dict(lr_schedule="wsd", decay_frac=0.3)),
    "learned": ("learned positions instead of RoPE", dict(pos_encoding="learned", max_steps=2625)),
    "batch32": ("32 x 64 tokens a step, fewer steps", dict(batch_size=32, max_steps=1200)),
    # The only budget from the AVX2 EPYC (fp32 Newton-Schulz: 113.0 vs 102.6 CPU ms a step).
    "ns3": ("Muon with 3 Newton-Schulz steps instead of 5 (a cheaper step)",
            dict(muon_ns_steps=3, max_steps=2750)),
    # The same products as the default's Newton-Schulz, other coefficients: the same budget.
    "polar": ("Muon with Polar Express's Newton-Schulz coefficients",
              dict(muon_ns_schedule="polar_express")),
}  # fmt: skip
PRESETS = {
    "quick": dict(variants="baseline,default", seeds="1337"),
    "full": dict(variants=",".join(VARIANTS), seeds="1339,1340,1341"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="quick",
        help="quick: baseline vs default, 1 seed; full: every variant, 3 held-out seeds",
    )
    p.add_argument(
        "--variants", help=f"comma-separated, among: {', '.join(VARIANTS)} (overrides --preset)"
    )
    p.add_argument("--seeds", help="comma-separated seeds (overrides --preset)")
    p.add_argument(
        "--scale",
        type=positive_float,
        default=1.0,
        help="multiply every variant's step budget (e.g. 0.2 for a quick look)",
    )
    p.add_argument(
        "--set",
        default="",
        help="TrainConfig overrides for every variant, key=value,... (e.g. n_layer=1,n_embd=32)",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="take a (variant, seed) run that an earlier call already finished with the same "
        "settings (its config.json + summary.json under runs/09_train_gpt2/ablations/) instead "
        "of training it again: an interrupted --preset full resumes where it stopped",
    )
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if not names or unknown:
        raise LLMLabError(f"unknown variants {unknown}: choose among {', '.join(VARIANTS)}")
    return names


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise LLMLabError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise LLMLabError("--seeds is empty")
    return seeds


def variant_config(name: str, seed: int, scale: float, common: dict[str, Any]) -> TrainConfig:
    """The `TrainConfig` of one variant and seed (its step budget times `scale`)."""
    overrides = {**VARIANTS[name][1], **common}
    cfg = TrainConfig(**overrides, seed=seed)
    cfg.max_steps = max(1, round(cfg.max_steps * scale))
    cfg.eval_interval = max(1, cfg.max_steps // 6)
    cfg.warmup_steps = min(cfg.warmup_steps, cfg.max_steps)
    return cfg


def _settings(cfg: TrainConfig) -> dict[str, Any]:
    """What decides a run's result (not where it reads or writes, nor the progress bar)."""
    kept = {k: v for k, v in asdict(cfg).items() if k not in ("data_dir", "out_dir", "progress")}
    return json.loads(json.dumps(kept))


def find_finished(root: Path, name: str, seed: int, settings: dict[str, Any]) -> dict | None:
    """The summary of the newest finished run of `name` and `seed` with exactly `settings`."""
    for folder in sorted(root.glob(f"*/{name}_seed{seed}"), reverse=True):
        config, summary = folder / "config.json", folder / "summary.json"
        if config.is_file() and summary.is_file():
            done = json.loads(summary.read_text())
            if "val_loss" in done and json.loads(config.read_text()) == settings:
                return done
    return None


def _smooth(values: list[float], alpha: float = 0.02) -> list[float]:
    out, avg = [], values[0]
    for v in values:
        avg += alpha * (v - avg)
        out.append(avg)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    preset = PRESETS[args.preset]
    names = _names(args.variants or preset["variants"])
    seeds = _seeds(args.seeds or preset["seeds"])
    common = parse_overrides(args.set)
    common.update(device=args.device, save_checkpoints=False, sample_tokens=0,
                  progress=not args.no_progress)  # fmt: skip
    keep_freed_memory()  # as train_gpt2 does: every variant's step times are train_gpt2's
    with torch_threads(args.threads):
        return _run_all(names, seeds, args, common)


def _run_all(
    names: list[str], seeds: list[int], args: argparse.Namespace, common: dict[str, Any]
) -> dict[str, Any]:
    data_dir = str(prepare("tiny", "char"))
    out = run_dir("09_train_gpt2", "ablations")
    results: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    xs: dict[str, list[float]] = {}
    for name in names:
        losses, histories, seconds = {}, [], []
        for seed in seeds:
            cfg = variant_config(name, seed, args.scale, common)
            cfg.data_dir, cfg.out_dir = data_dir, str(out / f"{name}_seed{seed}")
            settings = _settings(cfg)
            summary = find_finished(out.parent, name, seed, settings) if args.reuse else None
            if summary is not None:
                print(f"--- {name} (seed {seed}): reused {summary['out_dir']}")
                seconds.append(summary["wall_time_s"])
            else:
                print(f"--- {name} (seed {seed}): {VARIANTS[name][0]}; {cfg.max_steps} steps")
                Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
                (Path(cfg.out_dir) / "config.json").write_text(json.dumps(settings, indent=2))
                start = time.perf_counter()
                summary = train(cfg)
                seconds.append(time.perf_counter() - start)
            losses[seed] = summary["val_loss"]
            histories.append(summary["history"]["train_loss"])
        values = list(losses.values())
        results[name] = {
            "what": VARIANTS[name][0],
            "steps": cfg.max_steps,
            "val_loss": losses,
            "mean": statistics.fmean(values),
            "spread": max(values) - min(values),
            "worst": max(values),
            "seconds": statistics.fmean(seconds),
        }
        mean_history = np.mean(histories, axis=0).tolist()
        curves[name] = _smooth(mean_history)
        xs[name] = [(i + 1) / len(mean_history) for i in range(len(mean_history))]
    print(f"\n{'variant':<12} {'steps':>6} {'mean':>7} {'spread':>7}  per seed ({', '.join(map(str, seeds))})")  # fmt: skip
    for name, r in results.items():
        per_seed = "  ".join(f"{v:.4f}" for v in r["val_loss"].values())
        print(f"{name:<12} {r['steps']:>6} {r['mean']:>7.4f} {r['spread']:>7.4f}  {per_seed}")
    print("(full validation split, nats/char; spread = max - min over the seeds; the seconds "
          "in ablations.json were measured on this machine as it was loaded)")  # fmt: skip
    png = plot_curves(
        curves,
        out / "curves.png",
        title="training loss (mean over seeds, smoothed)",
        xlabel="fraction of the time budget",
        ylabel="cross-entropy (nats/char)",
        xs=xs,
    )
    (out / "ablations.json").write_text(
        json.dumps({"seeds": seeds, "results": results}, indent=2, default=str)
    )
    return {"results": results, "seeds": seeds, "curves_png": str(png), "out_dir": str(out)}


if __name__ == "__main__":
    raise SystemExit(run(main))
