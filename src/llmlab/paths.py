"""Where the course keeps its data and its runs (every sprint).

The repository root holds `data/` (prepared data, git-ignored except READMEs) and `runs/`
(TensorBoard logs, checkpoints, figures; git-ignored). `LLMLAB_DATA` and `LLMLAB_RUNS`
override them, which is how the tests keep their output in temporary folders.
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The checkout's root: the folder above `src/` for an editable install, else the cwd."""
    here = Path(__file__).resolve()
    root = here.parents[2]
    if (root / "pyproject.toml").is_file() and (root / "src" / "llmlab").is_dir():
        return root
    return Path.cwd()


def data_dir() -> Path:
    """The data folder (`$LLMLAB_DATA` or `<repo>/data`)."""
    return Path(os.environ.get("LLMLAB_DATA") or repo_root() / "data")


def runs_dir() -> Path:
    """The runs folder (`$LLMLAB_RUNS` or `<repo>/runs`)."""
    return Path(os.environ.get("LLMLAB_RUNS") or repo_root() / "runs")
