"""Classify your own texts with a fine-tuned classifier: label and probability.

Loads a checkpoint written by `finetune_classifier` (by default the best checkpoint of its
newest run), rebuilds the model (the base model + the trained parameters it saved) and
calls `llmlab.classification.classify` on every text given, one by one or as a batch.

Run: python -m sprints.11_finetune_gpt2_classification.results.classify "A joyless slog." "Sheer delight."
     python -m sprints.11_finetune_gpt2_classification.results.classify --checkpoint runs/11_finetune_gpt2_classification/finetune_classifier/<run>/checkpoints/best "..."
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llmlab.classification import classify, load_finetuned
from llmlab.cli import non_negative_int, positive_int, run, torch_threads
from llmlab.device import get_device
from llmlab.errors import LLMLabError
from llmlab.paths import runs_dir

SPRINT, SCRIPT = "11_finetune_gpt2_classification", "finetune_classifier"
EXAMPLES = [
    "A joyless slog that mistakes noise for excitement.",
    "Sheer delight from the first frame to the last.",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("texts", nargs="*", help="texts to classify (default: two examples)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="a checkpoint folder of finetune_classifier (default: the newest run's best)",
    )
    p.add_argument("--batch-size", type=positive_int, default=32, help="texts per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=non_negative_int, default=1, help="CPU threads (0: torch's)")
    return p


def newest_checkpoint() -> Path:
    root = runs_dir() / SPRINT / SCRIPT
    for run_folder in sorted(root.glob("*"), reverse=True) if root.is_dir() else []:
        for name in ("best", "last"):
            if (run_folder / "checkpoints" / name / "model.safetensors").is_file():
                return run_folder / "checkpoints" / name
    raise LLMLabError(
        f"no fine-tuned classifier under {root}: train one first with "
        f"`uv run python -m sprints.{SPRINT}.results.{SCRIPT}`"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        folder = args.checkpoint or newest_checkpoint()
        model, tokenizer, meta = load_finetuned(folder, get_device(args.device))
        texts = args.texts or EXAMPLES
        results = classify(
            model,
            tokenizer,
            texts,
            meta["labels"],
            meta["max_length"],
            meta["template"],
            meta.get("truncation_side", "right"),
            args.batch_size,
        )
    print(f"{meta['model']} ({meta['strategy']}) from {folder}")
    for text, (label, p) in zip(texts, results, strict=True):
        print(f"{label:>8s} {p:5.2f}  {text}")
    return {"checkpoint": str(folder), "results": results, "texts": texts}


if __name__ == "__main__":
    raise SystemExit(run(main))
