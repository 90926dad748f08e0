"""Export your sprint-09 GPT as a Hugging Face model folder, and prove it is the same model.

Writes `model.safetensors`, `config.json` and the tokenizer files with `save_pretrained`, so
`AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)`
load it anywhere `transformers` runs. Rotary models (the sprint-09 default) become
`GPTNeoXForCausalLM`, learned/sinusoidal ones `GPT2LMHeadModel`. It then reloads the folder
with the Auto classes and compares, on real validation text, the logits with llmlab's and
the greedy tokens of both `generate`s.

Run: python -m sprints.10_pretrained_generation_demo.results.export_to_hf
     python -m sprints.10_pretrained_generation_demo.results.export_to_hf --checkpoint runs/09_train_gpt2/train_gpt2/<run> --out data/exports/my-gpt
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from llmlab.cli import positive_int, run
from llmlab.generate import generate
from llmlab.hf_export import export
from llmlab.paths import data_dir
from llmlab.pretrained import (
    SPRINT09_NAME,
    checkpoint_folder,
    latest_run_checkpoint,
    load_gpt_checkpoint,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--checkpoint", default=SPRINT09_NAME,
                   help="a checkpoint or run folder; sprint09 = your newest sprint-09 run")  # fmt: skip
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: data/exports/<run name>)")  # fmt: skip
    p.add_argument("--text", default="ROMEO:\nBut soft, what light through yonder window breaks?",
                   help="text to compare the logits on (must fit the model's context)")  # fmt: skip
    p.add_argument("--new-tokens", type=positive_int, default=20, help="greedy tokens compared")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = build_parser().parse_args(argv)
    folder = (
        latest_run_checkpoint()
        if args.checkpoint == SPRINT09_NAME
        else checkpoint_folder(Path(args.checkpoint))
    )
    out = args.out or data_dir() / "exports" / folder.parent.parent.name
    export(folder, out)
    ours, tokenizer = load_gpt_checkpoint(folder)
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = AutoTokenizer.from_pretrained(out)
    text = args.text[: ours.config.block_size - args.new_tokens]
    ids = tokenizer.encode(text)
    hf_ids = hf_tok(text, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        diff = (hf(x).logits - ours(x)[0]).abs().max().item()
    mine = generate(ours, x, args.new_tokens, greedy=True)
    theirs = hf.generate(x, do_sample=False, max_new_tokens=args.new_tokens)
    result = {
        "out_dir": str(out),
        "hf_class": type(hf).__name__,
        "same_token_ids": hf_ids == ids,
        "max_logit_diff": diff,
        "same_greedy_tokens": bool(torch.equal(mine, theirs)),
        "continuation": hf_tok.decode(theirs[0, len(ids) :]),
    }
    print(f"exported {folder} -> {out} as {result['hf_class']}")
    print(f"tokenizer ids equal: {result['same_token_ids']}; max |logit difference| on "
          f"{len(ids)} tokens: {diff:.2e}; greedy tokens equal: {result['same_greedy_tokens']}")  # fmt: skip
    print(f"{text!r} -> {result['continuation']!r}")
    print("load it anywhere: AutoModelForCausalLM.from_pretrained(out), "
          "AutoTokenizer.from_pretrained(out)")  # fmt: skip
    return result


if __name__ == "__main__":
    raise SystemExit(run(main))
