"""Training and measuring the seq2seq transformer on toy tasks (sprint 15).

Measuring (what exposure bias is, as numbers):
- `evaluate(model, batch)`: token accuracy under teacher forcing (the model reads the gold
  prefix) and free running (it reads its own greedy outputs), overall and per position,
  plus exact match (the same number in both modes for greedy decoding: a sequence is all
  right free-running exactly when every teacher-forced argmax is right).
- `injected_error_accuracy(model, batch, position)`: force ONE mistake at `position`, then
  let the model run free; the accuracy of the outputs after it shows whether the model
  computes them from the source or from its previous outputs.

Training objectives (each against plain maximum likelihood, `mle_loss`):
- `teacher_prob(schedule, step, steps, floor)`: the scheduled-sampling schedules of
  Bengio et al. (2015), linear, exponential and inverse sigmoid.
- `scheduled_sampling_loss`: the two-pass version for transformers (Mihaylova & Martins,
  2019): a teacher-forced pass predicts every position, then each gold input token is
  replaced by the model's prediction with probability 1 - p, and the loss is taken on a
  second pass over that mixed input.
- `HiddenStateDiscriminator` + `professor_forcing_losses` (Lamb et al., 2016): a GRU
  classifier tells teacher-forced decoder hidden states from free-running ones; the model
  is trained to make its free-running states indistinguishable.
- `reinforce_loss`: REINFORCE with a baseline on a sequence-level reward (token accuracy
  of a sampled output), optionally mixed with MLE (Ranzato et al., 2016, MIXER-style).

The loop:
- `Seq2SeqTrainConfig` + `train_seq2seq(cfg)`: one run of one method on one task with one
  seed (AdamW, warmup, gradient clipping, periodic evaluation, TensorBoard, tqdm); the
  batches come from the seed's stream, so every method sees the same data.
- `measure_run(cfg, test)`: train, then the figures every sprint-15 table reports;
  `mean_std(values)`: a figure over seeds as mean and sample standard deviation.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llmlab.data.seq_tasks import SeqBatch, SeqTask
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.optim import lr_at
from llmlab.seq2seq import Seq2SeqConfig, Seq2SeqTransformer

SCHEDULES = ("linear", "exponential", "inverse_sigmoid")
METHODS = (
    "mle",
    "ss_linear",
    "ss_exponential",
    "ss_inverse_sigmoid",
    "professor",
    "reinforce",
)

# --- measuring --------------------------------------------------------------------------------


def _content_mask(batch: SeqBatch) -> torch.Tensor:
    """(B, S) True at the output positions that hold a symbol (EOS and padding excluded)."""
    S = batch.src.shape[1]
    return torch.arange(S, device=batch.src.device)[None, :] < batch.lengths[:, None]


def _by_position(correct: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (correct & mask).sum(0).float() / mask.sum(0).clamp(min=1).float()


@torch.no_grad()
def evaluate(model: Seq2SeqTransformer, batch: SeqBatch) -> dict[str, Any]:
    """Teacher-forced vs free-running token accuracy (overall, per position), exact match.

    Token accuracy counts the symbol positions (not EOS); exact match needs every symbol and
    the EOS right. Free running = greedy decoding with the cached decoder.
    """
    was_training = model.training
    model.eval()
    try:
        S = batch.src.shape[1]
        mask = _content_mask(batch)
        gold = batch.tgt_out[:, :S]
        tf_pred = model(batch.src, batch.tgt_in).argmax(-1)
        fr_out = model.greedy_decode(batch.src, S + 1)
        fr_pred = torch.full_like(batch.tgt_out, model.config.pad_id)
        fr_pred[:, : fr_out.shape[1]] = fr_out
        real = batch.tgt_out != model.config.pad_id
        tf_ok, fr_ok = tf_pred[:, :S] == gold, fr_pred[:, :S] == gold
        n = mask.sum().item()
        return {
            "tf_token_acc": (tf_ok & mask).sum().item() / n,
            "fr_token_acc": (fr_ok & mask).sum().item() / n,
            "tf_exact": ((tf_pred == batch.tgt_out) | ~real).all(1).float().mean().item(),
            "fr_exact": ((fr_pred == batch.tgt_out) | ~real).all(1).float().mean().item(),
            "tf_by_position": _by_position(tf_ok, mask).tolist(),
            "fr_by_position": _by_position(fr_ok, mask).tolist(),
        }
    finally:
        model.train(was_training)


@torch.no_grad()
def injected_error_accuracy(
    model: Seq2SeqTransformer, batch: SeqBatch, position: int, seed: int = 0
) -> tuple[float, list[float]]:
    """Free-running accuracy after one forced mistake: (overall, by offset after it).

    The decoder reads the gold prefix y_1 .. y_{p-1}, then a wrong symbol in place of y_p
    (p = `position`), and then runs free: y_{p+1} .. y_n are its own greedy outputs, scored
    against the gold targets at offsets 1, 2, .. after the mistake. A model that computes
    each output from the source gets back on track at once; one that builds on its previous
    output carries the mistake to the end of the sequence.
    """
    S = batch.src.shape[1]
    if not 1 <= position < S:
        raise LLMLabError(f"the injected position must be in 1..{S - 1}, got {position}")
    keep = batch.lengths > position  # sequences with an output after the injected one
    if not keep.any():
        raise LLMLabError(f"no sequence is longer than the injected position {position}")
    src, tgt_out, lengths = batch.src[keep], batch.tgt_out[keep], batch.lengths[keep]
    prefix = batch.tgt_in[keep, : position + 1].clone()  # BOS y_1 .. y_p
    n_symbols = model.config.tgt_vocab_size - 3
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, n_symbols, (len(src),), generator=g).to(src.device)
    prefix[:, -1] = (prefix[:, -1] - 3 + shift) % n_symbols + 3  # surely a different symbol
    was_training = model.training
    model.eval()
    try:
        state = model.start_decoding(src)
        logits = model.decode_step(prefix, state)[:, -1]  # one pass over the prefix
        outputs = []
        for t in range(position, S):  # free-running predictions of y_{t+1}
            outputs.append(logits.argmax(-1))
            if t + 1 < S:
                logits = model.decode_step(outputs[-1][:, None], state)[:, -1]
    finally:
        model.train(was_training)
    pred = torch.stack(outputs, 1)
    mask = torch.arange(position, S, device=src.device)[None, :] < lengths[:, None]
    correct = (pred == tgt_out[:, position:S]) & mask
    by_offset = _by_position(correct, mask)[: int(mask.any(0).sum())]
    return correct.sum().item() / mask.sum().item(), by_offset.tolist()


# --- objectives -------------------------------------------------------------------------------


def mle_loss(model: Seq2SeqTransformer, batch: SeqBatch) -> torch.Tensor:
    """Teacher forcing: cross-entropy of every gold next token given the gold prefix."""
    return model.loss(batch.src, batch.tgt_in, batch.tgt_out)


def teacher_prob(schedule: str, step: int, steps: int, floor: float = 0.0) -> float:
    """Probability of feeding the gold token at `step` of `steps` (Bengio et al., 2015).

    linear: 1 -> floor in a straight line over the run; exponential: k^step with k chosen
    to reach the floor at the end (a small floor of 0.01 stands in for floor 0); inverse
    sigmoid: k / (k + exp(step / k)), an S-curve with k chosen so that it crosses 0.5 at
    mid-run, never below the floor.
    """
    if schedule not in SCHEDULES:
        raise LLMLabError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if not 0.0 <= floor < 1.0:
        raise LLMLabError(f"the teacher-forcing floor must be in [0, 1), got {floor}")
    if steps <= 0:
        raise LLMLabError(f"steps must be positive, got {steps}")
    t = min(max(step, 0), steps)
    if schedule == "linear":
        return 1.0 - (1.0 - floor) * t / steps
    if schedule == "exponential":
        k = max(floor, 0.01) ** (1.0 / steps)
        return max(floor, k**t)
    k = _inverse_sigmoid_k(steps / 2)
    return max(floor, k / (k + math.exp(t / k)))


def _inverse_sigmoid_k(midpoint: float) -> float:
    """k with k / (k + exp(midpoint / k)) = 1/2, i.e. k ln k = midpoint (k >= 1)."""
    lo, hi = 1.0, max(2.0, midpoint)
    for _ in range(60):  # bisection: k ln k is increasing for k >= 1
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid * math.log(mid) < midpoint else (lo, mid)
    return (lo + hi) / 2


def scheduled_sampling_loss(
    model: Seq2SeqTransformer,
    batch: SeqBatch,
    p_gold: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Two-pass scheduled sampling; returns (loss, logs).

    Pass 1 (no gradient) reads the gold prefix and predicts every position at once. Pass 2
    reads `BOS, m_1, .., m_n` where m_t is the gold y_t with probability `p_gold`, else the
    model's pass-1 prediction of y_t; the targets stay gold. With p_gold = 1 this is MLE.
    logs: `fed_back`, the fraction of inputs that were predictions; `fed_back_wrong`, the
    fraction that were predictions *and* wrong (the only ones that teach anything new).
    """
    memory, memory_mask = model.encode(batch.src)
    with torch.no_grad():
        pred = model.head(model.decode(batch.tgt_in, memory, memory_mask)).argmax(-1)
    gold = batch.tgt_in[:, 1:]
    draw = torch.rand(gold.shape, generator=generator).to(gold.device)
    use_pred = (draw >= p_gold) & (gold != model.config.pad_id)
    mixed = batch.tgt_in.clone()
    mixed[:, 1:] = torch.where(use_pred, pred[:, :-1], gold)
    logits = model.head(model.decode(mixed, memory, memory_mask))
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(), batch.tgt_out.flatten(), ignore_index=model.config.pad_id
    )
    real = max((gold != model.config.pad_id).sum().item(), 1)
    wrong = (use_pred & (pred[:, :-1] != gold)).sum().item()
    return loss, {"fed_back": use_pred.sum().item() / real, "fed_back_wrong": wrong / real}


