"""Your own model as a Hugging Face model (sprint 10).

An llmlab `GPT` trained in sprint 09 becomes a folder that `transformers` loads with
`AutoModelForCausalLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`, so every
tool built for Hugging Face models (`generate`, pipelines, `peft`, `trl`, the sprint-10 demo)
works on it. No new architecture is registered: each position type maps onto an existing one.

- `to_hf_model(gpt)`: learned or sinusoidal positions -> `GPT2LMHeadModel` (sinusoidal: the
  fixed table is written into GPT-2's position-embedding matrix); rotary positions (the
  sprint-09 default) -> `GPTNeoXForCausalLM` with a sequential residual
  (`use_parallel_residual=False`), full-width rotary and LayerNorm; rotary with QK-norm ->
  `PersimmonForCausalLM` (the same layout plus a LayerNorm on each head's queries and keys).
  The MLP's activation maps to `gelu_new`/`gelu_pytorch_tanh`, `gelu` (exact) or `relu2`, an
  untied LM head to `tie_word_embeddings=False`. Missing biases (`bias=False` models) are exported as
  zeros. `GPT.to_hf()` calls this.
- `to_hf_tokenizer(tokenizer)`: our `CharTokenizer` (a `tokenizers` WordLevel model over
  single characters) or `BPETokenizer` as a `PreTrainedTokenizerFast`.
- `export(checkpoint, out_dir)` / `ensure_export(checkpoint)`: write model + tokenizer with
  `save_pretrained`; `ensure_export` caches the folder in `<checkpoint>/hf` and rebuilds it
  when the checkpoint's weights change.
- `add_pad_token(model, tokenizer)`: GPT-2 and the char model have no PAD token; add one and
  grow the embedding with `resize_token_embeddings` (the learner's sprint-10 recipe).

The mapping, weight by weight, is explained in
`sprints/10_pretrained_generation_demo/notes/01_your_model_as_a_hf_model.md`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmlab.errors import LLMLabError

EXPORT_DIRNAME = "hf"
_STAMP = "llmlab_export.json"  # which weights an export was made from (size, mtime)


# --- the model ------------------------------------------------------------------------------


def to_hf_model(gpt: Any) -> nn.Module:
    """A `transformers` causal LM holding a copy of `gpt`'s weights (same logits)."""
    c = gpt.config
    if c.pos_encoding == "rope":
        hf, state = _rotary(gpt)
    elif c.qk_norm:
        raise LLMLabError(
            "to_hf: QK-norm with learned or sinusoidal positions has no Hugging Face "
            "architecture (GPT-2 has no QK-norm): only pos_encoding='rope' models export it"
        )
    else:
        hf, state = _gpt2(gpt)
    own = hf.state_dict()
    for name, value in own.items():  # a bias=False model exports zero biases
        if name not in state and name.endswith(".bias"):
            state[name] = torch.zeros_like(value)
    missing = [k for k in own if k not in state and not _is_buffer(k)]
    if missing:
        raise LLMLabError(f"to_hf: no weights for {missing[:3]}: this GPT cannot be exported")
    hf.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return hf.to(gpt.wte.weight.device).train(gpt.training)


def _is_buffer(name: str) -> bool:
    return name.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"))


def _gpt2(gpt: Any) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import GPT2Config, GPT2LMHeadModel

    c = gpt.config
    eot = 50256 if c.vocab_size > 50256 else None  # GPT-2's <|endoftext|>, if it exists
    config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=None,  # 4 * n_embd, as our MLP
        activation_function=_ACT["gpt2"][c.mlp_act],
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.dropout,
        layer_norm_epsilon=c.layer_norm_eps,
        bos_token_id=eot,
        eos_token_id=eot,
        tie_word_embeddings=c.tie_embeddings,
    )
    # GPT-2's Conv1D layers store (in, out): the transpose of nn.Linear's (out, in).
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    state = {}
    for key, value in gpt.state_dict().items():
        if key == "lm_head.weight":
            continue
        state[f"transformer.{key}"] = value.t() if key.endswith(conv1d) else value
    if c.pos_encoding == "sinusoidal":  # a fixed table is a position embedding nobody trains
        state["transformer.wpe.weight"] = gpt.pe_table[: c.block_size]
    state["lm_head.weight"] = gpt.lm_head.weight.detach()  # = wte's tensor when tied
    return GPT2LMHeadModel(config), state


# Our MLP activations under their Hugging Face names (`transformers.activations.ACT2FN`).
_ACT = {
    "gpt2": {"gelu": "gelu_new", "gelu_erf": "gelu", "relu2": "relu2"},  # gelu_new: tanh GELU
    # gelu_pytorch_tanh = F.gelu(approximate="tanh"); "gelu" = the exact F.gelu
    "rotary": {"gelu": "gelu_pytorch_tanh", "gelu_erf": "gelu", "relu2": "relu2"},
}
# ... and back: a Hugging Face activation name -> our `mlp_act` (used by `GPT.from_hf`).
MLP_ACT_FROM_HF = {hf: ours for names in _ACT.values() for ours, hf in names.items()}


