"""GGUF's Q8_0, Q4_0 and Q4_1 from scratch: bit-exact with the `gguf` package, what each
costs in perplexity on SmolLM2 and on your sprint-09 model, and what the bundled SmolLM2
"float32" model really is (the Q4_1 file, dequantised).

1. Parity: our packed bytes against `gguf.quants.quantize` on SmolLM2's weights.
2. The bundled model: every weight of the converted SmolLM2 equals our decoding of the GGUF
   file's blocks, so re-quantising it to Q4_1 loses (almost) nothing: a baseline trap.
3. Perplexity on Macbeth (unseen by both models) with every linear weight (and the tied
   embedding) round-tripped through each format, then the 4-bit formats with the embedding /
   LM head in Q8_0 as llama.cpp's files do; the sprint-09 model, trained in float32, shows
   the honest cost of 4 bits.

Run: python -m sprints.14_quantization.results.gguf_formats
     python -m sprints.14_quantization.results.gguf_formats --models sprint09 --char-tokens 30000
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import numpy as np
import torch

from llmlab import gguf_quants as G
from llmlab.cli import positive_int, run, torch_threads
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.evaluation import CausalLMAdapter, evaluate_lm
from llmlab.plotting import plot_bar_panels
from llmlab.quantization import heldout_tokens, quant_error
from llmlab.runs import make_writer, run_dir

SPRINT = "14_quantization"
MODELS = ("smollm2", "sprint09")
HEAD_Q8 = {"lm_head": "Q8_0"}  # llama.cpp's Q4 files keep the embedding / head in 8 bits
# row label -> (format of every linear weight, per-layer overrides)
VARIANTS = {
    "Q8_0": ("Q8_0", {}),
    "Q4_0": ("Q4_0", {}),
    "Q4_1": ("Q4_1", {}),
    "Q4_0+Q8_0head": ("Q4_0", HEAD_Q8),
    "Q4_1+Q8_0head": ("Q4_1", HEAD_Q8),
}
# llama.cpp's tensor names -> transformers' (blk.N. prefix -> model.layers.N.)
GGUF_TO_HF = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}  # fmt: skip


def model_list(text: str) -> list[str]:
    """argparse type: comma-separated model names."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names or any(n not in MODELS for n in names):
        raise argparse.ArgumentTypeError(f"models must be among {', '.join(MODELS)}, got {text!r}")
    return names


def variant_list(text: str) -> list[str]:
    """argparse type: comma-separated variant names."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names or any(n not in VARIANTS for n in names):
        raise argparse.ArgumentTypeError(f"variants must be among {', '.join(VARIANTS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--models", type=model_list, default=list(MODELS),
                   help="smollm2 (bundled) and/or sprint09 (your newest sprint-09 run)")  # fmt: skip
    p.add_argument("--tokens", type=positive_int, default=2048,
                   help="Macbeth tokens scored for SmolLM2 (windows of --block-size)")  # fmt: skip
    p.add_argument("--block-size", type=positive_int, default=128, help="SmolLM2 window length")
    p.add_argument("--char-tokens", type=positive_int, default=16384,
                   help="Macbeth characters scored for the sprint-09 model (windows of its context)")  # fmt: skip
    p.add_argument("--parity-layers", type=positive_int, default=2,
                   help="SmolLM2 blocks whose 7 weight matrices are checked byte by byte")  # fmt: skip
    p.add_argument("--variants", type=variant_list, default=list(VARIANTS),
                   help="formats to round-trip the weights through (X+Q8_0head: the LM head "
                   "in Q8_0, as llama.cpp's Q4 files keep it)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (perplexity only)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed (the method is deterministic)")
    return p


def gguf_module():
    try:
        import gguf
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise LLMLabError("the `gguf` package is missing: run `uv sync`") from exc
    return gguf


def parity(model: torch.nn.Module, n_layers: int) -> dict[str, Any]:
    """Bytes that differ between ours and gguf.quants on real weights, per format."""
    gguf = gguf_module()
    weights = [model.get_submodule(f"model.layers.{i}.{hf}").weight for i in range(n_layers)
               for hf in GGUF_TO_HF.values()]  # fmt: skip
    out: dict[str, Any] = {}
    for fmt in G.FORMATS:
        differ = total = 0
        max_dequant = 0.0
        for w in weights:
            ours = G.quantize(w, fmt).numpy()
            ref = gguf.quants.quantize(w.detach().numpy(), getattr(gguf.GGMLQuantizationType, fmt))
            differ += int((ours != ref).sum())
            total += ref.size
            back = G.dequantize(torch.from_numpy(ours), fmt).numpy()
            ref_back = gguf.quants.dequantize(ref, getattr(gguf.GGMLQuantizationType, fmt))
            max_dequant = max(max_dequant, float(np.abs(back - ref_back).max()))
        out[fmt] = {"bytes": total, "differing_bytes": differ, "max_dequant_diff": max_dequant}
    return out


def to_file_row_order(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp stores the q/k rows of each head interleaved (pairs for its RoPE layout);
    transformers undoes that when it reads a GGUF file. This redoes it: HF order -> file."""
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).transpose(1, 2).reshape(rows, cols)


