"""Fine-tuning a pretrained model: which parameters train, and the loop (sprint 11; reused
by sprints 12-16).

Why our own loop rather than `transformers.Trainer`: the course fine-tunes Hugging Face
models AND its own `GPT`, whose forward returns a tuple; it needs exact resume from a
checkpoint that holds only what changed (a LoRA adapter is a few hundred KB, the model
540 MB); and a learner should be able to read the whole loop in one sitting. The loop does
what `Trainer` does for these sprints (same AdamW, warmup, clipping, accumulation), and
`tests/test_finetune.py` checks that both end with the same weights.

- Which parameters train — `set_trainable(model, strategy, **options)`:
  "probe" (the head only: frozen features + a linear classifier), "last_blocks" (the last N
  transformer blocks, the final norm and the head), "lora" (`peft` adapters injected into the
  attention projections, plus the head), "full" (everything). `register_strategy(name, fn)`
  adds one (sprint 13 plugs its from-scratch LoRA in here); `find_blocks`, `count_parameters`.
- `TrainableView(model)`: the trainable parameters as a module of their own, so checkpoints
  and early stopping copy only those (the frozen rest is the pretrained model on disk).
- `FinetuneConfig` and `finetune(model, train_set, collate, cfg, evaluate, loss_fn)`:
  AdamW (weight decay on matrices), warmup + cosine, gradient accumulation and clipping,
  bf16 autocast on GPU, an evaluation every `eval_interval` steps (and before the first),
  early stopping on any metric the evaluation returns, the best weights kept in memory and
  restored at the end, atomic `best` / `last` checkpoints with exact `--resume`, TensorBoard,
  tqdm, an optional wall-clock budget. Batches are a deterministic function of (seed, step)
  (`batch_indices`); `group_by_length` makes batches of texts of similar length (Hugging
  Face's option of that name), which cut sprint 11's padded tokens by ~40 %.
- Losses: `hf_loss` (`model(**batch).loss`, the Hugging Face convention, also followed by
  `GPTForSequenceClassification`) and `lm_loss` (`model(x, y)` -> (logits, loss), our GPT).
- `CausalLMAdapter` is re-exported from `llmlab.evaluation` (any causal LM behind
  our GPT's interface), so `lm_loss` trains SmolLM2 and our GPT the same way.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from llmlab.checkpoint import load_model_dir, read_config, save_model_dir
from llmlab.errors import LLMLabError

# Re-exported (the redundant alias says so): sprints 12-13 import it from here.
from llmlab.evaluation import CausalLMAdapter as CausalLMAdapter
from llmlab.optim import configure_adamw, lr_at
from llmlab.training import EarlyStopping

# --- which parameters train -------------------------------------------------------------------

HEAD_NAMES = ("score", "classifier")  # classification heads (Hugging Face and ours)
NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm")
LORA_TARGETS = {  # attention projections per architecture (module names inside a block)
    "llama": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],  # Hugging Face GPT-2 and our GPT: the fused q, k, v projection
}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts (a tied tensor counts once)."""
    seen: dict[int, nn.Parameter] = {}
    for p in model.parameters():
        seen.setdefault(id(p), p)
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer's stack of blocks: the longest `ModuleList` (its dotted name, itself)."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best[1])):
            best = (name, module)
    if best is None or len(best[1]) == 0:
        raise LLMLabError(f"{type(model).__name__} has no list of transformer blocks")
    return best


def _final_norm(model: nn.Module, blocks_name: str) -> nn.Module | None:
    """The norm applied after the last block: a sibling of the block list named like a norm."""
    parent = model.get_submodule(blocks_name.rpartition(".")[0]) if "." in blocks_name else model
    for name, child in parent.named_children():
        if name in NORM_NAMES:
            return child
    return None


def _heads(model: nn.Module, head_names: Sequence[str]) -> list[nn.Module]:
    return [m for n, m in model.named_modules() if n.rpartition(".")[2] in head_names]


def _freeze_all_but(model: nn.Module, modules: Sequence[nn.Module]) -> None:
    model.requires_grad_(False)
    for module in modules:
        module.requires_grad_(True)


