"""Sprint 09 optimiser pieces: AdamW decay groups, warmup + cosine and warmup-stable-decay
schedules, Newton-Schulz, and Muon + AdamW (parity with torch.optim.Muon / AdamW)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llmlab.errors import LLMLabError
from llmlab.gpt import GPT, GPTConfig
from llmlab.optim import (
    POLAR_EXPRESS_COEFFICIENTS,
    MuonAdamW,
    configure_adamw,
    configure_muon,
    decay_groups,
    lr_at,
    muon_groups,
    newton_schulz,
    ns_coefficients,
    use_gram_iteration,
)


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


# --- warmup-stable-decay ---------------------------------------------------------------------

DECAY = 40


def wsd(step: int) -> float:
    return lr_at(step, MAX_LR, WARMUP, MAX_STEPS, MIN_LR, schedule="wsd", decay_steps=DECAY)


def test_wsd_warms_up_like_cosine_then_stays_flat_then_decays_linearly() -> None:
    assert [wsd(s) for s in range(WARMUP)] == [lr(s) for s in range(WARMUP)]
    flat_end = MAX_STEPS - DECAY
    assert all(wsd(s) == MAX_LR for s in range(WARMUP, flat_end + 1))  # the stable phase
    decay = [wsd(s) for s in range(flat_end, MAX_STEPS + 1)]
    steps = [a - b for a, b in zip(decay, decay[1:], strict=False)]
    assert steps == pytest.approx([(MAX_LR - MIN_LR) / DECAY] * DECAY, rel=1e-9)  # a line
    assert wsd(flat_end + DECAY // 2) == pytest.approx((MAX_LR + MIN_LR) / 2, rel=1e-12)
    assert wsd(MAX_STEPS) == MIN_LR and wsd(10**6) == MIN_LR
    # The same number of steps spends more learning rate than the cosine: sum(lr) is larger.
    assert sum(map(wsd, range(MAX_STEPS))) > sum(map(lr, range(MAX_STEPS)))


def test_wsd_decay_never_starts_inside_the_warmup() -> None:
    # a decay longer than the run after warmup starts right after the warmup
    assert lr_at(WARMUP, 1.0, WARMUP, 50, 0.0, schedule="wsd", decay_steps=1000) == 1.0
    assert lr_at(30, 1.0, WARMUP, 50, 0.0, schedule="wsd", decay_steps=1000) == pytest.approx(0.5)
    with pytest.raises(LLMLabError, match="schedule"):
        lr_at(0, 1.0, 0, 10, 0.0, schedule="linear")


# --- Newton-Schulz and Muon ------------------------------------------------------------------


def test_newton_schulz_makes_every_singular_value_about_one() -> None:
    g = torch.randn(3, 16, 48, generator=torch.Generator().manual_seed(0))
    g[0] *= 1e3  # scale does not matter: the input is normalised first
    out = newton_schulz(g, dtype=torch.float32)
    s = torch.linalg.svdvals(out)
    # Keller Jordan's quintic trades exactness for speed: s ends in ~(0.7, 1.2), not at 1.
    assert s.min() > 0.6 and s.max() < 1.25, (s.min(), s.max())
    # same directions as the exact orthogonalisation U V^T (cosine similarity near 1)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    exact = u @ vh
    cos = (out * exact).sum((-2, -1)) / (out.norm(dim=(-2, -1)) * exact.norm(dim=(-2, -1)))
    assert cos.min() > 0.97
    # a batch is the stack of its members; a tall matrix is the transpose of the wide one
    torch.testing.assert_close(out[1], newton_schulz(g[1], dtype=torch.float32))
    torch.testing.assert_close(
        newton_schulz(g[2].T, dtype=torch.float32), out[2].T, atol=1e-6, rtol=0
    )


def test_gram_newton_schulz_is_the_same_iteration_with_fewer_products() -> None:
    """Iterating on X X^T (Gram Newton-Schulz) gives the plain iteration's result: equal to
    rounding in fp64, and in fp32 no further from the fp64 result than the plain fp32 one.
    It is chosen only where it saves products (wide blocks) and only in fp32 / fp64."""
    g = torch.randn(3, 16, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    plain = newton_schulz(g, dtype=torch.float64, gram=False)
    torch.testing.assert_close(newton_schulz(g, dtype=torch.float64, gram=True), plain,
                               atol=1e-12, rtol=0)  # fmt: skip
    err_gram = (newton_schulz(g.float(), dtype=torch.float32, gram=True) - plain).abs().max()
    err_plain = (newton_schulz(g.float(), dtype=torch.float32, gram=False) - plain).abs().max()
    assert err_gram <= 2 * err_plain + 1e-7, (err_gram, err_plain)
    # a tall block is transposed first, so it takes the Gram path too
    torch.testing.assert_close(newton_schulz(g[0].T, dtype=torch.float64, gram=True), plain[0].T,
                               atol=1e-12, rtol=0)  # fmt: skip
    # 5 steps: plain 5 (2 m^2 n + m^3), Gram 2 m^2 n + 17 m^3 multiply-adds -> n > 1.5 m
    assert use_gram_iteration(128, 512, 5, torch.float32)  # sprint 09's MLP blocks
    assert use_gram_iteration(512, 128, 5, torch.float32)
    assert not use_gram_iteration(128, 128, 5, torch.float32)  # square: no saving
    assert not use_gram_iteration(128, 192, 5, torch.float32)  # n = 1.5 m: a tie
    assert use_gram_iteration(128, 193, 5, torch.float32)
    assert not use_gram_iteration(128, 512, 5, torch.bfloat16)  # drifts in bf16
    assert not use_gram_iteration(128, 512, 1, torch.float32)


def _polar_express_transcribed(g: torch.Tensor) -> torch.Tensor:
    """modded-nanoGPT's `polar_express`, transcribed in fp32 (its bf16 cast left out)."""
    x = g.mT if g.size(-2) > g.size(-1) else g
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * (1 + 2e-2) + 1e-6)
    for a, b, c in POLAR_EXPRESS_COEFFICIENTS:
        A = x @ x.mT
        B = b * A + c * A @ A
        x = a * x + B @ x
    return x.mT if g.size(-2) > g.size(-1) else x


