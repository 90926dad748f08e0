"""`llmlab.cli`: the one-line error of `run` and the thread setting that scripts restore."""

from __future__ import annotations

import argparse

import pytest
import torch

from llmlab.cli import positive_int, probability, run, torch_threads
from llmlab.errors import LLMLabError


def test_torch_threads_sets_and_restores_even_on_error() -> None:
    before = torch.get_num_threads()
    target = 2 if before != 2 else 3
    with torch_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(target):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(0):  # 0: keep the current count
        assert torch.get_num_threads() == before


def test_run_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def main(argv: list[str] | None) -> None:
        raise LLMLabError("the file is missing: run prepare first")

    assert run(main) == 2
    assert capsys.readouterr().err == "error: the file is missing: run prepare first\n"


def test_argparse_types_reject_bad_values() -> None:
    assert positive_int("3") == 3 and probability("0.5") == 0.5
    for bad in ("0", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        probability("1.5")
