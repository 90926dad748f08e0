"""Decoding: from next-token logits to text (sprint 08; every strategy in sprint 10).

Works on any causal language model: our `GPT` (one static `KVCache` per block) or a
`transformers` model (its own cache), so the same loop drives SmolLM2, GPT-2 and your own
sprint-09 model. Every piece is pinned to Hugging Face's `generate` by tests: same scores,
same tokens for the same seed, same beams.

Logits processors (pure functions, each equal to the `transformers` class of the same role):
- `repetition_penalty(input_ids, scores, penalty)`: divide (or multiply, if negative) the
  scores of tokens already in the sequence.
- `temperature_scale(scores, t)`: divide by t (t < 1 sharpens, t > 1 flattens).
- `top_k_filter(scores, k)`: keep the k largest (ties with the k-th included).
- `top_p_filter(scores, p)`: nucleus: keep the smallest set of top tokens holding mass p.
- `min_p_filter(scores, p)`: keep tokens with probability >= p * the top token's.
- `process_logits(...)`: all of them in `generate`'s order (penalty, then, when sampling,
  temperature -> top-k -> top-p -> min-p).
- `filter_top_k`, `filter_top_p`, `sample_next`: the sprint-08 one-call helpers.

Decoding loops:
- `iter_tokens(model, idx, ...)`: a generator yielding each step's new tokens (B,); greedy or
  sampling, batches with left padding + `attention_mask`, stop on EOS / stop strings /
  an external `should_stop()` (the demo's Stop button), static KV cache, logits of the last
  position only, GEMV-friendly weight layout on CPU (`gemv_layout`). `generate(...)` runs it
  to the end and returns the sequences.
- `beam_search(model, idx, num_beams, ...)`: (sequences, scores), equal to
  `generate(num_beams=k, do_sample=False)` including length penalty and EOS handling.
- `stream(model, tokenizer, idx, ...)`: a generator of text pieces, holding back a piece
  that ends inside a multi-byte character.
- `stream_transformers(model, tokenizer, input_ids, ...)`: the same for `transformers`' own
  `generate`, via `TextIteratorStreamer` and a thread; a stopping criterion tied to a
  `threading.Event` ends `generate` when the consumer stops (closing the stream is enough).

The notes of sprint 10 (`sprints/10_pretrained_generation_demo/notes/`) derive each strategy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.attention import KVCache
from llmlab.errors import LLMLabError

# ---------------------------------------------------------------------------------------------
# Logits processors
# ---------------------------------------------------------------------------------------------


def repetition_penalty(
    input_ids: torch.Tensor, scores: torch.Tensor, penalty: float
) -> torch.Tensor:
    """CTRL's penalty: a token already in the sequence gets score / penalty (score * penalty
    when negative), so with penalty > 1 it always becomes less likely, once per token."""
    seen = torch.gather(scores, 1, input_ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(1, input_ids, seen)


def temperature_scale(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(z / t): t < 1 sharpens the distribution, t > 1 flattens it, t -> 0 is argmax."""
    return scores / temperature