def _rotary(gpt: Any) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """RoPE models: GPT-NeoX, or Persimmon when the model has QK-norm. Both keep one fused
    QKV matrix, LayerNorms with biases and a plain (non-gated) MLP, as ours."""
    c = gpt.config
    common = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        intermediate_size=4 * c.n_embd,
        hidden_act=_ACT["rotary"][c.mlp_act],
        attention_dropout=c.dropout,
        hidden_dropout=c.dropout,
        max_position_embeddings=c.block_size,
        layer_norm_eps=c.layer_norm_eps,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": gpt.rotary.base,
            "partial_rotary_factor": 1.0,  # rotate every feature of a head, as we do
        },
        tie_word_embeddings=c.tie_embeddings,
        bos_token_id=None,
        eos_token_id=None,
    )
    if c.qk_norm:
        from transformers import PersimmonConfig, PersimmonForCausalLM

        hf = PersimmonForCausalLM(PersimmonConfig(qk_layernorm=True, **common))
        embed, layers, attn = "model.embed_tokens", "model.layers", "self_attn"
        final = "model.final_layernorm"
    else:
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        config = GPTNeoXConfig(
            use_parallel_residual=False,  # x + attn(ln1(x)), then + mlp(ln2(.)): GPT-2's order
            attention_bias=c.bias,
            **common,
        )
        hf = GPTNeoXForCausalLM(config)
        embed, layers, attn = "gpt_neox.embed_in", "gpt_neox.layers", "attention"
        final = "gpt_neox.final_layer_norm"
    H, hd = c.n_head, c.n_embd // c.n_head
    src = gpt.state_dict()
    state = {f"{embed}.weight": src["wte.weight"], "lm_head.weight": src["lm_head.weight"]}
    renames = {
        "ln_1": "input_layernorm",
        "ln_2": "post_attention_layernorm",
        "attn.c_proj": f"{attn}.dense",
        "attn.q_norm": f"{attn}.q_layernorm",
        "attn.k_norm": f"{attn}.k_layernorm",
        "mlp.c_fc": "mlp.dense_h_to_4h",
        "mlp.c_proj": "mlp.dense_4h_to_h",
    }
    for i in range(c.n_layer):
        ours, theirs = f"h.{i}.", f"{layers}.{i}."
        for a, b in renames.items():
            for kind in ("weight", "bias"):
                if f"{ours}{a}.{kind}" in src:
                    state[f"{theirs}{b}.{kind}"] = src[f"{ours}{a}.{kind}"]
        # Our fused QKV rows are [q of all heads; k of all heads; v of all heads]; NeoX and
        # Persimmon group them per head: [q_0; k_0; v_0; q_1; k_1; v_1; ...].
        w = src[f"{ours}attn.c_attn.weight"]
        state[f"{theirs}{attn}.query_key_value.weight"] = (
            w.view(3, H, hd, c.n_embd).transpose(0, 1).reshape(3 * c.n_embd, c.n_embd)
        )
        if f"{ours}attn.c_attn.bias" in src:
            b = src[f"{ours}attn.c_attn.bias"]
            state[f"{theirs}{attn}.query_key_value.bias"] = (
                b.view(3, H, hd).transpose(0, 1).reshape(-1)
            )
    for kind in ("weight", "bias"):
        if f"ln_f.{kind}" in src:
            state[f"{final}.{kind}"] = src[f"ln_f.{kind}"]
    return hf, state


# --- the tokenizer --------------------------------------------------------------------------


def to_hf_tokenizer(tokenizer: Any):
    """Our `CharTokenizer` or `BPETokenizer` as a `transformers` fast tokenizer (same ids)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from llmlab.tokenizers import EOT, BPETokenizer, CharTokenizer

    if isinstance(tokenizer, CharTokenizer):
        # One "word" per character: split everything into single characters (newlines too:
        # [\s\S], not "."), look each up in the vocabulary, and glue them back with no spaces.
        tok = Tokenizer(models.WordLevel(vocab=dict(tokenizer.stoi), unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False)
    if isinstance(tokenizer, BPETokenizer):
        special = {"eos_token": EOT, "bos_token": EOT} if tokenizer.eot_id is not None else {}
        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer.tokenizer, clean_up_tokenization_spaces=False, **special
        )
    raise LLMLabError(f"cannot export a {type(tokenizer).__name__}: expected Char/BPETokenizer")


def add_pad_token(model: nn.Module, tokenizer: Any, pad_token: str = "<|pad|>") -> int:
    """Give a tokenizer without PAD one, grow the model's embeddings to match; return its id.

    `resize_token_embeddings` appends a row drawn around the existing rows' mean (with their
    covariance: transformers' `mean_resizing`), so predictions on real tokens do not change;
    padded positions are masked anyway. (The cheap alternative, `pad_token = eos_token`,
    needs no resize but makes "padding" and "end of text" the same token.)
    """
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    tokenizer.add_special_tokens({"pad_token": pad_token})
    model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer.pad_token_id


# --- folders --------------------------------------------------------------------------------


def export(checkpoint: Path | str, out_dir: Path | str) -> Path:
    """Write an llmlab checkpoint as a Hugging Face folder (model + tokenizer), atomically."""
    from llmlab.pretrained import load_gpt_checkpoint

    gpt, tokenizer = load_gpt_checkpoint(checkpoint)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        to_hf_model(gpt).save_pretrained(tmp)
        to_hf_tokenizer(tokenizer).save_pretrained(tmp)
        (tmp / _STAMP).write_text(json.dumps(_weights_stamp(Path(checkpoint)), indent=2))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _weights_stamp(checkpoint: Path) -> dict[str, Any]:
    from llmlab.pretrained import checkpoint_folder

    weights = checkpoint_folder(checkpoint) / "model.safetensors"
    stat = weights.stat()
    return {"weights": str(weights.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def ensure_export(checkpoint: Path | str) -> Path:
    """The Hugging Face export of a checkpoint, in `<checkpoint>/hf`, made when missing or
    older than the checkpoint's weights."""
    from llmlab.pretrained import checkpoint_folder

    folder = checkpoint_folder(Path(checkpoint))
    out = folder / EXPORT_DIRNAME
    stamp = out / _STAMP
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == _weights_stamp(folder):
                return out
        except (OSError, json.JSONDecodeError):
            pass
    return export(folder, out)
