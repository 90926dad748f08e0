"""Reward functions for GRPO (sprint 16): what the policy is optimised for.

Text rewards for an instruction-tuned model answering numeric questions, with partial
credit so that a model which never writes the exact format still gets a signal:

- `parse_number(text)`, `tagged_answer(text)`, `last_number(text)`: read an answer.
- `format_reward(text)`: a ladder of 0.25 steps: `<answer>`, `</answer>`, a lone number
  between them, nothing after the closing tag.
- `correctness_reward(text, answer)`: 1 for the right number inside the tags, 0.5 for the
  right number as the last number of an untagged answer, 0 for a wrong number (never
  credit for being close: see the toy task's dense reward for why).
- `numbers_match(a, b)`: equality with a relative tolerance (0.5 == .5 == 0.50).
- `for_trl(fn, name)`: adapt `fn(text, answer) -> float` to `trl`'s reward-function
  signature (a batch of completions, dataset columns as keyword arguments), validating
  its output (one finite number per completion) with one-line errors.

The toy task of the from-scratch loop, `DigitSumTask`: prompt `ab=` (two digits), answer
three digits whose sum is a + b. Three rewards for it: `exact` (the task: 1 or 0),
`closeness` (dense: 1 - |sum - target| / 27, maximal exactly on correct answers) and
`progress` (dense: min(sum, target) / target, which forgot to penalise overshooting: `999`
scores 1 on every prompt, and GRPO finds that within a few dozen steps).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from llmlab.errors import LLMLabError

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")
_TAGGED = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def parse_number(text: str) -> float | None:
    """The number `text` is (whitespace, a thousands comma or a unit-free sign allowed), or
    None: "1,200" -> 1200.0, " 0.5 " -> 0.5, "12 g" -> None."""
    text = text.strip()
    if not text or _NUMBER.fullmatch(text) is None or not any(c.isdigit() for c in text):
        return None
    return float(text.replace(",", ""))


def tagged_answer(text: str) -> str | None:
    """What the last `<answer>...</answer>` pair holds, or None if there is none."""
    found = _TAGGED.findall(text)
    return found[-1] if found else None


def last_number(text: str) -> float | None:
    """The last number written anywhere in `text` ("... so 3 x 240 = 720 ml" -> 720.0)."""
    found = [m.group(0) for m in _NUMBER.finditer(text) if any(c.isdigit() for c in m.group(0))]
    return float(found[-1].replace(",", "")) if found else None


def numbers_match(a: float | None, b: float, rel_tol: float = 1e-4) -> bool:
    """a == b up to a relative tolerance (and 1e-6 absolute, for answers of 0)."""
    return a is not None and math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-6)


def format_reward(text: str) -> float:
    """Partial credit for the answer format `... <answer>NUMBER</answer>` (0, .25, ... 1).

    A 0/1 format check is 0 for every completion of a model that has never seen the tags,
    and GRPO learns nothing from a group whose rewards are all equal; each rung of this
    ladder is a small step the model can stumble on and be reinforced for.
    """
    score = 0.25 * ("<answer>" in text) + 0.25 * ("</answer>" in text)
    inner = tagged_answer(text)
    if inner is not None and parse_number(inner) is not None:
        score += 0.25
        if not text.rsplit("</answer>", 1)[1].strip():
            score += 0.25
    return score


def correctness_reward(text: str, answer: float) -> float:
    """1.0: the right number inside `<answer>` tags; 0.5: no tagged number, but the last
    number of the text is right; 0.0 otherwise (a wrong tagged number scores 0 even if the
    text mentions the right one: the answer is what the tags say)."""
    inner = tagged_answer(text)
    if inner is not None and parse_number(inner) is not None:
        return 1.0 if numbers_match(parse_number(inner), float(answer)) else 0.0
    return 0.5 if numbers_match(last_number(text), float(answer)) else 0.0


def is_correct(text: str, answer: float) -> bool:
    """Strict accuracy: a tagged number equal to the answer (what a grader would accept)."""
    return correctness_reward(text, answer) == 1.0


def completion_text(completion: Any) -> str:
    """A trl completion as text: a string, or a conversation [{"role", "content"}, ...]."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise LLMLabError(
        f"cannot read a completion of type {type(completion).__name__}: expected text or a "
        "list of chat messages"
    )


