"""Decoding strategies side by side on SmolLM2: same prompt, same seed, different choices.

Greedy, temperature (0.5, 1.0, 1.5), top-k, top-p, min-p, a repetition penalty and beam
search continue the same prompt with `llmlab.generate` (our from-scratch loop, equal to
`transformers`' `generate`). For each it reports the text, how repetitive it is (the share
of repeated word bigrams) and its mean log-probability under the model. A picture shows
what each filter does to the first next-token distribution: how many tokens survive and
how the probability mass is redistributed among them.

Run: python -m sprints.10_pretrained_generation_demo.results.decoding_strategies
     python -m sprints.10_pretrained_generation_demo.results.decoding_strategies --model sprint09 --prompt "ROMEO:"
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F

from llmlab.cli import positive_int, run, torch_threads
from llmlab.generate import beam_search, generate, process_logits
from llmlab.plotting import plot_bar_panels
from llmlab.pretrained import load_pretrained
from llmlab.runs import make_writer, run_dir

# name -> keyword arguments of llmlab.generate.generate (num_beams: beam search)
STRATEGIES: dict[str, dict[str, Any]] = {
    "greedy": dict(greedy=True),
    "greedy + repetition penalty 1.3": dict(greedy=True, repetition_penalty=1.3),
    "temperature 0.5": dict(temperature=0.5),
    "temperature 1.0": dict(temperature=1.0),
    "temperature 1.5": dict(temperature=1.5),
    "top-k 10": dict(top_k=10),
    "top-p 0.9": dict(top_p=0.9),
    "min-p 0.1": dict(min_p=0.1),
    "beam search (4 beams)": dict(num_beams=4),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default="smollm2", help="smollm2, sprint09, a folder or hub name")
    p.add_argument("--prompt", default="Once upon a time, in a small village by the sea,",
                   help="the text every strategy continues")  # fmt: skip
    p.add_argument("--new-tokens", type=positive_int, default=40, help="tokens per strategy")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (the same for all)")
    p.add_argument("--top", type=positive_int, default=25, help="tokens shown in the picture")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    return p


def repeated_bigrams(text: str) -> float:
    """Share of word bigrams that already occurred earlier in the text (0 = no repetition)."""
    words = text.split()
    pairs = list(zip(words, words[1:], strict=False))
    return 1 - len(set(pairs)) / len(pairs) if pairs else 0.0


@torch.no_grad()
def mean_logprob(model: Any, ids: torch.Tensor, prompt_len: int) -> float:
    """Average log-probability the model gives to the generated tokens (higher = likelier)."""
    logp = F.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    chosen = logp.gather(1, ids[0, 1:, None])[:, 0]
    return float(chosen[prompt_len - 1 :].mean())


@torch.no_grad()
def first_step_panels(model: Any, tok: Any, ids: torch.Tensor, top: int) -> dict[str, Any]:
    """The next-token distribution after the prompt, raw and after each filter."""
    logits = model(ids).logits[:, -1].float()
    raw = torch.softmax(logits, dim=-1)[0]
    order = torch.argsort(raw, descending=True)[:top]
    labels = [repr(tok.decode([int(i)]))[1:-1] for i in order]
    panels, kept = {}, {}
    for name, kw in {
        "raw softmax": {},
        "temperature 0.5": dict(temperature=0.5),
        "temperature 1.5": dict(temperature=1.5),
        "top-k 10": dict(top_k=10),
        "top-p 0.9": dict(top_p=0.9),
        "min-p 0.1": dict(min_p=0.1),
    }.items():
        probs = torch.softmax(process_logits(ids, logits, do_sample=True, **kw), dim=-1)[0]
        kept[name] = int((probs > 0).sum())
        panels[f"{name}: {kept[name]:,} tokens possible"] = (labels, probs[order].tolist())
    return {
        "panels": panels,
        "kept": kept,
        "top_token": labels[0],
        "top_prob": float(raw[order[0]]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        model, tok = load_pretrained(args.model)
        ids = tok(args.prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        n = min(
            args.new_tokens, getattr(model.config, "max_position_embeddings", 2048) - ids.shape[1]
        )
        out_dir = run_dir("10_pretrained_generation_demo", "decoding_strategies")
        rows = {}
        for name, kw in STRATEGIES.items():
            torch.manual_seed(args.seed)
            kw = dict(kw)
            if "num_beams" in kw:
                seq, _ = beam_search(model, ids, kw.pop("num_beams"), n,
                                     eos_token_id=model.generation_config.eos_token_id)  # fmt: skip
            else:
                seq = generate(model, ids, n, top_k=kw.pop("top_k", 0), **kw)
            text = tok.decode(seq[0, ids.shape[1] :], skip_special_tokens=True)
            rows[name] = {
                "text": text,
                "repeated_bigrams": repeated_bigrams(text),
                "mean_logprob": mean_logprob(model, seq, ids.shape[1]),
            }
        first = first_step_panels(model, tok, ids, args.top)
        png = plot_bar_panels(
            first["panels"], out_dir / "next_token_distributions.png",
            title=f"next token after {args.prompt[-40:]!r}",
        )  # fmt: skip
    print(f"prompt: {args.prompt!r} ({args.model}, seed {args.seed}, {n} new tokens)\n")
    print(f"{'strategy':<32} {'rep. bigrams':>12} {'mean log p':>10}  text")
    table = ["| strategy | repeated bigrams | mean log-prob | continuation |", "|---|---|---|---|"]
    for name, r in rows.items():
        flat = r["text"].replace("\n", " ")
        print(f"{name:<32} {r['repeated_bigrams']:>12.2f} {r['mean_logprob']:>10.2f}  {flat!r}")
        table.append(f"| {name} | {r['repeated_bigrams']:.2f} | {r['mean_logprob']:.2f} | {flat} |")
    print("\ntokens that can still be drawn at step 1: "
          + ", ".join(f"{k} {v:,}" for k, v in first["kept"].items()))  # fmt: skip
    print(f"picture: {png}")
    (out_dir / "strategies.md").write_text("\n".join(table) + "\n")
    writer = make_writer(out_dir)
    writer.add_text("strategies", "\n".join(table))
    writer.close()
    return {"strategies": rows, "kept_at_step_1": first["kept"], "png": str(png),
            "top_token": first["top_token"], "top_prob": first["top_prob"]}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(run(main))