def test_polar_express_ends_nearer_one_than_jordans_quintic() -> None:
    """Singular values 0.01 ... 1 (log-spaced): after 5 steps Polar Express's per-step
    coefficients leave them in ~(0.86, 1.14), Jordan's fixed quintic in ~(0.68, 1.15). Both
    paths (plain and Gram) and both orientations agree with modded-nanoGPT's function."""
    gen = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(32, 32, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(96, 32, generator=gen))
    g = (u * torch.logspace(-2, 0, 32)) @ v.T  # (32, 96), known singular values
    pe = newton_schulz(g, dtype=torch.float32, schedule="polar_express")
    jordan = newton_schulz(g, dtype=torch.float32)
    s_pe, s_j = torch.linalg.svdvals(pe), torch.linalg.svdvals(jordan)
    assert s_pe.min() > 0.85 and s_pe.max() < 1.15 and abs(s_pe.mean() - 1) < 0.03, s_pe
    assert s_j.min() < 0.75 and s_j.max() > 1.1  # the fixed quintic's wider band
    for x in (g, g.T):
        torch.testing.assert_close(newton_schulz(x, dtype=torch.float32, schedule="polar_express",
                                                 gram=False), _polar_express_transcribed(x),
                                   atol=1e-5, rtol=0)  # fmt: skip
    g64 = g.double()
    torch.testing.assert_close(
        newton_schulz(g64, dtype=torch.float64, schedule="polar_express", gram=True),
        newton_schulz(g64, dtype=torch.float64, schedule="polar_express", gram=False),
        atol=1e-12, rtol=0,
    )  # fmt: skip
    assert ns_coefficients("polar_express", 3) == list(POLAR_EXPRESS_COEFFICIENTS[:3])
    with pytest.raises(LLMLabError, match="at most 5"):
        ns_coefficients("polar_express", 6)
    with pytest.raises(LLMLabError, match="schedule"):
        MuonAdamW([{"params": [nn.Parameter(torch.zeros(4, 4))], "use_muon": True}],
                  ns_schedule="cubic")  # fmt: skip


