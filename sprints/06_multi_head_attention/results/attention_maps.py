"""Attention pictures: causal and padding masks, and the weights a tiny trained model learns
when the task (reverse a sequence of digits) forces a recognisable pattern (the anti-diagonal).

Run: python -m sprints.06_multi_head_attention.results.attention_maps --steps 200
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from llmlab.attention import MultiHeadAttention, causal_mask, padding_mask
from llmlab.cli import positive_float, positive_int, run
from llmlab.device import get_device, seed_everything
from llmlab.plotting import plot_heatmap
from llmlab.positional import LearnedPositionalEmbedding
from llmlab.runs import run_dir

SPRINT = "06_multi_head_attention"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=positive_int, default=8, help="digits per sequence")
    parser.add_argument("--d-model", type=positive_int, default=32, help="model width")
    parser.add_argument("--heads", type=positive_int, default=1, help="attention heads")
    parser.add_argument("--steps", type=positive_int, default=200, help="training steps")
    parser.add_argument("--batch", type=positive_int, default=64, help="sequences per step")
    parser.add_argument("--lr", type=positive_float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and weights")
    return parser


class Reverser(nn.Module):
    """Token + learned position embedding -> one attention layer -> logits over digits.

    The output at position i must be the input digit at position L-1-i, and attention is the
    only way information moves between positions: so the weights must learn where to look.
    """

    def __init__(self, vocab: int, seq_len: int, d_model: int, heads: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = LearnedPositionalEmbedding(seq_len, d_model)
        self.attn = MultiHeadAttention(d_model, heads)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pos(self.tok(ids))
        y, weights = self.attn(x, need_weights=True)
        return self.head(y), weights


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    device = get_device(args.device)
    folder = run_dir(SPRINT, "attention_maps")
    L, results = args.seq_len, {}

    # 1. The masks themselves (True = may attend, drawn as 1).
    lengths = torch.tensor([L, max(1, L - 3)])
    pad = padding_mask(lengths, L)[1, 0].expand(L, L)  # sequence 1, every query row
    for name, mask in {
        "causal": causal_mask(L),
        "padding": pad,
        "causal_and_padding": pad & causal_mask(L),
    }.items():
        path = plot_heatmap(
            mask.float().numpy(),
            folder / f"mask_{name}.png",
            cmap="gray",
            title=f"{name} mask (white = may attend)",
            xlabel="key",
            ylabel="query",
        )
        results[f"mask_{name}_png"] = str(path)

    # 2. Train the reverser: weights start near uniform and become an anti-diagonal.
    model = Reverser(10, L, args.d_model, args.heads).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for _ in tqdm(range(args.steps), desc="train reverser", leave=False):
        ids = torch.randint(0, 10, (args.batch, L), device=device)
        logits, _ = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, 10), ids.flip(1).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        ids = torch.randint(0, 10, (512, L), device=device)
        logits, weights = model(ids)  # weights (B, H, L, L)
    accuracy = (logits.argmax(-1) == ids.flip(1)).float().mean().item()
    anti = weights.mean(dim=(0, 1)).flip(1).diagonal().mean().item()  # weight on key L-1-i
    results.update(
        final_loss=loss.item(),
        reverse_accuracy=accuracy,
        anti_diagonal_weight=anti,
        uniform_weight=1.0 / L,
    )
    print(
        f"reversal: loss {loss.item():.3f}, accuracy {accuracy:.3f}; mean weight on the "
        f"anti-diagonal {anti:.3f} (uniform attention would give {1 / L:.3f})"
    )

    digits = [str(d) for d in ids[0].tolist()]
    path = plot_heatmap(
        weights[0, 0].cpu().numpy(),
        folder / "reverser_attention.png",
        annotate=L <= 12,
        title="head 0 of the trained reverser: output i reads input L-1-i",
        xlabel="key (input digit)",
        ylabel="query (output position)",
        xticklabels=digits,
        yticklabels=[f"out {i}" for i in range(L)],
    )
    results["reverser_attention_png"] = str(path)
    print(f"wrote the pictures to {folder}")
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
