"""Optimisers and learning-rate schedules for language-model training (sprint 09).

- `decay_groups` / `configure_adamw`: AdamW with weight decay on the matrices of linear
  layers only, none on biases, norms and embeddings (the token embedding and an LM head,
  tied or not, count as embeddings); the fused kernel on CUDA.
- `newton_schulz`: the quintic Newton-Schulz iteration that maps a matrix (or a batch of
  them) to roughly the nearest orthogonal one, U S V^T -> U S' V^T with S' ~ 1; for wide
  blocks in fp32 its Gram form (`use_gram_iteration`: the same result, 44 % fewer products
  for 128 x 512 blocks); Keller Jordan's coefficients or Polar Express's (`ns_coefficients`);
  `fast_ns_dtype`: bf16 where the hardware has it, fp32 on CPUs that would emulate it.
- `MuonAdamW` / `muon_groups` / `configure_muon`: Muon (momentum, then orthogonalise the
  update; Keller Jordan 2024, modded-nanoGPT, nanochat) for the hidden matrices of the
  blocks, and AdamW for embeddings, the LM head, norms and biases, in ONE optimiser (one
  state dict to checkpoint). Same-shaped matrices are orthogonalised as one batch, and a
  fused QKV matrix as its three square parts. Equal to `torch.optim.Muon` and
  `torch.optim.AdamW` on their groups (tests/test_optim.py).
- `lr_at`: linear warmup, then cosine decay to a floor (GPT-2/3), or warmup-stable-decay
  (`schedule="wsd"`: flat at the peak, then a linear decay over the last steps; the
  "trapezoid" of modded-nanoGPT and nanochat).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from llmlab.errors import LLMLabError


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters into decayed (matrices of linear layers) and not decayed (the rest).

    Decay pulls weights toward zero; that regularises the matrices that mix features, but on
    biases, LayerNorm gains and embedding rows it only fights the model (a LayerNorm gain of 0
    switches a feature off; a rare token's embedding would shrink between its rare updates).
    """
    embedding_params = _embedding_ids(model)
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():  # parameters() yields a tied tensor once
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in embedding_params else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _embedding_ids(model: nn.Module) -> set[int]:
    """The token/position embeddings and the LM head (the output embedding), tied or not."""
    ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Linear):
        ids.add(id(head.weight))
    return ids


def configure_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    device_type: str = "cpu",
) -> torch.optim.AdamW:
    """AdamW over `decay_groups`, using the fused kernel on CUDA (one launch for all params)."""
    fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    # Fused: one kernel for all parameters on CUDA. Elsewhere `foreach` still batches the
    # per-parameter updates into a few multi-tensor ops (PyTorch enables it only on CUDA).
    extra = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr, betas=betas, **extra)


SCHEDULES = ("cosine", "wsd")


def lr_at(
    step: int,
    max_lr: float,
    warmup_steps: int,
    max_steps: int,
    min_lr: float,
    schedule: str = "cosine",
    decay_steps: int = 0,
) -> float:
    """Learning rate at `step`: linear warmup to `max_lr`, then decay to `min_lr`.

    Warmup keeps the first updates small while Adam's second-moment estimates are still
    noisy. `schedule="cosine"` then anneals along half a cosine until `max_steps`;
    `schedule="wsd"` (warmup-stable-decay) stays at `max_lr` and decays linearly over the
    last `decay_steps` steps only, so most of the run trains at the peak rate and the decay
    still ends in a minimum.
    """
    if max_steps <= 0:
        raise LLMLabError(f"max_steps must be positive, got {max_steps}")
    if schedule not in SCHEDULES:
        raise LLMLabError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    if schedule == "wsd":
        decay_start = max(warmup_steps, max_steps - decay_steps)
        if step < decay_start:
            return max_lr
        progress = (step - decay_start) / max(1, max_steps - decay_start)
        return max_lr + progress * (min_lr - max_lr)
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


# --- Muon ------------------------------------------------------------------------------------