def top_k_filter(scores: torch.Tensor, top_k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the `top_k` highest scores of each row (and any tied with the k-th), -inf the rest."""
    k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    kth = torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(scores < kth, float("-inf"))


def top_p_filter(scores: torch.Tensor, top_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filtering: drop a token when the tokens more likely than it already hold `top_p`.

    Sorted *ascending*, the cumulative probability at a token is 1 - (mass of the tokens above
    it); the token goes when that is <= 1 - top_p. The most likely tokens always stay.
    """
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[..., -min_tokens_to_keep:] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


def min_p_filter(scores: torch.Tensor, min_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep tokens whose probability is at least `min_p` times the top token's: a cut-off
    that adapts to the model's confidence (tight when it is sure, loose when it is not)."""
    probs = torch.softmax(scores, dim=-1)
    drop = probs < min_p * probs.amax(dim=-1, keepdim=True)
    keep = torch.topk(probs, min(min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
    drop.scatter_(-1, keep, False)
    return scores.masked_fill(drop, float("-inf"))


def process_logits(
    input_ids: torch.Tensor,
    scores: torch.Tensor,
    *,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition: float | None = None,
    min_tokens_to_keep: int = 1,
) -> torch.Tensor:
    """All processors in the order `transformers` applies them; warpers only when sampling."""
    if repetition is not None and repetition != 1.0:
        scores = repetition_penalty(input_ids, scores, repetition)
    if do_sample:
        if temperature != 1.0:
            scores = temperature_scale(scores, temperature)
        if top_k:  # None or 0: off
            scores = top_k_filter(scores, top_k, min_tokens_to_keep)
        if top_p is not None and top_p < 1.0:
            scores = top_p_filter(scores, top_p, min_tokens_to_keep)
        if min_p is not None:
            scores = min_p_filter(scores, min_p, min_tokens_to_keep)
    return scores


def _check_sampling(
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    min_p: float | None = None,
    repetition: float | None = None,
) -> None:
    if not temperature > 0:
        raise LLMLabError(
            f"temperature must be > 0, got {temperature}: use greedy decoding for argmax"
        )
    if top_k is not None and top_k < 0:
        raise LLMLabError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise LLMLabError(f"top_p must be in (0, 1], got {top_p}")
    if min_p is not None and not 0.0 <= min_p <= 1.0:
        raise LLMLabError(f"min_p must be in [0, 1], got {min_p}")
    if repetition is not None and not repetition > 0:
        raise LLMLabError(f"repetition_penalty must be > 0 (1 = off), got {repetition}")


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the others to -inf (sprint 08)."""
    if k <= 0:
        raise LLMLabError(f"top_k must be a positive integer, got {k}")
    return top_k_filter(logits, k)


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of top tokens whose probability reaches p."""
    if not 0.0 < p <= 1.0:
        raise LLMLabError(f"top_p must be in (0, 1], got {p}")
    return top_p_filter(logits, p)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, vocab) logits -> (B, 1) next token ids: argmax, or a draw after the warpers."""
    if greedy:
        return logits.argmax(dim=-1, keepdim=True)
    _check_sampling(temperature, top_k, top_p)
    scores = process_logits(
        logits, logits.float(), do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p
    )
    return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1, generator=generator)


# ---------------------------------------------------------------------------------------------
# Models: one interface for our GPT and for transformers models
# ---------------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    # Decode with the plain module: a DDP wrapper has no `config`, and a `torch.compile`d
    # model would recompile for every new sequence length.
    while hasattr(model, "_orig_mod") or isinstance(model, nn.parallel.DistributedDataParallel):
        model = model._orig_mod if hasattr(model, "_orig_mod") else model.module
    return model


# Re-laying the weights out costs two copies of the model (SmolLM2: ~0.3 s on one thread) and
# saves a few ms per token (~4 ms of ~40 for SmolLM2): worth it only for longer generations.
# Below this many new tokens the decoding loops keep the usual layout (and the first token
# comes sooner, which is what streaming is about).
GEMV_MIN_TOKENS = 128


@contextmanager
def gemv_layout(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """While decoding on a CPU, store each `nn.Linear` weight column-major; restore after.

    At batch 1 each layer is a matrix-*vector* product that reads its whole weight once:
    memory-bound. Measured on this course's CPU (MKL, 1 thread), `x @ W.T` with `W` stored
    (out, in) row-major ran 1.3-1.9x slower than with the same numbers stored transposed,
    (in, out) contiguous — the layout GPT-2's `Conv1D` happens to use. Only the strides
    change (values and shapes stay), so results agree up to the order of additions. The
    original layout comes back at the end: safetensors cannot save strided weights, and
    training kernels expect the usual one. Yields the number of weights re-laid out (0 when
    `enabled` is False: the decoding loops pass `max_new_tokens >= GEMV_MIN_TOKENS`).
    """
    changed: list[torch.Tensor] = []
    with torch.no_grad():
        for module in model.modules() if enabled else ():
            weight = getattr(module, "weight", None)
            if not isinstance(module, nn.Linear) or weight is None:
                continue
            if weight.device.type != "cpu" or not weight.is_contiguous() or weight.dim() != 2:
                continue  # on a GPU, or already re-laid out (tied weights appear twice)
            weight.data = weight.data.t().contiguous().t()
            changed.append(weight)
    try:
        yield len(changed)
    finally:
        with torch.no_grad():
            for weight in changed:
                weight.data = weight.data.contiguous()


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Each token's position in its own row: left padding does not count (pads get 0)."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


def _is_llmlab_gpt(model: nn.Module) -> bool:
    return hasattr(model, "h") and hasattr(model, "config") and hasattr(model.config, "block_size")


class _Runner:
    """Feeds a model the tokens it has not seen yet and returns last-position logits (B, V).

    `seqs` (B, S) holds every token so far; `n_new` of them are new since the last call.
    """

    def __init__(self, model: nn.Module, batch: int, max_len: int, use_cache: bool) -> None:
        self.model = model
        self.ours = _is_llmlab_gpt(model)
        self.use_cache = use_cache
        self.caches: Any = None
        if self.ours:
            self.block_size = model.config.block_size
            if use_cache:  # static: sized once, written in place, never concatenated
                self.caches = [KVCache(max_len=max_len) for _ in model.h]
        elif not use_cache:
            raise LLMLabError("use_cache=False is only supported for llmlab GPT models")

    def __call__(self, seqs: torch.Tensor, mask: torch.Tensor | None, n_new: int) -> torch.Tensor:
        if self.ours and not self.use_cache:  # re-read the last block_size tokens (a window)
            seqs = seqs[:, -self.block_size :]
            mask = None if mask is None else mask[:, -self.block_size :]
            n_new = seqs.shape[1]
        new = seqs[:, -n_new:]
        pos = None if mask is None else _positions(mask)[:, -n_new:]
        if self.ours:
            logits, _ = self.model(
                new, kv_caches=self.caches, attention_mask=mask, position_ids=pos, logits_to_keep=1
            )
            return logits[:, -1].float()
        out = self.model(
            input_ids=new,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=self.caches,
            use_cache=True,
            logits_to_keep=1,
        )
        self.caches = out.past_key_values
        return out.logits[:, -1].float()

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: batch row i continues from row index[i]."""
        if self.caches is None:
            return
        if self.ours:
            for cache in self.caches:
                cache.reorder(index)
        else:
            self.caches.reorder_cache(index)


def _context_limit(model: nn.Module) -> int | None:
    if _is_llmlab_gpt(model):
        return model.config.block_size
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def _prepare(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    attention_mask: torch.Tensor | None,
    use_cache: bool,
) -> tuple[nn.Module, torch.Tensor, torch.Tensor | None]:
    if max_new_tokens < 0:
        raise LLMLabError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise LLMLabError(
            f"the prompt must be (batch, time) with time >= 1, got {tuple(idx.shape)}"
        )
    model = _unwrap(model)
    limit = _context_limit(model)
    fixed_window = use_cache or not _is_llmlab_gpt(model)
    if limit is not None and fixed_window and idx.shape[1] + max_new_tokens > limit:
        hint = " or pass use_cache=False to slide the window" if _is_llmlab_gpt(model) else ""
        raise LLMLabError(
            f"prompt ({idx.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"context ({limit} positions): shorten the prompt, generate fewer tokens{hint}"
        )
    device = next(model.parameters()).device
    idx = idx.to(device)
    if attention_mask is not None:
        if attention_mask.shape != idx.shape:
            raise LLMLabError(
                f"attention_mask {tuple(attention_mask.shape)} must have the prompt's shape "
                f"{tuple(idx.shape)}"
            )
        attention_mask = attention_mask.to(device).long()
        if bool((attention_mask[:, -1] == 0).any()):
            raise LLMLabError(
                "batched prompts must be padded on the LEFT (the last column must be real "
                "tokens): use tokenizer.padding_side = 'left'"
            )
        if bool((attention_mask == 1).all()):
            attention_mask = None  # no padding: the fast path, as transformers does
    return model, idx, attention_mask


def _token_set(ids: int | Sequence[int] | None) -> list[int]:
    if ids is None:
        return []
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


# ---------------------------------------------------------------------------------------------
# Greedy and sampling
# ---------------------------------------------------------------------------------------------


class Generation:
    """The state `iter_tokens` leaves behind: the sequences so far and why it stopped."""

    def __init__(self, sequences: torch.Tensor) -> None:
        self.sequences = sequences
        self.stopped_by: str = "max_new_tokens"


@torch.no_grad()
def iter_tokens(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    attention_mask: torch.Tensor | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    stop_strings: Sequence[str] | None = None,
    decode: Callable[[list[int]], str] | None = None,
    should_stop: Callable[[], bool] | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    state: Generation | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the (B,) tokens chosen at each step; `state.sequences` grows with them.

    Finished rows (EOS or a stop string) receive `pad_token_id` (EOS if there is none) until
    every row is done, as in `transformers`, so a batch keeps one rectangular shape.
    `should_stop()` is polled before every step: returning True ends generation at once.
    Sampling draws from the global torch RNG unless `generator` is given; with the same
    seed, the same processors and the same model, the tokens equal `model.generate`'s.
    """
    if not greedy:
        _check_sampling(temperature, top_k, top_p, min_p, repetition_penalty)
    elif repetition_penalty is not None:
        _check_sampling(1.0, None, None, None, repetition_penalty)
    if stop_strings and decode is None:
        raise LLMLabError("stop_strings need a decode function (a tokenizer) to read the text")
    model, idx, mask = _prepare(model, idx, max_new_tokens, attention_mask, use_cache)
    eos = _token_set(eos_token_id)
    eos_tensor = torch.tensor(eos, device=idx.device) if eos else None
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else None)
    B, prompt_len = idx.shape
    seqs = idx.new_empty(B, prompt_len + max_new_tokens)  # one buffer, no torch.cat per step
    seqs[:, :prompt_len] = idx
    if mask is not None:
        full_mask = mask.new_ones(B, prompt_len + max_new_tokens)
        full_mask[:, :prompt_len] = mask
    state = state if state is not None else Generation(idx)
    unfinished = torch.ones(B, dtype=torch.bool, device=idx.device)
    runner = _Runner(model, B, prompt_len + max_new_tokens, use_cache)
    was_training = model.training
    model.eval()
    try:
        with gemv_layout(model, enabled=max_new_tokens >= GEMV_MIN_TOKENS):
            length, n_new = prompt_len, prompt_len
            for _ in range(max_new_tokens):
                if should_stop is not None and should_stop():
                    state.stopped_by = "stopped"
                    return
                step_mask = None if mask is None else full_mask[:, :length]
                logits = runner(seqs[:, :length], step_mask, n_new)
                scores = process_logits(
                    seqs[:, :length],
                    logits,
                    do_sample=not greedy,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    min_p=min_p,
                    repetition=repetition_penalty,
                )
                if greedy:
                    next_tokens = torch.argmax(scores, dim=-1)
                else:
                    probs = F.softmax(scores, dim=-1)
                    next_tokens = torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
                if pad is not None:
                    next_tokens = torch.where(unfinished, next_tokens, pad)
                seqs[:, length] = next_tokens
                length, n_new = length + 1, 1
                state.sequences = seqs[:, :length]
                yield next_tokens
                if eos_tensor is not None:
                    unfinished &= ~torch.isin(next_tokens, eos_tensor)
                if stop_strings:
                    for row in torch.nonzero(unfinished).flatten().tolist():
                        text = decode(seqs[row, prompt_len:length].tolist())
                        if any(s in text for s in stop_strings):
                            unfinished[row] = False
                if not bool(unfinished.any()):
                    state.stopped_by = "eos"
                    return
    finally:
        model.train(was_training)


def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Extend the (B, T) prompt `idx` by up to `max_new_tokens` tokens; returns (B, T + new).

    With `use_cache` (our GPT or a transformers model), the prompt is read once and each
    step feeds only the newest token, reusing keys/values stored in a pre-allocated cache;
    positions then cannot go past the context. Without it (our GPT only), every step
    re-reads the last `block_size` tokens: slower, but it never runs out of context.
    More keywords (`attention_mask`, `min_p`, `repetition_penalty`, `eos_token_id`,
    `pad_token_id`, `stop_strings` + `decode`, `should_stop`) are those of `iter_tokens`.
    The model is put in eval mode for the call (dropout off) and restored afterwards.
    """
    state = Generation(idx)
    for _ in iter_tokens(
        model,
        idx,
        max_new_tokens,
        greedy=greedy,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        use_cache=use_cache,
        generator=generator,
        state=state,
        **kwargs,
    ):
        pass
    return state.sequences


def stream(
    model: nn.Module,
    tokenizer: Any,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    skip_special_tokens: bool = True,
    **kwargs: Any,
) -> Iterator[str]:
    """Yield the continuation of a one-row prompt as text pieces, as soon as they are final.

    A byte-level BPE token can end in the middle of a UTF-8 character ("é" = 2 bytes, an
    emoji = 4); decoding then shows U+FFFD, so such a piece is held back until the next
    tokens complete it. Each piece is the new suffix of the decoded continuation.
    """
    if idx.shape[0] != 1:
        raise LLMLabError(f"stream() decodes one sequence at a time, got a batch of {idx.shape[0]}")

    def decode(ids: list[int]) -> str:
        if skip_special_tokens and not _is_llmlab_tokenizer(tokenizer):
            return tokenizer.decode(ids, skip_special_tokens=True)
        return tokenizer.decode(ids)

    kwargs.setdefault("decode", decode)
    ids: list[int] = []
    emitted = ""
    for token in iter_tokens(model, idx, max_new_tokens, **kwargs):
        ids.append(int(token[0]))
        text = decode(ids)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for more
            continue
        if len(text) > len(emitted):
            yield text[len(emitted) :]
            emitted = text


def _is_llmlab_tokenizer(tokenizer: Any) -> bool:
    return type(tokenizer).__module__.startswith("llmlab.")


def stream_transformers(
    model: nn.Module,
    tokenizer: Any,
    input_ids: torch.Tensor,
    *,
    stop_event: threading.Event | None = None,
    timeout: float | None = 300.0,
    **generate_kwargs: Any,
) -> Iterator[str]:
    """Yield text pieces while `model.generate` runs in a background thread.

    `generate` blocks until the last token, so it runs in a thread and hands decoded pieces
    over through a `TextIteratorStreamer` (a queue). Stopping is cooperative: a stopping
    criterion reads `stop_event` before every token. Closing this generator (the consumer
    went away: a Stop button, a closed browser tab) stops `generate` the same way and waits
    for the thread, so no `generate` keeps running on its own. An exception in `generate` is re-raised here.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    stop = stop_event if stop_event is not None else threading.Event()
    closed = threading.Event()  # the consumer went away (kept apart from the caller's event)

    class StopOnEvent(StoppingCriteria):
        def __call__(self, ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            done = stop.is_set() or closed.is_set()
            return torch.full((ids.shape[0],), done, dtype=torch.bool, device=ids.device)

    streamer = TextIteratorStreamer(
        tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout
    )
    failure: list[BaseException] = []

    def work() -> None:
        try:
            model.generate(
                input_ids=input_ids,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([StopOnEvent()]),
                **generate_kwargs,
            )
        except BaseException as exc:  # hand it to the consumer, and unblock its loop
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, name="generate", daemon=True)
    thread.start()
    try:
        for piece in streamer:
            if piece:
                yield piece
    finally:
        closed.set()
        thread.join()
    if failure:
        raise failure[0]


# ---------------------------------------------------------------------------------------------
# Beam search
# ---------------------------------------------------------------------------------------------


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, j], ...] for a (B, K, ...) tensor and a (B, J) index."""
    while index.dim() < x.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(x, index, dim=1)


@torch.no_grad()
def beam_search(
    model: nn.Module,
    idx: torch.Tensor,
    num_beams: int,
    max_new_tokens: int,
    *,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
    num_return_sequences: int = 1,
    use_cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the `num_beams` most likely partial sequences at every step; return the best
    finished ones: (sequences (B * n, T + new), scores (B * n,)).

    A hypothesis' score is its summed log-probability divided by (generated length) **
    `length_penalty` (> 0 favours longer outputs, < 0 shorter ones). Each step looks at the
    best 2 * num_beams continuations (more when there are several EOS tokens), so that enough
    of them stay open after some end; one that ends (EOS, or the length limit) is compared
    with the finished list. The search stops when no open beam can still beat the worst
    finished one (`early_stopping=False`: judged at the current length; True: as soon as
    `num_beams` are finished; "never": the canonical bound). This is `transformers`'
    algorithm, step for step, so sequences and scores equal `generate(num_beams=k)`.
    """
    if num_beams < 1:
        raise LLMLabError(f"num_beams must be >= 1, got {num_beams}")
    if not 1 <= num_return_sequences <= num_beams:
        raise LLMLabError(
            f"num_return_sequences must be in [1, num_beams={num_beams}], got {num_return_sequences}"
        )
    if max_new_tokens < 1:
        raise LLMLabError(f"beam search needs max_new_tokens >= 1, got {max_new_tokens}")
    model, idx, mask = _prepare(model, idx, max_new_tokens, attention_mask, use_cache)
    eos = _token_set(eos_token_id)
    eos_tensor = torch.tensor(eos, device=idx.device) if eos else None
    batch, prompt_len = idx.shape
    max_length = prompt_len + max_new_tokens
    k, device = num_beams, idx.device
    keep = max(2, 1 + len(eos)) * k  # candidates examined per step
    fill = (pad_token_id or eos[0]) if eos else -1
    top_k_mask = torch.arange(keep, device=device) < k  # only the best k may finish

    running = torch.full((batch, k, max_length), fill, dtype=torch.long, device=device)
    running[:, :, :prompt_len] = idx[:, None, :]
    finished = running.clone()
    running_scores = torch.zeros(batch, k, device=device)
    running_scores[:, 1:] = -1e9  # all beams start equal: let only the first one expand
    finished_scores = torch.full((batch, k), -1e9, device=device)
    finished_lens = torch.zeros(batch, k, dtype=torch.long, device=device)  # tokens generated
    is_finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
    beam_mask = None if mask is None else mask.repeat_interleave(k, dim=0)
    if beam_mask is not None:
        full_mask = beam_mask.new_ones(batch * k, max_length)
        full_mask[:, :prompt_len] = beam_mask
    runner = _Runner(model, batch * k, max_length, use_cache)
    was_training = model.training
    model.eval()
    try:
        with gemv_layout(model, enabled=max_new_tokens >= GEMV_MIN_TOKENS):
            cur_len, n_new = prompt_len, prompt_len
            while True:
                flat = running[:, :, :cur_len].reshape(batch * k, cur_len)
                step_mask = None if beam_mask is None else full_mask[:, :cur_len]
                log_probs = F.log_softmax(runner(flat, step_mask, n_new), dim=-1)
                vocab = log_probs.shape[-1]
                # Every (beam, token) pair of a prompt is a candidate, scored by its total log-prob.
                totals = (log_probs.view(batch, k, vocab) + running_scores[:, :, None]).view(
                    batch, -1
                )
                top_scores, top_index = torch.topk(totals, keep)
                from_beam = top_index // vocab
                candidates = _take(running, from_beam)
                candidates[:, :, cur_len] = top_index % vocab
                ends = cur_len + 1 >= max_length
                if eos_tensor is not None:
                    ends = torch.isin(candidates[:, :, cur_len], eos_tensor) | ends
                else:
                    ends = torch.full((batch, keep), ends, device=device)
                # Open beams for the next step: the best k candidates that did not end.
                open_scores = top_scores + ends.float() * -1e9
                best_open = torch.topk(open_scores, k)[1]
                running = _take(candidates, best_open)
                running_scores = _take(open_scores, best_open)
                parent = _take(from_beam, best_open)
                # Finished list: merge in the candidates that ended (among the top k), scored
                # with the length penalty, and keep the best k.
                just_ended = ends & top_k_mask[None, :]
                scored = top_scores / ((cur_len + 1 - prompt_len) ** length_penalty)
                full = torch.all(is_finished, dim=-1, keepdim=True) & (early_stopping is True)
                scored = scored + full.float() * -1e9 + (~improvable).float() * -1e9
                scored = scored + (~just_ended).float() * -1e9
                merged_scores = torch.cat([finished_scores, scored], dim=1)
                best = torch.topk(merged_scores, k)[1]
                finished = _take(torch.cat([finished, candidates], dim=1), best)
                finished_scores = _take(merged_scores, best)
                lens = torch.full((batch, keep), cur_len + 1 - prompt_len, device=device)
                finished_lens = _take(torch.cat([finished_lens, lens], dim=1), best)
                is_finished = _take(torch.cat([is_finished, just_ended], dim=1), best)
                # The caches follow their beams: row (b, j) continues from (b, parent[b, j]).
                offsets = torch.arange(batch, device=device)[:, None] * k
                runner.reorder((parent + offsets).flatten())
                cur_len, n_new = cur_len + 1, 1
                # Can an open beam still beat the worst finished one? (its score can only fall,
                # unless a positive length penalty rewards length: "never" then bounds it at
                # max_length, the default heuristic at the current length).
                if early_stopping == "never" and length_penalty > 0.0:
                    best_len = max_length - prompt_len
                else:
                    best_len = cur_len - prompt_len
                best_possible = running_scores[:, :1] / (best_len**length_penalty)
                worst_finished = torch.where(
                    is_finished, torch.min(finished_scores, dim=1, keepdim=True)[0], -1.0e9
                )
                improvable = improvable & torch.any(
                    best_possible > worst_finished, dim=-1, keepdim=True
                )
                all_done = bool(torch.all(is_finished)) and early_stopping is True
                if not bool(torch.any(improvable)) or all_done or bool(torch.all(ends)):
                    break
    finally:
        model.train(was_training)
    sequences = finished[:, :num_return_sequences].reshape(batch * num_return_sequences, -1)
    scores = finished_scores[:, :num_return_sequences].reshape(-1)
    # Cut after the longest returned hypothesis (shorter ones are filled with pad/EOS).
    longest = int(finished_lens[:, :num_return_sequences].max())
    return sequences[:, : prompt_len + longest], scores
