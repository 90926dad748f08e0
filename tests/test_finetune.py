"""The fine-tuning loop and the trainable-parameter strategies (sprint 11, reused by 12-16)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from llmlab.classification import collate
from llmlab.errors import LLMLabError
from llmlab.finetune import (
    CausalLMAdapter,
    FinetuneConfig,
    TrainableView,
    batch_indices,
    count_parameters,
    find_blocks,
    finetune,
    hf_loss,
    register_strategy,
    set_trainable,
)
from tests.conftest import tiny_llama_config

PAD = 0


def tiny_llama_classifier(seed: int = 0, layers: int = 3):
    """A randomly initialised Llama with a 2-class head: the shape of SmolLM2, tiny."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = tiny_llama_config(layers, pad_token_id=PAD, num_labels=2)
    return LlamaForSequenceClassification(config).eval()


def toy_task(n: int = 64, seed: int = 0) -> list[tuple[list[int], int]]:
    """Label 1 when token 5 appears in the sequence: learnable in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for i in range(n):
        length = int(torch.randint(3, 9, (1,), generator=g))
        ids = torch.randint(6, 64, (length,), generator=g).tolist()
        label = i % 2
        if label:
            ids[int(torch.randint(0, length, (1,), generator=g))] = 5
        data.append((ids, label))
    return data


def accuracy(model: nn.Module, data: list[tuple[list[int], int]]) -> float:
    batch = collate(data, PAD)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float((logits.argmax(1) == batch["labels"]).float().mean())


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# --- strategies ------------------------------------------------------------------------------


def test_find_blocks_and_strategies_pick_the_right_parameters() -> None:
    name, blocks = find_blocks(tiny_llama_classifier())
    assert name == "model.layers" and len(blocks) == 3

    probe = set_trainable(tiny_llama_classifier(), "probe")
    assert trainable_names(probe) == {"score.weight"}

    last = set_trainable(tiny_llama_classifier(), "last_blocks", n_blocks=2)
    names = trainable_names(last)
    assert {"score.weight", "model.norm.weight"} <= names
    assert any(n.startswith("model.layers.2.") for n in names)
    assert any(n.startswith("model.layers.1.") for n in names)
    assert not any(n.startswith(("model.layers.0.", "model.embed_tokens")) for n in names)

    lora = set_trainable(tiny_llama_classifier(), "lora", lora_r=4, lora_layers=1)
    names = trainable_names(lora)
    assert "score.weight" in names
    lora_names = names - {"score.weight"}
    assert lora_names and all("lora_" in n and "layers.2." in n for n in lora_names)
    assert {n.rsplit(".", 3)[0].rsplit(".", 1)[1] for n in lora_names} == {"q_proj", "v_proj"}

    full = set_trainable(tiny_llama_classifier(), "full")
    counts = count_parameters(full)
    assert counts["trainable"] == counts["total"]


def test_lora_starts_as_the_base_model_and_registering_a_strategy() -> None:
    base = tiny_llama_classifier()
    x = collate(toy_task(4), PAD)
    with torch.no_grad():
        before = base(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
        lora = set_trainable(copy.deepcopy(base), "lora", lora_r=4)
        after = lora(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
    assert torch.equal(before, after)  # B = 0 at init: the adapter adds nothing yet

    def bias_only(model: nn.Module, **_) -> nn.Module:
        model.requires_grad_(False)
        model.score.weight.requires_grad_(True)
        return model

    register_strategy("head_only_test", bias_only)
    assert trainable_names(set_trainable(tiny_llama_classifier(), "head_only_test")) == {
        "score.weight"
    }


def test_strategy_errors_are_one_liners() -> None:
    with pytest.raises(LLMLabError, match="unknown strategy"):
        set_trainable(tiny_llama_classifier(), "nope")
    with pytest.raises(LLMLabError, match="n-blocks"):
        set_trainable(tiny_llama_classifier(), "last_blocks", n_blocks=9)
    with pytest.raises(LLMLabError, match="has none"):
        set_trainable(tiny_llama_classifier(), "probe", head_names=("missing",))
    model = tiny_llama_classifier().requires_grad_(False)
    with pytest.raises(LLMLabError, match="set_trainable"):
        finetune(model, toy_task(8), lambda b: collate(b, PAD), FinetuneConfig(max_steps=1))


# --- the loop --------------------------------------------------------------------------------


def test_batches_are_deterministic_epochs() -> None:
    epoch = [batch_indices(10, 4, seed=3, batch_number=b) for b in range(3)]
    assert [len(b) for b in epoch] == [4, 4, 2]
    assert sorted(sum(epoch, [])) == list(range(10))  # every example once per epoch
    assert batch_indices(10, 4, 3, 1) == epoch[1]
    assert batch_indices(10, 4, 3, 3) != epoch[0]  # the next epoch is reshuffled


def test_length_grouped_batches_pad_less_and_see_the_same_examples() -> None:
    """group_by_length: each run of `group_size` batches holds the same examples as without
    grouping (so do whole epochs), a batch's lengths are similar, and padding falls."""
    n, bs, group = 1000, 16, 10
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 64, (n,), generator=gen).tolist()
    plain = [batch_indices(n, bs, 7, b) for b in range(2 * 63)]  # two epochs (63 batches each)
    grouped = [batch_indices(n, bs, 7, b, lengths, group) for b in range(2 * 63)]
    for start in range(0, 63, group):  # per group of batches, within each epoch
        for epoch in (0, 63):
            a = sum(plain[epoch + start : epoch + min(start + group, 63)], [])
            b = sum(grouped[epoch + start : epoch + min(start + group, 63)], [])
            assert sorted(a) == sorted(b)
    assert grouped[:63] != sorted(grouped[:63], key=lambda b: -lengths[b[0]])  # order shuffled
    assert grouped[:63] != grouped[63:]  # and reshuffled per epoch

    def padded(batches: list[list[int]]) -> float:
        real = sum(lengths[i] for b in batches for i in b)
        return sum(len(b) * max(lengths[i] for i in b) for b in batches) / real

    assert padded(plain) > 1.5 and padded(grouped) < 1.1, (padded(plain), padded(grouped))
    assert batch_indices(n, bs, 7, 5, lengths, group) == grouped[5]  # pure: resume-safe
    with pytest.raises(LLMLabError, match="lengths"):
        batch_indices(n, bs, 7, 5, lengths[:-1], group)


