"""Shared test fixtures: runs and prepared data go to temporary folders, never the repo."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

# Offline before anything imports huggingface_hub, which reads these once at import time.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session", autouse=True)
def _isolated_outputs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point `runs/` and `data/` at session temp folders."""
    os.environ["LLMLAB_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    os.environ["LLMLAB_DATA"] = str(tmp_path_factory.mktemp("data"))
    # Test workloads are tiny: one intra-op thread avoids thread start-up and contention
    # costs that make small-tensor loops many times slower than single-threaded.
    torch.set_num_threads(1)


def load_script(module: str):
    """Import a results script by its dotted name, e.g. `sprints.01_setup_and_basics.results.x`.

    Sprint folders start with digits, so `import` statements cannot name them;
    `importlib` can, exactly as `python -m` does.
    """
    return importlib.import_module(module)


@pytest.fixture
def script():
    return load_script


REPO = Path(__file__).resolve().parents[1]
