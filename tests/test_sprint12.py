"""Smoke tests of the sprint-12 scripts: fine-tuning on a book and the leaky validation demo."""

from __future__ import annotations

from pathlib import Path

from llmlab.cli import run
from tests.conftest import load_script

PKG = "sprints.12_finetune_gpt2_generative.results"


def test_finetune_book_improves_the_held_out_book(sprint09_run, tmp_path: Path) -> None:
    out = load_script(f"{PKG}.finetune_book").main(
        [
            "--model", "sprint09", "--steps", "30", "--eval-interval", "10",
            "--eval-tokens", "2000", "--batch-size", "16", "--new-tokens", "16",
            "--forget-chars", "2000", "--no-progress", "--out-dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert out["kind"] == "gpt" and out["strategy"] == "full"
    assert out["threads"] == 1  # the preset of a small GPT (SmolLM2's: 0, every core)
    assert out["prefix_cache"] == {"frozen_blocks": 0, "hits": 0, "misses": 0}  # all trains
    assert out["after_test_perplexity"] < out["before_test_perplexity"]
    assert out["test_tokens"] == 66_362  # every character of book 10 but the first
    assert out["chars_mapped"] == 3079  # Milton's curly apostrophes, onto "'"
    assert [e["step"] for e in out["evals"]] == [0, 10, 20, 30]
    assert set(out["forgetting"]) == {"shakespeare", "reviews"}
    table = Path(out["generations_md"]).read_text().splitlines()
    assert sum(line.startswith("| ") for line in table) == 1 + 3  # header + one row per prompt
    assert Path(out["overfitting_png"]).is_file()
    assert (tmp_path / "checkpoints" / "last" / "model.safetensors").is_file()


def test_bad_text_files_are_one_line_errors(sprint09_run, tmp_path: Path, capsys) -> None:
    main = load_script(f"{PKG}.finetune_book").main
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert run(main, ["--model", "sprint09", "--text", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("\n".join(f"Line {i}." for i in range(12)))
    assert run(main, ["--model", "sprint09", "--text", str(short)]) == 2
    assert "fewer than one window" in capsys.readouterr().err


def test_leaky_validation_windows_are_training_windows(sprint09_run, tmp_path: Path) -> None:
    out = load_script(f"{PKG}.leaky_validation").main(
        ["--steps", "20", "--eval-interval", "10", "--no-progress", "--out-dir", str(tmp_path)]
    )
    assert out["origin"] == "pretrained"
    assert out["leaky_val_chars_in_train"] > 0.99  # what random overlapping windows measure
    assert len(out["curves"]["leaky"]) == len(out["curves"]["held_out"]) == 3
    assert Path(out["png"]).is_file()