def for_trl(fn: Callable[..., float], name: str, needs_answer: bool = True) -> Callable:
    """Wrap `fn(text[, answer]) -> float` as a `trl` reward function named `name`.

    trl calls reward functions with the batch's `completions` and every dataset column as a
    keyword argument (here `answer`), and logs each under its `__name__`. The wrapper
    checks what comes back: a reward function that raises, or returns the wrong number of
    values, stops the run with one line naming it instead of a deep traceback.
    """

    def reward(completions: list, answer: Sequence[float] | None = None, **_: Any) -> list[float]:
        if needs_answer and (answer is None or len(answer) != len(completions)):
            raise LLMLabError(
                f"reward {name!r} needs an 'answer' column with one value per completion: "
                "add it to the dataset"
            )
        texts = [completion_text(c) for c in completions]
        try:
            values = (
                [fn(t, a) for t, a in zip(texts, answer, strict=True)]
                if needs_answer
                else [fn(t) for t in texts]
            )
        except Exception as exc:
            raise LLMLabError(f"reward {name!r} raised {type(exc).__name__}: {exc}") from exc
        if len(values) != len(completions) or not all(
            isinstance(v, int | float) and math.isfinite(v) for v in values
        ):
            raise LLMLabError(f"reward {name!r} must return one finite number per completion")
        return [float(v) for v in values]

    reward.__name__ = name
    return reward


# --- the toy task of the from-scratch loop ------------------------------------------------------

TOY_REWARDS = ("exact", "closeness", "progress")


