"""Learned vs sinusoidal vs no positional encoding on a task that needs word order (output the
previous token): without positions attention cannot tell "previous" from "any", with them it can.

Run: python -m sprints.05_embeddings_and_positional_encoding.results.learned_pe_example --steps 200
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from llmlab.attention import MultiHeadAttention
from llmlab.cli import positive_float, positive_int, run
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.plotting import plot_curves, plot_heatmap
from llmlab.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from llmlab.runs import run_dir

KINDS = ("none", "learned", "sinusoidal")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=positive_int, default=10, help="distinct tokens")
    parser.add_argument(
        "--seq-len", type=positive_int, default=8, help="training length (learned PE max_len)"
    )
    parser.add_argument("--d-model", type=positive_int, default=32, help="model width")
    parser.add_argument("--steps", type=positive_int, default=200, help="training steps per model")
    parser.add_argument("--batch", type=positive_int, default=64, help="sequences per step")
    parser.add_argument("--lr", type=positive_float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and weights")
    return parser


class PreviousToken(nn.Module):
    """Embedding (+ positions) -> one attention layer -> logits. Target at i: token i-1."""

    def __init__(self, kind: str, vocab: int, seq_len: int, d_model: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos: nn.Module
        if kind == "learned":
            self.pos = LearnedPositionalEmbedding(seq_len, d_model)
        elif kind == "sinusoidal":  # a fixed table: it can be built longer than training needs
            self.pos = SinusoidalPositionalEncoding(d_model, max_len=4 * seq_len, dropout=0.0)
        else:
            self.pos = nn.Identity()
        self.attn = MultiHeadAttention(d_model, 1)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.pos(self.tok(ids))
        return self.head(self.attn(x)[0])


def _batch(
    n: int, length: int, vocab: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, vocab, (n, length), device=device)
    return ids, ids.roll(1, dims=1)  # position 0's target wraps around to the last token


def _accuracy(model: nn.Module, length: int, vocab: int, device: torch.device) -> float:
    ids, target = _batch(512, length, vocab, device)
    with torch.no_grad():
        pred = model(ids).argmax(-1)
    return (pred[:, 1:] == target[:, 1:]).float().mean().item()  # skip the wrap-around


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    args = build_parser().parse_args(argv)
    if args.seq_len < 2:
        raise LLMLabError("--seq-len must be at least 2 (there must be a previous token)")
    device = get_device(args.device)
    folder = run_dir("05_embeddings_and_positional_encoding", "learned_pe_example")
    results: dict[str, float | str] = {"chance": 1.0 / args.vocab}
    curves, models = {}, {}
    for kind in KINDS:
        seed_everything(args.seed)
        model = PreviousToken(kind, args.vocab, args.seq_len, args.d_model).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        losses = []
        for _ in tqdm(range(args.steps), desc=f"PE={kind}", leave=False):
            ids, target = _batch(args.batch, args.seq_len, args.vocab, device)
            loss = F.cross_entropy(
                model(ids)[:, 1:].reshape(-1, args.vocab), target[:, 1:].reshape(-1)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        curves[f"PE={kind}"], models[kind] = losses, model
        results[f"accuracy_{kind}"] = _accuracy(model, args.seq_len, args.vocab, device)
        print(
            f"PE={kind:10s} final loss {losses[-1]:.3f}, accuracy {results[f'accuracy_{kind}']:.3f} "
            f"(chance {1 / args.vocab:.2f})"
        )

    # Extrapolation: a learned table has no row for unseen positions; a formula has.
    long = 2 * args.seq_len
    try:
        models["learned"](torch.zeros(1, long, dtype=torch.long, device=device))
    except LLMLabError as exc:
        print(f"learned PE on length {long}: {exc}")
    results["accuracy_sinusoidal_2x_length"] = _accuracy(
        models["sinusoidal"], long, args.vocab, device
    )
    print(
        f"sinusoidal PE on length {long} (never trained on): accuracy "
        f"{results['accuracy_sinusoidal_2x_length']:.3f}"
    )

    # What the learned table looks like: neighbouring positions become (dis)similar as needed.
    table = F.normalize(models["learned"].pos.weight.detach().cpu(), dim=1)
    results["learned_similarity_png"] = str(
        plot_heatmap(
            (table @ table.T).numpy(),
            folder / "learned_pe_cosine_similarity.png",
            annotate=True,
            title="cosine similarity of the learned position vectors",
            xlabel="position",
            ylabel="position",
        )
    )
    results["loss_png"] = str(
        plot_curves(
            curves, folder / "loss.png", title="previous-token task", ylabel="cross-entropy"
        )
    )
    print(f"wrote {results['loss_png']} and {results['learned_similarity_png']}")
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
