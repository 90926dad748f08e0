"""Smoke tests of the sprint-11 scripts: they run, learn and report what they claim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmlab.cli import run
from tests.conftest import load_script

PKG = "sprints.11_finetune_gpt2_classification.results"
TINY = ["--val-size", "48", "--test-size", "96", "--batch-size", "16", "--no-progress"]


def test_finetune_classifier_fits_and_reports_baselines(sprint09_run, tmp_path: Path) -> None:
    out = load_script(f"{PKG}.finetune_classifier").main(
        [
            *TINY,
            "--model", "sprint09",
            "--strategy", "full",
            "--train-size", "64",
            "--steps", "40",  # 10 epochs of 64 reviews: the model must fit them
            "--lr", "3e-3",
            "--eval-interval", "20",
            "--out-dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert out["kind"] == "gpt" and out["steps"] == 40 and out["distinct_examples_seen"] == 64
    assert out["train_loss_last"] < out["train_loss_first"] - 0.1
    assert out["n_test"] == 96 and sum(map(sum, out["test_confusion"])) == 96
    assert 0 <= out["test_accuracy"] <= 1 and 0 <= out["test_f1"] <= 1
    # The baselines are computed on the same 96 test reviews, and TF-IDF beats the majority.
    assert out["tfidf_all_accuracy"] > out["majority_accuracy"]
    assert out["learning_curve"]["examples"] == [0, 320, 640]
    for key in ("learning_curve_png", "confusion_png"):
        assert Path(out[key]).is_file()
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["test_accuracy"] == out["test_accuracy"]
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").is_file()

    # The classify script rebuilds the best model from its checkpoint: same answers.
    texts = load_script(f"{PKG}.finetune_classifier").DEMO_TEXTS
    again = load_script(f"{PKG}.classify").main(
        ["--checkpoint", str(tmp_path / "checkpoints" / "best"), *texts]
    )
    for (label, p), (label2, p2) in zip(out["demo"], again["results"], strict=True):
        assert label == label2 and p == pytest.approx(p2, abs=1e-5)


def test_threads_default_to_every_core_for_smollm2_and_one_for_a_small_gpt() -> None:
    script = load_script(f"{PKG}.finetune_classifier")

    def threads(*argv: str) -> int:
        return script.resolve(script.build_parser().parse_args(list(argv))).threads

    assert threads() == 0  # the default, SmolLM2: one thread per core
    assert threads("--model", "sprint09") == threads("--model", "scratch") == 1
    assert threads("--threads", "1") == 1 and threads("--model", "sprint09", "--threads", "2") == 2


def test_compare_strategies_on_the_small_models(sprint09_run, tmp_path: Path) -> None:
    out = load_script(f"{PKG}.compare_strategies").main(
        ["--only", "GPT", "--scale", "0.02", "--test-size", "64", "--no-progress",
         "--out-dir", str(tmp_path)]
    )  # fmt: skip
    names = [r["name"] for r in out["table"]]
    assert len(names) == 2 and all("GPT" in n for n in names)
    assert out["table"][0]["trainable"] == out["table"][1]["trainable"]  # same shape
    assert all(r["examples"] == 12 * 16 for r in out["table"])
    assert all(Path(r["confusion_png"]).is_file() for r in out["runs"])


@pytest.mark.slow  # ~10 s of CPU: TF-IDF on the whole training split, twice
def test_baselines_script_shows_what_the_random_split_leaks(tmp_path: Path) -> None:
    out = load_script(f"{PKG}.baselines").main(
        ["--sizes", "200", "--repeats", "1", "--out-dir", str(tmp_path)]
    )
    assert out["movie"]["test_reviews_with_movie_in_train"] == 0.0  # whole movies per split
    assert out["random"]["test_reviews_with_movie_in_train"] > 0.9
    for split in ("movie", "random"):
        curve = out[split]["tfidf_accuracy"]
        everything = curve[str(out[split]["sizes"]["train"])][0]
        assert everything > curve["200"][0]  # more reviews, better TF-IDF
        assert everything > out[split]["majority_accuracy"] + 0.1
    assert Path(out["png"]).is_file()


def test_heads_and_pooling_demo() -> None:
    out = load_script(f"{PKG}.heads_and_pooling").main([])
    assert out["gpt2_parity_max_diff"] < 1e-5
    assert out["hf_pooled_position"] == out["text_length"] - 2  # one token early
    assert out["ours_pooled_position"] == out["text_length"] - 1
    assert out["smollm2_pad_is_eos"] is True


def test_bad_input_is_one_line(capsys, tmp_path: Path, monkeypatch) -> None:
    main = load_script(f"{PKG}.finetune_classifier").main
    assert run(main, ["--model", "sprint09", "--template", "no slot", *TINY]) == 2
    assert "--template must contain {}" in capsys.readouterr().err
    monkeypatch.setenv("LLMLAB_RUNS", str(tmp_path))  # no sprint-09 run here
    assert run(main, ["--model", "sprint09", *TINY]) == 2
    assert "train one first" in capsys.readouterr().err
    assert run(load_script(f"{PKG}.classify").main, ["some text"]) == 2
    assert "no fine-tuned classifier" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_starts_as_a_zero_shot_classifier(tmp_path: Path) -> None:
    """The default recipe on the real model: the head made of the LM's rows for " negative" /
    " positive" classifies the validation reviews well above the majority class at step 0."""
    out = load_script(f"{PKG}.finetune_classifier").main(
        [
            "--val-size", "32", "--test-size", "32", "--train-size", "32",
            "--batch-size", "8", "--steps", "2", "--eval-interval", "2", "--lora-layers", "2",
            "--no-progress", "--out-dir", str(tmp_path), "--no-checkpoints",
        ]
    )  # fmt: skip
    assert out["kind"] == "hf" and out["strategy"] == "lora"
    assert out["trainable_params"] < 0.01 * out["total_params"]
    assert out["val_accuracy_start"] >= 0.7  # majority class on these 32: about 0.6