def _twin_params(shapes, seed: int = 0) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    torch.manual_seed(seed)
    a = [nn.Parameter(torch.randn(s)) for s in shapes]
    return a, [nn.Parameter(p.detach().clone()) for p in a]


def _same_grads(*param_lists, shapes, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(s, generator=gen) for s in shapes]
    for params in param_lists:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()


@pytest.mark.parametrize("ns_steps", [5, 3])
def test_muon_equals_torch_optim_muon(ns_steps: int) -> None:
    """Reference: torch.optim.Muon (Keller Jordan's algorithm: Nesterov momentum, 5 bf16
    Newton-Schulz steps, lr * sqrt(max(1, rows/cols)), decoupled weight decay). Ours batches
    the two 16 x 16 matrices and the tall/wide pair into shared Newton-Schulz calls. With 3
    Newton-Schulz steps (sprint 09's `muon_ns_steps` ablation) both still agree."""
    shapes = [(16, 16), (16, 16), (48, 16), (16, 48), (16, 64)]
    ref_params, our_params = _twin_params(shapes)
    ref = torch.optim.Muon(ref_params, lr=0.05, weight_decay=0.1, momentum=0.9, ns_steps=ns_steps)
    ours = MuonAdamW(
        [{"params": our_params, "use_muon": True, "lr": 0.05, "weight_decay": 0.1}],
        momentum=0.9,
        ns_steps=ns_steps,
        ns_dtype=torch.bfloat16,  # torch's precision (ours defaults to fp32 off CUDA)
    )
    for step in range(4):
        _same_grads(ref_params, our_params, shapes=shapes, seed=step)
        ref.step()
        ours.step()
    start = _twin_params(shapes)[0]
    with torch.no_grad():
        worst = max(float((p - q).abs().max()) for p, q in zip(ref_params, our_params, strict=True))
        moved = max(float((p - q).abs().max()) for p, q in zip(ref_params, start, strict=True))
    assert worst <= 1e-6, worst  # measured: 0.0 (the same bf16 products)
    assert moved > 0.01


def test_muon_split_orthogonalises_a_fused_qkv_matrix_as_three_blocks() -> None:
    """A (3d, d) QKV matrix with split=3 gets exactly the update that three separate (d, d)
    matrices q, k, v would get from torch.optim.Muon."""
    d = 16
    ref_params, fused = _twin_params([(d, d)] * 3)
    qkv = nn.Parameter(torch.cat([p.detach() for p in fused]))
    ref = torch.optim.Muon(ref_params, lr=0.02, weight_decay=0.0)
    ours = MuonAdamW(
        [{"params": [qkv], "use_muon": True, "lr": 0.02, "split": [3]}], ns_dtype=torch.bfloat16
    )
    for step in range(3):
        _same_grads(ref_params, shapes=[(d, d)] * 3, seed=step)
        qkv.grad = torch.cat([p.grad for p in ref_params])
        ref.step()
        ours.step()
    torch.testing.assert_close(qkv.detach(), torch.cat([p.detach() for p in ref_params]))


def test_muon_orthogonalises_in_the_precision_the_hardware_has(monkeypatch) -> None:
    """bf16 Newton-Schulz only where bf16 is native (CUDA, AVX512-BF16/AMX CPUs); an AVX2 CPU
    emulates it ~20x slower, so there it runs in fp32: one step equals the update built by
    hand from `newton_schulz(dtype=float32)` and differs a little from the bf16 one."""
    from llmlab import optim

    assert optim.fast_ns_dtype(torch.device("cuda")) == torch.bfloat16
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(optim, "_cpu_has_native_bf16", lambda native=native: native)
        assert optim.fast_ns_dtype(torch.device("cpu")) == expected
    monkeypatch.setattr(optim, "_cpu_has_native_bf16", lambda: False)
    torch.manual_seed(0)
    shape = (32, 16)
    start = torch.randn(shape)
    grad = torch.randn(shape)
    moved = {}
    for dtype in (None, torch.bfloat16):
        p = nn.Parameter(start.clone())
        p.grad = grad.clone()
        opt = MuonAdamW([{"params": [p], "use_muon": True, "lr": 0.1}], momentum=0.9,
                        ns_dtype=dtype)  # fmt: skip
        assert opt.ns_dtype_for(p) == (dtype or torch.float32)
        opt.step()
        moved[dtype] = (start - p.detach()) / 0.1
    # Nesterov momentum from a zero buffer: update = g lerp (0.1 g) at 0.9 = 0.19 g.
    expected = newton_schulz(0.19 * grad, dtype=torch.float32) * math.sqrt(32 / 16)
    torch.testing.assert_close(moved[None], expected, atol=1e-5, rtol=0)
    gap = float((moved[None] - moved[torch.bfloat16]).abs().max())
    assert 0 < gap < 0.1, gap