def bundled_file_check(model: torch.nn.Module) -> dict[str, Any]:
    """Decode every linear weight of the packaged GGUF with our code and compare."""
    from llmlab.pretrained import smollm2_gguf_path

    gguf = gguf_module()
    reader = gguf.GGUFReader(smollm2_gguf_path())
    types: dict[str, int] = {}
    equal = compared = same_bytes = n_bytes = 0
    cfg = model.config
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        parts = t.name.split(".")
        if t.name == "token_embd.weight":
            target = model.model.embed_tokens.weight
        elif len(parts) == 4 and parts[0] == "blk" and parts[2] in GGUF_TO_HF:
            target = model.get_submodule(f"model.layers.{parts[1]}.{GGUF_TO_HF[parts[2]]}").weight
        else:
            continue
        fmt = t.tensor_type.name
        raw = torch.from_numpy(np.array(t.data))
        target = target.detach().float()
        if parts[-2] in ("attn_q", "attn_k"):
            heads = cfg.num_attention_heads if parts[-2] == "attn_q" else cfg.num_key_value_heads
            target = to_file_row_order(target, heads)
        compared += 1
        equal += int(torch.equal(G.dequantize(raw, fmt), target))
        # re-quantising the "float" weights gives the file's bytes back (up to float16 ties)
        same_bytes += int((G.quantize(target, fmt) == raw).sum())
        n_bytes += raw.numel()
    return {
        "tensor_types": types,
        "weights_compared": compared,
        "weights_equal": equal,
        "requantised_same_bytes": same_bytes / n_bytes,
    }


def load(name: str):
    """(model, tokenizer, tokens to score, window) for one of MODELS."""
    from llmlab.pretrained import load_gpt_checkpoint, load_pretrained

    if name == "smollm2":
        model, tok = load_pretrained("smollm2")
        return model, tok
    model, tok = load_gpt_checkpoint("sprint09")
    return model, tok


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


def _main(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    device = get_device(args.device)
    out_dir = run_dir(SPRINT, "gguf_formats")
    writer = make_writer(out_dir)
    results: dict[str, Any] = {"out_dir": str(out_dir)}
    panels: dict[str, tuple[list[str], list[float]]] = {}
    try:
        for name in args.models:
            model, tok = load(name)
            if name == "smollm2":
                results["parity"] = parity(model, args.parity_layers)
                print("our packed bytes vs gguf.quants (SmolLM2 blocks "
                      f"0-{args.parity_layers - 1}, 7 matrices each):")  # fmt: skip
                for fmt, r in results["parity"].items():
                    print(f"  {fmt}: {r['differing_bytes']} of {r['bytes']:,} bytes differ, "
                          f"max |dequantised difference| {r['max_dequant_diff']:g}")  # fmt: skip
                results["bundled"] = bundled_file_check(model)
                b = results["bundled"]
                print(f"\nthe bundled GGUF holds {b['tensor_types']}; {b['weights_equal']} of "
                      f"{b['weights_compared']} weights of the converted 'float32' SmolLM2 equal "
                      "our decoding of the file's blocks exactly;\nre-quantising them in their "
                      f"own format gives back {b['requantised_same_bytes']:.4%} of the file's "
                      "bytes: its fp32 baseline IS a Q4_1 model.")  # fmt: skip
                ids, block = heldout_tokens(tok, args.tokens), args.block_size
            else:
                block = model.config.block_size
                ids = heldout_tokens(tok, args.char_tokens)
            base = evaluate_lm(CausalLMAdapter(model).to(device), ids, block, 1, device)[
                "perplexity"
            ]
            rows = {"float": {"perplexity": base, "delta_pct": 0.0, "mib": None}}
            print(f"\n{name}: {len(ids) - 1:,} Macbeth tokens, windows of {block}; "
                  f"float perplexity {base:.3f}")  # fmt: skip
            for label in args.variants:
                fmt, overrides = VARIANTS[label]
                q = copy.deepcopy(model)
                err = []
                for module_name, module in q.named_modules():
                    if isinstance(module, torch.nn.Linear) and module.weight.shape[-1] % 32 == 0:
                        this = next((f for k, f in overrides.items() if k in module_name), fmt)
                        err.append(quant_error(module.weight, G.roundtrip(module.weight, this)))
                counts = G.quantize_model_weights_(q, fmt, overrides=overrides)
                p = evaluate_lm(CausalLMAdapter(q).to(device), ids, block, 1, device)["perplexity"]
                mib = (counts["packed_bytes"] + 4 * counts["float_params"]) / 2**20
                rows[label] = {
                    "perplexity": p,
                    "delta_pct": 100 * (p / base - 1),
                    "mib": mib,
                    "weight_rel_error": float(np.mean([e["rel_error"] for e in err])),
                    "bits_per_weight": 8 * counts["packed_bytes"] / counts["quantized_params"],
                }
                writer.add_scalar(f"{name}/perplexity_delta_pct", rows[label]["delta_pct"],
                                  args.variants.index(label))  # fmt: skip
                print(f"  {label:<16} ({rows[label]['bits_per_weight']:.2f} bits/weight): "
                      f"perplexity {p:.3f} ({rows[label]['delta_pct']:+.2f}%), mean weight error "
                      f"{rows[label]['weight_rel_error']:.2%}, {mib:.1f} MiB")  # fmt: skip
                del q
            results[name] = rows
            panels[f"{name}: perplexity change (%)"] = (
                args.variants,
                [rows[f]["delta_pct"] for f in args.variants],
            )
            panels[f"{name}: weight error (%)"] = (
                args.variants,
                [100 * rows[f]["weight_rel_error"] for f in args.variants],
            )
            del model
    finally:
        writer.close()
    if panels:
        png = plot_bar_panels(panels, out_dir / "gguf_formats.png", ylabel="%", columns=2,
                              title="GGUF block formats: round trip of every linear weight")  # fmt: skip
        results["png"] = str(png)
        print(f"\npicture: {png}")
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