def _probe(model: nn.Module, head_names: Sequence[str] = HEAD_NAMES, **_: Any) -> nn.Module:
    heads = _heads(model, head_names)
    if not heads:
        raise LLMLabError(f"strategy 'probe' trains the head, but the model has none {head_names}")
    _freeze_all_but(model, heads)
    return model


def _last_blocks(
    model: nn.Module, n_blocks: int = 1, head_names: Sequence[str] = HEAD_NAMES, **_: Any
) -> nn.Module:
    name, blocks = find_blocks(model)
    if not 1 <= n_blocks <= len(blocks):
        raise LLMLabError(f"--n-blocks must be in [1, {len(blocks)}], got {n_blocks}")
    norm = _final_norm(model, name)
    _freeze_all_but(
        model,
        [*blocks[-n_blocks:], *([norm] if norm is not None else []), *_heads(model, head_names)],
    )
    return model


def lora_targets_for(model: nn.Module) -> list[str]:
    """Default LoRA target module names: q and v projections (Llama) or GPT-2's `c_attn`."""
    names = {n.rpartition(".")[2] for n, _ in model.named_modules()}
    for targets in LORA_TARGETS.values():
        if set(targets) <= names:
            return list(targets)
    raise LLMLabError("no known attention projections to put LoRA on: pass lora_targets")


def _lora(
    model: nn.Module,
    lora_r: int = 8,
    lora_alpha: float = 16.0,
    lora_dropout: float = 0.0,
    lora_targets: Sequence[str] | None = None,
    lora_layers: int = 0,
    head_names: Sequence[str] = HEAD_NAMES,
    **_: Any,
) -> nn.Module:
    """peft's LoRA injected in place (the model keeps its class and forward)."""
    from peft import LoraConfig, inject_adapter_in_model

    name, blocks = find_blocks(model)
    layers = None
    if lora_layers:  # only the top blocks: backward then stops below them (faster)
        if not 1 <= lora_layers <= len(blocks):
            raise LLMLabError(f"--lora-layers must be in [0, {len(blocks)}], got {lora_layers}")
        layers = list(range(len(blocks) - lora_layers, len(blocks)))
    config = LoraConfig(
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=list(lora_targets or lora_targets_for(model)),
        layers_to_transform=layers,
        layers_pattern=name.rpartition(".")[2] if layers else None,
    )
    model = inject_adapter_in_model(config, model)
    model.requires_grad_(False)
    for param_name, param in model.named_parameters():
        if "lora_" in param_name:
            param.requires_grad_(True)
    for head in _heads(model, head_names):
        head.requires_grad_(True)
    return model


def _full(model: nn.Module, **_: Any) -> nn.Module:
    model.requires_grad_(True)
    return model


Strategy = Callable[..., nn.Module]
STRATEGIES: dict[str, Strategy] = {
    "probe": _probe,
    "last_blocks": _last_blocks,
    "lora": _lora,
    "full": _full,
}


def register_strategy(name: str, fn: Strategy) -> None:
    """Add a strategy: `fn(model, **options)` sets `requires_grad` and returns the model."""
    STRATEGIES[name] = fn


def set_trainable(model: nn.Module, strategy: str, **options: Any) -> nn.Module:
    """Choose which parameters of `model` train; returns the model to train (LoRA adds modules
    in place). Options: `n_blocks`, `head_names`, `lora_r`, `lora_alpha`, `lora_dropout`,
    `lora_targets`, `lora_layers`; each strategy ignores the ones it does not use."""
    if strategy not in STRATEGIES:
        raise LLMLabError(f"unknown strategy {strategy!r}: choose from {sorted(STRATEGIES)}")
    model = STRATEGIES[strategy](model, **options)
    if count_parameters(model)["trainable"] == 0:
        raise LLMLabError(f"strategy {strategy!r} left no parameter to train in this model")
    return model


