"""`llmlab.device.keep_freed_memory`: with it, re-allocating freed activation-sized buffers
stops page-faulting (each test runs in a fresh process: malloc's settings are process-wide)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Three touched 2 MB buffers freed together, forty times over. Both processes start with
# glibc's threshold pinned at its initial 128 KB (GLIBC_TUNABLES), so every such buffer is a
# fresh mmap that faults its pages in, as a training step's activations did in sprint 09.
# (Left to adapt, the threshold rises after the first free, and whether a later round
# faults depends on what else lies at the top of the heap: a flaky contrast.)
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
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}
    out = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True,
                         check=True, timeout=120, env=env)  # fmt: skip
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_keep_freed_memory_stops_the_page_faults_of_reused_buffers() -> None:
    default, kept = _faults("default"), _faults("keep")
    # measured: 61,560 (40 rounds x 3 buffers x 513 pages) against 512-3,585 (a few
    # megabytes of heap growth, not once per round)
    assert default >= 10_000, default
    assert kept < default / 10, (kept, default)
