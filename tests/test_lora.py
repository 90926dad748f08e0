"""LoRA from scratch (sprint 13), pinned to `peft` 0.21 with the same A and B: forward,
gradients, dropout, merged weights, parameter counts, target selection and adapter files, on
GPT-2's Conv1D (our GPT exported to Hugging Face), our GPT's nn.Linear, a tiny Llama and the
real SmolLM2 (q_proj / v_proj)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from llmlab.errors import LLMLabError
from llmlab.finetune import count_parameters, set_trainable
from llmlab.gpt import GPT, GPTConfig
from llmlab.lora import (
    ADAPTER_FILE,
    LoRALinear,
    adapter_size_bytes,
    as_peft,
    find_targets,
    inject_lora,
    load_adapter,
    lora_layers,
    lora_summary,
    merge_and_unload,
    merge_lora,
    save_adapter,
    unmerge_lora,
)

# Measured (see the sprint README): float32 on CPU, 1 thread. The ops run in peft's order,
# so most figures are exactly 0; the bounds leave room for other BLAS builds.
TOL = 1e-5


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=61, block_size=16, n_layer=2, n_head=4, n_embd=32)).eval()


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def randomise_b(model: nn.Module, seed: int = 1) -> None:
    """B starts at zero (the adapter is then a no-op and any bug hides): fill it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.5)


def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids) if isinstance(model, GPT) else model(input_ids=ids)
    return out[0] if isinstance(out, tuple) else out.logits


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def check_against_peft(base: nn.Module, ids: torch.Tensor, targets, r: int, **peft_extra) -> dict:
    """Ours and peft's LoRA on copies of `base` with the same factors: forward, gradients,
    merged weights. Returns the measured maximum errors."""
    from peft import LoraConfig, inject_adapter_in_model

    ours = inject_lora(copy.deepcopy(base), targets, r=r, alpha=2 * r)
    randomise_b(ours)
    theirs = as_peft(ours)  # peft's LoRA on the same layers, with the same A and B
    # ... and the same layers as peft picks from the same target spec on its own:
    own = inject_adapter_in_model(
        LoraConfig(r=r, target_modules=targets, **peft_extra), copy.deepcopy(base)
    )
    assert [n for n, m in own.named_modules() if hasattr(m, "lora_A")] == list(lora_layers(ours))
    errs = {}
    a, b = logits_of(ours, ids), logits_of(theirs, ids)
    errs["forward"] = max_err(a, b)
    a.square().mean().backward()
    b.square().mean().backward()
    named = dict(theirs.named_modules())
    errs["grad"] = max(
        max_err(layer.lora_A.grad, named[n].lora_A["default"].weight.grad)
        + max_err(layer.lora_B.grad, named[n].lora_B["default"].weight.grad)
        for n, layer in lora_layers(ours).items()
    )
    grads = [layer.lora_A.grad.abs().sum() for layer in lora_layers(ours).values()]
    assert all(g > 0 for g in grads)  # non-zero B: A learns from the first step
    for module in theirs.modules():
        if hasattr(module, "lora_A"):
            module.merge()
    merge_lora(ours)
    errs["merged_weight"] = max(
        max_err(layer.base_layer.weight, named[n].base_layer.weight)
        for n, layer in lora_layers(ours).items()
    )
    with torch.no_grad():
        errs["merged_vs_adapter"] = max_err(logits_of(ours, ids), a)
    return errs


def test_lora_linear_starts_as_the_base_layer_with_peft_init() -> None:
    torch.manual_seed(0)
    base = nn.Linear(256, 64)
    layer = LoRALinear(copy.deepcopy(base), r=8, alpha=16)
    x = torch.randn(3, 256)
    assert torch.equal(layer(x), base(x))  # B = 0: training starts from the base model
    bound = 1 / 256**0.5  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in))
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.9 * bound
    assert abs(float(layer.lora_A.detach().std()) - bound / 3**0.5) < 0.1 * bound
    assert torch.count_nonzero(layer.lora_B) == 0 and layer.scaling == 2.0
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    layer(x).sum().backward()  # at B = 0 only B gets a gradient (dL/dA = B^T ... = 0)
    assert torch.count_nonzero(layer.lora_A.grad) == 0 and layer.lora_B.grad.abs().sum() > 0


