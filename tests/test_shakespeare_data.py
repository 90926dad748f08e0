"""llmlab.data.shakespeare: the corpus from the package, the split, token files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmlab.data import shakespeare
from llmlab.data.shakespeare import (
    POEMS,
    build_corpus,
    load_prepared,
    package_texts_dir,
    play_files,
    prepare,
    tokenizer_from_meta,
)
from llmlab.errors import LLMLabError
from llmlab.tokenizers import CharTokenizer


def test_play_files_are_the_37_modern_spelling_plays() -> None:
    plays = play_files()
    names = [p.name for p in plays]
    assert len(plays) == 37 and names == sorted(names)
    assert all(n.endswith("_gut.txt") for n in names)  # no *_gut_f.txt folio texts
    assert "hamlet_gut.txt" in names and not set(POEMS) & set(names)
    assert all((package_texts_dir() / poem).is_file() for poem in POEMS)


def test_build_corpus_tiny_and_full() -> None:
    tiny = build_corpus("tiny")
    assert len(tiny) >= 1_100_000 and tiny == build_corpus("tiny")
    first = play_files()[0].read_text(encoding="utf-8").strip()
    assert tiny.startswith(first + "\n\n")
    full = build_corpus("full")
    assert full.startswith(tiny) and len(full) > 3 * len(tiny)
    last = play_files()[-1].read_text(encoding="utf-8").strip()
    assert full.endswith(last)
    with pytest.raises(LLMLabError, match="unknown corpus"):
        build_corpus("huge")


def test_prepare_char_writes_consistent_token_files(tmp_path) -> None:
    out = prepare("tiny", "char", out_dir=tmp_path / "ds")
    train, val, meta = load_prepared(out)
    text = build_corpus("tiny")
    tok = tokenizer_from_meta(meta)
    assert isinstance(tok, CharTokenizer)
    assert meta["vocab_size"] == tok.vocab_size == len(set(text))
    assert meta["n_chars"]["total"] == len(text) and meta["n_chars"]["train"] == int(
        0.9 * len(text)
    )
    # Char level: one token per character, and the two files decode back to the text.
    assert len(train) == meta["n_tokens"]["train"] == meta["n_chars"]["train"]
    assert len(train) + len(val) == meta["n_tokens"]["total"] == len(text)
    assert train.dtype == np.uint16 and int(train.max()) < tok.vocab_size
    assert tok.decode(train) + tok.decode(val) == text
    assert meta["source_files"] == [p.name for p in play_files()[: len(meta["source_files"])]]


def test_prepare_skips_a_complete_folder_and_force_rewrites(tmp_path) -> None:
    out = prepare("tiny", "char", out_dir=tmp_path / "ds")
    stamp = (out / "train.bin").stat().st_mtime_ns
    (out / "marker").write_text("kept")
    assert prepare("tiny", "char", out_dir=out) == out
    assert (out / "train.bin").stat().st_mtime_ns == stamp  # nothing rewritten
    prepare("tiny", "char", out_dir=out, force=True)
    assert (out / "train.bin").stat().st_mtime_ns != stamp
    assert (out / "marker").read_text() == "kept"


def test_interrupted_prepare_leaves_no_loadable_half_dataset(tmp_path, monkeypatch) -> None:
    out = prepare("tiny", "char", out_dir=tmp_path / "ds")
    calls = []

    def flaky_encode(self, text):
        calls.append(len(text))
        if len(calls) == 2:  # die while tokenising the validation split
            raise KeyboardInterrupt
        return original(self, text)

    original = CharTokenizer.encode
    monkeypatch.setattr(CharTokenizer, "encode", flaky_encode)
    with pytest.raises(KeyboardInterrupt):
        prepare("tiny", "char", out_dir=out, force=True)
    monkeypatch.setattr(CharTokenizer, "encode", original)
    with pytest.raises(LLMLabError, match="meta.json missing"):
        load_prepared(out)
    assert not list(out.glob("*.tmp"))  # no temporary files left behind
    prepare("tiny", "char", out_dir=out)  # an incomplete folder is prepared again
    assert load_prepared(out)[2]["n_tokens"]["total"] == len(build_corpus("tiny"))


def test_load_prepared_detects_missing_and_corrupt_files(tmp_path) -> None:
    with pytest.raises(LLMLabError, match="prepare_data"):
        load_prepared(tmp_path)
    out = prepare("tiny", "char", out_dir=tmp_path / "ds")
    with open(out / "val.bin", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(LLMLabError, match="--force"):
        load_prepared(out)
    (out / "val.bin").unlink()
    with pytest.raises(LLMLabError, match="missing"):
        load_prepared(out)
    (out / "meta.json").write_text("{not json")
    with pytest.raises(LLMLabError, match="corrupt"):
        load_prepared(out)
    (out / "meta.json").write_text(json.dumps({"n_tokens": {}}))
    with pytest.raises(LLMLabError, match="corrupt"):
        load_prepared(out)


def test_prepare_rejects_bad_names(tmp_path) -> None:
    with pytest.raises(LLMLabError, match="unknown tokenizer"):
        prepare("tiny", "words", out_dir=tmp_path)
    with pytest.raises(LLMLabError, match="unknown corpus"):
        prepare("big", "char", out_dir=tmp_path)
    with pytest.raises(LLMLabError, match="unknown source"):
        prepare("tiny", "char", source="ftp", out_dir=tmp_path)
    with pytest.raises(LLMLabError, match="only the tiny corpus"):
        prepare("full", "char", source="url", out_dir=tmp_path)  # fails before any download
    assert not list(tmp_path.iterdir())


def test_missing_empty_or_short_corpus_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(shakespeare.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LLMLabError, match="uv sync"):
        package_texts_dir()
    monkeypatch.undo()

    empty = tmp_path / "texts"
    empty.mkdir()
    monkeypatch.setattr(shakespeare, "package_texts_dir", lambda: empty)
    with pytest.raises(LLMLabError, match="no plays"):
        build_corpus("tiny")
    (empty / "short_play_gut.txt").write_text("To be, or not to be.")
    assert build_corpus("full") == "To be, or not to be."
    with pytest.raises(LLMLabError, match="fewer than"):
        prepare("tiny", "char", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prepare_data_script_smoke(script) -> None:
    prepare_data = script("sprints.09_train_gpt2.results.prepare_data")
    out = prepare_data.main(["--corpus", "tiny", "--tokenizer", "both"])
    for kind in ("char", "gpt2"):
        folder = Path(out[f"{kind}_dir"])
        assert all((folder / f).is_file() for f in ("train.bin", "val.bin", "meta.json"))
        train, val = out[f"{kind}_tokens_train"], out[f"{kind}_tokens_val"]
        assert train + val == out[f"{kind}_tokens_total"]
        assert (folder / "train.bin").stat().st_size == 2 * train
    assert out["n_chars_train"] + out["n_chars_val"] == out["n_chars"] >= 1_100_000
    assert out["n_chars_train"] == int(0.9 * out["n_chars"])
    assert out["char_vocab_size"] == 77  # the tiny corpus uses 77 distinct characters
    assert out["char_tokens_total"] == out["n_chars"]
    assert out["gpt2_vocab_size"] == 50257
    # BPE: ~3 characters per token; the split is 90/10 in tokens too, roughly.
    assert 2.5 < out["gpt2_chars_per_token"] < 4.5
    assert 0.85 < out["gpt2_tokens_train"] / out["gpt2_tokens_total"] < 0.95
    train, val, meta = load_prepared(out["gpt2_dir"])
    gpt2 = tokenizer_from_meta(meta)
    assert gpt2.vocab_size == 50257 and int(train.max()) < 50257
    assert gpt2.decode(val) == build_corpus("tiny")[out["n_chars_train"] :]
    with pytest.raises(LLMLabError, match="unknown tokenizer"):
        tokenizer_from_meta({"tokenizer": "words"})