class HiddenStateDiscriminator(nn.Module):
    """Professor forcing's critic: decoder hidden states (B, T, d) -> logit of "teacher-forced".

    A bidirectional GRU reads the whole sequence of states (padding packed away), its two
    final states go through an MLP, as in Lamb et al. (2016).
    """

    def __init__(self, d_model: int, hidden: int = 64) -> None:
        super().__init__()
        self.gru = nn.GRU(d_model, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(
            h, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, last = self.gru(packed)  # (2, B, hidden): forward and backward final states
        return self.out(torch.cat([last[0], last[1]], dim=-1)).squeeze(-1)


def professor_forcing_losses(
    model: Seq2SeqTransformer, disc: HiddenStateDiscriminator, batch: SeqBatch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """(model's NLL, model's fooling loss, discriminator loss, logs).

    Teacher-forced states: the decoder on the gold prefix. Free-running states: the decoder
    on its own greedy output (generated without gradient, then re-read in one pass with
    gradient; a causal decoder gives exactly the states it had while generating).
    The model's adversarial term is BCE(D(free-running), "teacher-forced"): make its own
    behaviour look like the teacher-forced one.
    """
    S = batch.src.shape[1]
    memory, memory_mask = model.encode(batch.src)
    h_tf = model.decode(batch.tgt_in, memory, memory_mask)
    nll = F.cross_entropy(
        model.head(h_tf).flatten(0, 1).float(),
        batch.tgt_out.flatten(),
        ignore_index=model.config.pad_id,
    )
    was_training = model.training
    model.eval()
    with torch.no_grad():
        own = model.greedy_decode(batch.src, S + 1, stop_at_eos=False)
    model.train(was_training)
    fr_in = torch.cat([batch.tgt_in[:, :1], own[:, :-1]], dim=1)
    h_fr = model.decode(fr_in, memory, memory_mask)
    n = batch.lengths + 1  # BOS + symbols: the states that predict the symbols and EOS
    ones, zeros = torch.ones(len(n), device=h_tf.device), torch.zeros(len(n), device=h_tf.device)
    d_tf, d_fr = disc(h_tf.detach(), n), disc(h_fr.detach(), n)
    d_loss = F.binary_cross_entropy_with_logits(d_tf, ones)
    d_loss = d_loss + F.binary_cross_entropy_with_logits(d_fr, zeros)
    fool = F.binary_cross_entropy_with_logits(disc(h_fr, n), ones)
    d_acc = ((d_tf > 0).float().mean() + (d_fr < 0).float().mean()).item() / 2
    return nll, fool, d_loss, {"d_loss": d_loss.item(), "d_acc": d_acc}


def sequence_reward(generated: torch.Tensor, batch: SeqBatch) -> torch.Tensor:
    """Sequence-level reward in [0, 1]: the fraction of the n + 1 output tokens (symbols and
    EOS) that a generated sequence gets right; one number per sequence."""
    real = batch.tgt_out != 0
    T = min(generated.shape[1], batch.tgt_out.shape[1])
    right = (generated[:, :T] == batch.tgt_out[:, :T]) & real[:, :T]
    return right.sum(1).float() / real.sum(1).float()


def reinforce_loss(
    model: Seq2SeqTransformer,
    batch: SeqBatch,
    generator: torch.Generator | None = None,
    sample: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE with the batch-mean reward as baseline: -(R - b) log p(sample).

    Each source gets one sampled output (temperature 1; or pass `sample`, (B, S + 1)); its
    log-probability is recomputed with gradient in one teacher-forced pass over the sample.
    """
    S = batch.src.shape[1]
    if sample is None:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            sample = model.sample(batch.src, S + 1, generator=generator)
        model.train(was_training)
    reward = sequence_reward(sample, batch)
    advantage = reward - reward.mean()
    real = batch.tgt_out != model.config.pad_id  # score only the n + 1 real positions
    sample_in = torch.cat([batch.tgt_in[:, :1], sample[:, :-1]], dim=1)
    logp = torch.log_softmax(model(batch.src, sample_in).float(), -1)
    token_logp = logp.gather(-1, sample[..., None]).squeeze(-1) * real
    loss = -(advantage.detach() * token_logp.sum(1)).mean()
    return loss, {"reward": reward.mean().item()}


# --- the loop ---------------------------------------------------------------------------------


@dataclass
class Seq2SeqTrainConfig:
    """One training run: task, model shape, optimisation, method and its knobs."""

    task: str = "running_sum"
    n_symbols: int = 10
    min_len: int = 10
    max_len: int = 10
    method: str = "mle"
    steps: int = 300
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 20
    grad_clip: float = 1.0
    seed: int = 0
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    n_layers: int = 2
    model_max_len: int = 32
    eval_every: int = 25
    eval_size: int = 256
    stop_at: float = 0.0  # > 0: stop once free-running validation token accuracy reaches it
    ss_floor: float = 0.5  # scheduled sampling: lowest probability of a gold input
    pf_weight: float = 1.0  # professor forcing: weight of the fooling term
    rl_weight: float = 0.5  # REINFORCE: loss = (1 - w) MLE + w REINFORCE
    warm_start: float = 0.5  # professor forcing, REINFORCE: fraction of plain-MLE steps first
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LLMLabError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.max_len + 1 > self.model_max_len:
            raise LLMLabError(
                f"sequences of length {self.max_len} need {self.max_len + 1} decoder positions "
                f"but the model has {self.model_max_len}: raise --model-max-len"
            )
        for name in ("ss_floor", "rl_weight", "warm_start"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise LLMLabError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def make_task(self) -> SeqTask:
        return SeqTask(self.task, self.n_symbols, self.min_len, self.max_len)

    def model_config(self) -> Seq2SeqConfig:
        vocab = self.make_task().vocab.size
        return Seq2SeqConfig(
            src_vocab_size=vocab,
            tgt_vocab_size=vocab,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_ff=self.d_ff,
            n_encoder_layers=self.n_layers,
            n_decoder_layers=self.n_layers,
            max_len=self.model_max_len,
        )


VALID_SEED = 10_000  # the validation batch is the same for every run and every method


def train_seq2seq(cfg: Seq2SeqTrainConfig, writer: Any | None = None) -> dict[str, Any]:
    """Train one model; returns {"model", "history", "steps_run", "seconds", "cpu_seconds"}.

    `history` holds, at every evaluation: step, loss, and `evaluate`'s figures on a fixed
    validation batch (seeded by VALID_SEED + the task's lengths, never by the run's seed).
    """
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    task = cfg.make_task()
    model = Seq2SeqTransformer(cfg.model_config()).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    disc = d_opt = None
    if cfg.method == "professor":
        disc = HiddenStateDiscriminator(cfg.d_model).to(device)
        d_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.lr)
    valid = task.sample(cfg.eval_size, torch.Generator().manual_seed(VALID_SEED)).to(device)
    stream = task.batches(cfg.batch_size, cfg.seed)  # identical batches for every method
    noise = torch.Generator().manual_seed(cfg.seed + 1)  # the methods' own random draws
    history: list[dict[str, Any]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(
        range(1, cfg.steps + 1),
        desc=f"{cfg.task}/{cfg.method}/seed{cfg.seed}",
        disable=not cfg.progress,
        leave=False,
    )
    for step in bar:
        lr = lr_at(step - 1, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr)  # warmup, then flat
        for group in opt.param_groups:
            group["lr"] = lr
        batch = next(stream).to(device)
        logs = _train_step(cfg, step, model, opt, batch, disc, d_opt, noise)
        if writer is not None:
            for key, value in logs.items():
                writer.add_scalar(f"train/{key}", value, step)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            figures = evaluate(model, valid)
            history.append({"step": step, **logs, **figures})
            bar.set_postfix(
                tf=f"{figures['tf_token_acc']:.3f}", fr=f"{figures['fr_token_acc']:.3f}"
            )
            if writer is not None:
                for key in ("tf_token_acc", "fr_token_acc", "fr_exact"):
                    writer.add_scalar(f"valid/{key}", figures[key], step)
                writer.add_scalar(
                    "valid/exposure_gap", figures["tf_token_acc"] - figures["fr_token_acc"], step
                )
            if cfg.stop_at and figures["fr_token_acc"] >= cfg.stop_at:
                break
    bar.close()
    return {
        "model": model.eval(),
        "history": history,
        "steps_run": step,
        "seconds": time.perf_counter() - start,
        # CPU time of this process: on a shared machine, closer to the time alone than wall
        "cpu_seconds": time.process_time() - cpu_start,
        "config": asdict(cfg),
    }


def _train_step(
    cfg: Seq2SeqTrainConfig,
    step: int,
    model: Seq2SeqTransformer,
    opt: torch.optim.Optimizer,
    batch: SeqBatch,
    disc: HiddenStateDiscriminator | None,
    d_opt: torch.optim.Optimizer | None,
    noise: torch.Generator,
) -> dict[str, float]:
    logs: dict[str, float] = {}
    method, d_loss = cfg.method, None
    if method.startswith("ss_"):
        p_gold = teacher_prob(method[3:], step, cfg.steps, cfg.ss_floor)
        loss, ss_logs = scheduled_sampling_loss(model, batch, p_gold, noise)
        logs |= {"teacher_prob": p_gold, **ss_logs}
    elif method == "professor" and step > cfg.warm_start * cfg.steps:
        nll, fool, d_loss, d_logs = professor_forcing_losses(model, disc, batch)
        loss = nll + cfg.pf_weight * fool
        logs |= d_logs | {"nll": nll.item(), "fool": fool.item()}
    elif method == "reinforce" and step > cfg.warm_start * cfg.steps:
        rl, rl_logs = reinforce_loss(model, batch, noise)
        loss = cfg.rl_weight * rl
        if cfg.rl_weight < 1.0:
            loss = loss + (1.0 - cfg.rl_weight) * mle_loss(model, batch)
        logs |= rl_logs
    else:  # plain MLE (and the warm start of professor forcing and REINFORCE)
        loss = mle_loss(model, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    if d_loss is not None:  # the critic's step comes after: the fooling term used its weights
        d_opt.zero_grad(set_to_none=True)  # (also drops what the fooling term left there)
        d_loss.backward()
        d_opt.step()
    return {"loss": loss.item(), **logs}


def measure_run(
    cfg: Seq2SeqTrainConfig, test: SeqBatch, writer: Any | None = None, inject_at: int = 3
) -> dict[str, Any]:
    """Train one run, then measure it on `test`: the figures of every sprint-15 table.

    `fr_auc` is the mean free-running validation accuracy over the run's evaluations (the
    area under its learning curve: how early it learned, not only where it ended).
    """
    out = train_seq2seq(cfg, writer)
    model = out["model"]
    test = test.to(next(model.parameters()).device)
    figures = evaluate(model, test)
    recovery, by_offset = injected_error_accuracy(model, test, inject_at)
    curve = [h["fr_token_acc"] for h in out["history"]]
    return {
        **{k: v for k, v in figures.items() if not k.endswith("by_position")},
        "tf_by_position": figures["tf_by_position"],
        "fr_by_position": figures["fr_by_position"],
        "recovery": recovery,
        "recovery_by_offset": by_offset,
        "fr_auc": sum(curve) / len(curve),
        "seconds": out["seconds"],
        "cpu_seconds": out["cpu_seconds"],
        "steps_run": out["steps_run"],
        "history": out["history"],
        "model": model,
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
