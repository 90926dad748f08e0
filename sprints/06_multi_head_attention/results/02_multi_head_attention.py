"""Multi-head attention from scratch, checked against torch.nn.MultiheadAttention and the
fused GPT path (CausalSelfAttention), including KV-cache decoding.

Run: python -m sprints.06_multi_head_attention.results.02_multi_head_attention --d-model 32 --heads 4
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from llmlab.attention import (
    CausalSelfAttention,
    KVCache,
    MultiHeadAttention,
    causal_mask,
    padding_mask,
)
from llmlab.cli import positive_int, run
from llmlab.device import seed_everything
from llmlab.errors import LLMLabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=positive_int, default=32, help="model width")
    parser.add_argument("--heads", type=positive_int, default=4, help="attention heads")
    parser.add_argument("--batch", type=positive_int, default=2, help="sequences per batch")
    parser.add_argument("--seq-len", type=positive_int, default=7, help="target length")
    parser.add_argument(
        "--memory-len", type=positive_int, default=9, help="encoder length (cross-attention)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    return parser


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    if args.d_model % args.heads:
        raise LLMLabError(f"--d-model {args.d_model} must be a multiple of --heads {args.heads}")
    seed_everything(args.seed)
    B, L, M, D = args.batch, args.seq_len, args.memory_len, args.d_model

    # 1. Shapes: split_heads gives every head its own slice of the features.
    mha = MultiHeadAttention(D, args.heads).eval()
    x = torch.randn(B, L, D)
    heads = mha.split_heads(mha.w_q(x))
    print(
        f"x {tuple(x.shape)} -> heads {tuple(heads.shape)} -> combined "
        f"{tuple(mha.combine_heads(heads).shape)}  (d_head = {mha.d_head})"
    )

    # 2. Same weights as PyTorch's module (its in_proj_weight is w_q, w_k, w_v stacked).
    ref = nn.MultiheadAttention(D, args.heads, batch_first=True).eval()
    for p in ref.parameters():
        if p.dim() == 1:  # PyTorch starts biases at zero; random ones test more
            p.normal_()
    mine = MultiHeadAttention.from_torch(ref).eval()
    lengths = torch.tensor([L] + [max(1, L - 3)] * (B - 1))
    keep = padding_mask(lengths, L)  # (B, 1, 1, L), True = real token
    causal = causal_mask(L)
    out, w = mine(x, mask=keep & causal, need_weights=True)
    # PyTorch's boolean masks mean the opposite: True = NOT allowed / IGNORE this key.
    ref_out, ref_w = ref(x, x, x, attn_mask=~causal, key_padding_mask=~keep[:, 0, 0])
    results = {
        "self_attention_max_diff": _max_diff(out, ref_out),
        "self_attention_weights_max_diff": _max_diff(w.mean(dim=1), ref_w),
    }
    memory = torch.randn(B, M, D)
    mem_keep = padding_mask(torch.tensor([M] + [max(1, M - 4)] * (B - 1)), M)
    out, w = mine(x, memory, memory, mask=mem_keep, need_weights=True)
    ref_out, ref_w = ref(x, memory, memory, key_padding_mask=~mem_keep[:, 0, 0])
    results["cross_attention_max_diff"] = _max_diff(out, ref_out)
    results["cross_attention_weights_max_diff"] = _max_diff(w.mean(dim=1), ref_w)

    # 3. The efficient path: one fused QKV matmul + F.scaled_dot_product_attention.
    fast = CausalSelfAttention(D, args.heads).eval()
    slow = MultiHeadAttention.from_causal_self_attention(fast).eval()
    full = fast(x)
    results["fused_vs_from_scratch_max_diff"] = _max_diff(full, slow(x, is_causal=True)[0])

    # 4. KV cache: decoding one token at a time reuses past keys/values, same result.
    fast_cache, slow_cache = KVCache(), KVCache()
    fast_steps = [fast(x[:, t : t + 1], kv_cache=fast_cache) for t in range(L)]
    slow_steps = [slow(x[:, t : t + 1], kv_cache=slow_cache, is_causal=True)[0] for t in range(L)]
    results["kv_cache_fused_max_diff"] = _max_diff(torch.cat(fast_steps, 1), full)
    results["kv_cache_from_scratch_max_diff"] = _max_diff(torch.cat(slow_steps, 1), full)
    for name, value in results.items():
        print(f"{name:34s} {value:.2e}")
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
