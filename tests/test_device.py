"""`llmlab.device.keep_freed_memory`: with it, re-allocating freed activation-sized buffers
stops page-faulting (each test runs in a fresh process: malloc's settings are process-wide)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Three touched 2 MB buffers freed together, forty times over: glibc's default trims the
# freed top of the heap (it exceeds twice the adapted mmap threshold) and the next round
# faults its pages in again, as a training step's activations did in sprint 09.
PATTERN = """
import resource, sys, torch
from llmlab.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
def one_round():
    buffers = [torch.empty(512 * 1024).fill_(1.0) for _ in range(3)]
    del buffers
for _ in range(3):
    one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    one_round()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_keep_freed_memory_stops_the_page_faults_of_reused_buffers() -> None:
    default, kept = _faults("default"), _faults("keep")
    # measured: 40,192-40,800 (about 1,000 per round: some of the 3 x 512 pages) against
    # 0-1,024 (a stray megabyte now and then, not once per round)
    assert default >= 10_000, default
    assert kept < default / 10, (kept, default)