# The quintic's coefficients from Keller Jordan's Muon (also torch.optim.Muon's defaults):
# chosen for the steepest slope at 0, so small singular values grow fast in 5 steps.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# Polar Express (Amsel, Persson, Musco & Gower 2025; modded-nanoGPT's and nanochat's Muon):
# one quintic per step, each the best for the range of singular values that the previous
# steps leave, for 5 steps and a norm inflated by 2 % (the "safety factor"). They end near
# 1 where Jordan's settle anywhere in (0.7, 1.2).
POLAR_EXPRESS_COEFFICIENTS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
NS_SCHEDULES = ("jordan", "polar_express")


def ns_coefficients(schedule: str, steps: int) -> list[tuple[float, float, float]]:
    """The (a, b, c) of each of `steps` Newton-Schulz steps: Jordan's quintic every time, or
    Polar Express's first `steps` (tuned for 5; fewer is allowed, more is not)."""
    if schedule == "jordan":
        return [NS_COEFFICIENTS] * steps
    if schedule != "polar_express":
        raise LLMLabError(f"Newton-Schulz schedule must be one of {NS_SCHEDULES}, got {schedule!r}")
    if steps > len(POLAR_EXPRESS_COEFFICIENTS):
        raise LLMLabError(f"Polar Express has coefficients for at most 5 steps, got {steps}")
    return list(POLAR_EXPRESS_COEFFICIENTS[:steps])


def newton_schulz(
    g: torch.Tensor,
    steps: int = 5,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.bfloat16,
    gram: bool | None = None,
    schedule: str = "jordan",
) -> torch.Tensor:
    """Orthogonalise the last two dimensions of `g`: U S V^T -> about U V^T (batched).

    Each step applies the odd polynomial X <- a X + b (X X^T) X + c (X X^T)^2 X, which acts
    on every singular value alone, s <- a s + b s^3 + c s^5, and pushes all of them (after
    the division by the Frobenius norm they lie in (0, 1]) towards ~1 (0.7-1.2: close is good
    enough). Wide matrices keep X X^T small: tall ones are transposed first.

    `gram`: iterate on the small Gram matrix instead of X (`_gram_newton_schulz`: the same
    result, fewer products for wide matrices); None picks it where it saves work
    (`use_gram_iteration`). `schedule`: "jordan" (the coefficients above at every step) or
    "polar_express" (`POLAR_EXPRESS_COEFFICIENTS`, one triple per step, after dividing by
    1.02 times the norm).
    """
    coefficients = ns_coefficients(schedule, steps)
    x = g.to(dtype)
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    batch_shape = x.shape[:-2]
    x = x.reshape(-1, *x.shape[-2:])  # (batch, rows <= cols)
    safety = 1.02 if schedule == "polar_express" else 1.0  # Polar Express's 2 % margin
    x = x / (safety * x.norm(dim=(-2, -1), keepdim=True)).clamp(min=eps)
    if gram is None:
        gram = use_gram_iteration(*x.shape[-2:], steps, dtype)
    if gram:
        x = _gram_newton_schulz(x, coefficients)
    else:
        for a, b, c in coefficients:
            xxt = x @ x.mT
            poly = torch.baddbmm(xxt, xxt, xxt, beta=b, alpha=c)  # b A + c A^2, A = X X^T
            x = torch.baddbmm(x, poly, x, beta=a)  # a X + (b A + c A^2) X
    x = x.reshape(*batch_shape, *x.shape[-2:])
    if tall:
        x = x.mT
    return x.to(g.dtype)


def use_gram_iteration(rows: int, cols: int, steps: int, dtype: torch.dtype) -> bool:
    """Whether `_gram_newton_schulz` needs fewer multiply-adds than the plain iteration for a
    wide (rows <= cols) block, in a precision where it is safe.

    The plain iteration costs steps x (2 m^2 n + m^3) for an m x n block; the Gram one
    2 m^2 n + (4 steps - 3) m^3, so it wins once n > 1.5 m: the default model's 128 x 512
    MLP blocks take 44 % fewer products, its square attention blocks none. Only in fp32 or
    fp64: in bf16 the Gram form drifts (spurious negative eigenvalues; Dao AI Lab's version
    restarts it midway), and bf16 is what fast hardware uses (`fast_ns_dtype`)."""
    if dtype not in (torch.float32, torch.float64) or steps < 2:
        return False
    m, n = min(rows, cols), max(rows, cols)
    return steps * (2 * m * m * n + m**3) > 2 * m * m * n + (4 * steps - 3) * m**3