class TrainableView(nn.Module):
    """The parameters of `model` that require grad, as a module of their own.

    Its `state_dict()` holds the live tensors (no copy), so saving it saves only what
    fine-tuning changes, and `load_state_dict` writes straight into the model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for name, param in model.named_parameters():
            if param.requires_grad:
                # Module attribute names cannot contain dots.
                self.register_parameter(name.replace(".", "/"), param)

    def names(self) -> list[str]:
        return [n.replace("/", ".") for n, _ in self.named_parameters()]


# --- losses ---------------------------------------------------------------------------------


def hf_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The Hugging Face convention: the model computes its loss from `labels`."""
    return model(**batch).loss


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Our GPT's convention: `model(x, y)` -> (logits, mean next-token cross-entropy)."""
    return model(batch["input_ids"], batch["labels"])[1]


# --- the loop -----------------------------------------------------------------------------------


@dataclass
class FinetuneConfig:
    """One fine-tuning run. The loop trains `max_steps` optimiser steps of
    `batch_size * grad_accum` examples unless early stopping or `max_time_s` ends it sooner."""

    out_dir: str = ""
    max_steps: int = 100
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    eval_interval: int = 25  # optimiser steps between evaluations
    eval_at_start: bool = True  # score the model before it learns anything
    metric: str = "loss"  # the evaluation key that picks the best weights and stops early
    mode: str = "min"  # "min" for a loss, "max" for accuracy / F1
    patience: int = 0  # evaluations without improvement before stopping; 0 = never
    min_delta: float = 0.0
    max_time_s: float = 0.0  # > 0: stop after this much training time (figures then vary)
    stop_after: int = 0  # > 0: stop after this step as if interrupted (the schedule stays)
    seed: int = 0
    dtype: str = "auto"  # auto: bfloat16 autocast on CUDA, float32 elsewhere
    save_checkpoints: bool = True
    resume: str = ""
    log_interval: int = 10
    progress: bool = True
    # > 1: batches of similar length, sorted within runs of this many batches (`batch_indices`);
    # `finetune` then needs each example's length
    group_by_length: int = 0

    def check(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "eval_interval", "log_interval"):
            if getattr(self, name) <= 0:
                raise LLMLabError(f"{name} must be positive, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LLMLabError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise LLMLabError(f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.mode not in ("min", "max"):
            raise LLMLabError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.patience < 0 or self.warmup_steps < 0:
            raise LLMLabError("patience and warmup_steps must be >= 0")


def batch_indices(
    n: int,
    batch_size: int,
    seed: int,
    batch_number: int,
    lengths: Sequence[int] | None = None,
    group_size: int = 0,
) -> list[int]:
    """Example indices of global batch `batch_number`: epochs are seeded permutations of
    range(n), cut into batches (the last one of an epoch may be short). A pure function of
    its arguments, so a resumed run sees exactly the batches the uninterrupted one would.

    With `lengths` and `group_size` > 1 (Hugging Face Trainer's `group_by_length`), each run
    of `group_size` batches of the permutation is sorted by length before it is cut, and
    those batches are then shuffled: a batch holds texts of similar length and pads little,
    while the set of examples seen after every `group_size` batches is unchanged.
    """
    per_epoch = math.ceil(n / batch_size)
    epoch, k = divmod(batch_number, per_epoch)
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=gen)
    if lengths is None or group_size <= 1:
        return order[k * batch_size : (k + 1) * batch_size].tolist()
    if len(lengths) != n:
        raise LLMLabError(f"batch_indices: {len(lengths)} lengths for {n} examples")
    group, j = divmod(k, group_size)
    chunk = order[group * group_size * batch_size : (group + 1) * group_size * batch_size].tolist()
    chunk.sort(key=lambda i: -lengths[i])  # stable: ties keep the permutation's order
    batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    gen.manual_seed((seed * 100_003 + epoch) * 10_007 + group + 1)
    shuffle = torch.randperm(len(batches), generator=gen)
    return batches[int(shuffle[j])]


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype != "bfloat16":
        raise LLMLabError(f"dtype must be auto, float32 or bfloat16, got {dtype!r}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def save_trainable(
    directory: Path | str,
    model: nn.Module,
    meta: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write the trainable parameters (`model.safetensors`), `meta` as `config.json` (how to
    rebuild the model: base, strategy, options) and the training state, atomically."""
    return save_model_dir(directory, TrainableView(model), meta, training_state)


def load_trainable(
    directory: Path | str, model: nn.Module, map_location: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """Load `save_trainable`'s weights into `model` (prepared with the same strategy)."""
    return load_model_dir(directory, TrainableView(model), map_location)


def finetune(
    model: nn.Module,
    train_set: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    cfg: FinetuneConfig,
    evaluate: Callable[[nn.Module], dict[str, Any]] | None = None,
    loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] = hf_loss,
    meta: dict[str, Any] | None = None,
    writer: Any | None = None,
    lengths: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train the parameters of `model` that require grad; return the run's summary.

    `train_set[i]` are examples, `collate(list_of_examples)` makes a batch dict,
    `loss_fn(model, batch)` a scalar loss. `evaluate(model)` returns metrics (floats, plus
    anything else, which is passed through); the one named `cfg.metric` selects the best
    weights, which are restored at the end. `meta` describes the run in checkpoints and must
    match on resume. The model stays on the device the caller put it on. `lengths[i]`, the
    length of example i, is needed with `cfg.group_by_length`.
    """
    cfg.check()
    if cfg.group_by_length > 1 and (lengths is None or len(lengths) != len(train_set)):
        raise LLMLabError("group_by_length needs `lengths`: one length per training example")
    if not train_set:
        raise LLMLabError("the training set is empty")
    device = next(model.parameters()).device
    view = TrainableView(model)
    if not list(view.parameters()):
        raise LLMLabError("no parameter requires grad: call set_trainable(model, strategy) first")
    optimizer = configure_adamw(
        model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device.type
    )
    # patience 0: never stop; the stopper still tracks (and keeps a copy of) the best weights.
    stopper = EarlyStopping(cfg.patience or 10**9, cfg.min_delta, cfg.mode)
    autocast = _autocast(device, cfg.dtype)
    meta = dict(meta or {})
    out = Path(cfg.out_dir) if cfg.out_dir else None
    evals: list[dict[str, Any]] = []
    history: dict[str, list[float]] = {"step": [], "loss": [], "lr": []}
    step = 0
    if cfg.resume:
        resume = Path(cfg.resume)
        saved_meta = read_config(resume)
        if saved_meta != json.loads(json.dumps(meta)):
            raise LLMLabError(
                f"{resume} was written by another setup (saved {saved_meta}, now {meta}): "
                "resume with the same model, strategy and options"
            )
        state = load_trainable(resume, model, device)
        if not state:
            raise LLMLabError(f"{resume} holds weights only (no training.pt): it cannot resume")
        optimizer.load_state_dict(state["optimizer"])
        stopper.load_state_dict(state["stopper"], view)
        best_file = resume.parent / "best" / "model.safetensors"
        if best_file.is_file():  # the best weights so far, for the final restore
            from safetensors.torch import load_file

            stopper.best_state = load_file(str(best_file))
        step, evals, history = int(state["step"]), state["evals"], state["history"]
        torch.set_rng_state(state["rng"])
        print(f"resumed from {resume} at step {step}")

    def log(tag: str, value: float, at: int) -> None:
        if writer is not None:
            writer.add_scalar(tag, value, at)

    def save(name: str) -> None:
        if out is None or not cfg.save_checkpoints:
            return
        state = {
            "optimizer": optimizer.state_dict(),
            "stopper": stopper.state_dict(),
            "step": step,
            "evals": evals,
            "history": history,
            "rng": torch.get_rng_state(),
            "finetune_config": asdict(cfg),
        }
        save_trainable(out / "checkpoints" / name, model, meta, state)

    def run_eval() -> bool:
        """Evaluate, track the best weights, save; True when early stopping says stop."""
        metrics = evaluate(model)
        if cfg.metric not in metrics:
            raise LLMLabError(
                f"the evaluation returned no {cfg.metric!r} (it has {sorted(metrics)})"
            )
        scalars = _scalars(metrics)
        record = {"step": step, "examples": step * cfg.batch_size * cfg.grad_accum, **scalars}
        evals.append(record)
        for tag, value in scalars.items():
            log(f"eval/{tag}", value, step)
        stop = stopper.step(scalars[cfg.metric], view)
        best = stopper.best_epoch == stopper.epoch
        tqdm.write(
            f"step {step}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items())
            + ("  *best" if best else "")
        )
        if best:
            save("best")
        save("last")
        return stop and cfg.patience > 0

    n = len(train_set)
    per_step = cfg.batch_size * cfg.grad_accum
    end = min(cfg.max_steps, cfg.stop_after) if cfg.stop_after > 0 else cfg.max_steps
    bar = tqdm(total=cfg.max_steps, initial=step, desc="fine-tune", disable=not cfg.progress)
    train_seconds, stopped_early, out_of_time = 0.0, False, False
    last_loss = float("nan")
    model.train()
    try:
        if evaluate is not None and step == 0 and cfg.eval_at_start and not evals:
            run_eval()
        while step < end:
            t0 = time.perf_counter()
            lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            total = torch.zeros((), device=device)
            for micro in range(cfg.grad_accum):
                idx = batch_indices(
                    n, cfg.batch_size, cfg.seed, step * cfg.grad_accum + micro,
                    lengths, cfg.group_by_length,
                )  # fmt: skip
                batch = _to(collate([train_set[i] for i in idx]), device)
                with autocast:
                    loss = loss_fn(model, batch)
                (loss / cfg.grad_accum).backward()
                total += loss.detach()
            last_loss = float(total) / cfg.grad_accum
            if not math.isfinite(last_loss):
                raise LLMLabError(
                    f"the loss became {last_loss} at step {step}: lower the learning rate "
                    "(the last good checkpoint is kept)"
                )
            norm = nn.utils.clip_grad_norm_(
                view.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            train_seconds += time.perf_counter() - t0
            bar.update(1)
            history["step"].append(step)
            history["loss"].append(last_loss)
            history["lr"].append(lr)
            if step % cfg.log_interval == 0:
                bar.set_postfix(loss=f"{last_loss:.4f}")
                log("train/loss", last_loss, step)
                log("train/lr", lr, step)
                log("train/grad_norm", float(norm), step)
                log("train/examples_per_s", step * per_step / max(train_seconds, 1e-9), step)
            out_of_time = cfg.max_time_s > 0 and train_seconds >= cfg.max_time_s
            due = step % cfg.eval_interval == 0 or step == cfg.max_steps or out_of_time
            if evaluate is not None and due and run_eval():
                stopped_early = True
                break
            if out_of_time:
                break
    except KeyboardInterrupt:
        bar.close()
        save("last")
        print(f"\ninterrupted at step {step}; continue with resume={out}/checkpoints/last")
        raise
    bar.close()
    if evaluate is None or step < cfg.max_steps and not (stopped_early or out_of_time):
        save("last")  # finished without evaluations, or paused by stop_after: resumable
    elif stopper.best_state is not None:
        stopper.restore(view)  # the summary describes the best weights, not the last ones
    best = next((e for e in evals if e["step"] == _best_step(evals, stopper)), None)
    return {
        "steps": step,
        "examples_seen": step * per_step,
        "train_seconds": train_seconds,
        "examples_per_s": step * per_step / max(train_seconds, 1e-9),
        "final_train_loss": last_loss,
        "stopped_early": stopped_early,
        "out_of_time": out_of_time,
        "best_step": best["step"] if best else step,
        "best": best,
        "evals": evals,
        "history": history,
        **count_parameters(model),
    }


def _best_step(evals: list[dict[str, Any]], stopper: EarlyStopping) -> int:
    """The step of the stopper's best evaluation (its epochs count evaluations, from 1)."""
    if not evals or stopper.best_epoch == 0:
        return -1
    return evals[stopper.best_epoch - 1]["step"]
