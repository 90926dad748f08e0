"""Sprint 10: llmlab GPTs exported to Hugging Face classes give the same logits; tokenizers too."""

from __future__ import annotations

import pytest
import torch

from llmlab import pretrained
from llmlab.errors import LLMLabError
from llmlab.gpt import GPT, GPTConfig
from llmlab.hf_export import add_pad_token, ensure_export, to_hf_model, to_hf_tokenizer
from llmlab.tokenizers import CharTokenizer, gpt2_tokenizer

CASES = [
    dict(pos_encoding="learned", bias=True),
    dict(pos_encoding="learned", bias=False),
    dict(pos_encoding="sinusoidal", bias=True),
    dict(pos_encoding="rope", bias=False),
    dict(pos_encoding="rope", bias=True),
    # sprint 09's speed-run options: ReLU^2, QK-norm, an untied head
    dict(pos_encoding="rope", bias=False, mlp_act="relu2", qk_norm=True, tie_embeddings=False),
    dict(pos_encoding="rope", bias=True, qk_norm=True),
    dict(pos_encoding="rope", bias=False, mlp_act="relu2", tie_embeddings=False),
    dict(pos_encoding="learned", bias=False, mlp_act="relu2", tie_embeddings=False),
    # the default run's exact GELU
    dict(pos_encoding="rope", bias=False, mlp_act="gelu_erf"),
    dict(pos_encoding="learned", bias=False, mlp_act="gelu_erf"),
]


def _case_id(case: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in case.items())


def _expected_class(case: dict) -> str:
    if case["pos_encoding"] != "rope":
        return "GPT2"
    return "Persimmon" if case.get("qk_norm") else "GPTNeoX"


def _random_gpt(seed: int = 0, **kwargs) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=48, **kwargs)
    model = GPT(config).eval()
    with torch.no_grad():  # non-zero biases and norms, so a mix-up cannot hide behind zeros
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_exported_logits_equal_ours(case) -> None:
    ours = _random_gpt(**case)
    hf = to_hf_model(ours).eval()
    assert type(hf).__name__.startswith(_expected_class(case))
    tied = hf.get_output_embeddings().weight is hf.get_input_embeddings().weight
    assert tied == case.get("tie_embeddings", True)
    idx = torch.randint(0, 97, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(idx).logits
        mine, _ = ours(idx)
    torch.testing.assert_close(theirs, mine, atol=1e-5, rtol=0)


def test_qk_norm_without_rope_is_refused() -> None:
    with pytest.raises(LLMLabError, match="QK-norm"):
        to_hf_model(_random_gpt(pos_encoding="learned", qk_norm=True))


def test_saved_folder_loads_with_auto_classes(tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ours = _random_gpt(pos_encoding="rope", bias=False)
    text = "ROMEO:\nWhat light, soft!"
    char = CharTokenizer.from_text(text + "xyz")
    to_hf_model(ours).save_pretrained(tmp_path)
    to_hf_tokenizer(char).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == char.encode(text)  # same ids, newlines and spaces included
    assert tok.decode(ids) == text
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ours(x)[0], atol=1e-5, rtol=0)
    # Weight tying survives the round trip: one matrix reads and writes tokens.
    assert model.get_output_embeddings().weight.data_ptr() == (
        model.get_input_embeddings().weight.data_ptr()
    )


def test_gpt2_tokenizer_export_keeps_ids_and_eos() -> None:
    tok = to_hf_tokenizer(gpt2_tokenizer())
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.eos_token_id == 50256


def test_pad_token_is_added_and_embeddings_resized() -> None:
    ours = _random_gpt(pos_encoding="learned", bias=True)
    hf = to_hf_model(ours).eval()
    tok = to_hf_tokenizer(CharTokenizer([chr(i) for i in range(32, 32 + 97)]))
    assert tok.pad_token_id is None  # like GPT-2's: no PAD, so batches cannot be padded
    pad = add_pad_token(hf, tok)
    assert pad == 97 and hf.get_input_embeddings().weight.shape[0] == 98
    batch = tok(["abc", "abcdef"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, -1] == pad  # right-padded by default
    # Real tokens' logits are unchanged by the new row (it is only ever masked).
    x = torch.tensor([[33, 34, 35]])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits[..., :97], ours(x)[0], atol=1e-5, rtol=0)
    assert add_pad_token(hf, tok) == pad  # idempotent


def test_sprint09_run_loads_as_a_hugging_face_model(sprint09_run) -> None:
    model, tok = pretrained.load_pretrained("sprint09")
    assert type(model).__name__ == "GPTNeoXForCausalLM"
    ours, char = pretrained.load_gpt_checkpoint("sprint09")
    ids = char.encode("KING:")
    assert tok("KING:", add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        torch.testing.assert_close(
            model(torch.tensor([ids])).logits, ours(torch.tensor([ids]))[0], atol=1e-5, rtol=0
        )
    folder = pretrained.latest_run_checkpoint()
    export = ensure_export(folder)
    assert export == folder / "hf"
    stamp = (export / "llmlab_export.json").stat().st_mtime_ns
    assert ensure_export(folder) == export  # cached: not rewritten
    assert (export / "llmlab_export.json").stat().st_mtime_ns == stamp


def test_an_hf_folder_is_not_mistaken_for_an_llmlab_checkpoint(tmp_path) -> None:
    to_hf_model(_random_gpt(pos_encoding="learned")).save_pretrained(tmp_path)
    with pytest.raises(LLMLabError, match="not an llmlab checkpoint"):
        pretrained.load_gpt_checkpoint(tmp_path)
