"""A classification head on a decoder: which token it reads, and the pad-token trap.

1. Our `GPTForSequenceClassification` against Hugging Face's `GPT2ForSequenceClassification`
   with the same (random) weights, on right-padded batches: the same logits, and a padded row
   gives exactly what it gives alone.
2. The trap: Hugging Face finds the last real token by looking for the PAD ID, not at the
   attention mask. When the pad token is also the end-of-text token (GPT-2 with
   `pad = eos`, SmolLM2 whose pad is its end-of-turn `<|im_end|>`), a text that ends with
   that token is read one position early. Ours reads the attention mask.
3. SmolLM2's tokenizer, checked: pad token, end-of-text token, what `text + eos` encodes to.

Run: python -m sprints.11_finetune_gpt2_classification.results.heads_and_pooling
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from llmlab.classification import GPTForSequenceClassification, last_token_index, pad_batch
from llmlab.cli import non_negative_int, positive_int, run, torch_threads
from llmlab.device import seed_everything
from llmlab.errors import LLMLabError

SHAPES = [(97, 32, 1, 2, 16), (500, 64, 2, 4, 64), (1000, 128, 4, 8, 128)]  # vocab..width


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--labels", type=positive_int, default=3, help="classes of the random heads")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--no-smollm2", action="store_true", help="skip part 3 (SmolLM2's tokenizer)")
    p.add_argument("--threads", type=non_negative_int, default=1, help="CPU threads (0: torch's)")
    return p


def random_hf(shape: tuple[int, ...], labels: int, pad_id: int):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    vocab, ctx, layers, heads, width = shape
    config = GPT2Config(
        vocab_size=vocab, n_positions=ctx, n_layer=layers, n_head=heads, n_embd=width,
        num_labels=labels, bos_token_id=vocab - 1, eos_token_id=vocab - 1,
    )  # fmt: skip
    config.pad_token_id = pad_id
    return GPT2ForSequenceClassification(config).eval()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return demo(args)


@torch.no_grad()
def demo(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    print("1. ours vs GPT2ForSequenceClassification, random weights, right-padded batches")
    print(
        f"{'vocab, ctx, layers, heads, width':34s} {'max |dlogit|':>12s} {'padded vs alone':>15s}"
    )
    worst, worst_pad = 0.0, 0.0
    for shape in SHAPES:
        pad_id = 0  # the random rows below never contain id 0
        hf = random_hf(shape, args.labels, pad_id)
        ours = GPTForSequenceClassification.from_hf(hf).eval()
        rows = [torch.randint(1, shape[0], (n,)).tolist() for n in (5, 17, 1, 30)]
        ids, mask = pad_batch(rows, pad_id)
        diff = (ours(ids, mask).logits - hf(input_ids=ids, attention_mask=mask).logits).abs().max()
        alone = torch.cat([ours(torch.tensor([r])).logits for r in rows])
        pad_diff = (ours(ids, mask).logits - alone).abs().max()
        worst, worst_pad = max(worst, float(diff)), max(worst_pad, float(pad_diff))
        print(f"{str(shape):34s} {float(diff):12.1e} {float(pad_diff):15.1e}")

    print("\n2. a text whose last REAL token is the pad id (pad = end-of-text, text + eos)")
    shape = SHAPES[1]
    eos = shape[0] - 1
    hf = random_hf(shape, args.labels, pad_id=eos)  # GPT-2's usual fix: pad = eos
    ours = GPTForSequenceClassification.from_hf(hf).eval()
    text = torch.randint(1, eos, (1, 6))
    ids = torch.cat([text, torch.tensor([[eos]])], dim=1)  # "text" + eos, no padding at all
    mask = torch.ones_like(ids)
    hf_logits = hf(input_ids=ids, attention_mask=mask).logits
    prefix_logits = [ours(ids[:, : k + 1]).logits for k in range(ids.shape[1])]
    hf_position = min(
        range(ids.shape[1]), key=lambda k: float((prefix_logits[k] - hf_logits).abs().max())
    )
    ours_position = int(last_token_index(mask)[0])
    print(
        f"{ids.shape[1]} real tokens, the last one = pad id {eos}: Hugging Face pools position "
        f"{hf_position}, ours (attention mask) position {ours_position}"
    )

    smollm2_pad_is_eos = None
    if not args.no_smollm2:
        from llmlab.pretrained import load_tokenizer

        print("\n3. SmolLM2's tokenizer")
        try:
            tok = load_tokenizer("smollm2")
        except LLMLabError as exc:
            print(f"skipped: {exc}")
        else:
            smollm2_pad_is_eos = tok.pad_token_id == tok.eos_token_id
            encoded = tok("A fine film." + tok.eos_token, add_special_tokens=False)["input_ids"]
            print(
                f"pad {tok.pad_token!r} (id {tok.pad_token_id}), end of text {tok.eos_token!r} "
                f"(id {tok.eos_token_id}): the same token = {smollm2_pad_is_eos}; "
                f"'A fine film.' + eos -> {encoded}: its classifier would read the '.' "
                "(llmlab's encode_texts refuses such texts)"
            )
    return {
        "gpt2_parity_max_diff": worst,
        "padded_vs_alone_max_diff": worst_pad,
        "hf_pooled_position": hf_position,
        "ours_pooled_position": ours_position,
        "text_length": int(ids.shape[1]),
        "smollm2_pad_is_eos": smollm2_pad_is_eos,
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
