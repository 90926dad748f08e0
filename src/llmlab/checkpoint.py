"""Atomic, safe checkpoints (sprint 04 for training state, sprint 08 for model folders).

Two formats, one rule: a checkpoint is written to a temporary name and renamed into place,
so a crash never leaves half a file where a good one was, and loading never executes pickled
code (`torch.load(weights_only=True)` or safetensors).

- `save_checkpoint` / `load_checkpoint`: one `.pt` file with model, optimizer, scheduler and
  any plain metadata (epoch, best loss): the training-loop checkpoint of sprints 03-04.
- `save_model_dir` / `load_model_dir`: a folder with `model.safetensors` (weights),
  `config.json` (enough to rebuild the model) and, when training, `training.pt`
  (optimizer, scheduler, step, RNG states): the GPT checkpoint of sprints 08-09.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmlab.errors import LLMLabError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINING_FILE = "training.pt"
TOKENIZER_FILE = "tokenizer_meta.json"  # which tokenizer the model reads (sprint 09 runs)


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        # mkstemp creates the file private (0600); give it the permissions of a normal file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)  # atomic on POSIX and Windows
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def read_torch_file(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)` with a one-line error for a missing, truncated or
    foreign file (a text file passed as a checkpoint ends here, not in a traceback)."""
    if not path.is_file():
        raise LLMLabError(f"checkpoint {path} does not exist: check the path or train first")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    # A file that is not a checkpoint (a text file, say) fails inside the unpickler with
    # whatever its bytes trigger (UnpicklingError, KeyError, EOFError, ...); weights_only
    # means none of its code ran, so every failure here is "not a readable checkpoint".
    except Exception as exc:
        raise LLMLabError(
            f"checkpoint {path} is unreadable (truncated or not a checkpoint: {str(exc)[:80]}); "
            "delete it and train again"
        ) from None


def _load_state(module: Any, state: dict, path: Path, what: str) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise LLMLabError(
            f"checkpoint {path} does not fit this {what} ({first}); "
            "it was saved from another model or configuration"
        ) from None


def save_checkpoint(
    path: Path | str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    **meta: Any,
) -> Path:
    """Save model (+ optimizer, scheduler, plain metadata such as epoch) atomically."""
    payload = {
        "model": model.state_dict(),
        "model_class": type(model).__name__,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "meta": meta,
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(
    path: Path | str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a `save_checkpoint` file into `model` (+ optimizer, scheduler); return its metadata.

    Raises `LLMLabError` for a missing, truncated or foreign checkpoint; the model is left
    untouched in those cases.
    """
    path = Path(path)
    payload = read_torch_file(path, map_location)
    if not isinstance(payload, dict) or "model" not in payload:
        raise LLMLabError(f"{path} is not an llmlab checkpoint (no model weights inside)")
    saved_class = payload.get("model_class")
    if saved_class and saved_class != type(model).__name__:
        raise LLMLabError(
            f"checkpoint {path} holds a {saved_class}, not a {type(model).__name__}: "
            "pass the checkpoint of this model"
        )
    _load_state(model, payload["model"], path, "model")
    if optimizer is not None and payload.get("optimizer") is not None:
        _load_state(optimizer, payload["optimizer"], path, "optimizer")
    if scheduler is not None and payload.get("scheduler") is not None:
        scheduler.load_state_dict(payload["scheduler"])
    return dict(payload.get("meta") or {})


def save_model_dir(
    directory: Path | str,
    model: nn.Module,
    config: dict[str, Any],
    training_state: dict[str, Any] | None = None,
    extra_json: dict[str, Any] | None = None,
) -> Path:
    """Write `model.safetensors` + `config.json` (+ `training.pt`) as one atomic swap.

    `extra_json` maps more file names to JSON-able objects written beside them (e.g. the
    tokenizer description of a run). The files go into a temporary sibling folder that then
    replaces `directory`, so readers see either the old complete checkpoint or the new one.
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_model(model, str(tmp / MODEL_FILE))  # handles tied weights (wte / lm_head)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        if training_state is not None:
            torch.save(training_state, tmp / TRAINING_FILE)
        for name, obj in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True))
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_config(directory: Path | str) -> dict[str, Any]:
    """Read `config.json` from a model folder, with a clear error when absent or corrupt."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise LLMLabError(f"{directory} is not a model checkpoint folder (no {CONFIG_FILE})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise LLMLabError(
            f"{path} is corrupt (not JSON): delete the folder and train again"
        ) from None


def load_model_dir(
    directory: Path | str, model: nn.Module, map_location: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """Load weights from a model folder into `model`; return `training.pt`'s dict if present."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    directory = Path(directory)
    weights = directory / MODEL_FILE
    if not weights.is_file():
        raise LLMLabError(f"{directory} has no {MODEL_FILE}: the checkpoint is incomplete")
    try:
        missing, unexpected = load_model(
            model, str(weights), strict=False, device=str(map_location)
        )
    except (SafetensorError, RuntimeError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise LLMLabError(
            f"{weights} cannot be loaded into this model ({first}): truncated, or saved from "
            "another configuration"
        ) from None
    if missing or unexpected:
        raise LLMLabError(
            f"{weights} does not fit this model (missing {sorted(missing)[:3]}, unexpected "
            f"{sorted(unexpected)[:3]}): it was saved from another model"
        )
    training = directory / TRAINING_FILE
    if training.is_file():
        return read_torch_file(training, map_location)
    return None
