"""DataLoader workers: epoch time with num_workers=0 vs 2, and why the __main__ guard matters.

Each item takes `--item-ms` milliseconds to "load" (a sleep standing in for disk reads and
JPEG decoding). Workers load items in parallel processes, so slow items get faster; for
cheap items the cost of starting processes and sending batches between them dominates.

Run: python -m sprints.02_datasets_and_dataloaders.results.02_dataloader_features --workers 2
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset

from llmlab.cli import non_negative_int, positive_int, run


class SlowDataset(Dataset[tuple[torch.Tensor, int]]):
    """`size` items of 32 floats; each `__getitem__` sleeps `item_ms` like a slow disk read.

    Defined at module level: worker processes must be able to import it (a class defined
    inside a function cannot be pickled under the "spawn" start method).
    """

    def __init__(self, size: int, item_ms: float) -> None:
        self.size, self.item_ms = size, item_ms

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.item_ms > 0:
            time.sleep(self.item_ms / 1000)
        return torch.full((32,), float(index)), index


def epoch_time(ds: Dataset, batch_size: int, workers: int) -> tuple[float, list[int]]:
    """Seconds for one pass over `ds` (including worker start-up) and the indices seen."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)
    start = time.perf_counter()
    seen = [i for _, idx in loader for i in idx.tolist()]
    return time.perf_counter() - start, seen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=positive_int, default=400, help="items per epoch")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="items per batch")
    parser.add_argument(
        "--item-ms", type=non_negative_int, default=2, help="simulated load time per item (ms)"
    )
    parser.add_argument(
        "--workers", type=positive_int, default=2, help="worker processes to compare with 0"
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    results: dict[str, float] = {}
    for label, item_ms in (("slow", float(args.item_ms)), ("cheap", 0.0)):
        ds = SlowDataset(args.size, item_ms)
        for workers in (0, args.workers):
            seconds, seen = epoch_time(ds, args.batch_size, workers)
            # Parallel loading must not lose or duplicate items: each index exactly once.
            results[f"{label}_complete_w{workers}"] = float(sorted(seen) == list(range(args.size)))
            results[f"{label}_seconds_w{workers}"] = seconds
            print(
                f"{label:5s} items ({item_ms:.0f} ms): num_workers={workers}  {seconds:.3f} s/epoch"
            )
        speedup = results[f"{label}_seconds_w0"] / results[f"{label}_seconds_w{args.workers}"]
        results[f"{label}_speedup"] = speedup
        print(f"{label:5s} items: {args.workers} workers are {speedup:.2f}x the speed of 0 workers")
    return results


# Worker processes may be started with "spawn" (Windows, macOS): each one re-imports this
# file. Without the guard, every worker would run main() again and start workers of its own.
if __name__ == "__main__":
    raise SystemExit(run(main))
