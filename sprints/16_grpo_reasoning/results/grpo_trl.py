"""GRPO with trl's GRPOTrainer on SmolLM2-135M-Instruct: recipe questions or word problems.

The offline instruct model answers questions from the committed recipe dataset (scaling,
conversions, cooking times) or generated arithmetic word problems. Two reward functions with
partial credit score each completion: `format` (the `<answer>NUMBER</answer>` ladder) and
`correctness` (1 for the right tagged number, 0.5 for the right last number without tags).
A one-shot demonstration in the prompt makes the tags appear in some samples, which is what
gives GRPO a signal to start from (`--no-demo` shows the alternative).

Before and after training, greedy answers to the same held-out test questions are scored
(strict accuracy, format rate) and saved side by side. trl's per-step logs (mean reward,
each reward function, KL, completion length, clip ratios) go to TensorBoard and PNGs. For the
first `--parity-steps` steps, our from-scratch advantages and loss (`llmlab.grpo`) are
recomputed from trl's own inputs and compared with what trl computed.

Run: python -m sprints.16_grpo_reasoning.results.grpo_trl --task recipes
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from llmlab.cli import non_negative_int, positive_float, positive_int, run, torch_threads
from llmlab.data.recipes import arithmetic_problems, load_recipes, select_split
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.grpo import LOSS_TYPES, SCALE_REWARDS, group_advantages, grpo_loss, token_logprobs
from llmlab.plotting import plot_curves
from llmlab.pretrained import load_pretrained
from llmlab.rewards import correctness_reward, for_trl, format_reward, is_correct
from llmlab.runs import make_writer, run_dir

SPRINT, SCRIPT = "16_grpo_reasoning", "grpo_trl"
SYSTEM = "Reason briefly, then give the final number between <answer> and </answer>."
# One worked example per task, shown as an earlier turn of the conversation (not in the data).
DEMOS = {
    "recipes": (
        "A soup recipe for 4 servings uses 600 ml of stock. How many ml of stock do you need "
        "for 6 servings?",
        "600 / 4 = 150 ml per serving; 150 x 6 = 900 ml.\n<answer>900</answer>",
    ),
    "arithmetic": (
        "Mia has 7 boxes with 4 crayons in each box. How many crayons is that?",
        "7 x 4 = 28 crayons.\n<answer>28</answer>",
    ),
}
PRESETS = {  # --preset gpu: what the same script does with a GPU's time
    "cpu": {},
    "gpu": {
        "steps": 200,
        "prompts_per_step": 8,
        "num_generations": 8,
        "max_completion_length": 128,
        "train_blocks": 0,
        "eval_items": 100,
        "lr": 1e-5,
    },
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--task", choices=["recipes", "arithmetic"], default="recipes", help="data")
    p.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (offline SmolLM2-135M-Instruct), a local model folder, or a hub name "
        "(downloads: online users only)",
    )
    p.add_argument("--preset", choices=list(PRESETS), default="cpu", help="gpu: a longer run")
    p.add_argument("--steps", type=positive_int, default=12, help="GRPO optimiser steps")
    p.add_argument("--prompts-per-step", type=positive_int, default=2, help="questions per step")
    p.add_argument(
        "--num-generations", type=positive_int, default=4, help="completions per question (G)"
    )
    p.add_argument(
        "--max-completion-length", type=positive_int, default=40, help="tokens per completion"
    )
    p.add_argument("--lr", type=positive_float, default=1e-4, help="AdamW learning rate")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (0 = no reference)")
    p.add_argument("--epsilon", type=float, default=0.2, help="clipping epsilon")
    p.add_argument("--loss-type", choices=LOSS_TYPES, default="dapo", help="token averaging")
    p.add_argument("--scale-rewards", choices=SCALE_REWARDS, default="group", help="advantage std")
    p.add_argument("--temperature", type=positive_float, default=0.7, help="sampling temperature")
    p.add_argument(
        "--train-blocks",
        type=non_negative_int,
        default=6,
        help="train only the last N decoder blocks and the final norm (0 = every weight); "
        "fewer blocks make the backward pass cheaper on a CPU",
    )
    p.add_argument("--no-demo", action="store_true", help="no worked example in the prompt")
    p.add_argument(
        "--eval-items", type=non_negative_int, default=16, help="held-out test questions scored"
    )
    p.add_argument(
        "--parity-steps",
        type=non_negative_int,
        default=1,
        help="recompute trl's advantages and loss with llmlab.grpo on the first N steps",
    )
    p.add_argument("--seed", type=int, default=0, help="seed (sampling, data order)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=non_negative_int, default=1, help="CPU threads (0 = all)")
    p.add_argument("--no-progress", action="store_true", help="hide trl's progress bar")
    return p


def messages(question: str, task: str, demo: bool = True) -> list[dict[str, str]]:
    """The conversation for one question: instruction, (a worked example,) the question."""
    turns = [{"role": "system", "content": SYSTEM}]
    if demo:
        q, a = DEMOS[task]
        turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return turns + [{"role": "user", "content": question}]


def load_items(task: str, split: str) -> list[dict[str, Any]]:
    if task == "recipes":
        return load_recipes(split)
    return select_split(arithmetic_problems(400, seed=0), split)


@torch.no_grad()
def greedy_answers(
    model: Any, tokenizer: Any, conversations: list[list[dict]], max_new_tokens: int, batch: int = 8
) -> list[str]:
    """Greedy completions for chat conversations, in batches with left padding."""
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    texts = []
    was_training = model.training
    model.eval()
    for i in range(0, len(conversations), batch):
        prompts = [
            tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in conversations[i : i + batch]
        ]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(device) for k, v in enc.items()}
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts += tokenizer.batch_decode(
            out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
        )
    model.train(was_training)
    return texts


def score(texts: list[str], items: list[dict[str, Any]]) -> dict[str, float]:
    """Strict accuracy (tagged and right), format rate and their binomial standard errors."""
    n = len(items)
    correct = [is_correct(t, q["answer"]) for t, q in zip(texts, items, strict=True)]
    formatted = [format_reward(t) == 1.0 for t in texts]
    acc, fmt = sum(correct) / n, sum(formatted) / n
    return {
        "accuracy": acc,
        "accuracy_se": math.sqrt(acc * (1 - acc) / n),
        "format_rate": fmt,
        "format_se": math.sqrt(fmt * (1 - fmt) / n),
        "n": float(n),
    }


def freeze_all_but_top(model: torch.nn.Module, n_blocks: int) -> int:
    """Train only the last `n_blocks` decoder blocks (and what follows them); returns the
    number of trainable parameters. 0 keeps every weight trainable."""
    if n_blocks == 0:
        return sum(p.numel() for p in model.parameters())
    blocks = max(
        (m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), key=len, default=None
    )
    if blocks is None or n_blocks > len(blocks):
        raise LLMLabError(
            f"--train-blocks {n_blocks}: the model has {len(blocks) if blocks else 0} blocks"
        )
    model.requires_grad_(False)
    blocks[len(blocks) - n_blocks :].requires_grad_(True)
    for name, module in model.named_modules():  # the final norm after the blocks
        if name.endswith(("model.norm", "ln_f")):
            module.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class ParityCheck:
    """Recomputes, on trl's own tensors, what `llmlab.grpo` says the advantages and the loss
    should be, for the first `steps` optimiser steps (an extra forward pass each)."""

    def __init__(self, trainer: Any, rewards: dict[str, list[float]], steps: int) -> None:
        self.trainer, self.rewards, self.steps = trainer, rewards, steps
        self.adv_diff, self.loss_diff, self.checked = 0.0, 0.0, 0
        self._generate = trainer._generate_and_score_completions
        self._loss = trainer._compute_loss
        trainer._generate_and_score_completions = self.generate
        trainer._compute_loss = self.loss

    def generate(self, batch: Any) -> dict[str, Any]:
        out = self._generate(batch)
        if self.checked < self.steps:
            total = torch.tensor(list(self.rewards.values())).sum(dim=0)
            args = self.trainer.args
            ours = group_advantages(total, args.num_generations, args.scale_rewards)
            diff = (ours - out["advantages"].cpu()).abs().max().item()
            self.adv_diff = max(self.adv_diff, diff)
        return out

    def loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        loss = self._loss(model, inputs)
        if self.checked < self.steps:
            self.checked += 1
            args = self.trainer.args
            ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            length = inputs["completion_ids"].size(1)
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=attention).logits
                logp = token_logprobs(
                    logits[:, -length - 1 : -1], inputs["completion_ids"], args.temperature
                )
                ours, _ = grpo_loss(
                    logp,
                    inputs.get("old_per_token_logps"),
                    inputs.get("ref_per_token_logps"),
                    inputs["advantages"],
                    inputs["completion_mask"],
                    beta=args.beta,
                    epsilon=args.epsilon,
                    epsilon_high=args.epsilon_high,
                    loss_type=args.loss_type,
                    max_completion_length=args.max_completion_length,
                    num_items=inputs["num_items_in_batch"],
                )
            self.loss_diff = max(self.loss_diff, abs(ours.item() - loss.item()))
        return loss


def recording(fn: Callable, store: dict[str, list[float]]) -> Callable:
    """A reward function that also keeps its last batch of rewards (for the parity check)."""

    def reward(*args: Any, **kwargs: Any) -> list[float]:
        values = fn(*args, **kwargs)
        store[fn.__name__] = values
        return values

    reward.__name__ = fn.__name__
    return reward


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        setattr(args, key, value)
    if args.beta < 0 or not 0 <= args.epsilon < 1:
        raise LLMLabError("need --beta >= 0 and 0 <= --epsilon < 1")
    if args.num_generations < 2:
        raise LLMLabError("--num-generations must be >= 2: GRPO compares completions of a prompt")
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    seed_everything(args.seed)
    device = get_device(args.device)
    out = run_dir(SPRINT, SCRIPT)
    train_items = load_items(args.task, "train")
    test_items = load_items(args.task, "test")[: args.eval_items]
    demo = not args.no_demo
    print(
        f"{args.task}: {len(train_items)} training questions, {len(test_items)} held-out "
        f"questions scored; model {args.model}"
    )
    start = time.perf_counter()
    model, tokenizer = load_pretrained(args.model, device=device)
    trainable = freeze_all_but_top(model, args.train_blocks)
    total = sum(p.numel() for p in model.parameters())
    print(
        f"loaded in {time.perf_counter() - start:.0f} s; training {trainable:,} of {total:,} weights"
    )

    conversations = [messages(q["question"], args.task, demo) for q in test_items]
    before_texts = greedy_answers(model, tokenizer, conversations, args.max_completion_length)
    before = score(before_texts, test_items) if test_items else {}

    dataset = Dataset.from_list(
        [
            {"prompt": messages(q["question"], args.task, demo), "answer": q["answer"]}
            for q in train_items
        ]
    )
    recorded: dict[str, list[float]] = {}
    reward_funcs = [
        recording(for_trl(format_reward, "format", needs_answer=False), recorded),
        recording(for_trl(correctness_reward, "correctness"), recorded),
    ]
    config = GRPOConfig(
        output_dir=str(out / "trainer"),
        use_cpu=device.type == "cpu",
        bf16=False,  # trl defaults to bf16, which a CPU runs slowly (or not at all)
        gradient_checkpointing=False,  # trl's default trades compute for memory we have
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=args.beta,
        epsilon=args.epsilon,
        loss_type=args.loss_type,
        scale_rewards=args.scale_rewards,
        temperature=args.temperature,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=args.no_progress,
    )
    writer = make_writer(out)
    history: list[dict[str, float]] = []

    class Log(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_kwargs):
            numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
            if "reward" not in numbers:  # the final summary line
                return
            history.append({"step": float(state.global_step), **numbers})
            for key, value in numbers.items():
                writer.add_scalar(f"trl/{key}", value, state.global_step)

    try:
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[Log()],
        )
        parity = ParityCheck(trainer, recorded, args.parity_steps)
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        after_texts = greedy_answers(model, tokenizer, conversations, args.max_completion_length)
        after = score(after_texts, test_items) if test_items else {}
        for name, s in (("before", before), ("after", after)):
            for key in ("accuracy", "format_rate"):
                if key in s:
                    writer.add_scalar(
                        f"heldout/{key}", s[key], 0 if name == "before" else args.steps
                    )
    finally:
        writer.close()

    steps = [h["step"] for h in history]
    curves = {
        "reward (sum)": [h["reward"] for h in history],
        "format": [h.get("rewards/format/mean", float("nan")) for h in history],
        "correctness": [h.get("rewards/correctness/mean", float("nan")) for h in history],
    }
    pngs = {
        "rewards_png": plot_curves(
            curves,
            out / "rewards.png",
            title=f"GRPO on {args.task}: mean reward of the sampled completions",
            ylabel="reward",
            xs={k: steps for k in curves},
        )
    }
    if args.beta and history and "kl" in history[0]:
        pngs["kl_png"] = plot_curves(
            {"KL(policy || reference)": [h["kl"] for h in history]},
            out / "kl.png",
            title="k3 estimate of the KL to the reference, per token",
            ylabel="nats",
            xs={"KL(policy || reference)": steps},
        )
    pngs["length_png"] = plot_curves(
        {
            "mean completion length": [
                h.get("completions/mean_length", float("nan")) for h in history
            ]
        },
        out / "completion_length.png",
        title="completion length (tokens)",
        ylabel="tokens",
        xs={"mean completion length": steps},
    )
    pairs = [
        {"question": q["question"], "answer": q["answer"], "before": b, "after": a}
        for q, b, a in zip(test_items, before_texts, after_texts, strict=True)
    ]
    (out / "answers.json").write_text(json.dumps(pairs, indent=1, ensure_ascii=False))

    print("\nstep  reward  format  correct  KL      length")
    for h in history:
        print(
            f"{int(h['step']):4d}  {h['reward']:6.3f}  {h.get('rewards/format/mean', 0):6.3f}  "
            f"{h.get('rewards/correctness/mean', 0):7.3f}  {h.get('kl', 0):6.4f}  "
            f"{h.get('completions/mean_length', 0):6.1f}"
        )
    for p in pairs[:3]:
        print(f"\nQ: {p['question']} (answer {p['answer']})")
        print(f"  before: {p['before'][:160]!r}")
        print(f"  after:  {p['after'][:160]!r}")
    if test_items:
        print(
            f"\nheld-out ({len(test_items)} questions, greedy): accuracy "
            f"{before['accuracy']:.3f} ± {before['accuracy_se']:.3f} -> "
            f"{after['accuracy']:.3f} ± {after['accuracy_se']:.3f}; format "
            f"{before['format_rate']:.3f} -> {after['format_rate']:.3f} (± = binomial std. error)"
        )
    if parity.checked:
        print(
            f"llmlab.grpo vs trl on {parity.checked} step(s): advantages max diff "
            f"{parity.adv_diff:.1e}, loss diff {parity.loss_diff:.1e}"
        )
    print(f"training {train_s:.0f} s ({train_s / max(1, len(history)):.1f} s/step); run in {out}")

    first = history[: max(1, len(history) // 4)]
    last = history[-max(1, len(history) // 4) :]
    mean = lambda rows, key: sum(r.get(key, 0.0) for r in rows) / len(rows)  # noqa: E731
    return {
        "history": history,
        "steps": len(history),
        "reward_first_quarter": mean(first, "reward"),
        "reward_last_quarter": mean(last, "reward"),
        "format_first_quarter": mean(first, "rewards/format/mean"),
        "format_last_quarter": mean(last, "rewards/format/mean"),
        "correctness_first_quarter": mean(first, "rewards/correctness/mean"),
        "correctness_last_quarter": mean(last, "rewards/correctness/mean"),
        "before": before,
        "after": after,
        "parity_steps": parity.checked,
        "parity_adv_diff": parity.adv_diff,
        "parity_loss_diff": parity.loss_diff,
        "train_seconds": train_s,
        "trainable_params": trainable,
        "run_dir": str(out),
        **{k: str(v) for k, v in pngs.items()},
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
