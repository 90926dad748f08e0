"""llmlab.rewards (text rewards, trl adapter, the toy task) and llmlab.data.recipes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from llmlab.data.recipes import (
    arithmetic_problems,
    load_recipes,
    read_jsonl,
    recipe_questions,
    recipes_path,
    select_split,
    write_jsonl,
)
from llmlab.errors import LLMLabError
from llmlab.gpt import GPT
from llmlab.rewards import (
    DigitSumTask,
    correctness_reward,
    for_trl,
    format_reward,
    is_correct,
    last_number,
    parse_number,
    tagged_answer,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42.0), (" 0.5 ", 0.5), ("1,200", 1200.0), ("-3", -3.0), ("12 g", None), ("", None)],
)
def test_parse_number(text: str, value: float | None) -> None:
    assert parse_number(text) == value


def test_reading_answers() -> None:
    text = "3 x 240 = 720 ml.\n<answer>700</answer> no, <answer>720</answer>"
    assert tagged_answer(text) == "720"
    assert tagged_answer("no tags, 12") is None
    assert last_number("so 3 x 240 = 720 ml") == 720.0
    assert last_number("1,500 ml in 1.5 litres") == 1.5
    assert last_number("none") is None


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("The answer is 5.", 0.0),
        ("<answer> five", 0.25),
        ("<answer>five</answer>", 0.5),
        ("<answer>5</answer> and more words", 0.75),
        ("so 2 + 3 = 5.\n<answer>5</answer>\n", 1.0),
    ],
)
def test_format_reward_is_a_ladder(text: str, score: float) -> None:
    assert format_reward(text) == score


def test_correctness_reward_partial_credit() -> None:
    assert correctness_reward("<answer>900</answer>", 900) == 1.0
    assert correctness_reward("<answer>900.0</answer>", 900) == 1.0
    assert correctness_reward("150 x 6 = 900 ml", 900) == 0.5  # right, but untagged
    assert correctness_reward("<answer>899</answer> I mean 900", 900) == 0.0  # tags decide
    assert correctness_reward("about 899", 900) == 0.0  # no credit for being close
    assert is_correct("<answer>0.5</answer>", 0.5) and not is_correct("0.5", 0.5)


def test_for_trl_adapts_conversations_and_checks_outputs() -> None:
    fmt = for_trl(format_reward, "format", needs_answer=False)
    correct = for_trl(correctness_reward, "correctness")
    completions = [
        [{"role": "assistant", "content": "<answer>4</answer>"}],
        [{"role": "assistant", "content": "it is 5"}],
    ]
    assert fmt.__name__ == "format" and correct.__name__ == "correctness"
    assert fmt(completions=completions) == [1.0, 0.0]
    assert correct(completions=completions, answer=[4, 5], prompts=None) == [1.0, 0.5]
    assert correct(completions=["<answer>4</answer>"], answer=[4]) == [1.0]  # plain text too
    with pytest.raises(LLMLabError, match="needs an 'answer' column"):
        correct(completions=completions)

    def broken(text: str) -> float:
        raise ZeroDivisionError("oops")

    with pytest.raises(LLMLabError, match="'broken' raised ZeroDivisionError"):
        for_trl(broken, "broken", needs_answer=False)(completions=["x"])
    with pytest.raises(LLMLabError, match="finite number"):
        for_trl(lambda t: float("nan"), "nan", needs_answer=False)(completions=["x"])


def test_digit_sum_task_prompts_and_supervised_batches() -> None:
    task = DigitSumTask()
    assert task.decode(task.prompts([(3, 5)])[0]) == "35="
    assert len(task.held_out) == 20 and len(task.train_pairs) == 80
    assert not set(task.held_out) & set(task.train_pairs)
    # every held-out target still occurs in training: held-out tests adding, not new sums
    assert {a + b for a, b in task.held_out} <= {a + b for a, b in task.train_pairs}
    idx, labels = task.supervised_batch(64, torch.Generator().manual_seed(0))
    assert idx.shape == labels.shape == (64, 5)
    assert (labels[:, :2] == -1).all()  # no loss on the prompt
    full = torch.cat([idx, labels[:, -1:]], 1)
    for row in full.tolist():
        a, b, digits = row[0], row[1], row[3:]
        assert (a, b) in task.train_pairs and sum(digits) == a + b


def test_digit_sum_rewards() -> None:
    task = DigitSumTask()
    assert task.exact_reward([2, 6, 0], 8) == 1.0 and task.exact_reward([2, 6, 1], 8) == 0.0
    assert task.exact_reward([2, 10, 0], 2) == 0.0  # "=" is not a digit
    assert task.closeness_reward([2, 6, 0], 8) == 1.0
    assert task.closeness_reward([9, 9, 9], 8) == pytest.approx(1 - 19 / 27)
    # the loophole: overshooting is never penalised, so 999 is perfect for every target
    assert all(task.progress_reward([9, 9, 9], t) == 1.0 for t in range(19))
    assert task.progress_reward([1, 1, 0], 8) == pytest.approx(2 / 8)
    batch = task.reward_fn("exact")(torch.tensor([[2, 6, 0], [0, 0, 0]]), None, [8, 8])
    assert batch == [1.0, 0.0]
    with pytest.raises(LLMLabError, match="reward must be one of"):
        task.reward_fn("length")


def test_digit_sum_accuracy_greedy_and_sampled() -> None:
    task = DigitSumTask()
    model = GPT(task.model_config(1, 2, 16)).eval()
    scores = task.evaluate(model, samples=4)
    assert all(0.0 <= v <= 0.3 for v in scores.values())  # random weights: near chance

    class Zeros(torch.nn.Module):  # always writes "000": right exactly when a + b = 0
        def __init__(self) -> None:
            super().__init__()
            self.config = task.model_config(1, 2, 16)
            self.dummy = torch.nn.Parameter(torch.zeros(1))
            self.h = []

        def forward(self, idx, targets=None, kv_caches=None, **kwargs):
            logits = torch.full((idx.shape[0], idx.shape[1], 11), -1e9)
            logits[..., 0] = 0.0
            return logits, None

    assert task.accuracy(Zeros(), [(0, 0), (0, 0)]) == 1.0
    assert task.accuracy(Zeros(), [(0, 0), (1, 2)]) == 0.5
    assert task.accuracy(Zeros(), [(0, 0), (1, 2)], samples=3) == 0.5


def test_recipe_generator_is_deterministic_and_consistent() -> None:
    items = recipe_questions(200, seed=3)
    assert items == recipe_questions(200, seed=3)
    assert items != recipe_questions(200, seed=4)
    assert len({q["id"] for q in items}) == len({q["question"] for q in items}) == 200
    assert sum(q["split"] == "train" for q in items) == 150
    assert len({q["kind"] for q in items}) == 8
    for q in items:  # the worked solution ends with the answer
        final = re.findall(r"-?\d+(?:\.\d+)?", q["solution"])[-1]
        assert float(final) == pytest.approx(q["answer"]), q


def test_arithmetic_problems_have_right_answers() -> None:
    for q in arithmetic_problems(100, seed=1):
        final = re.findall(r"-?\d+", q["solution"])[-1]
        assert int(final) == q["answer"] >= 0, q
        numbers = [int(n) for n in re.findall(r"\d+", q["solution"].split("=")[0])]
        assert numbers, q


def test_the_committed_file_is_the_generators_output(tmp_path: Path) -> None:
    committed = recipes_path()
    assert committed.is_file(), "data/recipes/recipes.jsonl is missing: run make_recipe_dataset"
    fresh = write_jsonl(recipe_questions(), tmp_path / "recipes.jsonl")
    assert fresh.read_bytes() == committed.read_bytes()
    assert len(load_recipes("train")) == 300 and len(load_recipes("test")) == 100


def test_bad_question_files_get_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(LLMLabError, match="not found: rebuild it"):
        read_jsonl(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(LLMLabError, match="holds no questions"):
        read_jsonl(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"\n')
    with pytest.raises(LLMLabError, match=":1 is not valid JSON"):
        read_jsonl(bad)
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"question": "x", "answer": 1}) + "\n")
    with pytest.raises(LLMLabError, match="lacks the fields"):
        read_jsonl(partial)
    with pytest.raises(LLMLabError, match="split must be one of"):
        select_split(recipe_questions(4), "validation")
    with pytest.raises(LLMLabError, match="no questions in the 'test' split"):
        select_split(recipe_questions(1), "test")
