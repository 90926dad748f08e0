"""Sprint 09 evaluation: every target scored once, the loss by hand, parity with Hugging Face."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import LLMLabError
from llmlab.evaluation import evaluate_lm, perplexity
from llmlab.gpt import GPT, GPTConfig


class Bigram(nn.Module):
    """logits = table[token]: the prediction ignores the window, so a hand sum over all
    consecutive pairs of the array is the exact answer whatever the windowing."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Parameter(torch.randn(vocab, vocab) * 3)

    def forward(self, idx, targets=None):
        logits = self.table[idx]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


class Recorder(nn.Module):
    """Uniform logits; remembers every (input, target) pair it was asked to score."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.pairs: list[tuple[int, int]] = []
        self.shapes: list[tuple[int, int]] = []

    def forward(self, idx, targets):
        self.shapes.append(tuple(idx.shape))
        self.pairs += list(zip(idx.flatten().tolist(), targets.flatten().tolist(), strict=True))
        logits = torch.zeros(*idx.shape, self.vocab)
        return logits, F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1))


@pytest.mark.parametrize("n,block_size,batch_size", [(50, 8, 3), (49, 8, 3), (9, 8, 4), (5, 8, 2)])
def test_every_target_is_scored_exactly_once(n: int, block_size: int, batch_size: int) -> None:
    data = np.arange(n, dtype=np.uint16)  # distinct tokens: a pair names its position
    model = Recorder(vocab=n)
    out = evaluate_lm(model, data, block_size, batch_size)
    assert out["tokens"] == n - 1
    assert sorted(model.pairs) == [(i, i + 1) for i in range(n - 1)]  # each once, in context
    assert all(t <= block_size for _, t in model.shapes)
    rest = (n - 1) % block_size
    if rest:  # the ragged last window comes alone, rest tokens long
        assert model.shapes[-1] == (1, rest)
    assert out["perplexity"] == pytest.approx(n)  # uniform over n tokens


def test_loss_equals_a_hand_computation() -> None:
    vocab, n, block_size = 11, 103, 8  # 102 targets: 12 full windows and a ragged one of 6
    rng = np.random.default_rng(0)
    data = rng.integers(0, vocab, n).astype(np.uint16)
    model = Bigram(vocab)
    with torch.no_grad():
        log_probs = torch.log_softmax(model.table.double(), dim=-1)
    nll = [-float(log_probs[data[i], data[i + 1]]) for i in range(n - 1)]
    hand = sum(nll) / len(nll)
    for batch_size in (1, 5, 100):  # batching must not change the answer
        out = evaluate_lm(model, data, block_size, batch_size)
        assert out["loss"] == pytest.approx(hand, rel=1e-6)
        assert out["perplexity"] == pytest.approx(math.exp(hand), rel=1e-6)
        assert out["tokens"] == n - 1
    # A plain mean of the per-batch means would over-weight the short last window.
    unweighted = np.mean([np.mean(nll[:96]), np.mean(nll[96:])])
    assert abs(unweighted - hand) > 1e-3


def test_restores_training_mode_and_accepts_autocast() -> None:
    model = Bigram(7)
    data = np.random.default_rng(1).integers(0, 7, 40).astype(np.uint16)
    model.train()
    full = evaluate_lm(model, data, 8)
    assert model.training
    model.eval()
    evaluate_lm(model, data, 8)
    assert not model.training
    bf16 = evaluate_lm(model, data, 8, autocast=torch.autocast("cpu", dtype=torch.bfloat16))
    assert bf16["tokens"] == full["tokens"] and bf16["loss"] == pytest.approx(
        full["loss"], rel=0.02
    )


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size() -> None:
    for vocab in (2, 65, 50257):
        assert perplexity(math.log(vocab)) == pytest.approx(vocab, rel=1e-12)
        uniform = torch.zeros(4, vocab)
        loss = F.cross_entropy(uniform, torch.randint(0, vocab, (4,)))
        assert perplexity(float(loss)) == pytest.approx(vocab, rel=1e-5)
    assert perplexity(0.0) == 1.0  # a certain model
    assert perplexity(1e4) == math.inf  # a diverged model: inf, not OverflowError


def hf_batch(data: np.ndarray, T: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hugging Face inputs that score each target of `data` once, built independently of
    `evaluate_lm`: target i (1..n-1) belongs to window k = 0 if i <= T, else ceil((i-T)/s),
    which starts at k*s; windows are right-padded, unscored labels are -100."""
    n = len(data)
    k_last = 0 if n - 1 <= T else math.ceil((n - 1 - T) / stride)
    input_ids = torch.zeros(k_last + 1, T + 1, dtype=torch.long)
    labels = torch.full_like(input_ids, -100)
    tokens = torch.from_numpy(data.astype(np.int64))
    for k in range(k_last + 1):
        w = tokens[k * stride : k * stride + T + 1]
        input_ids[k, : len(w)] = w
    for i in range(1, n):
        k = 0 if i <= T else math.ceil((i - T) / stride)
        labels[k, i - k * stride] = tokens[i]  # HF scores logits[t] against labels[t + 1]
    return input_ids, labels


