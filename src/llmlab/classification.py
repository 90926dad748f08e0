"""Sequence classification with a decoder-only language model (sprint 11).

A causal LM reads left to right, so only the LAST real token of a text has seen all of it:
that token's final hidden state is the text's summary, and a linear head on it gives the
class logits (what `GPT2ForSequenceClassification` and Llama's classifier do).

- `encode_texts`, `pad_batch`, `collate`: texts -> token ids (Hugging Face tokenizers or our
  own), right-padded batches with an attention mask; `check_pad_token` gives a tokenizer
  without one (GPT-2) a pad token, and `encode_texts` refuses texts that contain it.
- `last_token_index`, `pool_last`: the last real token of each row, from the attention mask.
- `GPTForSequenceClassification`: our sprint-08 `GPT` with its LM head removed and a `score`
  head on the last real token; equal to Hugging Face's `GPT2ForSequenceClassification` with
  the same weights (`from_hf` / `to_hf`), and called the same way
  (`model(input_ids, attention_mask, labels)` -> `.loss`, `.logits`).
- `load_hf_classifier`: SmolLM2 (offline) or a hub model via
  `AutoModelForSequenceClassification`, pad token set; `load_classifier` also takes
  "sprint09" / "scratch" / a `GPT` checkpoint folder; `init_head_from_words` starts the head
  from the LM's own output rows for label words (a zero-shot classifier at step 0).
- `predict_proba`, `evaluate_classifier`, `classification_metrics` (accuracy, macro-F1,
  confusion matrix), `extract_features` (frozen features for a linear probe).
- `classify(model, tokenizer, "text" or [...], labels)`: label and probability, one text or
  many; `load_finetuned(folder)` rebuilds a fine-tuned classifier from its checkpoint.
- Baselines: `majority_baseline`, `tfidf_baseline` (word 1-2-grams + logistic regression).

Notes: `sprints/11_finetune_gpt2_classification/notes/02_heads_and_pooling.md`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import LLMLabError
from llmlab.gpt import GPT
from llmlab.tokenizers import CharTokenizer, fit_to_chars
from llmlab.training import confusion_matrix

Encoded = list[tuple[list[int], int]]  # (token ids, label) per example


# --- text -> padded batches ---------------------------------------------------------------------


def is_hf_tokenizer(tokenizer: Any) -> bool:
    """Hugging Face tokenizers are callable and know their pad token; ours only encode."""
    return hasattr(tokenizer, "pad_token_id") and callable(tokenizer)


def check_pad_token(tokenizer: Any, model: nn.Module | None = None) -> int:
    """The pad id, setting one when the tokenizer has none (GPT-2: its end-of-text token).

    The id is also written into `model.config.pad_token_id`: Hugging Face's classifiers find
    the last real token as the last position whose id is NOT the pad id.
    """
    if not is_hf_tokenizer(tokenizer):
        return 0  # our tokenizers: any id works, pooling reads the attention mask
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise LLMLabError("the tokenizer has neither a pad nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
        print(
            f"the tokenizer has no pad token: using its end-of-text token {tokenizer.eos_token!r}"
        )
    if model is not None and getattr(model, "config", None) is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return int(tokenizer.pad_token_id)


def encode_texts(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    template: str = "{}",
    truncation_side: str = "right",
) -> list[list[int]]:
    """Token ids of `template.format(text)` for each text, at most `max_length` of them.

    A character tokenizer first gets the text mapped onto its vocabulary (`fit_to_chars`).
    `truncation_side="right"` keeps the start of a long text, "left" keeps its end. With a
    Hugging Face tokenizer, a text that contains the pad token is refused: its classifier
    would take that real token for padding and pool an earlier position.
    """
    if truncation_side not in ("left", "right"):
        raise LLMLabError(f"truncation_side must be 'left' or 'right', got {truncation_side!r}")
    if max_length <= 0:
        raise LLMLabError(f"max_length must be positive, got {max_length}")
    filled = [template.format(t) for t in texts]
    if isinstance(tokenizer, CharTokenizer):  # e.g. curly quotes for the Shakespeare model
        filled = [fit_to_chars(t, tokenizer.chars)[0] for t in filled]
    if is_hf_tokenizer(tokenizer):
        ids = tokenizer(filled, add_special_tokens=False)["input_ids"]
        pad = tokenizer.pad_token_id
        for text, row in zip(filled, ids, strict=True):
            if pad is not None and pad in row:
                raise LLMLabError(
                    f"the text {text[:40]!r}... contains the pad token {tokenizer.pad_token!r}: "
                    "the classifier would mistake it for padding; remove it or pick another pad"
                )
    else:
        ids = [tokenizer.encode(t) for t in filled]
    cut = (lambda r: r[:max_length]) if truncation_side == "right" else (lambda r: r[-max_length:])
    out = [cut(list(r)) for r in ids]
    if any(not r for r in out):
        raise LLMLabError("a text encodes to no tokens: drop empty texts")
    return out


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest row: (input_ids, attention_mask), both (B, T) int64."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def collate(examples: Sequence[tuple[Sequence[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """(ids, label) pairs -> the keyword arguments of a classifier's forward."""
    ids, mask = pad_batch([e[0] for e in examples], pad_id)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": torch.tensor([e[1] for e in examples], dtype=torch.long),
    }