def test_finetune_learns_keeps_the_best_and_stops_early(tmp_path) -> None:
    train, val = toy_task(64, seed=0), toy_task(32, seed=1)
    model = set_trainable(tiny_llama_classifier(), "full")
    start = accuracy(model, val)

    def evaluate(m: nn.Module) -> dict[str, float]:
        return {"accuracy": accuracy(m, val)}

    cfg = FinetuneConfig(
        out_dir=str(tmp_path),
        max_steps=60,
        batch_size=16,
        lr=3e-3,
        eval_interval=10,
        metric="accuracy",
        mode="max",
        patience=2,
        progress=False,
    )
    out = finetune(model, train, lambda b: collate(b, PAD), cfg, evaluate)
    assert out["evals"][0]["step"] == 0 and out["evals"][0]["accuracy"] == pytest.approx(start)
    assert out["best"]["accuracy"] >= start + 0.15
    assert accuracy(model, val) == pytest.approx(out["best"]["accuracy"])  # best restored
    assert out["history"]["loss"][-1] < out["history"]["loss"][0]
    if out["stopped_early"]:
        assert out["steps"] < 60 and out["steps"] - out["best_step"] == 2 * cfg.eval_interval
    for name in ("best", "last"):
        assert (tmp_path / "checkpoints" / name / "model.safetensors").is_file()