@pytest.fixture(scope="module")
def random_gpt_pair():
    T, vocab = 16, 50
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=T + 1, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():  # far from uniform, so a target scored twice or missed would show
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.eval()
    return model, model.to_hf().eval(), T, vocab


@pytest.mark.parametrize("stride", [None, 5])
def test_perplexity_matches_hugging_face_gpt2_loss(random_gpt_pair, stride: int | None) -> None:
    """PARITY: the same random GPT as a Hugging Face `GPT2LMHeadModel`, same text.

    `evaluate_lm` cuts the array into windows of T+1 tokens (x = w[:-1], y = w[1:]). HF's
    `labels` are shifted INSIDE the model (logits[t] is scored against labels[t+1]), so feed
    HF the whole window w with labels=w: it scores the same T targets (its logits at the last
    position are dropped). That needs T+1 positions, so the model has block_size T+1 and we
    evaluate with windows of T. Unscored positions (padding of the ragged last window, and the
    context part of a sliding window) get label -100, and HF's mean over the remaining labels
    is the token-weighted mean that `evaluate_lm` computes. Tolerance: 1e-5 relative (float32;
    the measured gaps are 3e-9 chunked and 9e-8 sliding).
    """
    model, hf, T, vocab = random_gpt_pair
    n = 203  # 202 targets: chunked, 12 windows of 16 + one of 10
    data = np.random.default_rng(0).integers(0, vocab, n).astype(np.uint16)

    ours = evaluate_lm(model, data, block_size=T, batch_size=5, stride=stride)

    input_ids, labels = hf_batch(data, T, stride or T)
    assert int((labels != -100).sum()) == ours["tokens"] == n - 1
    with torch.no_grad():
        hf_loss = float(hf(input_ids=input_ids, labels=labels).loss)
    assert ours["loss"] == pytest.approx(hf_loss, rel=1e-5)
    assert ours["perplexity"] == pytest.approx(math.exp(hf_loss), rel=1e-5)

    # Far from uniform: per-token losses spread widely, so the wrong targets would show.
    with torch.no_grad():
        first = input_ids[:1]
        per_token = F.cross_entropy(model(first[:, :T])[0][0], first[0, 1:], reduction="none")
    assert float(per_token.std()) > 0.4

    if stride is None:
        # The classic mistake: labels=input_ids on the T-token inputs x drops each window's
        # last target (HF shifts them again), and the number is measurably different.
        with torch.no_grad():
            naive = float(hf(input_ids=input_ids[:, :T], labels=labels[:, :T]).loss)
        assert abs(naive - ours["loss"]) > 1e-3


class ContextLength(nn.Module):
    """On an all-zero text, logit[0] = position in the window: the loss of a target says how
    much context it was predicted with (more context, lower loss)."""

    vocab = 5

    def forward(self, idx, targets=None):
        B, L = idx.shape
        logits = torch.zeros(B, L, self.vocab)
        logits[..., 0] = torch.arange(L, dtype=torch.float32)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1))
        return logits, loss


@pytest.mark.parametrize(
    "n,T,stride", [(50, 8, None), (50, 8, 8), (50, 8, 3), (50, 8, 1), (41, 8, 5), (6, 8, 2)]
)
def test_sliding_window_gives_every_target_its_context(n: int, T: int, stride) -> None:
    model = ContextLength()
    data = np.zeros(n, dtype=np.uint16)
    s = stride or T
    # Position (= context - 1) of target i: in the first window i - 1; then in window
    # k = ceil((i - T) / s), which starts at k * s.
    pos = [i - 1 if i <= T else i - 1 - math.ceil((i - T) / s) * s for i in range(1, n)]
    assert min(pos[T:], default=T - s) >= T - s  # after the first window: >= T - s context
    nll = [math.log(math.exp(j) + model.vocab - 1) - j for j in pos]  # -log softmax[0]
    for batch_size in (1, 4, 64):
        out = evaluate_lm(model, data, T, batch_size, stride=stride)
        assert out["tokens"] == n - 1
        # float32 logsumexp(j, 0, ...) - j loses ~1e-7 absolute per token; a target given
        # one token less context than it should have would move the mean by > 1e-4.
        assert out["loss"] == pytest.approx(sum(nll) / len(nll), abs=2e-6)


def test_sliding_is_never_worse_here_and_bad_strides_are_refused() -> None:
    data = np.zeros(60, dtype=np.uint16)
    model = ContextLength()
    losses = [evaluate_lm(model, data, 8, stride=s)["loss"] for s in (8, 6, 4, 2, 1)]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))  # more context
    for bad in (0, -1, 9):
        with pytest.raises(LLMLabError, match="stride"):
            evaluate_lm(model, data, 8, stride=bad)


def test_sliding_equals_chunked_for_a_model_without_memory() -> None:
    vocab, n = 11, 103
    data = np.random.default_rng(2).integers(0, vocab, n).astype(np.uint16)
    model = Bigram(vocab)
    chunked = evaluate_lm(model, data, 8)
    for stride in (1, 3, 7):
        sliding = evaluate_lm(model, data, 8, batch_size=4, stride=stride)
        assert sliding["tokens"] == n - 1
        assert sliding["loss"] == pytest.approx(chunked["loss"], rel=1e-6)