# --- pooling and our classifier -----------------------------------------------------------------


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) position of each row's last real token (works for right and left padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


def pool_last(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, C) -> (B, C): the hidden state of each row's last real token."""
    if attention_mask is None:
        return hidden[:, -1]
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last_token_index(attention_mask).to(hidden.device)]


@dataclass
class ClassifierOutput:
    """What a Hugging Face classifier returns, reduced to the two fields the course reads."""

    loss: torch.Tensor | None
    logits: torch.Tensor


class GPTForSequenceClassification(nn.Module):
    """Our `GPT` as a classifier: the final hidden state of the last real token -> `score`.

    The LM head is replaced by `nn.Identity`, so the GPT's forward returns its final
    LayerNorm's output (Hugging Face's `GPT2Model` has no LM head either). Inputs must be
    RIGHT-padded: causal attention then never lets a real token see a pad, and the pooled
    state is exactly the unpadded one. Hugging Face finds the last real token by searching
    for the pad id; we read the attention mask, which also works when a real token
    happens to share the pad id.
    """

    def __init__(self, gpt: GPT, num_labels: int = 2) -> None:
        super().__init__()
        if num_labels < 2:
            raise LLMLabError(f"a classifier needs at least 2 labels, got {num_labels}")
        self.transformer = gpt
        self.transformer.lm_head = nn.Identity()  # drops the (tied) LM head, keeps wte
        self.num_labels = num_labels
        self.score = nn.Linear(gpt.config.n_embd, num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=0.02)
        self.config = gpt.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ClassifierOutput:
        if attention_mask is not None:
            starts_padded = attention_mask[:, 0] == 0
            if bool(starts_padded.any()):
                raise LLMLabError(
                    "GPTForSequenceClassification needs right padding (real tokens first): "
                    "a left pad would be attended to"
                )
        hidden, _ = self.transformer(input_ids)  # (B, T, n_embd): the LM head is Identity
        logits = self.score(pool_last(hidden, attention_mask))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ClassifierOutput(loss, logits)

    @classmethod
    def from_hf(cls, hf: nn.Module) -> GPTForSequenceClassification:
        """Copy a Hugging Face `GPT2ForSequenceClassification` (same logits for the same input)."""
        state = {k: v for k, v in hf.state_dict().items() if k.startswith("transformer.")}
        gpt = GPT.from_hf(state, n_head=hf.config.n_head)
        gpt.config.layer_norm_eps = hf.config.layer_norm_epsilon
        for module in gpt.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = hf.config.layer_norm_epsilon
        model = cls(gpt, hf.config.num_labels)
        model.score.weight.data.copy_(hf.score.weight.data)
        return model.to(hf.score.weight.device)

    def to_hf(self, pad_token_id: int | None = None) -> nn.Module:
        """A Hugging Face `GPT2ForSequenceClassification` with these weights (GPT-2 shapes only)."""
        from transformers import GPT2ForSequenceClassification

        body = GPT(self.transformer.config)
        state = {k: v for k, v in self.transformer.state_dict().items() if k != "lm_head.weight"}
        body.load_state_dict(state, strict=False)  # lm_head is tied to wte: nothing missing
        lm = body.to_hf()
        config = copy.deepcopy(lm.config)
        config.num_labels = self.num_labels
        config.pad_token_id = pad_token_id
        hf = GPT2ForSequenceClassification(config)
        missing, unexpected = hf.load_state_dict(
            {k: v for k, v in lm.state_dict().items() if k.startswith("transformer.")}
            | {"score.weight": self.score.weight.detach()},
            strict=False,
        )
        missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
        if missing or unexpected:
            raise LLMLabError(f"to_hf: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return hf.to(self.score.weight.device).train(self.training)


# --- Hugging Face classifiers ------------------------------------------------------------------


def load_hf_classifier(
    name_or_path: str,
    labels: Sequence[str],
    device: str | torch.device = "cpu",
):
    """(model, tokenizer) for classification: "smollm2" (offline) or a folder / hub name.

    The pretrained checkpoint has no classification head: `score` starts random (std 0.02)
    and the pad token is set (to the end-of-text token when the tokenizer has none).
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from llmlab.pretrained import OFFLINE_NAME, load_tokenizer, smollm2_dir

    source = str(smollm2_dir()) if str(name_or_path).lower() == OFFLINE_NAME else str(name_or_path)
    tokenizer = load_tokenizer(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialised" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            dtype=torch.float32,
        )
    except (OSError, ValueError) as exc:
        raise LLMLabError(
            f"cannot load {name_or_path!r} for classification ({str(exc).splitlines()[0][:120]}): "
            "use 'smollm2' (offline), a local folder, or a hub name when online"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    check_pad_token(tokenizer, model)
    return model.to(device), tokenizer


GPT_SOURCES = ("sprint09", "scratch")  # the learner's model, and the same shape untrained


def is_gpt_checkpoint(name_or_path: str) -> bool:
    """True for "sprint09", "scratch" or a folder holding an llmlab `GPT` checkpoint."""
    if str(name_or_path).lower() in GPT_SOURCES:
        return True
    config = Path(name_or_path) / "config.json"
    return config.is_file() and '"n_embd"' in config.read_text(encoding="utf-8")


def load_classifier(
    name_or_path: str,
    labels: Sequence[str],
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, Any, str]:
    """(classifier, tokenizer, kind) with kind "gpt" (ours) or "hf" (transformers).

    "sprint09" is the newest sprint-09 run (`llmlab.pretrained.load_gpt_checkpoint`),
    "scratch" the same shape with fresh random weights (what pretraining is measured
    against), a folder with a `GPT` checkpoint loads that; anything else goes to
    `load_hf_classifier` ("smollm2", a Hugging Face folder or a hub name).
    """
    from llmlab.pretrained import load_gpt_checkpoint

    if not is_gpt_checkpoint(name_or_path):
        model, tokenizer = load_hf_classifier(name_or_path, labels, device)
        return model, tokenizer, "hf"
    scratch = str(name_or_path).lower() == "scratch"
    gpt, tokenizer = load_gpt_checkpoint(None if scratch else name_or_path)
    if scratch:
        gpt = GPT(gpt.config)  # same shape and tokenizer, weights drawn from the global RNG
    return GPTForSequenceClassification(gpt, len(labels)).to(device), tokenizer, "gpt"


def label_word_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """The single-token id of each label word (e.g. " negative", " positive")."""
    ids = []
    for word in words:
        encoded = (
            tokenizer.encode(word, add_special_tokens=False)
            if is_hf_tokenizer(tokenizer)
            else tokenizer.encode(word)
        )
        if len(encoded) != 1:
            raise LLMLabError(
                f"label word {word!r} is {len(encoded)} tokens for this tokenizer: choose words "
                "that are one token each (with their leading space), or --head-init random"
            )
        ids.append(encoded[0])
    return ids


def init_head_from_words(score: nn.Linear, output_embeddings: torch.Tensor, ids: list[int]) -> None:
    """Copy the LM's output rows of the label words into the head.

    With a prompt that ends where the label word would come next ("... Sentiment:"), the head
    then computes exactly the LM's logits for those words: fine-tuning starts from the
    model's zero-shot guess instead of from a random head.
    """
    if score.weight.shape != (len(ids), output_embeddings.shape[1]):
        raise LLMLabError(
            f"head {tuple(score.weight.shape)} does not fit {len(ids)} label words of width "
            f"{output_embeddings.shape[1]}"
        )
    with torch.no_grad():
        score.weight.copy_(output_embeddings[ids].to(score.weight))


# --- inference and metrics ---------------------------------------------------------------------


def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    rows: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(N, num_labels) class probabilities, in the order of `rows`.

    Rows are batched by length (longest first), so a batch pads little: evaluation of short
    snippets runs about twice as fast as in random order.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out: list[torch.Tensor] = [torch.empty(0)] * len(rows)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = pad_batch([rows[i] for i in chunk], pad_id)
            batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
            probs = torch.softmax(_logits(model, batch).float(), dim=-1).cpu()
            for i, p in zip(chunk, probs, strict=True):
                out[i] = p
    finally:
        model.train(was_training)
    return torch.stack(out)


def classification_metrics(
    targets: torch.Tensor, predictions: torch.Tensor, num_classes: int
) -> dict[str, Any]:
    """Accuracy, macro-F1 (the mean of each class's F1) and the confusion matrix."""
    matrix = confusion_matrix(targets, predictions, num_classes).double()
    tp = matrix.diag()
    precision = tp / matrix.sum(0).clamp(min=1)
    recall = tp / matrix.sum(1).clamp(min=1)
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp)
    )
    return {
        "accuracy": float(tp.sum() / matrix.sum().clamp(min=1)),
        "f1": float(f1.mean()),
        "confusion": matrix.long().tolist(),
    }


