"""Decoding speed: the KV cache, and our `generate` against `transformers`' (sprint 10).

Three comparisons, each timed side by side in one run (alternating order, median of
`--repeats`), greedy, batch 1, `--new-tokens` tokens after a `--prompt`-token prompt:

1. KV cache vs recompute, our GPT: with the cache each step feeds one token; without it
   each step re-reads the whole sequence so far.
2. Ours vs Hugging Face: our `llmlab.generate.generate` on our `GPT` against
   `model.generate` on its `to_hf()` export (the same weights; both fp32, SDPA attention,
   both with a KV cache). The tokens are checked equal, so both did the same work.
3. `--compile`: our decode step under `torch.compile` (the first call compiles; not timed).

Shapes: `small` (6 layers, 384 wide, 6 heads) and `gpt2` (GPT-2 small, 12 x 768), GPT-2's
vocabulary and context. `--threads 1,2` repeats everything per thread count: on a busy
2-core CPU, OpenMP spin-waiting can make 2 threads slower than 1.

Run: python -m benchmarks.bench_generate --shapes small,gpt2 --threads 1,2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch

from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.errors import LLMLabError
from llmlab.generate import generate
from llmlab.gpt import GPT, GPTConfig

KEYS = {  # system -> short name in the returned figures
    "ours (KV cache)": "ours",
    "transformers": "hf",
    "ours (no cache)": "ours_no_cache",
    "ours (compiled)": "ours_compiled",
}
SHAPES = {  # (n_layer, n_head, n_embd)
    "tiny": (2, 4, 128),
    "small": (6, 6, 384),
    "gpt2": (12, 12, 768),
}


def _list(kind: Callable[[str], object], choices: dict | None = None):
    def parse(text: str) -> list:
        items = [kind(t.strip()) for t in text.split(",") if t.strip()]
        if not items or (choices is not None and any(i not in choices for i in items)):
            raise argparse.ArgumentTypeError(f"bad list {text!r}")
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--shapes", type=_list(str, SHAPES), default=["small", "gpt2"],
                   help=f"comma-separated shapes among {', '.join(SHAPES)}")  # fmt: skip
    p.add_argument("--new-tokens", type=positive_int, default=256, help="tokens to generate")
    p.add_argument("--prompt", type=positive_int, default=16, help="prompt length in tokens")
    p.add_argument("--vocab", type=positive_int, default=50257, help="vocabulary size")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed runs per system")
    p.add_argument("--threads", type=_list(int), default=[1], help="e.g. 1,2")
    p.add_argument("--no-recompute", action="store_true", help="skip the (slow) no-cache runs")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd decode")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and prompt")
    return p


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def side_by_side(systems: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, float]:
    """Median seconds per system; one untimed warm-up each; the order alternates."""
    outputs = {name: fn() for name, fn in systems.items()}  # warm-up (and the tokens)
    times: dict[str, list[float]] = {name: [] for name in systems}
    names = list(systems)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            seconds, out = _timed(systems[name])
            times[name].append(seconds)
            outputs[name] = out
    first = next(iter(outputs.values()))
    for name, out in outputs.items():
        if not torch.equal(out, first):
            raise LLMLabError(f"{name} produced different tokens: the comparison is not fair")
    return {name: statistics.median(t) for name, t in times.items()}


def build_systems(
    ours: GPT, hf: torch.nn.Module, prompt: torch.Tensor, n: int, no_recompute: bool, compile_: bool
) -> dict[str, Callable[[], torch.Tensor]]:
    """The decoders to time, each a no-argument call returning the generated sequence."""
    systems: dict[str, Callable[[], torch.Tensor]] = {
        "ours (KV cache)": lambda: generate(ours, prompt, n, greedy=True),
        "transformers": lambda: hf.generate(prompt, do_sample=False, max_new_tokens=n),
    }
    if not no_recompute:
        systems["ours (no cache)"] = lambda: generate(ours, prompt, n, greedy=True, use_cache=False)
    if compile_:
        # Compile the forward of a copy (generate() unwraps a compiled *module*); dynamic
        # shapes, since the cache grows by one position per step.
        fast = copy.deepcopy(ours)
        fast.forward = torch.compile(fast.forward, dynamic=True)
        systems["ours (compiled)"] = lambda: generate(fast, prompt, n, greedy=True)
    return systems


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    before = torch.get_num_threads()
    results: dict[str, float] = {}
    rows: list[tuple[str, int, str, float, float]] = []
    n = args.new_tokens
    try:
        for shape in args.shapes:
            n_layer, n_head, n_embd = SHAPES[shape]
            seed_everything(args.seed)
            config = GPTConfig(
                vocab_size=args.vocab, block_size=max(1024, args.prompt + n), n_layer=n_layer,
                n_head=n_head, n_embd=n_embd,
            )  # fmt: skip
            ours = GPT(config).eval()
            hf = ours.to_hf().eval()
            hf.config._attn_implementation = "sdpa"
            # No EOS on either side: both generate exactly n tokens and do no EOS checks.
            hf.generation_config.eos_token_id = hf.generation_config.bos_token_id = None
            hf.generation_config.pad_token_id = 0
            prompt = torch.randint(args.vocab, (1, args.prompt))
            print(f"{shape}: {ours.num_parameters():,} parameters; {args.prompt}-token prompt, "
                  f"{n} new tokens, greedy, batch 1")  # fmt: skip
            systems = build_systems(ours, hf, prompt, n, args.no_recompute, args.compile)
            for threads in args.threads:
                torch.set_num_threads(threads)
                seconds = side_by_side(systems, args.repeats)
                for name, s in seconds.items():
                    results[f"{shape}_t{threads}_{KEYS[name]}_tokens_per_s"] = n / s
                    rows.append((shape, threads, name, n / s, seconds["transformers"] / s))
                cached = seconds["ours (KV cache)"]
                results[f"{shape}_t{threads}_ours_over_hf"] = seconds["transformers"] / cached
                if "ours (no cache)" in seconds:
                    results[f"{shape}_t{threads}_cache_speedup"] = (
                        seconds["ours (no cache)"] / cached
                    )
    finally:
        torch.set_num_threads(before)
    print(f"\n{'shape':>6} {'threads':>7} {'system':>18} {'tokens/s':>9} {'vs transformers':>16}")
    for shape, threads, name, tps, ratio in rows:
        print(f"{shape:>6} {threads:>7} {name:>18} {tps:>9.1f} {ratio:>15.2f}x")
    for shape in args.shapes:
        for threads in args.threads:
            key = f"{shape}_t{threads}_cache_speedup"
            if key in results:
                print(f"{shape}, {threads} thread(s): KV cache {results[key]:.1f}x faster than "
                      "recomputing")  # fmt: skip
    print(f"(CPU, fp32, torch {torch.__version__}; threads as listed)")
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
