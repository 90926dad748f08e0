"""Sprint 09 optimiser pieces: AdamW decay groups and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llmlab.errors import LLMLabError
from llmlab.gpt import GPT, GPTConfig
from llmlab.optim import configure_adamw, decay_groups, lr_at


def tiny_gpt(bias: bool = True, pos_encoding: str = "learned") -> GPT:
    torch.manual_seed(0)
    return GPT(
        GPTConfig(
            vocab_size=23,
            block_size=8,
            n_layer=2,
            n_head=2,
            n_embd=16,
            bias=bias,
            pos_encoding=pos_encoding,
        )
    )


def ids(params) -> list[int]:
    return [id(p) for p in params]


# --- decay_groups ---------------------------------------------------------------------------


@pytest.mark.parametrize("bias,pos", [(True, "learned"), (False, "sinusoidal")])
def test_every_trainable_parameter_is_in_exactly_one_group(bias: bool, pos: str) -> None:
    model = tiny_gpt(bias, pos)
    decay, no_decay = decay_groups(model, 0.1)
    grouped = ids(decay["params"]) + ids(no_decay["params"])
    assert len(grouped) == len(set(grouped))  # nothing twice
    assert set(grouped) == {id(p) for p in model.parameters()}  # nothing missing
    # Same number of elements as the model: the tied wte/lm_head matrix is counted once.
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == model.num_parameters()
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_tied_embedding_appears_once_and_is_not_decayed() -> None:
    model = tiny_gpt()
    assert model.lm_head.weight is model.wte.weight
    decay, no_decay = decay_groups(model, 0.1)
    everything = decay["params"] + no_decay["params"]
    assert sum(p is model.wte.weight for p in everything) == 1
    assert any(p is model.wte.weight for p in no_decay["params"])


def test_linear_matrices_decay_and_the_rest_does_not() -> None:
    model = tiny_gpt(bias=True)
    decay, no_decay = decay_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in decay["params"])
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    # Decay: exactly the weight matrices of the Linear layers in the blocks (4 per block);
    # lm_head is a Linear too, but its weight IS the token embedding.
    linear_weights = sorted(
        f"{m_name}.weight"
        for m_name, m in model.named_modules()
        if isinstance(m, nn.Linear) and m is not model.lm_head
    )
    assert decayed == linear_weights and len(decayed) == 4 * model.config.n_layer
    assert all(p.dim() == 2 for p in decay["params"])
    # No decay: every bias, every LayerNorm gain and both embeddings.
    assert {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"} <= not_decayed
    assert all(n.endswith(".bias") or "ln_" in n or n.startswith("w") for n in not_decayed)
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    layer_norms = {
        f"{m_name}.weight" for m_name, m in model.named_modules() if isinstance(m, nn.LayerNorm)
    }
    assert biases | layer_norms <= not_decayed
    assert all(
        p.dim() < 2 or names[id(p)] in ("wte.weight", "wpe.weight") for p in no_decay["params"]
    )


def test_frozen_parameters_are_left_out() -> None:
    model = tiny_gpt()
    model.wpe.weight.requires_grad_(False)
    decay, no_decay = decay_groups(model, 0.1)
    grouped = set(ids(decay["params"]) + ids(no_decay["params"]))
    assert id(model.wpe.weight) not in grouped
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


# --- configure_adamw -------------------------------------------------------------------------


def test_configure_adamw_returns_adamw_over_the_decay_groups() -> None:
    model = tiny_gpt()
    opt = configure_adamw(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    assert type(opt) is torch.optim.AdamW
    expected = decay_groups(model, 0.05)
    assert len(opt.param_groups) == 2
    for group, want in zip(opt.param_groups, expected, strict=True):
        assert ids(group["params"]) == ids(want["params"])
        assert group["weight_decay"] == want["weight_decay"]
        assert group["lr"] == 1e-3 and group["betas"] == (0.9, 0.95)
    assert not opt.defaults.get("fused")  # the fused kernel is for CUDA only


def test_fused_adamw_on_cuda_takes_the_same_step() -> None:
    """`device_type="cuda"` asks for the fused kernel (this PyTorch also has it on the CPU, so
    the request can be checked here): one kernel for all tensors, the same update maths."""
    plain_model, fused_model = tiny_gpt(), tiny_gpt()
    plain = configure_adamw(plain_model, lr=1e-2, weight_decay=0.1)
    fused = configure_adamw(fused_model, lr=1e-2, weight_decay=0.1, device_type="cuda")
    assert fused.defaults["fused"] is True
    x = torch.randint(0, 23, (2, 8))
    for model, opt in ((plain_model, plain), (fused_model, fused)):
        for _ in range(3):
            model(x, x)[1].backward()
            opt.step()
            opt.zero_grad()
    # Three steps of lr 1e-2 move weights by ~3e-2; the kernels agree to 1e-4 (elements whose
    # gradient is ~0 amplify rounding differences through m / sqrt(v)).
    start = tiny_gpt()
    for p, q, p0 in zip(
        plain_model.parameters(), fused_model.parameters(), start.parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-4)
        assert (p - p0).abs().max() > 1e-3  # and it did move


def test_adamw_step_decays_matrices_but_not_embeddings_norms_or_biases() -> None:
    """With zero gradients Adam's update is 0, so only decoupled weight decay moves a weight:
    p <- p * (1 - lr * wd) in the decay group, p unchanged in the other."""
    model = tiny_gpt()
    lr, wd = 0.1, 0.5
    opt = configure_adamw(model, lr=lr, weight_decay=wd)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    for name, p in model.named_parameters():
        if id(p) in decayed:
            torch.testing.assert_close(p.detach(), before[name] * (1 - lr * wd))
            assert p.detach().norm() < before[name].norm()
        else:
            assert torch.equal(p.detach(), before[name]), name
    # The tied embedding (= the LM head) did not move.
    assert torch.equal(model.lm_head.weight.detach(), before["wte.weight"])


# --- lr_at -----------------------------------------------------------------------------------

MAX_LR, MIN_LR, WARMUP, MAX_STEPS = 6e-4, 6e-5, 10, 110


def lr(step: int) -> float:
    return lr_at(step, MAX_LR, WARMUP, MAX_STEPS, MIN_LR)


def test_warmup_is_linear_and_peaks_at_its_end() -> None:
    warm = [lr(s) for s in range(WARMUP)]
    assert warm == pytest.approx([MAX_LR * (s + 1) / WARMUP for s in range(WARMUP)], rel=1e-12)
    steps = [b - a for a, b in zip(warm, warm[1:], strict=False)]
    assert steps == pytest.approx([MAX_LR / WARMUP] * (WARMUP - 1), rel=1e-9)  # equal increments
    assert warm[0] > 0  # step 0 already trains
    assert lr(WARMUP - 1) == pytest.approx(MAX_LR, rel=1e-12)  # the last warmup step hits the peak
    assert lr(WARMUP) == pytest.approx(MAX_LR, rel=1e-12)  # and the cosine starts there
    assert max(lr(s) for s in range(MAX_STEPS + 5)) == pytest.approx(MAX_LR, rel=1e-12)


def test_cosine_decays_monotonically_to_min_lr() -> None:
    decay = [lr(s) for s in range(WARMUP, MAX_STEPS + 1)]
    assert all(b < a for a, b in zip(decay, decay[1:], strict=False))  # strictly decreasing
    assert lr(MAX_STEPS - 1) > MIN_LR
    assert lr(MAX_STEPS) == MIN_LR
    assert [lr(s) for s in (MAX_STEPS + 1, 2 * MAX_STEPS, 10**6)] == [MIN_LR] * 3


def test_cosine_midpoint_is_the_mean_of_max_and_min() -> None:
    mid = WARMUP + (MAX_STEPS - WARMUP) // 2
    assert (MAX_STEPS - WARMUP) % 2 == 0
    assert lr(mid) == pytest.approx((MAX_LR + MIN_LR) / 2, rel=1e-12)
    # and the cosine is symmetric around it
    for k in (1, 7, 30):
        assert lr(mid - k) - lr(mid) == pytest.approx(lr(mid) - lr(mid + k), rel=1e-9)


def test_matches_pytorch_linear_then_cosine_schedulers() -> None:
    """Parity with the reference: LinearLR for the warmup, then CosineAnnealingLR."""
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=MAX_LR)
    warmup = torch.optim.lr_scheduler.LinearLR(
        opt, start_factor=1 / WARMUP, end_factor=1.0, total_iters=WARMUP - 1
    )
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=MAX_STEPS - WARMUP, eta_min=MIN_LR
    )
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[WARMUP])
    reference = []
    for _ in range(MAX_STEPS + 1):
        reference.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [lr(s) for s in range(MAX_STEPS + 1)] == pytest.approx(reference, rel=1e-6)


def test_no_warmup_starts_at_the_peak() -> None:
    assert lr_at(0, 1.0, 0, 100, 0.1) == 1.0
    assert lr_at(50, 1.0, 0, 100, 0.1) == pytest.approx(0.55)
    assert lr_at(100, 1.0, 0, 100, 0.1) == 0.1


def test_bad_max_steps_is_an_llmlab_error() -> None:
    with pytest.raises(LLMLabError, match="max_steps"):
        lr_at(0, 1e-3, 10, 0, 1e-4)
    assert math.isfinite(lr_at(5, 1e-3, 10, 1, 1e-4))  # warmup longer than the run: still defined