@pytest.mark.parametrize("targets", [["c_attn"], "all-linear"])
def test_conv1d_parity_with_peft_on_our_gpt_exported_to_gpt2(targets) -> None:
    hf = tiny_gpt().to_hf().eval()
    assert type(hf.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    ids = torch.randint(0, 61, (2, 16), generator=torch.Generator().manual_seed(0))
    errs = check_against_peft(hf, ids, targets, r=4, fan_in_fan_out=True)
    print("GPT-2 Conv1D", targets, errs)
    assert max(errs.values()) < TOL


def test_linear_parity_with_peft_on_our_gpt_and_equal_to_its_gpt2_export() -> None:
    gpt = tiny_gpt()
    ids = torch.randint(0, 61, (2, 16), generator=torch.Generator().manual_seed(0))
    errs = check_against_peft(gpt, ids, ["attn.c_attn", "attn.c_proj"], r=4)
    print("our GPT nn.Linear", errs)
    assert max(errs.values()) < TOL
    # The same adapter on our GPT (nn.Linear) and on its GPT-2 export (Conv1D, transposed
    # weights): A and B need no transposing, only the base weight does.
    ours = inject_lora(copy.deepcopy(gpt), ["c_attn"], r=4, alpha=8)
    randomise_b(ours)
    hf = inject_lora(gpt.to_hf().eval(), ["c_attn"], r=4, alpha=8)
    with torch.no_grad():
        for (_, a), (_, b) in zip(lora_layers(ours).items(), lora_layers(hf).items(), strict=True):
            b.lora_A.copy_(a.lora_A)
            b.lora_B.copy_(a.lora_B)
            assert a.base_digest == b.base_digest  # the digest is layout-independent
    assert max_err(logits_of(ours, ids), logits_of(hf, ids)) < 1e-4


def test_llama_parity_and_target_selection_match_peft() -> None:
    from peft import LoraConfig, inject_adapter_in_model

    llama = tiny_llama()
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    errs = check_against_peft(llama, ids, ["q_proj", "v_proj"], r=4)
    print("tiny Llama q,v", errs)
    assert max(errs.values()) < TOL
    for targets in ("all-linear", r".*\.(up|down)_proj", ["self_attn.o_proj", "gate_proj"]):
        theirs = inject_adapter_in_model(
            LoraConfig(r=2, target_modules=targets), copy.deepcopy(llama)
        )
        expected = [n for n, m in theirs.named_modules() if hasattr(m, "lora_A")]
        assert find_targets(llama, targets) == expected, targets
    assert "lm_head" not in " ".join(find_targets(llama, "all-linear"))


def test_dropout_is_on_the_input_of_a_as_in_peft() -> None:
    llama = tiny_llama()
    ours = inject_lora(copy.deepcopy(llama), ["q_proj", "v_proj"], r=4, alpha=8, dropout=0.5)
    randomise_b(ours)
    theirs = as_peft(ours)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    ours.train(), theirs.train()
    torch.manual_seed(3)
    a = logits_of(ours, ids)
    torch.manual_seed(3)
    b = logits_of(theirs, ids)  # same random masks, drawn in the same order
    assert max_err(a, b) < TOL
    torch.manual_seed(4)
    assert max_err(logits_of(ours, ids), a) > 1e-3  # the masks do change the output
    ours.eval()
    with torch.no_grad():
        plain = logits_of(ours, ids)
        merge_lora(ours)  # merging is for inference: no dropout there
        assert max_err(logits_of(ours, ids), plain) < TOL


def test_smollm2_q_v_parity_counts_and_adapter_size(smollm2, tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    model, tokenizer = smollm2
    ids = tokenizer("Of Man's first disobedience, and the fruit", return_tensors="pt").input_ids
    errs = check_against_peft(model, ids, ["q_proj", "v_proj"], r=8)
    print("SmolLM2 q,v r=8", errs)
    assert max(errs["forward"], errs["grad"], errs["merged_weight"]) < TOL
    assert errs["merged_vs_adapter"] < 1e-3  # W + sBA rounded once per layer, 30 layers deep
    ours = inject_lora(copy.deepcopy(model), r=8, alpha=16)  # default targets: q_proj, v_proj
    theirs = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    summary = lora_summary(ours)
    trainable, total = theirs.get_nb_trainable_parameters()
    assert (summary["trainable"], summary["total"]) == (trainable, total)
    assert summary["trainable"] == summary["lora"] == 460_800  # 30 x 8 x (576 + 576 + 576 + 192)
    assert round(summary["percent"], 2) == 0.34
    save_adapter(ours, tmp_path / "ours", base_name="smollm2")
    theirs.save_pretrained(tmp_path / "peft")
    ours_bytes = (tmp_path / "ours" / ADAPTER_FILE).stat().st_size
    peft_bytes = (tmp_path / "peft" / ADAPTER_FILE).stat().st_size
    assert 460_800 * 4 < ours_bytes < 460_800 * 4 + 20_000  # fp32 factors + a small header
    assert abs(ours_bytes - peft_bytes) < 10_000  # same tensors, same keys; our header is larger


def test_adapter_files_round_trip_and_are_read_by_peft(tmp_path) -> None:
    from peft import PeftModel

    base = tiny_gpt().to_hf().eval()
    ids = torch.randint(0, 61, (2, 16), generator=torch.Generator().manual_seed(0))
    ours = inject_lora(copy.deepcopy(base), "all-linear", r=4, alpha=8)
    randomise_b(ours)
    want = logits_of(ours, ids)
    save_adapter(ours, tmp_path / "a", base_name="tiny")
    assert adapter_size_bytes(tmp_path / "a") > 0
    reloaded = load_adapter(copy.deepcopy(base), tmp_path / "a")  # injects, then loads
    assert torch.equal(logits_of(reloaded, ids), want)
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True and config["r"] == 4
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "a")
    assert max_err(logits_of(peft_model, ids), want) < TOL  # peft reads our file
    peft_model.save_pretrained(tmp_path / "p")  # and we read peft's (no base record: a note)
    assert max_err(logits_of(load_adapter(copy.deepcopy(base), tmp_path / "p"), ids), want) < TOL
    # Merged for inference: the plain architecture again, same outputs.
    merged = merge_and_unload(reloaded)
    assert type(merged.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    assert set(merged.state_dict()) == set(base.state_dict())
    assert max_err(logits_of(merged, ids), want) < TOL


def test_an_adapter_for_another_base_is_refused_where_peft_loads_it(tmp_path) -> None:
    from peft import PeftModel

    ours = inject_lora(tiny_gpt(seed=0).to_hf().eval(), ["c_attn"], r=4)
    save_adapter(ours, tmp_path / "a", base_name="tiny seed 0")
    other = tiny_gpt(seed=1).to_hf().eval()  # same shapes, other weights
    with pytest.raises(LLMLabError, match="trained on another base model .tiny seed 0.") as e:
        load_adapter(copy.deepcopy(other), tmp_path / "a")
    assert "\n" not in str(e.value)
    PeftModel.from_pretrained(copy.deepcopy(other), tmp_path / "a")  # peft: no complaint
    load_adapter(copy.deepcopy(other), tmp_path / "a", check_base=False)  # on request
    other_alpha = inject_lora(tiny_gpt(seed=0).to_hf().eval(), ["c_attn"], r=4, alpha=32)
    with pytest.raises(LLMLabError, match="lora_alpha=16.0, this model's LoRA 32.0"):
        load_adapter(other_alpha, tmp_path / "a")  # same shapes, another scaling
    llama = tiny_llama()
    with pytest.raises(LLMLabError, match="another architecture"):
        load_adapter(llama, tmp_path / "a")
    with pytest.raises(LLMLabError, match="not a LoRA adapter"):
        load_adapter(llama, tmp_path)
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "dora").mkdir()
    (tmp_path / "dora" / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    (tmp_path / "dora" / ADAPTER_FILE).write_bytes((tmp_path / "a" / ADAPTER_FILE).read_bytes())
    with pytest.raises(LLMLabError, match="does not implement .use_dora."):
        load_adapter(copy.deepcopy(other), tmp_path / "dora")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ADAPTER_FILE).write_text("not safetensors")
    (tmp_path / "b" / "adapter_config.json").write_text("{}")
    with pytest.raises(LLMLabError, match="unreadable"):
        load_adapter(llama, tmp_path / "b")


def test_merge_unmerge_and_merge_and_unload() -> None:
    gpt = tiny_gpt()
    base_w = gpt.h[0].attn.c_attn.weight.detach().clone()
    model = inject_lora(copy.deepcopy(gpt), ["c_attn", "c_fc"], r=4, alpha=4)
    randomise_b(model)
    layer = model.h[0].attn.c_attn
    ids = torch.randint(0, 61, (2, 16))
    want = logits_of(model, ids)
    merge_lora(model)
    merge_lora(model)  # a second merge is a no-op, not a double update
    assert torch.allclose(layer.base_layer.weight, base_w + layer.lora_B @ layer.lora_A, atol=1e-6)
    assert max_err(logits_of(model, ids), want) < TOL
    unmerge_lora(model)
    assert max_err(layer.base_layer.weight, base_w) < 1e-6
    plain = merge_and_unload(model)
    assert isinstance(plain.h[0].attn.c_attn, nn.Linear) and not lora_layers(plain)
    assert set(plain.state_dict()) == set(gpt.state_dict())
    assert max_err(logits_of(plain, ids), want) < TOL


def test_finetune_strategy_trains_only_the_factors_like_peft() -> None:
    ours = set_trainable(tiny_gpt(), "lora_scratch", lora_r=4, lora_alpha=8)
    theirs = set_trainable(tiny_gpt(), "lora", lora_r=4, lora_alpha=8)
    assert count_parameters(ours) == count_parameters(theirs)
    assert count_parameters(ours)["trainable"] == 2 * 4 * (32 + 96)  # c_attn in 2 blocks
    names = [n for n, p in ours.named_parameters() if p.requires_grad]
    assert names and all(n.endswith(("lora_A", "lora_B")) for n in names)


def test_training_ours_and_peft_from_the_same_start_gives_the_same_weights() -> None:
    from llmlab.data.lm_dataset import TextDataset
    from llmlab.finetune import CausalLMAdapter, FinetuneConfig, finetune, lm_loss

    tokens = torch.randint(0, 64, (400,), generator=torch.Generator().manual_seed(0))
    data = TextDataset(tokens.numpy(), 12, stride=12)

    def collate(windows):
        return {"input_ids": torch.stack([w[0] for w in windows]),
                "labels": torch.stack([w[1] for w in windows])}  # fmt: skip

    ours = CausalLMAdapter(tiny_llama())
    set_trainable(ours, "lora_scratch", lora_r=4, lora_alpha=8, lora_targets="all-linear")
    theirs = as_peft(ours)  # the same A (and B = 0) before any step
    cfg = FinetuneConfig(max_steps=6, batch_size=4, lr=1e-2, progress=False)
    fits = [finetune(m, data, collate, cfg, None, lm_loss) for m in (ours, theirs)]
    assert fits[0]["history"]["loss"] == fits[1]["history"]["loss"]  # bit for bit
    assert fits[0]["history"]["loss"][-1] < fits[0]["history"]["loss"][0]
    for name, layer in lora_layers(ours).items():
        assert torch.equal(layer.lora_B, theirs.get_submodule(name).lora_B["default"].weight)


def test_bad_input_gets_one_line_errors(tmp_path: Path) -> None:
    gpt = tiny_gpt()
    cases = [
        (dict(targets=["c_attn"], r=0), "positive integer"),
        (dict(targets=["c_attn"], r=33), "larger than this 32->96 layer"),
        (dict(targets=["c_attn"], alpha=0), "alpha"),
        (dict(targets=["c_attn"], dropout=1.0), "dropout"),
        (dict(targets=["q_proj"]), "matches no module of GPT"),
        (dict(targets=["c_attn", "v_prj"]), "'v_prj' matches no module"),  # peft: silent
        (dict(targets=["attn"]), "a CausalSelfAttention: LoRA wraps linear layers"),
        (dict(targets="h\\.[0-9"), "not a valid regex"),
        (dict(targets=[]), "no LoRA targets"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LLMLabError, match=message) as e:
            inject_lora(gpt, **kwargs)
        assert "\n" not in str(e.value)
        assert not lora_layers(gpt)  # a refused injection changes nothing
    with pytest.raises(LLMLabError, match="no LoRA layers"):
        merge_lora(gpt)
    model = inject_lora(gpt, ["c_attn"], r=2)
    with pytest.raises(LLMLabError, match="already has LoRA"):
        inject_lora(model, ["c_attn"])
    merge_lora(model).train()
    with pytest.raises(LLMLabError, match="unmerge_lora"):
        logits_of(model, torch.randint(0, 61, (1, 4)))
    two = inject_lora(inject_lora(tiny_gpt(), ["c_attn"], r=2), ["c_fc"], r=4)
    with pytest.raises(LLMLabError, match="differ in r"):
        save_adapter(two, tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()  # refused before writing anything
    with pytest.raises(LLMLabError, match="unmerge"):
        as_peft(merge_lora(two))
    with pytest.raises(LLMLabError, match="not nn.Linear|LoRA wraps"):
        LoRALinear(nn.Embedding(4, 4), r=1, alpha=1)
