"""Shared test fixtures: runs and prepared data go to temporary folders, never the repo."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch

# Offline before anything imports huggingface_hub, which reads these once at import time.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_outputs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point `runs/` and `data/` at session temp folders.

    A SmolLM2 folder already converted in the checkout's `data/` is linked in (read-only
    use), so a developer's test runs skip the conversion; a fresh clone converts once.
    """
    os.environ["LLMLAB_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    data = tmp_path_factory.mktemp("data")
    os.environ["LLMLAB_DATA"] = str(data)
    converted = REPO / "data" / "smollm2-135m-instruct"
    if (converted / "config.json").is_file() and (converted / "model.safetensors").is_file():
        (data / converted.name).symlink_to(converted, target_is_directory=True)
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


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of SmolLM2-135M-Instruct, loaded once per test session (eval mode).

    Shared by every test that needs the real model: do not train or modify it in place
    (`copy.deepcopy` it first).
    """
    from llmlab.pretrained import load_pretrained

    return load_pretrained("smollm2")


@pytest.fixture(scope="session")
def sprint09_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sprint-09 run folder (char-level GPT, 30 steps) under the session's `runs/`,
    so `llmlab.pretrained.latest_run_checkpoint()` finds it like a learner's real run."""
    from llmlab.data.shakespeare import prepare
    from llmlab.lm_training import TrainConfig, train
    from llmlab.runs import run_dir

    out = run_dir("09_train_gpt2", "train_gpt2", "20000101-000000-test")
    cfg = TrainConfig(
        data_dir=str(prepare("tiny", "char")),
        out_dir=str(out),
        n_layer=1,
        n_head=2,
        n_embd=32,
        block_size=32,
        batch_size=4,
        max_steps=30,
        # AdamW: in 30 steps it learns the letters and spaces of English, which the demo's
        # streaming tests need (Muon, the default, leaves this 32-wide model near uniform).
        optimizer="adamw",
        warmup_steps=2,
        eval_interval=30,
        eval_batches=2,
        sample_tokens=0,
        final_eval=False,
        progress=False,
    )
    train(cfg)
    return out


def tiny_llama_config(layers: int = 3, **extra: Any):
    """A randomly initialisable Llama config with SmolLM2's shape, tiny (GQA, tied head)."""
    from transformers import LlamaConfig

    settings: dict[str, Any] = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaConfig(**{**settings, **extra})