def _gram_newton_schulz(
    x: torch.Tensor, coefficients: list[tuple[float, float, float]]
) -> torch.Tensor:
    """Newton-Schulz on (batch, m, n) wide, normalised blocks, iterating on m x m matrices.

    Gram Newton-Schulz (Dao AI Lab, 2026): every iterate is X_k = Q_k X_0 with Q_k a
    polynomial in R = X_0 X_0^T, and so is A_k = X_k X_k^T. With M_k = a I + b A_k + c A_k^2
    (symmetric, and it commutes with A_k): Q_{k+1} = M_k Q_k and A_{k+1} = M_k A_k M_k. Only
    the first product (R) and the last (Q X_0) touch the wide X; the iterations in between
    cost m^3 each instead of ~2 m^2 n.
    """
    gram = x @ x.mT  # A_0 = R
    q, steps = None, len(coefficients)
    for i, (a, b, c) in enumerate(coefficients):
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        poly.diagonal(dim1=-2, dim2=-1).add_(a)  # M = a I + b A + c A^2
        q = poly if q is None else poly @ q
        if i < steps - 1:  # the last A is never used
            gram = poly @ gram @ poly
    return q @ x


def fast_ns_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the hardware multiplies it natively (CUDA; a CPU with AVX512-BF16 or
    AMX), float32 elsewhere. Keller Jordan's Muon runs Newton-Schulz in bf16 because it is
    faster on a GPU; a CPU with only AVX2 emulates bf16 products, and on the 2-core AMD EPYC
    of sprint 09's notes the default model's orthogonalisation took 601 ms per step in bf16
    against 29 ms in fp32, while on an AVX512-BF16 CPU bf16 was 3.4x faster than fp32."""
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


@functools.cache  # the CPU does not change: ask once, not at every optimiser step
def _cpu_has_native_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the groups with `use_muon=True`, AdamW for the others, as one optimiser.

    Muon group keys: `lr`, `momentum`, `nesterov`, `ns_steps`, `ns_schedule` ("jordan" or
    "polar_express": `newton_schulz`'s coefficients), `weight_decay`, and `split`
    (per parameter, via `muon_groups`: a fused QKV matrix is orthogonalised as 3 blocks).
    AdamW group keys: `lr`, `betas`, `eps`, `weight_decay`. Every group also keeps its
    `peak_lr`, which a schedule scales (`lm_training` sets `lr = peak_lr * factor`).

    Muon's step for a matrix W with gradient G (momentum mu, Nesterov):
    B <- mu B + (1 - mu) G;  U = NS((1 - mu) G + mu B);
    W <- W (1 - lr wd) - lr sqrt(max(1, rows/cols)) U.
    The update has every singular value ~1: it moves all directions of the matrix at the same
    rate, rare ones included, where Adam's element-wise step follows the gradient's few
    dominant directions. That is why it trains hidden matrices faster per step.
    """

    def __init__(
        self,
        param_groups: list[dict[str, Any]],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_dtype: torch.dtype | None = None,
        ns_schedule: str = "jordan",
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
            ns_schedule=ns_schedule, betas=betas,
            eps=eps, weight_decay=weight_decay, use_muon=False, split=None,
        )  # fmt: skip
        super().__init__(param_groups, defaults)
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            group.setdefault("peak_lr", group["lr"])
            if group["use_muon"]:
                ns_coefficients(group["ns_schedule"], group["ns_steps"])  # fail early
                split = group["split"] or [1] * len(group["params"])
                if len(split) != len(group["params"]):
                    raise LLMLabError("MuonAdamW: give one `split` value per Muon parameter")
                for p, n in zip(group["params"], split, strict=True):
                    if p.dim() != 2 or p.shape[0] % n:
                        raise LLMLabError(
                            f"Muon needs 2-D matrices whose rows split into {n} blocks, got "
                            f"{tuple(p.shape)}: put embeddings, norms and biases in AdamW groups"
                        )
                group["split"] = list(split)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon(group)
            else:
                self._adamw(group)
        return loss

    def ns_dtype_for(self, x: torch.Tensor) -> torch.dtype:
        """Newton-Schulz precision: `ns_dtype` if given, else `fast_ns_dtype(x.device)`."""
        return self.ns_dtype if self.ns_dtype is not None else fast_ns_dtype(x.device)

    def _muon(self, group: dict[str, Any]) -> None:
        mu, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
        # Momentum first, per matrix; then orthogonalise all same-shaped blocks in one batch
        # (a few bigger matrix products instead of many small ones: faster on a CPU).
        by_shape: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor, bool]]] = (
            defaultdict(list)
        )
        for p, n in zip(group["params"], group["split"], strict=True):
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - mu)
            update = p.grad.lerp(buf, mu) if group["nesterov"] else buf
            blocks = update.view(n, p.shape[0] // n, p.shape[1])
            tall = blocks.shape[1] > blocks.shape[2]  # transposed, it batches with wide ones
            if tall:
                blocks = blocks.mT
            by_shape[(blocks.shape[1], blocks.shape[2])].append((p, blocks, tall))
        for items in by_shape.values():
            stacked = torch.cat([blocks for _, blocks, _ in items])
            ortho = newton_schulz(stacked, group["ns_steps"], dtype=self.ns_dtype_for(stacked),
                                  schedule=group["ns_schedule"])  # fmt: skip
            for (p, _, tall), out in zip(
                items, ortho.split([blocks.shape[0] for _, blocks, _ in items]), strict=True
            ):
                if tall:
                    out = out.mT
                # Keller Jordan's scale: a tall block (more outputs than inputs) moves more.
                scale = math.sqrt(max(1.0, out.shape[1] / out.shape[2]))
                p.mul_(1 - lr * wd)
                p.add_(out.reshape(p.shape), alpha=-lr * scale)

    def _adamw(self, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        beta1, beta2 = group["betas"]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        exp_avg = [s["exp_avg"] for s in states]
        exp_avg_sq = [s["exp_avg_sq"] for s in states]
        for s in states:
            s["step"] += 1
        t = float(states[0]["step"])  # every parameter of a group steps together
        if wd:
            torch._foreach_mul_(params, 1 - lr * wd)  # decoupled weight decay (the W in AdamW)
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        # m / (1 - b1^t) over sqrt(v / (1 - b2^t)) + eps: the bias-corrected Adam step
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1 - beta2**t))
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, value=-lr / (1 - beta1**t))