class DigitSumTask:
    """ "Write three digits whose sum is a + b": prompt `ab=` (two digits), completion three
    digits, e.g. `35=` -> `260` (2 + 6 + 0 = 8). An 11-token character vocabulary.

    There are 100 prompts; `n_held_out` of them (a fixed random choice) are never trained on,
    neither supervised nor by RL, so greedy accuracy on them measures whether the model
    learned to add rather than memorised answers (every sum 0..18 still occurs in training).
    """

    VOCAB = "0123456789="
    PROMPT_LEN = 3
    COMPLETION_LEN = 3
    MAX_SUM = 27  # the largest sum three digits can make
    SPLIT_SEED = 1234  # the held-out prompts stay the same whatever the run's seed

    def __init__(self, n_held_out: int = 20) -> None:
        if not 0 <= n_held_out < 100:
            raise LLMLabError(f"n_held_out must be in 0..99, got {n_held_out}")
        pairs = [(a, b) for a in range(10) for b in range(10)]
        order = torch.randperm(100, generator=torch.Generator().manual_seed(self.SPLIT_SEED))
        self.held_out = [pairs[i] for i in order[:n_held_out].tolist()]
        self.train_pairs = [pairs[i] for i in order[n_held_out:].tolist()]
        self.stoi = {c: i for i, c in enumerate(self.VOCAB)}
        triples = torch.cartesian_prod(*[torch.arange(10)] * 3)  # every answer, by its sum
        self.solutions = {t: triples[triples.sum(dim=1) == t] for t in range(self.MAX_SUM + 1)}

    @property
    def vocab_size(self) -> int:
        return len(self.VOCAB)

    def encode(self, text: str) -> list[int]:
        return [self.stoi[c] for c in text]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return "".join(self.VOCAB[int(i)] for i in ids)

    def prompts(self, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
        """(n, 3) prompt ids, e.g. (3, 5) -> "35="."""
        return torch.tensor([self.encode(f"{a}{b}=") for a, b in pairs], dtype=torch.long)

    def sample_prompts(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[int]]:
        """n random training prompts and their targets a + b (for `llmlab.grpo.train_grpo`)."""
        pick = torch.randint(len(self.train_pairs), (n,), generator=generator).tolist()
        pairs = [self.train_pairs[i] for i in pick]
        return self.prompts(pairs), [a + b for a, b in pairs]

    def supervised_batch(
        self, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n correct examples `ab=xyz` (a random answer among all that sum to a + b) as
        (input ids, targets), with the loss on the three answer digits only."""
        prompts, targets = self.sample_prompts(n, generator)
        answers = []
        for t in targets:
            options = self.solutions[t]
            answers.append(options[torch.randint(len(options), (1,), generator=generator)])
        full = torch.cat([prompts, torch.cat(answers)], dim=1)
        labels = full[:, 1:].clone()
        labels[:, : self.PROMPT_LEN - 1] = -1  # no loss for predicting the prompt itself
        return full[:, :-1], labels

    def digits(self, completion: torch.Tensor | Sequence[int]) -> list[int] | None:
        """The three digits of a completion, or None if it holds another token."""
        values = [int(i) for i in completion]
        return values if len(values) == 3 and all(v < 10 for v in values) else None

    def exact_reward(self, completion: torch.Tensor | Sequence[int], target: int) -> float:
        """1 if the completion is three digits summing to the target, else 0: the task."""
        d = self.digits(completion)
        return float(d is not None and sum(d) == target)

    def closeness_reward(self, completion: torch.Tensor | Sequence[int], target: int) -> float:
        """1 - |sum - target| / 27: dense, and its maximum is exactly the task's answers."""
        d = self.digits(completion)
        return 0.0 if d is None else 1.0 - abs(sum(d) - target) / self.MAX_SUM

    def progress_reward(self, completion: torch.Tensor | Sequence[int], target: int) -> float:
        """min(sum, target) / target, "how much of the target you reached": dense too, but it
        forgot to penalise overshooting, so `999` earns the maximum for every prompt."""
        d = self.digits(completion)
        if d is None:
            return 0.0
        return 1.0 if target == 0 else min(sum(d), target) / target

    def reward_fn(self, kind: str = "exact") -> Callable:
        """A batch reward for `train_grpo`: (completions, mask, targets) -> rewards."""
        if kind not in TOY_REWARDS:
            raise LLMLabError(f"reward must be one of {TOY_REWARDS}, got {kind!r}")
        one = getattr(self, f"{kind}_reward")

        def reward(completions: torch.Tensor, mask: torch.Tensor, targets: Sequence[int]):
            return [one(c, t) for c, t in zip(completions.tolist(), targets, strict=True)]

        reward.__name__ = f"digit_sum_{kind}"
        return reward

    def model_config(self, n_layer: int = 2, n_head: int = 4, n_embd: int = 64):
        """The shape of the toy GPT: 6 positions (prompt + answer), this vocabulary."""
        from llmlab.gpt import GPTConfig

        block = self.PROMPT_LEN + self.COMPLETION_LEN
        return GPTConfig(self.vocab_size, block, n_layer, n_head, n_embd, bias=False)

    @torch.no_grad()
    def accuracy(
        self,
        model: torch.nn.Module,
        pairs: Sequence[tuple[int, int]],
        samples: int = 0,
        seed: int = 123,
    ) -> float:
        """Fraction of correct answers to `pairs`: greedy (`samples=0`), or over `samples`
        completions of each prompt drawn at temperature 1 (what training sees)."""
        from llmlab.generate import generate

        if not pairs:
            return float("nan")
        device = next(model.parameters()).device
        asked = [p for p in pairs for _ in range(max(samples, 1))]
        prompts = self.prompts(asked).to(device)
        if samples:
            generator = torch.Generator(device=device).manual_seed(seed)
            out = generate(model, prompts, self.COMPLETION_LEN, generator=generator)
        else:
            out = generate(model, prompts, self.COMPLETION_LEN, greedy=True)
        answers = out[:, self.PROMPT_LEN :].tolist()
        hits = sum(self.exact_reward(c, a + b) for c, (a, b) in zip(answers, asked, strict=True))
        return hits / len(asked)

    def evaluate(self, model: torch.nn.Module, samples: int = 16) -> dict[str, float]:
        """Greedy and sampled accuracy on the training prompts and on the held-out ones."""
        return {
            "greedy_acc_train": self.accuracy(model, self.train_pairs),
            "greedy_acc_heldout": self.accuracy(model, self.held_out),
            "sampled_acc_train": self.accuracy(model, self.train_pairs, samples),
            "sampled_acc_heldout": self.accuracy(model, self.held_out, samples),
        }
