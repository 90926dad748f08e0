"""The sprint-15 encoder-decoder (`llmlab.seq2seq`) against PyTorch and against itself.

- parity with `torch.nn.Transformer` (same weights; our embeddings, positions and head on
  both sides): logits and every gradient, post-norm and pre-norm, with padding masks;
- the cached decoder equals full recomputation; greedy decoding is the same either way;
- beam search: beam 1 = greedy, its scores are the sequences' log-probabilities, and a wide
  beam finds the most likely sequence found by brute force;
- checkpoints round-trip; bad input gets one-line `LLMLabError`s.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from llmlab.errors import LLMLabError
from llmlab.seq2seq import Seq2SeqConfig, Seq2SeqTransformer

PAD, BOS, EOS = 0, 1, 2
TOL = {"atol": 1e-5, "rtol": 1e-4}


def _config(**kw) -> Seq2SeqConfig:
    base = dict(
        src_vocab_size=11,
        tgt_vocab_size=13,
        d_model=32,
        n_heads=4,
        d_ff=64,
        n_encoder_layers=2,
        n_decoder_layers=3,
        max_len=16,
    )
    return Seq2SeqConfig(**(base | kw))


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded source, BOS-led target input and its target output (padding on the right)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, 11, (3, 7), generator=g)
    src[1, 5:], src[2, 3:] = PAD, PAD
    tgt = torch.randint(3, 13, (3, 7), generator=g)
    tgt[2, 5:] = PAD
    tgt_in, tgt_out = tgt[:, :-1].clone(), tgt[:, 1:].clone()
    tgt_in[:, 0] = BOS
    return src, tgt_in, tgt_out


@pytest.mark.filterwarnings("ignore::UserWarning")  # nn.Transformer on nested tensors
@pytest.mark.parametrize("norm_first", [False, True])
def test_parity_with_torch_transformer_forward_and_gradients(norm_first: bool) -> None:
    torch.manual_seed(0)
    cfg = _config(norm_first=norm_first)
    ref = nn.Transformer(
        32, 4, 2, 3, 64, dropout=0.0, activation="gelu", batch_first=True, norm_first=norm_first
    )
    with torch.no_grad():  # non-trivial LayerNorm gains and biases, so a missed copy shows
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    ours = Seq2SeqTransformer(cfg).copy_from_torch(ref)
    outer = copy.deepcopy(ours)  # the reference's embeddings and head: same values, own grads
    src, tgt_in, tgt_out = _batch()
    real = tgt_out != PAD

    logits = ours(src, tgt_in)
    ref_logits = outer.through_torch(ref, src, tgt_in)
    err = (logits - ref_logits)[real].abs().max().item()
    print(f"norm_first={norm_first}: max |logit difference| = {err:.2e}")
    torch.testing.assert_close(logits[real], ref_logits[real], **TOL)
    with torch.no_grad():  # eval mode: PyTorch may take its fused "fast path"
        torch.testing.assert_close(
            ours.eval()(src, tgt_in)[real],
            outer.through_torch(ref.eval(), src, tgt_in)[real],
            **TOL,
        )

    target = tgt_out.masked_fill(~real, -100)
    nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
    nn.functional.cross_entropy(ref_logits.flatten(0, 1), target.flatten()).backward()
    # PyTorch's gradients, mapped onto our parameter names by the same weight copy.
    grads_as_torch = copy.deepcopy(ref)
    with torch.no_grad():
        for p, g in zip(grads_as_torch.parameters(), ref.parameters(), strict=True):
            p.copy_(g.grad)
    mapped = dict(Seq2SeqTransformer(cfg).copy_from_torch(grads_as_torch).named_parameters())
    outer_params = dict(outer.named_parameters())
    worst = 0.0
    for name, p in ours.named_parameters():
        expected = mapped[name] if name.startswith(("encoder.", "decoder.")) else None
        if expected is None:
            expected = outer_params[name].grad
        worst = max(worst, (p.grad - expected).abs().max().item())
        torch.testing.assert_close(p.grad, expected, **TOL, msg=name)
    print(f"norm_first={norm_first}: max |gradient difference| = {worst:.2e}")


def test_copy_from_torch_refuses_other_depths() -> None:
    ref = nn.Transformer(32, 4, 1, 1, 64, batch_first=True)
    with pytest.raises(LLMLabError, match="layer counts"):
        Seq2SeqTransformer(_config()).copy_from_torch(ref)


@pytest.mark.parametrize("pos_encoding", ["sinusoidal", "learned"])
def test_cached_decoder_equals_full_recomputation(pos_encoding: str) -> None:
    torch.manual_seed(0)
    model = Seq2SeqTransformer(_config(pos_encoding=pos_encoding)).eval()
    src, tgt_in, _ = _batch()
    tgt_in = tgt_in.masked_fill(tgt_in == PAD, 5)  # the cached path has no target padding
    with torch.no_grad():
        full = model(src, tgt_in)
        state = model.start_decoding(src)
        steps = [model.decode_step(tgt_in[:, t : t + 1], state) for t in range(tgt_in.shape[1])]
        # a prefill of several positions, then one at a time, gives the same numbers too
        state2 = model.start_decoding(src)
        chunked = [
            model.decode_step(tgt_in[:, :4], state2),
            model.decode_step(tgt_in[:, 4:], state2),
        ]
    torch.testing.assert_close(torch.cat(steps, 1), full, **TOL)
    torch.testing.assert_close(torch.cat(chunked, 1), full, **TOL)
    assert len(state) == tgt_in.shape[1]


def test_greedy_decode_cached_equals_uncached_and_stops_at_eos() -> None:
    torch.manual_seed(1)
    model = Seq2SeqTransformer(_config(tgt_vocab_size=6, max_len=12)).eval()
    with torch.no_grad():  # make EOS likely so some sequences finish early
        model.head.bias[EOS] += 2.0
    src = torch.randint(3, 11, (16, 5))
    cached = model.greedy_decode(src, 10)
    uncached = model.greedy_decode(src, 10, use_cache=False)
    assert torch.equal(cached, uncached)
    finished = (cached == EOS).any(1)
    assert finished.any(), "the test needs some finished sequences"
    for row in cached[finished]:
        after = row[int((row == EOS).nonzero()[0]) + 1 :]
        assert (after == PAD).all()


def test_beam_search_scores_beam_one_and_brute_force() -> None:
    torch.manual_seed(3)
    # Three symbols + 3 specials and 3 decoding steps: few enough sequences to enumerate.
    model = Seq2SeqTransformer(_config(src_vocab_size=6, tgt_vocab_size=6, max_len=8)).eval()
    src = torch.randint(3, 6, (4, 3))
    tokens, scores = model.beam_search(src, beam_size=1, max_new_tokens=3)
    assert torch.equal(tokens, model.greedy_decode(src, 3)[:, : tokens.shape[1]])
    tokens, scores = model.beam_search(src, beam_size=40, max_new_tokens=3, length_penalty=0.0)
    torch.testing.assert_close(scores, model.sequence_log_prob(src, tokens), **TOL)
    # Brute force: every sequence of 3 tokens, padding after the first EOS.
    candidates = set()
    for seq in itertools.product(range(6), repeat=3):
        if EOS in seq:
            end = seq.index(EOS) + 1
            seq = seq[:end] + (PAD,) * (3 - end)
        candidates.add(seq)
    everything = torch.tensor(sorted(candidates))  # (N, 3): score all N for each source at once
    logp = model.sequence_log_prob(
        src.repeat_interleave(len(everything), 0), everything.repeat(len(src), 1)
    )
    best = logp.view(len(src), -1).max(1).values
    torch.testing.assert_close(scores, best, **TOL)


def test_save_load_round_trip_and_errors(tmp_path) -> None:
    torch.manual_seed(0)
    model = Seq2SeqTransformer(_config()).eval()
    path = model.save(tmp_path / "m", extra={"task": "reverse"})
    again = Seq2SeqTransformer.load(path)
    src, tgt_in, _ = _batch()
    assert torch.equal(model(src, tgt_in), again(src, tgt_in))
    with pytest.raises(LLMLabError, match="max_len=16"):
        model(torch.randint(3, 11, (1, 17)), tgt_in[:1])
    with pytest.raises(LLMLabError, match="vocabulary"):
        model(src + 20, tgt_in)
    with pytest.raises(LLMLabError, match="not divisible"):
        _config(d_model=30)
    with pytest.raises(LLMLabError, match="pos_encoding"):
        _config(pos_encoding="rope")
    with pytest.raises(LLMLabError, match="config.json"):
        Seq2SeqTransformer.load(tmp_path)


# --- llmlab.seq2seq_training: measurements and objectives ------------------------------------


def _tiny_model(seed: int = 0, **kw) -> Seq2SeqTransformer:
    torch.manual_seed(seed)
    cfg = dict(src_vocab_size=8, tgt_vocab_size=8, d_model=16, n_heads=2, d_ff=32)
    return Seq2SeqTransformer(Seq2SeqConfig(**(cfg | kw), n_encoder_layers=1, n_decoder_layers=1))


def test_teacher_forcing_schedules() -> None:
    from llmlab.seq2seq_training import SCHEDULES, teacher_prob

    for schedule in SCHEDULES:
        values = [teacher_prob(schedule, t, 200, floor=0.25) for t in range(201)]
        assert values[0] >= 0.95  # the inverse sigmoid starts at k / (k + 1), just below 1
        assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # never rises
        assert min(values) >= 0.25
    assert teacher_prob("linear", 200, 200, 0.25) == pytest.approx(0.25)
    assert teacher_prob("exponential", 200, 200, 0.25) == pytest.approx(0.25)
    assert teacher_prob("inverse_sigmoid", 100, 200) == pytest.approx(0.5)
    with pytest.raises(LLMLabError, match="unknown schedule"):
        teacher_prob("cosine", 1, 10)


def test_scheduled_sampling_mixes_gold_and_predictions() -> None:
    from llmlab.data.seq_tasks import get_task
    from llmlab.seq2seq_training import mle_loss, scheduled_sampling_loss

    model = _tiny_model()
    batch = get_task("reverse", n_symbols=5, min_len=2, max_len=6).sample(
        16, torch.Generator().manual_seed(0)
    )
    loss, logs = scheduled_sampling_loss(model, batch, p_gold=1.0)
    assert logs == {"fed_back": 0.0, "fed_back_wrong": 0.0}
    torch.testing.assert_close(loss, mle_loss(model, batch))  # all gold: plain MLE
    loss0, logs0 = scheduled_sampling_loss(model, batch, p_gold=0.0)
    assert logs0["fed_back"] == 1.0 and 0.0 < logs0["fed_back_wrong"] < 1.0
    # all predictions: the second pass reads BOS + the first pass's argmax, padding kept
    with torch.no_grad():
        pred = model(batch.src, batch.tgt_in).argmax(-1)
        mixed = batch.tgt_in.clone()
        real = batch.tgt_in[:, 1:] != PAD
        mixed[:, 1:][real] = pred[:, :-1][real]
        expected = nn.functional.cross_entropy(
            model(batch.src, mixed).flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD
        )
    torch.testing.assert_close(loss0, expected)


def test_evaluate_and_injected_error_on_a_decoder_that_ignores_its_inputs() -> None:
    from llmlab.data.seq_tasks import get_task
    from llmlab.seq2seq_training import evaluate, injected_error_accuracy

    model = _tiny_model(3).eval()
    with torch.no_grad():  # every target token embeds to zero: outputs depend on source and
        model.tgt_embed.weight.zero_()  # position only, so nothing the decoder read matters
        model.head.bias[EOS] = -1e4  # and no early EOS (free running pads after one)
    batch = get_task("copy", n_symbols=5, min_len=6, max_len=6).sample(
        64, torch.Generator().manual_seed(1)
    )
    figures = evaluate(model, batch)
    # no dependence on inputs: teacher forcing and free running are the same computation
    assert figures["tf_by_position"] == pytest.approx(figures["fr_by_position"])
    assert figures["tf_exact"] == figures["fr_exact"]
    overall, by_offset = injected_error_accuracy(model, batch, position=2)
    assert by_offset == pytest.approx(figures["fr_by_position"][2:])
    assert overall == pytest.approx(sum(by_offset) / len(by_offset))
    with pytest.raises(LLMLabError, match="injected position"):
        injected_error_accuracy(model, batch, position=6)


def test_reinforce_raises_the_likelihood_of_rewarded_samples() -> None:
    from llmlab.data.seq_tasks import get_task
    from llmlab.seq2seq_training import reinforce_loss, sequence_reward

    model = _tiny_model(1)
    batch = get_task("copy", n_symbols=5, min_len=4, max_len=4).sample(
        32, torch.Generator().manual_seed(2)
    )
    sample = model.sample(batch.src, 5, generator=torch.Generator().manual_seed(3))
    reward = sequence_reward(sample, batch)
    assert reward.min() >= 0 and reward.max() <= 1 and reward.std() > 0
    assert sequence_reward(batch.tgt_out, batch).eq(1).all()  # the gold output earns 1

    def objective() -> torch.Tensor:  # sum of (R - mean R) log p(sample)
        sample_in = torch.cat([batch.tgt_in[:, :1], sample[:, :-1]], 1)
        logp = torch.log_softmax(model(batch.src, sample_in), -1)
        token = logp.gather(-1, sample[..., None]).squeeze(-1).sum(1)
        return ((reward - reward.mean()) * token).sum()

    before = objective().item()
    loss, logs = reinforce_loss(model, batch, sample=sample)
    assert logs["reward"] == pytest.approx(reward.mean().item())
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-3 * p.grad
    assert objective().item() > before  # gradient ascent on advantage-weighted log-prob


def test_professor_forcing_gradients_go_where_they_belong() -> None:
    from llmlab.data.seq_tasks import get_task
    from llmlab.seq2seq_training import HiddenStateDiscriminator, professor_forcing_losses

    model = _tiny_model(2)
    disc = HiddenStateDiscriminator(16, hidden=8)
    batch = get_task("sort", n_symbols=5, min_len=2, max_len=5).sample(
        8, torch.Generator().manual_seed(0)
    )
    nll, fool, d_loss, logs = professor_forcing_losses(model, disc, batch)
    assert 0.0 <= logs["d_acc"] <= 1.0 and torch.isfinite(nll + fool + d_loss)
    d_loss.backward(retain_graph=True)  # the critic's loss reads detached states
    assert all(p.grad is None for p in model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())
    fool.backward()  # the fooling term reaches the decoder through its free-running states
    assert model.decoder.layers[0].ffn.linear1.weight.grad.abs().sum() > 0


def test_training_runs_are_reproducible_and_share_their_data() -> None:
    from llmlab.seq2seq_training import Seq2SeqTrainConfig, train_seq2seq

    common = dict(task="copy", n_symbols=5, min_len=3, max_len=5, steps=6, batch_size=8,
                  d_model=16, n_heads=2, d_ff=32, n_layers=1, eval_every=3, eval_size=16,
                  progress=False)  # fmt: skip
    mle = train_seq2seq(Seq2SeqTrainConfig(method="mle", **common))
    # REINFORCE whose warm start covers every step is plain MLE on the same batches
    warm = train_seq2seq(Seq2SeqTrainConfig(method="reinforce", warm_start=1.0, **common))
    for a, b in zip(mle["model"].parameters(), warm["model"].parameters(), strict=True):
        assert torch.equal(a, b)
    assert [h["step"] for h in mle["history"]] == [3, 6]
    for method in ("ss_inverse_sigmoid", "professor", "reinforce"):
        run = train_seq2seq(Seq2SeqTrainConfig(method=method, warm_start=0.0, **common))
        assert all(torch.isfinite(torch.tensor(h["loss"])) for h in run["history"])
    with pytest.raises(LLMLabError, match="unknown method"):
        Seq2SeqTrainConfig(method="dagger")
    with pytest.raises(LLMLabError, match="model-max-len"):
        Seq2SeqTrainConfig(max_len=40)