def muon_groups(
    model: nn.Module, muon_lr: float, adam_lr: float, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Param groups for `MuonAdamW`: the hidden matrices (2-D weights of the blocks' Linear
    layers) go to Muon, with `weight_decay`; embeddings, the LM head, norms and biases go to
    AdamW without decay. A fused QKV projection (a Linear named `c_attn`, as in our
    `CausalSelfAttention` and nanoGPT's blocks) is marked to split into 3 blocks.
    """
    fused = {
        id(m.c_attn.weight)
        for m in model.modules()
        if isinstance(getattr(m, "c_attn", None), nn.Linear)
    }
    embeddings = _embedding_ids(model)
    linears = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    muon, split, adam, seen = [], [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.dim() == 2 and id(p) in linears and id(p) not in embeddings:
            muon.append(p)
            split.append(3 if id(p) in fused else 1)
        else:
            adam.append(p)
    return [
        {"params": muon, "use_muon": True, "lr": muon_lr, "weight_decay": weight_decay,
         "split": split},
        {"params": adam, "use_muon": False, "lr": adam_lr, "weight_decay": 0.0},
    ]  # fmt: skip


def configure_muon(
    model: nn.Module,
    muon_lr: float,
    adam_lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.95,
    betas: tuple[float, float] = (0.9, 0.95),
    ns_steps: int = 5,
    ns_schedule: str = "jordan",
) -> MuonAdamW:
    """`MuonAdamW` over `muon_groups(model)`."""
    groups = muon_groups(model, muon_lr, adam_lr, weight_decay)
    return MuonAdamW(groups, momentum=momentum, betas=betas, ns_steps=ns_steps,
                     ns_schedule=ns_schedule)  # fmt: skip