def evaluate_classifier(
    model: nn.Module,
    encoded: Encoded,
    pad_id: int,
    num_classes: int,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Loss, accuracy, macro-F1 and confusion matrix on (ids, label) examples."""
    if not encoded:
        raise LLMLabError("nothing to evaluate: the split is empty")
    probs = predict_proba(model, [e[0] for e in encoded], pad_id, batch_size)
    targets = torch.tensor([e[1] for e in encoded])
    loss = F.nll_loss(torch.log(probs.clamp(min=1e-12)), targets)
    metrics = classification_metrics(targets, probs.argmax(1), num_classes)
    return {"loss": float(loss), **metrics, "probabilities": probs}


@torch.no_grad()
def extract_features(
    model: nn.Module,
    rows: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 32,
) -> torch.Tensor:
    """(N, hidden) last-real-token features of a FROZEN classifier (the input of its head).

    Captured with a forward hook on `score`, so it works for Hugging Face classifiers and for
    `GPTForSequenceClassification` alike.
    """
    head = getattr(model, "score", None)
    if not isinstance(head, nn.Linear):
        raise LLMLabError("extract_features needs a classifier with a linear `score` head")
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda m, args, out: captured.append(args[0].detach()))
    try:
        predict_proba(model, rows, pad_id, batch_size)
    finally:
        hook.remove()
    # Hugging Face heads see every position (B, T, C) and pool after; ours sees (B, C).
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    feats: list[torch.Tensor] = [torch.empty(0)] * len(rows)
    start = 0
    for chunk_feats in captured:
        chunk = order[start : start + chunk_feats.shape[0]]
        if chunk_feats.dim() == 3:
            lengths = torch.tensor([len(rows[i]) for i in chunk])
            chunk_feats = chunk_feats[torch.arange(len(chunk)), lengths - 1]
        for i, f in zip(chunk, chunk_feats.float().cpu(), strict=True):
            feats[i] = f
        start += len(chunk)
    return torch.stack(feats)


def classify(
    model: nn.Module,
    tokenizer: Any,
    texts: str | Sequence[str],
    labels: Sequence[str],
    max_length: int = 128,
    template: str = "{}",
    truncation_side: str = "right",
    batch_size: int = 32,
) -> tuple[str, float] | list[tuple[str, float]]:
    """The predicted label and its probability: one (label, p) for a string, a list for many."""
    single = isinstance(texts, str)
    batch = [texts] if single else list(texts)
    if not batch:
        return []
    rows = encode_texts(tokenizer, batch, max_length, template, truncation_side)
    probs = predict_proba(model, rows, check_pad_token(tokenizer), batch_size)
    if probs.shape[1] != len(labels):
        raise LLMLabError(f"the model has {probs.shape[1]} classes but {len(labels)} labels given")
    best = probs.argmax(dim=1)
    results = [(labels[int(k)], float(p[k])) for k, p in zip(best, probs, strict=True)]
    return results[0] if single else results


# --- baselines ---------------------------------------------------------------------------------


def majority_baseline(train_labels: Sequence[int], test_labels: Sequence[int]) -> dict[str, Any]:
    """Always predict the most frequent training label: the floor any classifier must beat."""
    majority = max(set(train_labels), key=list(train_labels).count)
    n_classes = max(max(train_labels), max(test_labels)) + 1
    targets = torch.tensor(list(test_labels))
    return {
        "label": majority,
        **classification_metrics(targets, torch.full_like(targets, majority), n_classes),
    }


def tfidf_baseline(
    train: Sequence[tuple[str, int]],
    val: Sequence[tuple[str, int]],
    test: Sequence[tuple[str, int]],
    c_values: Sequence[float] = (1.0, 4.0, 16.0),
) -> dict[str, Any]:
    """TF-IDF of word 1-2-grams + logistic regression, its C picked on `val`, scored on `test`.

    The classic strong baseline for short texts: seconds to train, no GPU, no pretraining.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if len({y for _, y in train}) < 2:
        raise LLMLabError("the TF-IDF baseline needs training examples of at least 2 classes")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x_train = vectorizer.fit_transform([t for t, _ in train])
    x_val, x_test = (vectorizer.transform([t for t, _ in split]) for split in (val, test))
    y_train = [y for _, y in train]
    n_classes = max(max(y for _, y in split) for split in (train, val, test)) + 1
    best: tuple[float, float, Any] | None = None
    for c in c_values:
        clf = LogisticRegression(C=c, solver="liblinear").fit(x_train, y_train)
        val_acc = float((clf.predict(x_val) == [y for _, y in val]).mean())
        if best is None or val_acc > best[0]:
            best = (val_acc, c, clf)
    val_acc, c, clf = best
    targets = torch.tensor([y for _, y in test])
    predictions = torch.as_tensor(clf.predict(x_test))
    return {
        "C": c,
        "val_accuracy": val_acc,
        "n_train": len(train),
        **classification_metrics(targets, predictions, n_classes),
    }


def load_finetuned(folder: Path | str, device: str | torch.device = "cpu"):
    """(classifier, tokenizer, meta) from a checkpoint written by a fine-tuning run.

    The checkpoint holds only the trained parameters; `meta` (its `config.json`) names the
    base model, the strategy and the prompt, so the base is loaded and the same parameters
    are made trainable before the saved values are copied in.
    """
    from llmlab.checkpoint import read_config
    from llmlab.finetune import load_trainable, set_trainable

    meta = read_config(folder)
    missing = {"model", "strategy", "labels", "template", "max_length"} - set(meta)
    if missing:
        raise LLMLabError(f"{folder} is not a classifier checkpoint (no {sorted(missing)})")
    if meta["model"] == "scratch" and meta["strategy"] != "full":
        raise LLMLabError(
            f"{folder} fine-tuned part of a randomly initialised model: its frozen weights "
            "were never saved, so it cannot be rebuilt (use --strategy full with scratch)"
        )
    model, tokenizer, _ = load_classifier(meta["model"], meta["labels"], device)
    options = {k: meta[k] for k in ("n_blocks", "lora_r", "lora_alpha", "lora_layers") if k in meta}
    model = set_trainable(model, meta["strategy"], **options).to(device)
    load_trainable(folder, model, device)
    return model.eval(), tokenizer, meta
