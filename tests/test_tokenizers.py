"""llmlab.tokenizers: GPT-2 BPE parity (transformers + OpenAI's algorithm), char, trained BPE."""

from __future__ import annotations

import json
from functools import cache, lru_cache
from pathlib import Path

import pytest
import regex
from transformers import GPT2TokenizerFast

from llmlab.errors import LLMLabError
from llmlab.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    gpt2_files,
    gpt2_tokenizer,
    train_bpe,
)

TRICKY = [
    "Hello world",
    " Hello world",
    "Héllo wörld, naïve café — déjà vu; Ærøskøbing",
    "日本語のテキストと中文和한국어",
    "emoji: 🤗🎉👩‍👩‍👧 and ✨ flags 🇫🇷",
    "runs of   spaces,\ttabs\t\tand\n\nnewlines\n \n   \n",
    "it's we've they're I'm you'll he'd IT'S",
    "numbers 0 42 3.14159 1,000,000 2026-11-22 123456789",
    "def f(x):\n    return {'a': x**2, \"b\": [1, 2]}  # comment\n",
    "  leading and trailing spaces  ",
    "<|endoftext|>two documents<|endoftext|>",
    "",
]


@lru_cache(maxsize=1)
def _hf() -> GPT2TokenizerFast:
    vocab, merges = gpt2_files()
    return GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))


class OpenAIReferenceBPE:
    """GPT-2's original pure-Python BPE (openai/gpt-2 `src/encoder.py`), for parity."""

    def __init__(self) -> None:
        vocab_path, merges_path = gpt2_files()
        self.encoder = json.loads(vocab_path.read_text(encoding="utf-8"))
        lines = merges_path.read_text(encoding="utf-8").split("\n")[1:]
        self.ranks = {tuple(line.split()): i for i, line in enumerate(lines) if line}
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
        bs += list(range(ord("®"), ord("ÿ") + 1))
        cs, n = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        self.byte_encoder = dict(zip(bs, map(chr, cs), strict=True))
        self.pat = regex.compile(
            r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
        )

    @cache  # noqa: B019 - a test helper living for the whole session
    def bpe(self, token: str) -> tuple[str, ...]:
        word = tuple(token)
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:], strict=False)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in regex.findall(self.pat, text):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids


def test_gpt2_known_ids() -> None:
    tok = gpt2_tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.vocab_size == 50257 and tok.eot_id == 50256
    assert tok.encode("<|endoftext|>") == [50256]
    assert tok.tokens(" Hello world") == ["ĠHello", "Ġworld"]
    assert gpt2_tokenizer() is tok  # built once


@pytest.mark.parametrize("text", TRICKY)
def test_gpt2_matches_transformers_and_round_trips(text: str) -> None:
    tok = gpt2_tokenizer()
    ids = tok.encode(text)
    assert ids == _hf().encode(text)
    assert tok.decode(ids) == text


def test_gpt2_matches_openai_reference_bpe() -> None:
    ref = OpenAIReferenceBPE()
    tok = gpt2_tokenizer()
    for text in TRICKY:
        plain = text.replace("<|endoftext|>", "|")  # the reference has no special tokens
        assert tok.encode(plain) == ref.encode(plain), plain


def test_gpt2_encode_batch_and_numpy_decode() -> None:
    import numpy as np

    tok = gpt2_tokenizer()
    assert tok.encode_batch(TRICKY[:4]) == [tok.encode(t) for t in TRICKY[:4]]
    ids = np.asarray(tok.encode(TRICKY[2]), dtype=np.uint16)
    assert tok.decode(ids) == TRICKY[2]


def test_char_tokenizer_round_trip_and_meta() -> None:
    text = "hello world\nHi!"
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text)) and tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert ids[0] == tok.chars.index("h") and tok.decode(ids) == text
    again = CharTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.chars == tok.chars and again.encode("Hi") == tok.encode("Hi")


def test_char_tokenizer_errors_name_the_character() -> None:
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(LLMLabError, match="'z'"):
        tok.encode("abz")
    with pytest.raises(LLMLabError):
        tok.decode([3])
    with pytest.raises(LLMLabError):
        CharTokenizer.from_text("")
    with pytest.raises(LLMLabError):
        CharTokenizer.from_dict({"kind": "bpe"})


CORPUS = (
    "the king is dead, long live the king. the queen and the king walk in the garden. "
    "thou art the king of kings, and the queen of queens shall be thine. "
) * 40


def test_train_bpe_round_trip_size_and_merges(tmp_path) -> None:
    tok = train_bpe(CORPUS, vocab_size=300)
    assert isinstance(tok, BPETokenizer)
    assert tok.vocab_size == 300
    assert tok.eot_id == 0  # the special token comes first in a trained vocabulary
    # Frequent words become single tokens (with GPT-2's leading-space marker).
    assert tok.tokens(" king") == ["Ġking"] and tok.tokens(" the") == ["Ġthe"]
    assert len(tok.encode(CORPUS)) < len(CORPUS.encode("utf-8")) / 3
    # Byte-level: text it never saw still round-trips.
    for text in TRICKY:
        assert tok.decode(tok.encode(text)) == text
    saved = BPETokenizer.load(tok.save(tmp_path / "tok.json"))
    assert saved.encode(CORPUS[:200]) == tok.encode(CORPUS[:200])


def test_train_bpe_from_files_and_errors(tmp_path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    tok = train_bpe(files=[path], vocab_size=280)
    assert tok.vocab_size == 280 and tok.decode(tok.encode("the king")) == "the king"
    with pytest.raises(LLMLabError, match="too small"):
        train_bpe(CORPUS, vocab_size=100)
    with pytest.raises(LLMLabError, match="empty"):
        train_bpe("", vocab_size=300)
    with pytest.raises(LLMLabError, match="not found"):
        train_bpe(files=[tmp_path / "nope.txt"], vocab_size=300)
    with pytest.raises(LLMLabError, match="not found"):
        BPETokenizer.load(tmp_path / "nope.json")


def test_tokenizer_demo_smoke(script) -> None:
    demo = script("sprints.08_gpt2_assembly.results.tokenizer_demo")
    out = demo.main(["--vocab-sizes", "300,1024", "--train-chars", "100000", "--text", "abc"])
    assert out["char_vocab_size"] == 77 and out["char_chars_per_token"] == 1.0
    assert out["bpe300_vocab_size"] == 300 and out["bpe1024_vocab_size"] == 1024
    # A bigger vocabulary compresses more; GPT-2's 50k tokens beat both on held-out text.
    assert 1.0 < out["bpe300_chars_per_token"] < out["bpe1024_chars_per_token"]
    assert out["bpe1024_chars_per_token"] < out["gpt2_chars_per_token"] < 4.5
    assert Path(out["plot"]).is_file()