def test_resume_matches_an_uninterrupted_run_and_saves_only_what_trains(tmp_path) -> None:
    train, val = toy_task(48, seed=0), toy_task(16, seed=1)

    def evaluate(m: nn.Module) -> dict[str, float]:
        return {"accuracy": accuracy(m, val)}

    def run(out, stop_after=0, resume="") -> nn.Module:
        torch.manual_seed(1)  # LoRA's A matrices are random: same draw in every run
        model = set_trainable(tiny_llama_classifier(), "lora", lora_r=4)
        cfg = FinetuneConfig(
            out_dir=str(out),
            max_steps=6,
            batch_size=8,
            lr=5e-3,
            warmup_steps=2,
            eval_interval=2,
            metric="accuracy",
            mode="max",
            progress=False,
            resume=resume,
            stop_after=stop_after,
            seed=7,
        )
        finetune(model, train, lambda b: collate(b, PAD), cfg, evaluate, meta={"run": "toy"})
        return model

    from safetensors.torch import load_file

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=3)  # paused between two evaluations
    run(tmp_path / "b", resume=str(tmp_path / "b" / "checkpoints" / "last"))
    # `last` holds the step-6 weights of each run (the models themselves end on the best).
    a, b = (
        load_file(str(tmp_path / r / "checkpoints" / "last" / "model.safetensors")) for r in "ab"
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert set(a) == set(TrainableView(straight).state_dict())  # LoRA + head, not the model
    assert all("lora_" in k or k == "score/weight" for k in a)
    assert any(k.endswith("lora_B/default/weight") and a[k].abs().sum() > 0 for k in a)


def test_resume_refuses_another_setup(tmp_path) -> None:
    train = toy_task(16)
    model = set_trainable(tiny_llama_classifier(), "probe")
    cfg = FinetuneConfig(out_dir=str(tmp_path), max_steps=2, batch_size=8, progress=False)
    finetune(model, train, lambda b: collate(b, PAD), cfg, meta={"strategy": "probe"})
    cfg2 = FinetuneConfig(
        max_steps=4, batch_size=8, progress=False, resume=str(tmp_path / "checkpoints" / "last")
    )
    with pytest.raises(LLMLabError, match="another setup"):
        finetune(model, train, lambda b: collate(b, PAD), cfg2, meta={"strategy": "full"})


def test_same_weights_as_transformers_trainer(tmp_path) -> None:
    """Our loop and `transformers.Trainer`, same model, data, AdamW, clipping and constant LR:
    one full batch per step (so the data order cannot differ), three steps, same weights."""
    from transformers import Trainer, TrainingArguments

    data = toy_task(8)
    ours = set_trainable(tiny_llama_classifier(), "full")
    theirs = copy.deepcopy(ours)
    cfg = FinetuneConfig(
        max_steps=3,
        batch_size=8,
        lr=1e-3,
        min_lr=1e-3,  # lr_at's cosine from 1e-3 to 1e-3: constant
        grad_clip=1.0,
        progress=False,
        save_checkpoints=False,
    )
    finetune(ours, data, lambda b: collate(b, PAD), cfg, loss_fn=hf_loss)

    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    Trainer(
        model=theirs,
        args=args,
        train_dataset=data,
        data_collator=lambda b: collate(b, PAD),
    ).train()
    a, b = dict(ours.named_parameters()), dict(theirs.named_parameters())
    start = dict(tiny_llama_classifier().named_parameters())
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 1e-3  # they did train
    worst = max((a[k] - b[k].to(a[k])).abs().max().item() for k in a)
    assert worst < 1e-6, worst  # measured: 0.0 (bit-identical) for seeds 0, 1, 2


def test_causal_lm_adapter_loss_equals_hugging_face_loss() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).eval()
    w = torch.randint(0, 50, (3, 17))
    with torch.no_grad():
        theirs = hf(input_ids=w, labels=w).loss  # HF shifts the labels inside
        _, ours = CausalLMAdapter(hf)(w[:, :-1], w[:, 1:])
    assert abs(float(ours) - float(theirs)) < 1e-6
