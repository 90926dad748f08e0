"""Training speed: our `llmlab.gpt.GPT` against `transformers.GPT2LMHeadModel`, same shape.

Both models get the same shape, batch, data (fixed random token batches) and optimizer
(AdamW); one training step = forward, cross-entropy, backward, optimizer step. The two
models are timed side by side in one run, alternating which goes first each round, after
warm-up steps that are not timed; the median step time gives tokens/s. `--compile` adds
`torch.compile(ours)`. On a GPU (`--device cuda --dtype bf16`) it also reports the model
FLOPs utilisation: (6 N + 12 L T d) FLOPs per token (N = non-embedding parameters; the
second term is attention) times tokens/s, over `--peak-tflops`.

Run: python -m benchmarks.bench_train_speed --shapes tiny,small --batch-size 4 --block-size 64
     python -m benchmarks.bench_train_speed --device cuda --dtype bf16 --shapes small \\
         --batch-size 16 --block-size 1024 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.cli import positive_float, positive_int, run
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.gpt import GPT, GPTConfig

# (n_layer, n_head, n_embd, vocab_size)
SHAPES = {
    "tiny": (2, 4, 128, 512),
    "small": (12, 12, 768, 50257),  # GPT-2 small
}


def shape_list(text: str) -> list[str]:
    """argparse type: comma-separated shape names."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SHAPES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"shapes must be among {', '.join(SHAPES)}, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--shapes",
        type=shape_list,
        default=["tiny", "small"],
        help="comma-separated model shapes: tiny (2 layers, d=128, vocab 512), "
        "small (GPT-2 small: 12 layers, d=768, vocab 50257)",
    )
    p.add_argument("--batch-size", type=positive_int, default=4, help="sequences per step")
    p.add_argument("--block-size", type=positive_int, default=64, help="tokens per sequence")
    p.add_argument("--warmup", type=positive_int, default=2, help="untimed steps per model")
    p.add_argument("--steps", type=positive_int, default=6, help="timed steps per model")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument(
        "--dtype",
        choices=["fp32", "bf16"],
        default="fp32",
        help="fp32, or bf16 autocast (mixed precision; weights and optimizer stay fp32)",
    )
    p.add_argument(
        "--compile", action="store_true", help="also time torch.compile(ours) (slow to build)"
    )
    p.add_argument(
        "--peak-tflops",
        type=positive_float,
        default=989.0,
        help="peak dense TFLOP/s of the device for MFU (989 = H100 SXM bf16)",
    )
    p.add_argument("--lr", type=positive_float, default=3e-4, help="AdamW learning rate")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch (0 = torch's default); 1 is steadier on a shared machine",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for weights and data")
    return p


def build_models(
    name: str, block_size: int, device: torch.device
) -> tuple[nn.Module, nn.Module, GPTConfig]:
    """Ours and Hugging Face's GPT-2 with the same shape (and parameter count), no dropout."""
    from transformers import GPT2Config, GPT2LMHeadModel

    n_layer, n_head, n_embd, vocab_size = SHAPES[name]
    config = GPTConfig(
        vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
        n_embd=n_embd, dropout=0.0,
    )  # fmt: skip
    ours = GPT(config)
    hf_config = GPT2Config(
        vocab_size=vocab_size, n_positions=block_size, n_embd=n_embd, n_layer=n_layer,
        n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
        bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1,
    )  # fmt: skip
    hf_config._attn_implementation = "sdpa"  # F.scaled_dot_product_attention, as ours
    hf = GPT2LMHeadModel(hf_config)
    n_ours, n_hf = ours.num_parameters(), sum(p.numel() for p in hf.parameters())
    if n_ours != n_hf:
        raise LLMLabError(f"shape mismatch: ours has {n_ours:,} parameters, HF {n_hf:,}")
    return ours.to(device).train(), hf.to(device).train(), config


def make_step(
    model: nn.Module, is_hf: bool, lr: float, device: torch.device, dtype: str
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One training step (forward, loss, backward, AdamW) as a function of a batch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)

    def autocast():
        if dtype == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast():
            if is_hf:
                # Same loss as ours (HF's labels= would shift and drop the last position).
                logits = model(input_ids=x).logits
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
            else:
                _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_side_by_side(
    steps: dict[str, Callable], batches: list, warmup: int, n_steps: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per step of each model, alternating the order every round."""
    for step in steps.values():
        for i in range(warmup):
            step(*batches[i % len(batches)])
        _sync(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(n_steps):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            x, y = batches[(warmup + r) % len(batches)]
            _sync(device)
            start = time.perf_counter()
            loss = steps[name](x, y)
            loss.item()  # wait for the step (and read the loss, as a training loop would)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    device = get_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.dtype == "bf16" and device.type == "cpu":
        print("note: bf16 autocast on CPU is usually slower than fp32")
    tokens_per_step = args.batch_size * args.block_size
    results: dict[str, float] = {}
    rows = []
    for name in args.shapes:
        seed_everything(args.seed)
        ours, hf, config = build_models(name, args.block_size, device)
        steps = {
            "ours": make_step(ours, False, args.lr, device, args.dtype),
            "hf": make_step(hf, True, args.lr, device, args.dtype),
        }
        if args.compile:
            compiled = torch.compile(ours)
            steps["ours_compiled"] = make_step(compiled, False, args.lr, device, args.dtype)
        gen = torch.Generator().manual_seed(args.seed)
        batches = []
        for _ in range(4):  # the same few batches for every model
            data = torch.randint(
                config.vocab_size, (args.batch_size, args.block_size + 1), generator=gen
            )
            batches.append((data[:, :-1].to(device), data[:, 1:].to(device)))
        print(
            f"{name}: {ours.num_parameters():,} parameters, batch {args.batch_size} x "
            f"{args.block_size} tokens, {args.warmup} warm-up + {args.steps} timed steps each"
        )
        seconds = time_side_by_side(steps, batches, args.warmup, args.steps, device)
        flops = ours.flops_per_token(args.block_size)
        for model_name, s in seconds.items():
            tps = tokens_per_step / s
            results[f"{name}_{model_name}_tokens_per_s"] = tps
            tflops = flops * tps / 1e12
            results[f"{name}_{model_name}_tflops"] = tflops
            if device.type == "cuda":
                results[f"{name}_{model_name}_mfu"] = tflops / args.peak_tflops
        for model_name in [m for m in seconds if m != "hf"]:
            ratio = (
                results[f"{name}_{model_name}_tokens_per_s"] / results[f"{name}_hf_tokens_per_s"]
            )
            results[f"{name}_{model_name}_over_hf"] = ratio
        for model_name in seconds:
            rows.append((name, model_name, results, device.type == "cuda"))
        del ours, hf, steps, batches
        if device.type == "cuda":
            torch.cuda.empty_cache()

    header = f"{'shape':>6} {'model':>14} {'tokens/s':>11} {'TFLOP/s':>8} {'vs HF':>6}"
    print("\n" + header + (f" {'MFU':>6}" if device.type == "cuda" else ""))
    for shape, model_name, res, gpu in rows:
        key = f"{shape}_{model_name}"
        ratio = res.get(f"{key}_over_hf", 1.0)
        line = (
            f"{shape:>6} {model_name:>14} {res[key + '_tokens_per_s']:>11,.0f} "
            f"{res[key + '_tflops']:>8.3f} {ratio:>6.2f}"
        )
        if gpu:
            line += f" {res[key + '_mfu']:>6.1%}"
        print(line)
    print(f"(device {device}, {args.dtype}, {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__})")  # fmt: skip
    if not all(math.isfinite(v) and v > 0 for v in results.values()):
        raise LLMLabError("a measurement came out non-positive: run with more --steps")
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
