"""Run folders and TensorBoard writers (sprint 04 onwards).

Every script logs under `runs/<sprint>/<script>/<timestamp>/`, so `tensorboard --logdir runs`
shows all sprints side by side and one script's runs sit together.
"""

from __future__ import annotations

import time
from pathlib import Path

from llmlab.paths import runs_dir


def run_dir(sprint: str, script: str, stamp: str | None = None) -> Path:
    """Create and return `runs/<sprint>/<script>/<stamp>/` (stamp defaults to the time now)."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    path = runs_dir() / sprint / script / stamp
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_writer(log_dir: Path):
    """A TensorBoard `SummaryWriter` writing into `log_dir` (imported lazily: it is slow)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))
