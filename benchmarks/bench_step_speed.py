"""Step speed: our sprint-09 training step against a plain-PyTorch GPT of the same shape.

The reference is a nanoGPT-style GPT written here in plain PyTorch (learned positions,
LayerNorm, fused QKV + `F.scaled_dot_product_attention`, exact GELU, tied head, no biases)
trained the way nanoGPT's `train.py` does on a CPU: random windows of the same token file,
AdamW (not fused, not foreach: nanoGPT asks for the fused kernel on CUDA only), clipping at
1.0, its cosine schedule. Ours is `llmlab.lm_training.TrainingRun.train_step`, the exact step
of `train_gpt2` (data, schedule, forward, backward, clipping, optimiser), for the default
recipe and for any `--variant` of it. Same shape, batch and context; the contenders are timed
in rounds of `--chunk` steps, alternating the order, and the median round gives ms/step and
tokens/s. Threads: `--threads` (default 1) for every contender, stated in the output.

`--profile` runs the PyTorch profiler over our step and prints where the time goes (matrix
products, the attention kernel, RoPE, LayerNorm, activation, optimiser, clipping, data,
and the rest as Python / framework overhead).

`--train-reference` trains the reference with the issue's tuned nanoGPT recipe (2 x 128,
batch 16 x 64, lr 6e-3 -> 6e-4, warmup 100, 3500 steps; `--ref-steps`) for each `--seeds`
and scores every token of the validation split, as our runs are scored.

Run: python -m benchmarks.bench_step_speed
     python -m benchmarks.bench_step_speed --variant adamw:optimizer=adamw,mlp_act=gelu --profile
     python -m benchmarks.bench_step_speed --train-reference --seeds 1339,1340,1341
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmlab.cli import positive_int, run, torch_threads
from llmlab.data.shakespeare import load_prepared, prepare
from llmlab.device import get_device, keep_freed_memory, seed_everything
from llmlab.distributed import DistInfo
from llmlab.errors import LLMLabError
from llmlab.evaluation import evaluate_lm
from llmlab.lm_training import TrainConfig, TrainingRun, parse_overrides
from llmlab.optim import configure_muon

# The tuned nanoGPT recipe (nanoGPT's own code, identical token files).
NANOGPT_RECIPE = dict(lr=6e-3, min_lr=6e-4, warmup=100, steps=3500, beta2=0.99, wd=0.1)


# --- the reference: a plain GPT, nanoGPT style ------------------------------------------------


class PlainBlock(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(d, bias=False)
        self.c_attn = nn.Linear(d, 3 * d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.ln_2 = nn.LayerNorm(d, bias=False)
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.gelu = nn.GELU()
        self.mlp_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(self.gelu(self.c_fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    """nanoGPT's model in miniature: token + learned position embeddings, blocks, tied head."""

    def __init__(self, vocab: int, block_size: int, n_layer: int, n_head: int, d: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(block_size, d)
        self.h = nn.ModuleList(PlainBlock(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


def nanogpt_lr(it: int, lr: float, min_lr: float, warmup: int, decay_iters: int) -> float:
    """nanoGPT's `get_lr`: linear warmup from lr/warmup, cosine to min_lr at `decay_iters`."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def make_reference(
    train: np.ndarray,
    vocab: int,
    cfg: TrainConfig,
    steps: int = NANOGPT_RECIPE["steps"],
    optimizer: str = "adamw",
) -> tuple[PlainGPT, torch.optim.Optimizer, Callable[[], float]]:
    """The reference model, its optimiser and its nanoGPT training step (which returns the
    loss, as `.item()`).

    `optimizer="muon"`: the same plain stack and step, with our `MuonAdamW` grouped as in
    our default (its matrices, QKV as three blocks, at `cfg.muon_lr`; the rest AdamW at
    `cfg.lr`): the plain model doing our optimiser's work, for a like-for-like step time."""
    r = NANOGPT_RECIPE
    model = PlainGPT(vocab, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd)
    if optimizer == "muon":  # the groups our default gets (`muon_groups` finds c_attn)
        opt: torch.optim.Optimizer = configure_muon(
            model, cfg.muon_lr, cfg.lr, cfg.weight_decay, cfg.muon_momentum, (0.9, r["beta2"]),
            ns_steps=cfg.muon_ns_steps, ns_schedule=cfg.muon_ns_schedule,
        )  # fmt: skip
    else:
        decay = [p for p in model.parameters() if p.dim() >= 2]  # nanoGPT: every matrix decays
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": r["wd"]},
                  {"params": no_decay, "weight_decay": 0}]  # fmt: skip
        opt = torch.optim.AdamW(groups, lr=r["lr"], betas=(0.9, r["beta2"]))
    for group in opt.param_groups:
        group.setdefault("peak_lr", group["lr"])
    B, T, it = cfg.batch_size, cfg.block_size, 0

    def step() -> float:
        nonlocal it
        scale = nanogpt_lr(it, r["lr"], r["min_lr"], r["warmup"], steps) / r["lr"]
        for group in opt.param_groups:
            group["lr"] = group["peak_lr"] * scale
        ix = torch.randint(len(train) - T, (B,))
        x = torch.stack([torch.from_numpy(train[i : i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(train[i + 1 : i + 1 + T].astype(np.int64)) for i in ix])
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        it += 1
        return loss.item()

    return model, opt, step


# --- ours -------------------------------------------------------------------------------------


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """argparse type: "name:key=value,key=value" -> (name, TrainConfig overrides)."""
    name, _, spec = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"variant {text!r} needs a name: name:key=value,...")
    try:
        return name, parse_overrides(spec)
    except LLMLabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def make_ours(cfg: TrainConfig) -> tuple[TrainingRun, Callable[[], float]]:
    """A `TrainingRun` of `cfg` (logging into a temporary folder) and its `train_step`."""
    seed_everything(cfg.seed)
    run_ = TrainingRun(cfg, DistInfo(device=torch.device("cpu")))
    if run_.writer is not None:
        run_.writer.close()
        run_.writer = None
    return run_, lambda: run_.train_step()[0]


# --- timing -----------------------------------------------------------------------------------


def time_rounds(
    steps: dict[str, Callable[[], float]], warmup: int, rounds: int, chunk: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and CPU seconds per step of each contender in each of `rounds` chunks,
    alternating the order. CPU time (this process's) does not count the time other
    processes hold the core: with one thread it is the step's own cost even on a busy
    machine, where wall-clock time is mostly waiting."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(chunk):
                steps[name]()
            wall[name].append((time.perf_counter() - start) / chunk)
            cpu[name].append((time.process_time() - start_cpu) / chunk)
    return wall, cpu


PHASES = (
    "data + schedule",
    "forward + loss",
    "backward",
    "clipping",
    "optimiser",
    "zero_grad + rest",
)


def time_phases(
    contenders: dict[str, tuple[nn.Module, torch.optim.Optimizer, Callable[[], float]]],
    rounds: int,
    chunk: int,
) -> dict[str, dict[str, float]]:
    """Median wall-clock ms per step of each phase (`PHASES`, and "step"), per contender,
    in alternating rounds, without the profiler: the marks come from wrapping the model's
    `forward`, `torch.nn.utils.clip_grad_norm_` and the optimiser's `step`, which every
    contender's step calls once. ("backward" is from the end of the forward to clipping.)"""
    marks: dict[str, float] = {}

    def timed(key: str, fn: Callable) -> Callable:
        def wrapper(*a: Any, **k: Any) -> Any:
            marks[key + "0"] = time.perf_counter()
            out = fn(*a, **k)
            marks[key + "1"] = time.perf_counter()
            return out

        return wrapper

    clip = torch.nn.utils.clip_grad_norm_
    per: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in contenders}
    torch.nn.utils.clip_grad_norm_ = timed("c", clip)
    for model, opt, _ in contenders.values():  # instance attributes shadow the methods
        model.forward = timed("f", model.forward)
        opt.step = timed("o", opt.step)
    names = list(contenders)
    try:
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                step, ph = contenders[name][2], per[name]
                for _ in range(chunk):
                    start = time.perf_counter()
                    step()
                    end = time.perf_counter()
                    m = marks
                    ph["data + schedule"].append(m["f0"] - start)
                    ph["forward + loss"].append(m["f1"] - m["f0"])
                    ph["backward"].append(m["c0"] - m["f1"])
                    ph["clipping"].append(m["c1"] - m["c0"])
                    ph["optimiser"].append(m["o1"] - m["o0"])
                    ph["zero_grad + rest"].append(end - m["o1"] + m["o0"] - m["c1"])
                    ph["step"].append(end - start)
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
        for model, opt, _ in contenders.values():
            del model.forward, opt.step
    return {
        name: {k: statistics.median(v) * 1e3 for k, v in ph.items()} for name, ph in per.items()
    }


# --- profile ----------------------------------------------------------------------------------

# Backward nodes by what created them in the forward pass. RoPE's rotate_half (the formula
# that `_Rotate` replaces) is the only user of cat / neg / slicing in the training forward,
# and its muls the only muls (fp32).
_BACKWARD = {
    "Mm": "matrix products",
    "Addmm": "matrix products",
    "Bmm": "matrix products",
    "ScaledDotProduct": "attention kernel (SDPA)",
    "NativeLayerNorm": "LayerNorm",
    "Gelu": "MLP activation",
    "Relu": "MLP activation",
    "Pow": "MLP activation",
    "Mul": "RoPE",
    "Cat": "RoPE",
    "Neg": "RoPE",
    "Slice": "RoPE",
    "_Rotate": "RoPE",  # llmlab.positional's RoPE kernel (its hand-written backward)
    "Embedding": "embedding + loss",
    "NllLoss": "embedding + loss",
    "LogSoftmax": "embedding + loss",
}
_FORWARD = [
    ("scaled_dot_product", "attention kernel (SDPA)"),
    ("layer_norm", "LayerNorm"),
    ("gelu", "MLP activation"),
    ("relu", "MLP activation"),
    ("pow", "MLP activation"),
    ("embedding", "embedding + loss"),
    ("softmax", "embedding + loss"),
    ("nll_loss", "embedding + loss"),
    ("aten::mm", "matrix products"),
    ("aten::addmm", "matrix products"),
    ("aten::bmm", "matrix products"),
]


def _category(chain: list[str]) -> str:
    """The component an op belongs to, from its own name and its ancestors' (innermost first)."""
    for name in chain:
        if name.startswith("Optimizer."):
            return "optimizer"
        if name in ("data", "clip", "rope"):
            return {"data": "data (get_batch)", "clip": "gradient clipping", "rope": "RoPE"}[name]
        if name.startswith("autograd::engine::evaluate_function: "):
            node = name.split(": ", 1)[1]
            for prefix, category in _BACKWARD.items():
                if node.startswith(prefix):
                    return category
            return "other ops"
    for pattern, category in _FORWARD:
        if pattern in chain[0]:
            return category
    return "other ops"


def profile_step(run_: TrainingRun, n_steps: int) -> dict[str, float]:
    """ms per step by component: profiler self-CPU time, labelled with record_function ranges
    around data, RoPE and clipping (wrapped here only), plus wall time not spent in ops."""
    from torch.profiler import ProfilerActivity, profile, record_function

    import llmlab.attention as attention

    def labelled(name: str, fn: Callable) -> Callable:
        def wrapper(*a: Any, **k: Any) -> Any:
            with record_function(name):
                return fn(*a, **k)

        return wrapper

    saved = (run_.batch, attention.apply_rotary, torch.nn.utils.clip_grad_norm_)
    run_.batch = labelled("data", run_.batch)
    attention.apply_rotary = labelled("rope", attention.apply_rotary)
    torch.nn.utils.clip_grad_norm_ = labelled("clip", torch.nn.utils.clip_grad_norm_)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(n_steps):
                run_.train_step()
            wall = time.perf_counter() - start
    finally:
        run_.batch, attention.apply_rotary, torch.nn.utils.clip_grad_norm_ = saved
    ms: dict[str, float] = defaultdict(float)
    for event in prof.events():
        chain, parent = [event.name], event.cpu_parent
        while parent is not None:
            chain.append(parent.name)
            parent = parent.cpu_parent
        ms[_category(chain)] += event.self_cpu_time_total / 1e3 / n_steps
    ms["Python / framework overhead"] = max(0.0, wall * 1e3 / n_steps - sum(ms.values()))
    return dict(sorted(ms.items(), key=lambda kv: -kv[1]))


# --- the command ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        help="also time our step with these TrainConfig overrides, as name:key=value,... "
        "(repeatable), e.g. adamw:optimizer=adamw,mlp_act=gelu",
    )
    p.add_argument("--batch-size", type=positive_int, default=16, help="sequences per step")
    p.add_argument("--block-size", type=positive_int, default=64, help="context length")
    p.add_argument("--warmup", type=positive_int, default=10, help="untimed steps each")
    p.add_argument("--rounds", type=positive_int, default=10, help="timed rounds")
    p.add_argument("--chunk", type=positive_int, default=10, help="steps per round")
    p.add_argument("--profile", action="store_true", help="profile our default step too")
    p.add_argument("--profile-steps", type=positive_int, default=20, help="profiled steps")
    p.add_argument(
        "--train-reference",
        action="store_true",
        help="instead of timing: train the reference with the tuned nanoGPT recipe and "
        "score the whole validation split",
    )
    p.add_argument("--ref-steps", type=positive_int, default=NANOGPT_RECIPE["steps"],
                   help="steps of the reference run (its cosine ends there)")  # fmt: skip
    p.add_argument("--seeds", default="1337", help="comma-separated seeds (--train-reference)")
    p.add_argument("--seed", type=int, default=1337, help="seed for the timing runs")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc returning freed memory to the OS (by default it "
                   "keeps it, as train_gpt2 does: llmlab.device.keep_freed_memory); takes "
                   "effect only in a fresh process")  # fmt: skip
    p.add_argument("--device", default="cpu", choices=["cpu"], help="CPU only")
    return p


def _train_reference(args: argparse.Namespace, data_dir: str, cfg: TrainConfig) -> dict:
    train, val, meta = load_prepared(data_dir)
    out: dict[str, Any] = {}
    losses = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        seed_everything(seed)
        model, _, step = make_reference(train, int(meta["vocab_size"]), cfg, args.ref_steps)
        start = time.perf_counter()
        for _ in range(args.ref_steps):
            loss = step()
        seconds = time.perf_counter() - start
        full = evaluate_lm(model, val, cfg.block_size, 128)
        losses.append(full["loss"])
        out[f"ref_val_loss_seed{seed}"] = full["loss"]
        print(f"reference (nanoGPT recipe), seed {seed}: {args.ref_steps} steps in {seconds:.0f} s, "
              f"last train loss {loss:.3f}, full validation loss {full['loss']:.4f}")  # fmt: skip
    out["ref_val_loss_mean"] = statistics.fmean(losses)
    out["ref_val_loss_spread"] = max(losses) - min(losses)
    print(f"mean {out['ref_val_loss_mean']:.4f}, spread (max - min) {out['ref_val_loss_spread']:.4f} "
          f"over {len(losses)} seeds")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    get_device(args.device)
    # As train_gpt2 does (for every contender: one process); a fresh process is needed to
    # see glibc's default, which cannot be restored once changed.
    args.malloc_kept = not args.default_malloc and keep_freed_memory()
    with torch_threads(args.threads):
        data_dir = str(prepare("tiny", "char"))
        base = TrainConfig(data_dir=data_dir, batch_size=args.batch_size,
                           block_size=args.block_size, seed=args.seed, progress=False,
                           save_checkpoints=False)  # fmt: skip
        if args.train_reference:
            return _train_reference(args, data_dir, base)
        return _time(args, data_dir, base)


def _time(args: argparse.Namespace, data_dir: str, base: TrainConfig) -> dict[str, Any]:
    results: dict[str, Any] = {"malloc_kept": args.malloc_kept}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, overrides in [("ours", {}), *args.variant]:
            cfg = TrainConfig(**{**vars(base), "out_dir": f"{tmp}/{name}", **overrides})
            runs[name] = make_ours(cfg)
        train, _, meta = load_prepared(data_dir)
        contenders = {}
        for name, optimizer in (("plain", "adamw"), ("plain-muon", "muon")):
            seed_everything(args.seed)
            contenders[name] = make_reference(train, int(meta["vocab_size"]), base,
                                              optimizer=optimizer)  # fmt: skip
        for name, (r, step) in runs.items():
            contenders[name] = (r.model, r.optimizer, step)
        steps = {name: step for name, (_, _, step) in contenders.items()}
        print(f"timing {', '.join(steps)}: batch {base.batch_size} x {base.block_size}, "
              f"{args.warmup} warm-up steps each, {args.rounds} rounds of {args.chunk} steps, "
              f"{torch.get_num_threads()} thread(s)")  # fmt: skip
        wall, cpu = time_rounds(steps, args.warmup, args.rounds, args.chunk)
        seconds = {name: statistics.median(t) for name, t in wall.items()}
        cpu_s = {name: statistics.median(t) for name, t in cpu.items()}
        tokens = {name: r.cfg.batch_size * r.cfg.block_size for name, (r, _) in runs.items()}
        tokens["plain"] = tokens["plain-muon"] = base.batch_size * base.block_size
        print(f"\n{'model':>12} {'ms/step':>8} {'tokens/s':>9} {'vs plain':>8} {'vs p-muon':>9} "
              f"{'CPU ms':>8} {'vs plain':>8}   (medians over rounds; ratios: time per step, "
              "> 1: faster)")  # fmt: skip
        for name, s in seconds.items():
            results[f"{name}_ms_per_step"] = s * 1e3
            results[f"{name}_tokens_per_s"] = tokens[name] / s
            results[f"{name}_over_plain"] = seconds["plain"] / s
            results[f"{name}_over_plain_muon"] = seconds["plain-muon"] / s
            results[f"{name}_cpu_ms_per_step"] = cpu_s[name] * 1e3
            results[f"{name}_cpu_over_plain"] = cpu_s["plain"] / cpu_s[name]
            print(f"{name:>12} {s * 1e3:>8.2f} {tokens[name] / s:>9,.0f} {seconds['plain'] / s:>8.2f} "
                  f"{seconds['plain-muon'] / s:>9.2f} {cpu_s[name] * 1e3:>8.2f} "
                  f"{cpu_s['plain'] / cpu_s[name]:>8.2f}")  # fmt: skip
        phases = time_phases(contenders, args.rounds, args.chunk)
        results["phases_ms"] = phases
        print("\nwhere the time goes, wall-clock ms per step (medians; no profiler):")
        print(f"  {'phase':<18}" + "".join(f"{name:>12}" for name in phases))
        for phase in (*PHASES, "step"):
            print(f"  {phase:<18}" + "".join(f"{phases[n][phase]:>12.2f}" for n in phases))
        if args.profile:
            table = profile_step(runs["ours"][0], args.profile_steps)
            total = sum(table.values())
            print(f"\nwhere our step's time goes by operator ({args.profile_steps} profiled steps, "
                  f"{total:.1f} ms/step under the profiler):")  # fmt: skip
            for category, ms in table.items():
                print(f"  {category:<30} {ms:>7.2f} ms  {ms / total:>6.1%}")
            print("  (the profiler inflates small element-wise operators on some CPUs: on sprint "
                  "09's VM it gave GELU 1.2 ms a call where a timer around it read 0.54 ms; "
                  "compare with the wall-clock phases above)")  # fmt: skip
            results["profile_ms"] = table
        results["threads"] = torch.get_num_threads()
        print(
            f"(CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}, freed memory "
            f"{'kept by malloc' if results['malloc_kept'] else 'returned to the OS'}; ratios "
            "come from interleaved rounds, so machine load affects both sides)"
        )
    if not all(v > 0 for k, v in results.items() if k.endswith("_ms_per_step")):
        raise LLMLabError("a measurement came out non-positive: use more --rounds")
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
