"""The GPT training loop (sprint 09): fast, resumable, distributed.

- `TrainConfig`: every knob of a run (model shape, optimisation, logging, system).
- `parse_overrides("key=value,...")`: typed `TrainConfig` overrides from text (ablations).
- `TrainingRun`: one run's state; `train_step()` is one optimiser step (data, forward,
  backward, clipping, update), what the benchmarks time.
- `train(cfg)`: AdamW with decay groups (or Muon for the hidden matrices + AdamW for the
  rest), warmup + cosine or warmup-stable-decay LR, gradient clipping and
  accumulation, bf16 autocast on GPU, optional `torch.compile`, DDP under `torchrun`;
  TensorBoard scalars and text samples; atomic `last` / `best` checkpoints and exact resume;
  a NaN loss stops the run and keeps the last good checkpoint; Ctrl-C saves and exits.
  Returns the run's summary (final full-split validation loss, perplexity, tokens/s, time).

The sprint script (`sprints/09_train_gpt2/results/train_gpt2.py`) turns flags and presets
into a `TrainConfig`; this module holds the mechanics so later sprints can reuse them.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from llmlab.checkpoint import load_model_dir, read_config
from llmlab.data.lm_dataset import check_length, get_batch
from llmlab.data.shakespeare import load_prepared, tokenizer_from_meta, tokenizer_meta
from llmlab.device import get_device, seed_everything
from llmlab.distributed import DistInfo, all_reduce_mean, cleanup, init_distributed
from llmlab.errors import LLMLabError
from llmlab.evaluation import evaluate_lm, perplexity
from llmlab.generate import generate
from llmlab.gpt import GPT, GPTConfig
from llmlab.optim import SCHEDULES, configure_adamw, configure_muon, lr_at

MODEL_FIELDS = (
    "n_layer", "n_head", "n_embd", "block_size", "dropout", "bias", "pos_encoding",
    "mlp_act", "qk_norm", "tie_embeddings",
)  # fmt: skip
OPTIMIZERS = ("adamw", "muon")


@dataclass
class TrainConfig:
    """A training run. Defaults are the tiny CPU recipe (sprint 09's default run, found in
    `notes/07_faster_training.md`); the sprint script has presets."""

    data_dir: str = ""
    out_dir: str = ""
    # model
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False
    pos_encoding: str = "rope"
    mlp_act: str = "gelu_erf"
    qk_norm: bool = False
    tie_embeddings: bool = True
    # optimisation
    batch_size: int = 16  # per rank, per micro-step
    grad_accum: int = 1
    max_steps: int = 2500
    lr: float = 8e-3  # AdamW's peak (with Muon: embeddings, norms and biases only)
    min_lr: float = 5e-4
    warmup_steps: int = 50
    weight_decay: float = 0.0  # on the matrices (AdamW: 0.1 was the old recipe's)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    optimizer: str = "muon"  # Muon for the blocks' matrices, AdamW (lr) for the rest; "adamw"
    muon_lr: float = 0.01  # Muon's peak LR (its updates are orthogonal: a different scale)
    muon_momentum: float = 0.95
    muon_ns_steps: int = 5  # Newton-Schulz iterations per Muon update (its cost on a CPU)
    muon_ns_schedule: str = "jordan"  # their coefficients: "jordan" or "polar_express"
    lr_schedule: str = "cosine"  # or "wsd": warmup, flat at the peak, linear decay at the end
    decay_frac: float = 0.3  # "wsd": the fraction of max_steps spent decaying to min_lr
    # evaluation and logging
    eval_interval: int = 500
    eval_batches: int = 20
    log_interval: int = 10
    sample_tokens: int = 200
    sample_prompt: str = "\n"
    final_eval: bool = True
    eval_stride: int = 0  # >0: also a sliding-window full evaluation with this stride
    # system
    device: str = "auto"
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 elsewhere
    compile: bool = False
    seed: int = 1337
    deterministic: bool = False
    resume: str = ""
    stop_at_step: int = 0  # stop early (as if interrupted) after this step; 0 = run to the end
    save_checkpoints: bool = True
    progress: bool = True
    peak_tflops: float = 0.0  # >0: report model FLOPs utilisation against this peak

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, **{k: getattr(self, k) for k in MODEL_FIELDS})


def parse_overrides(text: str) -> dict[str, Any]:
    """ "key=value,key=value" -> typed `TrainConfig` overrides, e.g. "optimizer=adamw,lr=3e-3"
    -> {"optimizer": "adamw", "lr": 0.003} (booleans: 1/0, true/false, yes/no)."""
    types = {f.name: type(f.default) for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in types or not value:
            raise LLMLabError(
                f"bad setting {item!r}: write key=value with a TrainConfig field "
                f"(e.g. optimizer=adamw); fields: {', '.join(sorted(types))}"
            )
        kind = types[key]
        try:
            if kind is bool:
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("1", "true", "yes")
            else:
                out[key] = kind(value)
        except ValueError:
            raise LLMLabError(f"bad setting {item!r}: {key} takes a {kind.__name__}") from None
    return out


def _check(cfg: TrainConfig, train: np.ndarray, val: np.ndarray) -> None:
    for name in ("batch_size", "grad_accum", "max_steps", "block_size", "eval_interval"):
        if getattr(cfg, name) <= 0:
            raise LLMLabError(
                f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}"
            )
    if not cfg.lr > 0 or not math.isfinite(cfg.lr):
        raise LLMLabError(f"--lr must be a positive number, got {cfg.lr}")
    if not 0 <= cfg.min_lr <= cfg.lr:
        raise LLMLabError(f"--min-lr must be in [0, --lr={cfg.lr}], got {cfg.min_lr}")
    if cfg.optimizer not in OPTIMIZERS:
        raise LLMLabError(f"--optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    if cfg.lr_schedule not in SCHEDULES:
        raise LLMLabError(f"--lr-schedule must be one of {SCHEDULES}, got {cfg.lr_schedule!r}")
    if not 0 <= cfg.decay_frac <= 1:
        raise LLMLabError(f"--decay-frac must be in [0, 1], got {cfg.decay_frac}")
    if not cfg.muon_lr > 0 or not 0 <= cfg.muon_momentum < 1:
        raise LLMLabError(
            f"--muon-lr must be > 0 and --muon-momentum in [0, 1), got {cfg.muon_lr}, "
            f"{cfg.muon_momentum}"
        )
    if cfg.muon_ns_steps < 1:
        raise LLMLabError(f"--muon-ns-steps must be >= 1, got {cfg.muon_ns_steps}")
    if cfg.weight_decay < 0:
        raise LLMLabError(f"--weight-decay must be >= 0, got {cfg.weight_decay}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            raise LLMLabError(f"--{name} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.eval_stride and not 0 < cfg.eval_stride < cfg.block_size:
        raise LLMLabError(
            f"--eval-stride must be below --block-size={cfg.block_size} (0 turns it off), "
            f"got {cfg.eval_stride}"
        )
    for split, data in (("training", train), ("validation", val)):
        try:
            check_length(len(data), cfg.block_size)
        except LLMLabError:
            raise LLMLabError(
                f"the {split} split has {len(data)} tokens, fewer than the context "
                f"(--block-size {cfg.block_size}) + 1: use a smaller --block-size or a bigger corpus"
            ) from None


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype != "bfloat16":  # float16 would also need a GradScaler; bf16 has fp32's range
        raise LLMLabError(f"--dtype must be auto, float32 or bfloat16, got {dtype!r}")
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingRun:
    """The state of one training run (model, optimiser, data, RNGs, history); `train()`
    drives it, `benchmarks/bench_step_speed.py` times its `train_step`."""

    def __init__(self, cfg: TrainConfig, dist: DistInfo) -> None:
        self.cfg, self.dist = cfg, dist
        self.device = dist.device
        self.out = Path(cfg.out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.train_data, self.val_data, self.meta = load_prepared(cfg.data_dir)
        _check(cfg, self.train_data, self.val_data)
        self.tokenizer = tokenizer_from_meta(self.meta)
        self.model_cfg = cfg.model_config(int(self.meta["vocab_size"]))
        self.model = GPT(self.model_cfg).to(self.device)
        # Same initial weights on every rank (same seed above); from here on each rank draws
        # its own dropout masks, or the ranks' "independent" examples would share them.
        torch.manual_seed(cfg.seed + dist.rank)
        betas = (cfg.beta1, cfg.beta2)
        if cfg.optimizer == "muon":
            self.optimizer = configure_muon(
                self.model,
                cfg.muon_lr,
                cfg.lr,
                cfg.weight_decay,
                cfg.muon_momentum,
                betas,
                ns_steps=cfg.muon_ns_steps,
                ns_schedule=cfg.muon_ns_schedule,
            )
        else:
            self.optimizer = configure_adamw(
                self.model, cfg.lr, cfg.weight_decay, betas, self.device.type
            )
        # Training batches come from their own generator, whose state is checkpointed:
        # a resumed run draws exactly the batches the uninterrupted run would have drawn.
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.best_val = float("inf")
        self.history: dict[str, list[float]] = {"step": [], "train_loss": [], "lr": []}
        self.evals: dict[str, list[float]] = {"step": [], "train_loss": [], "val_loss": []}
        self.autocast = _autocast(self.device, cfg.dtype)
        if cfg.resume:
            self._resume(Path(cfg.resume))
        self.forward_model: torch.nn.Module = self.model
        if cfg.compile:
            self.forward_model = torch.compile(self.model)
        if dist.enabled:
            self.forward_model = DistributedDataParallel(
                self.forward_model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.writer = None
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            from llmlab.runs import make_writer

            self.writer = make_writer(self.out)

    # -- checkpoints -------------------------------------------------------------------
    def _resume(self, path: Path) -> None:
        # Through GPTConfig: a checkpoint from before a field existed gets its default.
        saved = GPTConfig.from_dict(read_config(path)).to_dict()
        current = self.model_cfg.to_dict()
        if saved != current:
            diff = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
            raise LLMLabError(
                f"checkpoint {path} was trained with another model configuration "
                f"(saved vs now: {diff}): pass the same model flags or start a new run"
            )
        state = load_model_dir(path, self.model, map_location=self.device)
        if not state:
            raise LLMLabError(f"{path} holds weights only (no training.pt): it cannot be resumed")
        saved_opt = state.get("train_config", {}).get("optimizer", "adamw")
        if saved_opt != self.cfg.optimizer:
            raise LLMLabError(
                f"checkpoint {path} was trained with --optimizer {saved_opt}, not "
                f"{self.cfg.optimizer}: pass --optimizer {saved_opt} to resume it"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_gen.set_state(state["data_generator"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best_val = float(state["best_val"])
        self.history = state["history"]
        self.evals = state["evals"]

    def save(self, name: str) -> Path | None:
        if not (self.dist.is_main and self.cfg.save_checkpoints):
            return None
        training_state = {
            "optimizer": self.optimizer.state_dict(),
            "data_generator": self.data_gen.get_state(),
            "rng": _rng_state(),
            "step": self.step,
            "best_val": self.best_val,
            "history": self.history,
            "evals": self.evals,
            "train_config": asdict(self.cfg),
            "data_meta": {k: self.meta.get(k) for k in ("corpus", "tokenizer", "vocab_size")},
        }
        return self.model.save(self.ckpt_dir / name, training_state, tokenizer_meta(self.meta))

    # -- one optimiser step --------------------------------------------------------------
    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of the global batch (all ranks draw the same global offsets)."""
        B, world = self.cfg.batch_size, self.dist.world_size
        x, y = get_batch(self.train_data, B * world, self.cfg.block_size, "cpu", self.data_gen)
        lo = self.dist.rank * B
        x, y = x[lo : lo + B], y[lo : lo + B]
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(
                self.device, non_blocking=True
            )
        return x.to(self.device), y.to(self.device)

    def train_step(self) -> tuple[float, float, float]:
        cfg = self.cfg
        decay_steps = round(cfg.decay_frac * cfg.max_steps)
        lr = lr_at(
            self.step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr,
            cfg.lr_schedule, decay_steps,
        )  # fmt: skip
        for group in self.optimizer.param_groups:
            # Groups with their own peak (Muon's) follow the same schedule, scaled.
            group["lr"] = group["peak_lr"] * lr / cfg.lr if "peak_lr" in group else lr
        total = 0.0
        for micro in range(cfg.grad_accum):
            x, y = self.batch()
            # DDP all-reduces gradients on every backward; skip it until the last micro-step.
            sync = not self.dist.enabled or micro == cfg.grad_accum - 1
            ctx = contextlib.nullcontext() if sync else self.forward_model.no_sync()
            with ctx:
                with self.autocast:
                    _, loss = self.forward_model(x, y)
                (loss / cfg.grad_accum).backward()
            total += loss.detach()
        loss_value = all_reduce_mean(total / cfg.grad_accum, self.dist)
        if not math.isfinite(loss_value):
            raise LLMLabError(
                f"the loss became {loss_value} at step {self.step}: training stopped and the "
                f"last good checkpoint in {self.ckpt_dir} was kept; lower --lr or check the data"
            )
        norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(),
            cfg.grad_clip if cfg.grad_clip > 0 else float("inf"),
            foreach=True,
        )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_value, float(norm), lr

    # -- evaluation and samples ------------------------------------------------------------
    @torch.no_grad()
    def estimate_loss(self) -> dict[str, float]:
        """Mean loss on the same `eval_batches` random windows of each split every time."""
        self.model.eval()
        out = {}
        for split, data in (("train", self.train_data), ("val", self.val_data)):
            gen = torch.Generator().manual_seed(1234)  # fixed windows: a comparable curve
            losses = []
            for _ in range(self.cfg.eval_batches):
                x, y = get_batch(data, self.cfg.batch_size, self.cfg.block_size, self.device, gen)
                with self.autocast:
                    losses.append(float(self.model(x, y)[1]))
            out[split] = float(np.mean(losses))
        self.model.train()
        return out

    def sample(self, n_tokens: int, seed: int = 0) -> str:
        prompt = self.tokenizer.encode(self.cfg.sample_prompt or "\n")[-self.cfg.block_size // 2 :]
        idx = torch.tensor([prompt], dtype=torch.long, device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        # The KV cache stops at the context length; longer samples slide the window instead.
        fits = idx.shape[1] + n_tokens <= self.cfg.block_size
        out = generate(
            self.model, idx, n_tokens, temperature=0.8, top_k=50, use_cache=fits, generator=gen
        )
        return self.tokenizer.decode(out[0].tolist())

    def log(self, tag: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, self.step)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run `cfg` to completion (or to `stop_at_step`); return the summary figures."""
    device = get_device(cfg.device)
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    dist = init_distributed(device)
    try:
        return _train(cfg, dist)
    finally:
        cleanup(dist)


def _train(cfg: TrainConfig, dist: DistInfo) -> dict[str, Any]:
    run = TrainingRun(cfg, dist)
    model, is_main = run.model, dist.is_main
    tokens_per_step = cfg.batch_size * cfg.grad_accum * dist.world_size * cfg.block_size
    fpt = model.flops_per_token()
    end = min(cfg.max_steps, cfg.stop_at_step) if cfg.stop_at_step > 0 else cfg.max_steps
    start_step = run.step
    if is_main:
        n_params = model.num_parameters()
        print(
            f"model: {n_params / 1e6:.2f}M parameters, {cfg.n_layer} layers, {cfg.n_embd} wide, "
            f"context {cfg.block_size}; {tokens_per_step:,} tokens/step on {dist.world_size} "
            f"x {run.device}; steps {run.step} -> {end} of {cfg.max_steps}"
        )
        if run.writer is not None:
            run.writer.add_text("config", f"```\n{json.dumps(asdict(cfg), indent=2)}\n```", 0)
    bar = tqdm(
        total=end,
        initial=run.step,
        disable=not (is_main and cfg.progress),
        desc="train",
        dynamic_ncols=True,
    )
    t_start = time.perf_counter()
    t_last, steps_since, train_seconds = t_start, 0, 0.0
    loss = float("nan")
    try:
        while run.step < end:
            try:
                loss, norm, lr = run.train_step()
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not isinstance(exc, torch.OutOfMemoryError) and "allocate" not in str(exc):
                    raise
                raise LLMLabError(
                    f"out of memory with --batch-size {cfg.batch_size} x --block-size "
                    f"{cfg.block_size}: lower --batch-size and raise --grad-accum to keep the "
                    "tokens per step (checkpoints already written are intact)"
                ) from None
            steps_since += 1
            bar.update(1)
            run.history["step"].append(run.step)
            run.history["train_loss"].append(loss)
            run.history["lr"].append(lr)
            if run.step % cfg.log_interval == 0 or run.step == end:
                now = time.perf_counter()
                tok_s = steps_since * tokens_per_step / max(now - t_last, 1e-9)
                train_seconds += now - t_last
                t_last, steps_since = now, 0
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}")
                for tag, value in (
                    ("train/loss", loss),
                    ("train/lr", lr),
                    ("train/grad_norm", norm),
                    ("train/tokens_per_s", tok_s),
                ):
                    run.log(tag, value)
                if cfg.peak_tflops > 0:
                    run.log("train/mfu", fpt * tok_s / (cfg.peak_tflops * 1e12 * dist.world_size))
            if run.step % cfg.eval_interval == 0 and run.step < cfg.max_steps:
                t_eval = time.perf_counter()
                est = run.estimate_loss()
                run.evals["step"].append(run.step)
                run.evals["train_loss"].append(est["train"])
                run.evals["val_loss"].append(est["val"])
                for split in ("train", "val"):
                    run.log(f"eval/{split}_loss", est[split])
                    run.log(f"eval/{split}_perplexity", perplexity(est[split]))
                if is_main:
                    tqdm.write(
                        f"step {run.step}: train {est['train']:.4f}, val {est['val']:.4f} "
                        f"(ppl {perplexity(est['val']):.2f})"
                    )
                    if run.writer is not None and cfg.sample_tokens > 0:
                        run.writer.add_text("samples", run.sample(cfg.sample_tokens), run.step)
                if est["val"] < run.best_val:
                    run.best_val = est["val"]
                    run.save("best")
                run.save("last")
                t_last += time.perf_counter() - t_eval  # evaluation is not training time
    except BaseException as exc:
        bar.close()
        if isinstance(exc, KeyboardInterrupt):
            saved = run.save("last")
            if is_main:
                print(
                    f"\ninterrupted at step {run.step}: saved {saved}; continue with --resume {saved}"
                )
        if run.writer is not None:  # flush what was logged, whatever stopped the run
            run.writer.close()
        raise
    bar.close()
    wall = time.perf_counter() - t_start
    trained = run.step - start_step
    summary: dict[str, Any] = {
        "steps": run.step,
        "train_loss": loss,
        "tokens_per_s": trained * tokens_per_step / max(train_seconds, 1e-9),
        "wall_time_s": wall,
        "out_dir": str(run.out),
    }
    finished = run.step >= cfg.max_steps
    if cfg.final_eval and finished:
        eval_batch = max(cfg.batch_size, 8192 // cfg.block_size)  # no grads: big batches
        full = evaluate_lm(
            model, run.val_data, cfg.block_size, eval_batch, run.device, run.autocast
        )
        summary.update(
            val_loss=full["loss"], val_perplexity=full["perplexity"], val_tokens=full["tokens"]
        )
        if cfg.eval_stride:
            slide = evaluate_lm(
                model,
                run.val_data,
                cfg.block_size,
                eval_batch,
                run.device,
                run.autocast,
                stride=cfg.eval_stride,
            )
            summary["val_loss_sliding"] = slide["loss"]
            run.log("eval/full_val_loss_sliding", slide["loss"])
        run.log("eval/full_val_loss", full["loss"])
        run.log("eval/full_val_perplexity", full["perplexity"])
        if full["loss"] < run.best_val:
            run.best_val = full["loss"]
            run.save("best")
    run.save("last")
    summary["best_val"] = run.best_val
    summary["history"] = run.history
    summary["evals"] = run.evals
    if is_main:
        summary["sample"] = (
            run.sample(cfg.sample_tokens, seed=cfg.seed) if cfg.sample_tokens else ""
        )
        if run.writer is not None:
            run.writer.add_text("samples/final", summary["sample"], run.step)
            run.writer.close()
        (run.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
