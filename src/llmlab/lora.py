"""Low-rank adaptation (LoRA, Hu et al. 2021) from scratch, pinned to `peft` (sprint 13).

A frozen weight W (out x in) learns only a low-rank update: y = W x + (alpha / r) B A x,
with A (r x in) and B (out x r). B starts at zero, so training starts from the base model
exactly; after training, W + (alpha / r) B A is one matrix again (merge) and inference costs
nothing extra. `tests/test_lora.py` checks forward, gradients, merged weights, parameter
counts and adapter files against `peft` 0.21 with the same A and B.

- `LoRALinear(base, r, alpha, dropout)`: wraps an `nn.Linear` or GPT-2's `Conv1D` (which
  stores its weight transposed: peft's `fan_in_fan_out`); peft's init (A Kaiming-uniform,
  B zero), `merge()` / `unmerge()`, `delta_weight()`.
- `find_targets(model, targets)`: which layers a target spec selects, with peft's rules (a list
  of names matches a full name or its end after a dot, a string is a regular expression on
  the full name, "all-linear" is every linear layer but the output head); a name that matches
  nothing or a non-linear module is an error, not a silent no-op.
- `inject_lora(model, targets, r, alpha, dropout)`: wrap the targets in place, freeze the rest.
- `lora_layers`, `lora_summary` (trainable / total parameters, peft's percentage),
  `merge_lora` / `unmerge_lora`, `merge_and_unload` (back to the plain architecture).
- `lora_config(model)`: its settings as peft `LoraConfig` fields;
  `as_peft(model)`: the same adapter as peft's LoRA on a copy (the parity tests use it).
- `save_adapter` / `load_adapter`: the adapter alone, in peft's file layout
  (`adapter_model.safetensors` + `adapter_config.json`, so `PeftModel.from_pretrained` reads
  ours and we read peft's), plus a record of the base model's weights in the safetensors
  header: loading an adapter onto another base model is refused, which peft does not do.
- Strategy "lora_scratch" for `llmlab.finetune.set_trainable` (registered on import).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.checkpoint import atomic_write
from llmlab.errors import LLMLabError
from llmlab.finetune import HEAD_NAMES, count_parameters, lora_targets_for, register_strategy

ADAPTER_FILE = "adapter_model.safetensors"  # peft's names, so both libraries read both
ADAPTER_CONFIG = "adapter_config.json"
ALL_LINEAR = "all-linear"
_PREFIX = "base_model.model."  # peft's key prefix in adapter files
Targets = str | Sequence[str]


def _is_conv1d(module: nn.Module) -> bool:
    """GPT-2's `transformers.pytorch_utils.Conv1D` (checked by name: importing transformers
    here would cost seconds for models that never need it)."""
    return type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or _is_conv1d(module)


def weight_digest(weight: torch.Tensor, fan_in_fan_out: bool = False) -> str:
    """A short hash of a weight in (out, in) layout and float32: the record that ties an
    adapter to the base weights it was trained on."""
    w = weight.detach().to("cpu", torch.float32)
    w = (w.t() if fan_in_fan_out else w).contiguous()
    h = hashlib.sha256(str(tuple(w.shape)).encode())
    h.update(w.numpy().tobytes())
    return h.hexdigest()[:16]


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * B(A(dropout(x))), with `base` frozen.

    Parameter names follow peft's module tree (`base_layer`, `lora_A`, `lora_B`) minus its
    adapter-name level, so a state dict maps onto peft's by inserting ".default".
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        check_lora_options(r, alpha, dropout)
        in_features, out_features, self.fan_in_fan_out = _check_rank(base, r)
        self.in_features, self.out_features = in_features, out_features
        self.r, self.alpha = int(r), float(alpha)
        self.scaling = self.alpha / self.r
        base.requires_grad_(False)
        self.base_layer = base
        weight = base.weight
        # Half-precision bases keep float32 factors (peft's autocast_adapter_dtype default):
        # the update (alpha/r) B A is small next to W and would lose its low bits in bf16.
        dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
        self.lora_A = nn.Parameter(torch.empty(r, in_features, dtype=dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, dtype=dtype, device=weight.device))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.base_digest = weight_digest(weight, self.fan_in_fan_out)
        self.reset_parameters()
        self.train(base.training)  # a new module is in training mode; follow the model's

    def reset_parameters(self) -> None:
        """peft / Microsoft's loralib init: A as nn.Linear's default (Kaiming-uniform with
        a=sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))), B zero, so B A = 0 at the start."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, in the base weight's layout (transposed for Conv1D)."""
        delta = (self.lora_B @ self.lora_A) * self.scaling
        return delta.t() if self.fan_in_fan_out else delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            if self.training and torch.is_grad_enabled() and self.lora_A.requires_grad:
                raise LLMLabError(
                    "training a merged LoRA layer would update nothing: call "
                    "unmerge_lora(model) before training, merge_lora(model) after"
                )
            return y
        # Same operation order as peft's lora.Linear.forward, so results agree to the bit.
        h = self.lora_dropout(x.to(self.lora_A.dtype))
        return y + (F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling).to(y.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + (alpha/r) B A: one matmul per layer again (no-op when already merged)."""
        if not self.merged:
            weight = self.base_layer.weight
            weight += self.delta_weight().to(weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - (alpha/r) B A (exact up to float rounding; no-op when not merged)."""
        if self.merged:
            weight = self.base_layer.weight
            weight -= self.delta_weight().to(weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        kind = "Conv1D" if self.fan_in_fan_out else "Linear"
        return (
            f"{kind} {self.in_features}->{self.out_features}, r={self.r}, alpha={self.alpha:g}, "
            f"merged={self.merged}"
        )


def _check_rank(base: nn.Module, r: int) -> tuple[int, int, bool]:
    """(in_features, out_features, fan_in_fan_out) of a layer LoRA of rank r can wrap."""
    if isinstance(base, nn.Linear):
        (out_features, in_features), fan_in_fan_out = base.weight.shape, False
    elif _is_conv1d(base):  # Conv1D computes x @ W with W (in, out)
        (in_features, out_features), fan_in_fan_out = base.weight.shape, True
    else:
        raise LLMLabError(
            f"LoRA wraps nn.Linear or Conv1D layers, not {type(base).__name__}: "
            "target the linear layers inside it"
        )
    if r > min(in_features, out_features):
        raise LLMLabError(
            f"LoRA rank r={r} is larger than this {in_features}->{out_features} layer "
            f"allows (at most {min(in_features, out_features)}): choose a smaller r"
        )
    return in_features, out_features, fan_in_fan_out


def check_lora_options(r: int, alpha: float, dropout: float) -> None:
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise LLMLabError(f"LoRA rank r must be a positive integer, got {r!r}")
    if not (alpha > 0 and math.isfinite(alpha)):
        raise LLMLabError(f"LoRA alpha must be a positive number, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise LLMLabError(f"LoRA dropout must be in [0, 1), got {dropout!r}")


# --- which layers ------------------------------------------------------------------------


def _output_heads(model: nn.Module) -> set[int]:
    """ids of output-head modules ("all-linear" leaves them out, as peft does): Hugging
    Face's `get_output_embeddings()` anywhere in the tree, and modules named `lm_head` or
    like a classification head (`score`, `classifier`)."""
    names = ("lm_head", *HEAD_NAMES)
    heads = {id(m) for n, m in model.named_modules() if n.rpartition(".")[2] in names}
    for module in model.modules():
        get = getattr(module, "get_output_embeddings", None)
        if callable(get):
            try:
                head = get()
            except (AttributeError, NotImplementedError):
                head = None
            if head is not None:
                heads.add(id(head))
    return heads


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and is_linear(m) and ".base_layer" not in n]


def find_targets(model: nn.Module, targets: Targets) -> list[str]:
    """Full names of the layers `targets` selects (peft's `target_modules` rules).

    A list: a module whose name equals an entry or ends with "." + entry ("q_proj",
    "attn.c_proj"). A string: a regular expression that must match the whole name
    (r".*\\.(q|v)_proj"). "all-linear": every nn.Linear / Conv1D except the output head.
    """
    linear = _linear_names(model)
    hint = sorted({n.rpartition(".")[2] for n in linear})[:8]
    if isinstance(targets, str) and targets.lower() == ALL_LINEAR:
        heads = _output_heads(model)
        names = [n for n in linear if id(model.get_submodule(n)) not in heads]
        if not names:
            raise LLMLabError(f"{type(model).__name__} has no linear layer besides its head")
        return names
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as exc:
            raise LLMLabError(f"LoRA target {targets!r} is not a valid regex ({exc})") from None
        names = [n for n, _ in model.named_modules() if n and pattern.fullmatch(n)]
        entries = {targets: names}
    else:
        if not targets:
            raise LLMLabError("no LoRA targets given: name layers such as q_proj, or all-linear")
        modules = [n for n, _ in model.named_modules() if n]
        entries = {t: [n for n in modules if n == t or n.endswith("." + t)] for t in targets}
    for target, names in entries.items():
        if not names:
            raise LLMLabError(
                f"LoRA target {target!r} matches no module of {type(model).__name__}: its "
                f"linear layers are named {', '.join(hint)}"
            )
        for name in names:
            module = model.get_submodule(name)
            if isinstance(module, LoRALinear):
                raise LLMLabError(f"{name} already has LoRA: inject once per model")
            if not is_linear(module):
                raise LLMLabError(
                    f"LoRA target {target!r} matches {name}, a {type(module).__name__}: LoRA "
                    f"wraps linear layers, so name those (e.g. {', '.join(hint)})"
                )
    return sorted({n for names in entries.values() for n in names}, key=linear.index)


def inject_lora(
    model: nn.Module,
    targets: Targets | None = None,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    freeze: bool = True,
) -> nn.Module:
    """Replace the target layers of `model` (in place) by `LoRALinear`s and, with `freeze`,
    let only the LoRA factors train. `targets=None`: the attention projections peft picks by
    default (q_proj and v_proj in Llama, c_attn in GPT-2 and our GPT). Returns `model`."""
    check_lora_options(r, alpha, dropout)
    names = find_targets(model, targets if targets is not None else lora_targets_for(model))
    for name in names:  # check every layer first: a refused injection changes nothing
        _check_rank(model.get_submodule(name), r)
    wrapped = {name: LoRALinear(model.get_submodule(name), r, alpha, dropout) for name in names}
    for name, layer in wrapped.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
    if freeze:
        model.requires_grad_(False)
        for layer in wrapped.values():
            layer.lora_A.requires_grad_(True)
            layer.lora_B.requires_grad_(True)
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def _layers_or_error(model: nn.Module) -> dict[str, LoRALinear]:
    layers = lora_layers(model)
    if not layers:
        raise LLMLabError(f"{type(model).__name__} has no LoRA layers: call inject_lora first")
    return layers


def lora_summary(model: nn.Module) -> dict[str, float]:
    """Trainable and total parameters (tied tensors once, LoRA factors included, as peft's
    `get_nb_trainable_parameters`), the LoRA factors alone, and the trainable percentage."""
    counts = count_parameters(model)
    lora = sum(m.lora_A.numel() + m.lora_B.numel() for m in lora_layers(model).values())
    return {**counts, "lora": lora, "percent": 100 * counts["trainable"] / counts["total"]}


def merge_lora(model: nn.Module) -> nn.Module:
    for layer in _layers_or_error(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    for layer in _layers_or_error(model).values():
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every adapter and put the plain base layers back: the model has its original
    classes, state-dict names and speed (peft's `merge_and_unload`)."""
    for name, layer in _layers_or_error(model).items():
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.base_layer)
    return model


def as_peft(model: nn.Module) -> nn.Module:
    """A copy of `model` with peft's LoRA where ours is, holding the same A and B: for parity
    checks, and for peft's tooling. The model must not be merged."""
    from peft import LoraConfig, inject_adapter_in_model

    layers = _layers_or_error(model)
    if any(layer.merged for layer in layers.values()):
        raise LLMLabError("as_peft needs the unmerged model: call unmerge_lora(model) first")
    twin = copy.deepcopy(model)
    for name, layer in lora_layers(twin).items():
        parent, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent) if parent else twin, child, layer.base_layer)
    twin = inject_adapter_in_model(LoraConfig(**lora_config(model)), twin)
    with torch.no_grad():
        for name, layer in layers.items():
            theirs = twin.get_submodule(name)
            theirs.lora_A["default"].weight.copy_(layer.lora_A)
            theirs.lora_B["default"].weight.copy_(layer.lora_B)
    return twin


# --- the adapter file -----------------------------------------------------------------------


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA factors under peft's file keys: base_model.model.<layer>.lora_{A,B}.weight."""
    state = {}
    for name, layer in _layers_or_error(model).items():
        state[f"{_PREFIX}{name}.lora_A.weight"] = layer.lora_A.detach()
        state[f"{_PREFIX}{name}.lora_B.weight"] = layer.lora_B.detach()
    return state


def lora_config(model: nn.Module) -> dict[str, Any]:
    """The model's LoRA settings as peft's `LoraConfig` fields (one injection: the layers
    share r, alpha, dropout and layout; `target_modules` lists their full names, which peft
    matches exactly)."""
    layers = _layers_or_error(model)

    def shared(what: str, values: set) -> Any:
        if len(values) != 1:
            raise LLMLabError(f"LoRA layers differ in {what} ({sorted(values)}): inject once")
        return values.pop()

    return {
        "r": shared("r", {m.r for m in layers.values()}),
        "lora_alpha": shared("alpha", {m.alpha for m in layers.values()}),
        "lora_dropout": shared(
            "dropout", {getattr(m.lora_dropout, "p", 0.0) for m in layers.values()}
        ),
        "target_modules": list(layers),
        "fan_in_fan_out": shared("layout", {m.fan_in_fan_out for m in layers.values()}),
    }


def save_adapter(model: nn.Module, directory: Path | str, base_name: str = "") -> Path:
    """Write the adapter alone: `adapter_model.safetensors` (the factors; the base record in
    its header) and a peft-compatible `adapter_config.json`. Each file is written atomically.
    `base_name` is for people (e.g. "smollm2"); the check on load uses weight digests."""
    from safetensors.torch import save_file

    layers = _layers_or_error(model)
    directory = Path(directory)
    record = {
        "llmlab_base_name": base_name,
        "llmlab_base_class": type(model).__name__,
        "llmlab_base_digests": json.dumps({n: m.base_digest for n, m in layers.items()}),
    }
    config = {  # the fields peft reads; it fills the rest with its defaults
        "peft_type": "LORA",
        "base_model_name_or_path": base_name or None,
        **lora_config(model),  # raises on mixed ranks: before anything is written
        "bias": "none",
        "task_type": None,
        "inference_mode": True,
    }
    text = json.dumps(config, indent=2)
    tensors = {k: v.contiguous() for k, v in adapter_state_dict(model).items()}
    atomic_write(
        directory / ADAPTER_FILE,
        lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt", **record}),
    )
    atomic_write(directory / ADAPTER_CONFIG, lambda tmp: tmp.write_text(text))
    return directory


def read_adapter(directory: Path | str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict]:
    """(adapter_config, tensors, safetensors header metadata) with one-line errors."""
    from safetensors import SafetensorError, safe_open

    directory = Path(directory)
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_FILE
    if not weights_path.is_file() or not config_path.is_file():
        raise LLMLabError(
            f"{directory} is not a LoRA adapter (needs {ADAPTER_FILE} and {ADAPTER_CONFIG}): "
            "pass the folder save_adapter wrote"
        )
    try:
        config = json.loads(config_path.read_text())
        with safe_open(str(weights_path), "pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as exc:
        raise LLMLabError(
            f"adapter {directory} is unreadable ({str(exc)[:80]}): save it again"
        ) from None
    if config.get("peft_type", "LORA") != "LORA" or "r" not in config:
        raise LLMLabError(f"{config_path} is not a LoRA adapter config")
    # peft variants whose maths LoRALinear does not implement: loading their factors as
    # plain LoRA would give another model, silently.
    unsupported = [
        k
        for k in ("use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "modules_to_save")
        if config.get(k)
    ]
    if config.get("bias", "none") != "none":
        unsupported.append(f"bias={config['bias']}")
    if unsupported:
        raise LLMLabError(
            f"adapter {directory} uses peft options llmlab's LoRA does not implement "
            f"({', '.join(unsupported)}): load it with peft"
        )
    return config, tensors, metadata


def load_adapter(model: nn.Module, directory: Path | str, check_base: bool = True) -> nn.Module:
    """Load an adapter saved by `save_adapter` (or by peft) into `model`.

    A model without LoRA layers gets them first, as the adapter's config says. With
    `check_base`, an adapter whose header records other base weights is refused (peft would
    load it silently wherever the shapes fit); a peft-made adapter has no record and loads
    with a printed note.
    """
    config, tensors, metadata = read_adapter(directory)
    names = sorted({k[len(_PREFIX) :].rsplit(".lora_", 1)[0] for k in tensors})
    if not names or not all(k.startswith(_PREFIX) for k in tensors):
        raise LLMLabError(f"adapter {directory} holds no LoRA factors under {_PREFIX}...")
    layers = lora_layers(model)
    if not layers:
        missing = [n for n in names if not _has_module(model, n)]
        if missing:
            raise LLMLabError(
                f"adapter {directory} is for another architecture: this "
                f"{type(model).__name__} has no layer {missing[0]}"
            )
        inject_lora(model, names, config["r"], config["lora_alpha"], config.get("lora_dropout", 0))
        layers = lora_layers(model)
    if sorted(layers) != names:
        raise LLMLabError(
            f"adapter {directory} has LoRA on {len(names)} layers, this model on {len(layers)}: "
            "load it into a model without LoRA (it injects the adapter's own layers)"
        )
    ours = lora_config(model)
    for key in ("r", "lora_alpha"):  # the factors alone do not carry the scaling alpha / r
        if float(config[key]) != float(ours[key]):
            raise LLMLabError(
                f"adapter {directory} has {key}={config[key]}, this model's LoRA {ours[key]}: "
                "load it into a model without LoRA (it injects the adapter's own settings)"
            )
    if check_base and "llmlab_base_digests" in metadata:
        saved = json.loads(metadata["llmlab_base_digests"])
        for name, layer in layers.items():
            if saved.get(name) != layer.base_digest:
                base = metadata.get("llmlab_base_name") or metadata.get("llmlab_base_class")
                raise LLMLabError(
                    f"adapter {directory} was trained on another base model ({base}): the "
                    f"weights of {name} differ; load it onto the model it was trained from"
                )
    elif check_base:
        print(f"note: adapter {directory} records no base model (made by peft?): not checked")
    with torch.no_grad():
        for name, layer in layers.items():
            if layer.merged:
                raise LLMLabError(f"{name} is merged: call unmerge_lora(model) before loading")
            for part in ("A", "B"):
                value = tensors[f"{_PREFIX}{name}.lora_{part}.weight"]
                param = getattr(layer, f"lora_{part}")
                if value.shape != param.shape:
                    raise LLMLabError(
                        f"adapter {directory}: {name}.lora_{part} is {tuple(value.shape)}, this "
                        f"model needs {tuple(param.shape)} (another base model or rank)"
                    )
                param.copy_(value)
    return model


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        return is_linear(model.get_submodule(name))
    except AttributeError:
        return False


def adapter_size_bytes(directory: Path | str) -> int:
    """Bytes on disk of the adapter (weights + config)."""
    return sum((Path(directory) / f).stat().st_size for f in (ADAPTER_FILE, ADAPTER_CONFIG))


# --- the fine-tuning strategy -------------------------------------------------------------


def lora_strategy(
    model: nn.Module,
    lora_r: int = 8,
    lora_alpha: float = 16.0,
    lora_dropout: float = 0.0,
    lora_targets: Targets | None = None,
    head_names: Sequence[str] = HEAD_NAMES,
    **_: Any,
) -> nn.Module:
    """`set_trainable(model, "lora_scratch", ...)`: our LoRA where "lora" puts peft's; a
    classification head (if any) trains too, as with "lora"."""
    inject_lora(model, lora_targets, lora_r, lora_alpha, lora_dropout)
    for name, module in model.named_modules():
        if name.rpartition(".")[2] in head_names:
            module.requires_grad_(True)
    return model


register_strategy("lora_scratch", lora_strategy)
