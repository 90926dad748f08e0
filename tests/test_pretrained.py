"""The offline pretrained model (sprint 05, reused by sprints 10-16).

The GGUF -> safetensors conversion runs at most once per test session: the session's data
folder keeps the converted model, and `smollm2_dir()` finds it there on later calls.
"""

from __future__ import annotations

import pytest
import torch

from llmlab import pretrained
from llmlab.errors import LLMLabError


def test_gguf_ships_with_the_package() -> None:
    path = pretrained.smollm2_gguf_path()
    assert path.name == pretrained.SMOLLM2_GGUF and path.stat().st_size > 50_000_000


def test_missing_or_incomplete_folder_gives_clear_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMLAB_DATA", str(tmp_path))
    with pytest.raises(LLMLabError, match="convert=True"):
        pretrained.smollm2_dir(convert=False)
    (tmp_path / pretrained.SMOLLM2_DIRNAME).mkdir()
    with pytest.raises(LLMLabError, match="incomplete: delete it"):
        pretrained.smollm2_dir()
    with pytest.raises(LLMLabError, match="model.safetensors"):
        pretrained.token_embeddings(tmp_path)


def test_interrupted_conversion_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    import transformers

    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash half-way")

    monkeypatch.setenv("LLMLAB_DATA", str(tmp_path))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        pretrained.smollm2_dir()
    assert list(tmp_path.iterdir()) == []  # no target folder, no temp folder


def test_unknown_model_name_is_a_clear_error() -> None:
    # Tests run with HF_HUB_OFFLINE=1, so a hub name cannot be fetched.
    with pytest.raises(LLMLabError, match="neither a local folder nor reachable"):
        pretrained.load_tokenizer("no-such-user/no-such-model-xyz")


@pytest.mark.slow
def test_converted_folder_is_complete_and_reused(smollm2) -> None:
    folder = pretrained.smollm2_dir(convert=False)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]
    assert pretrained.smollm2_dir() == folder  # found, not converted again


@pytest.mark.slow
def test_model_forward_and_tokenizer_round_trip(smollm2) -> None:
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert model.dtype == torch.float32
    text = "The quick brown fox jumps over the lazy dog. 42!"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == text
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_greedy_continuation_is_sensible(smollm2) -> None:
    model, tokenizer = smollm2
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


@pytest.mark.slow
def test_token_embeddings_equal_the_models_and_words_are_single_tokens(smollm2) -> None:
    model, tokenizer = smollm2
    table = pretrained.token_embeddings()
    torch.testing.assert_close(table, model.get_input_embeddings().weight.detach())
    vectors, words, groups = pretrained.word_embeddings()
    assert vectors.shape == (len(words), 576) and len(words) == len(groups) >= 50
    assert set(groups) == set(pretrained.WORD_GROUPS)
    token = pretrained.single_token_id(tokenizer, "Monday")
    torch.testing.assert_close(vectors[words.index("Monday")], table[token])
    assert pretrained.single_token_id(tokenizer, "antidisestablishmentarianism") is None


def test_sprint09_run_loads_with_its_tokenizer(sprint09_run) -> None:
    folder = pretrained.latest_run_checkpoint()
    assert folder.parent.parent == sprint09_run
    assert (folder / "tokenizer_meta.json").is_file()
    model, tokenizer = pretrained.load_gpt_checkpoint("sprint09")
    ids = tokenizer.encode("ROMEO:")
    assert tokenizer.decode(ids) == "ROMEO:"
    logits, _ = model(torch.tensor([ids]))
    assert logits.shape == (1, len(ids), model.config.vocab_size)
    # A run folder and the checkpoint folder itself give the same model.
    again, _ = pretrained.load_gpt_checkpoint(sprint09_run)
    assert torch.equal(again.wte.weight, model.wte.weight)


def test_not_a_checkpoint_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(LLMLabError, match="not an llmlab checkpoint"):
        pretrained.load_gpt_checkpoint(tmp_path)