def test_adamw_groups_equal_torch_adamw() -> None:
    shapes = [(7, 5), (5,), (3, 4, 2)]
    ref_params, our_params = _twin_params(shapes)
    ref = torch.optim.AdamW(ref_params, lr=0.01, betas=(0.9, 0.99), weight_decay=0.1)
    ours = MuonAdamW(
        [{"params": our_params, "use_muon": False, "lr": 0.01, "weight_decay": 0.1}],
        betas=(0.9, 0.99),
    )
    for step in range(5):
        _same_grads(ref_params, our_params, shapes=shapes, seed=step)
        ref.step()
        ours.step()
    for p, q in zip(ref_params, our_params, strict=True):
        torch.testing.assert_close(q, p, atol=1e-7, rtol=0)  # measured: 0.0


def test_muon_groups_split_a_gpt_into_matrices_and_the_rest() -> None:
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True,
                  pos_encoding="rope", qk_norm=True, tie_embeddings=False)
    )  # fmt: skip
    muon, adam = muon_groups(model, muon_lr=0.02, adam_lr=3e-3, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = [names[id(p)] for p in muon["params"]]
    adam_names = {names[id(p)] for p in adam["params"]}
    assert sorted(muon_names) == sorted(
        f"h.{i}.{m}.weight"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    )
    assert dict(zip(muon_names, muon["split"], strict=True))["h.0.attn.c_attn.weight"] == 3
    assert sum(muon["split"]) == 3 * 2 + 3 * 2  # c_attn: 3 blocks, the other 3 matrices: 1
    # embeddings, the untied head, every norm (QK-norm too) and bias: AdamW, no decay
    assert {"wte.weight", "lm_head.weight", "h.0.attn.q_norm.weight", "ln_f.bias"} <= adam_names
    assert len(muon_names) + len(adam_names) == len(list(model.parameters()))
    assert (muon["weight_decay"], adam["weight_decay"]) == (0.1, 0.0)
    assert (muon["lr"], adam["lr"]) == (0.02, 3e-3)
    opt = configure_muon(model, 0.02, 3e-3)
    assert [g["peak_lr"] for g in opt.param_groups] == [0.02, 3e-3]
    assert opt.param_groups[0]["ns_steps"] == 5
    assert configure_muon(model, 0.02, 3e-3, ns_steps=3).param_groups[0]["ns_steps"] == 3
    with pytest.raises(LLMLabError, match="2-D matrices"):
        MuonAdamW([{"params": [model.ln_f.weight], "use_muon": True}])


def test_muon_trains_a_tiny_gpt_and_resumes_exactly() -> None:
    """A state dict round trip (what a checkpoint does) continues bit for bit."""

    def fresh() -> tuple[GPT, MuonAdamW]:
        model = tiny_gpt(bias=False, pos_encoding="rope")
        return model, configure_muon(model, 0.02, 1e-2)

    x = torch.randint(0, 23, (4, 8), generator=torch.Generator().manual_seed(0))

    def train(model: GPT, opt: MuonAdamW, steps: int) -> list[float]:
        losses = []
        for _ in range(steps):
            loss = model(x, x)[1]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        return losses

    model, opt = fresh()
    straight = train(model, opt, 8)
    assert straight[-1] < straight[0] - 0.5
    half, half_opt = fresh()
    train(half, half_opt, 4)
    state = {"model": half.state_dict(), "opt": half_opt.state_dict()}
    resumed, resumed_opt = fresh()
    resumed.load_state_dict(state["model"])
    resumed_opt.load_state_dict(state["opt"])
    assert train(resumed, resumed_opt, 4) == straight[4:]
