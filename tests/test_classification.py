"""Classification heads, pooling, metrics and `classify()` (sprint 11)."""

from __future__ import annotations

import pytest
import torch

from llmlab.classification import (
    GPTForSequenceClassification,
    classification_metrics,
    classify,
    collate,
    encode_texts,
    evaluate_classifier,
    extract_features,
    init_head_from_words,
    last_token_index,
    load_classifier,
    majority_baseline,
    pad_batch,
    pool_last,
    tfidf_baseline,
)
from llmlab.errors import LLMLabError
from llmlab.gpt import GPT, GPTConfig
from llmlab.tokenizers import CharTokenizer
from tests.conftest import tiny_llama_config

PAD = 1  # a pad id the random inputs below never contain


def hf_gpt2_classifier(seed: int = 0):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4, num_labels=3)
    config.pad_token_id = PAD
    return GPT2ForSequenceClassification(config).eval()


def right_padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(2, 97, (n,), generator=g).tolist() for n in (7, 3, 12, 1)]
    return pad_batch(rows, PAD)


@pytest.mark.parametrize("seed", [0, 1])
def test_our_gpt_classifier_equals_gpt2_for_sequence_classification(seed: int) -> None:
    hf = hf_gpt2_classifier(seed)
    ids, mask = right_padded_batch(seed)
    labels = torch.tensor([0, 2, 1, 1])
    ours = GPTForSequenceClassification.from_hf(hf).eval()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, labels=labels)
        got = ours(ids, mask, labels)
        back = ours.to_hf(pad_token_id=PAD).eval()(input_ids=ids, attention_mask=mask)
    assert (got.logits - expected.logits).abs().max() < 1e-5  # measured: ~1e-7
    assert abs(float(got.loss) - float(expected.loss)) < 1e-5
    assert (back.logits - expected.logits).abs().max() < 1e-5


def test_padding_does_not_change_a_row_and_left_padding_is_refused() -> None:
    model = GPTForSequenceClassification(GPT(GPTConfig(97, 32, 2, 4, 32)), 2).eval()
    ids, mask = right_padded_batch()
    with torch.no_grad():
        batched = model(ids, mask).logits
        alone = torch.cat([model(ids[i : i + 1, : int(mask[i].sum())]).logits for i in range(4)])
    assert (batched - alone).abs().max() < 1e-5
    assert last_token_index(mask).tolist() == [6, 2, 11, 0]
    hidden = torch.arange(4 * 12 * 2, dtype=torch.float).reshape(4, 12, 2)
    assert torch.equal(
        pool_last(hidden, mask), hidden[torch.arange(4), torch.tensor([6, 2, 11, 0])]
    )
    left = torch.flip(mask, dims=[1])
    with pytest.raises(LLMLabError, match="right padding"):
        model(ids, left)


def test_hugging_face_pooling_reads_early_when_a_text_ends_with_the_pad_token() -> None:
    """The gotcha: Hugging Face finds the last real token by looking for the pad id. SmolLM2's
    pad token is its end-of-turn token, so a text that ends with it is pooled one token early.
    Our classifier reads the attention mask instead."""
    hf = hf_gpt2_classifier()
    ours = GPTForSequenceClassification.from_hf(hf).eval()
    ids = torch.tensor([[5, 9, 14, PAD]])  # a REAL final token that happens to be the pad id
    mask = torch.ones_like(ids)
    with torch.no_grad():
        hf_logits = hf(input_ids=ids, attention_mask=mask).logits
        ours_full = ours(ids, mask).logits
        ours_early = ours(ids[:, :3]).logits
    assert torch.allclose(hf_logits, ours_early, atol=1e-5)  # HF pooled position 2, not 3
    assert not torch.allclose(ours_full, ours_early, atol=1e-3)


def test_head_from_label_words_equals_the_lm_on_those_words() -> None:
    """Copying the LM's output rows for the label words into the head makes the classifier's
    logits exactly the LM's next-token logits for those words (a zero-shot start)."""
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = tiny_llama_config(2, vocab_size=50, pad_token_id=0, num_labels=2)
    lm = LlamaForCausalLM(config).eval()
    clf = LlamaForSequenceClassification(config).eval()
    clf.model.load_state_dict(lm.model.state_dict())
    words = [7, 11]
    init_head_from_words(clf.score, clf.get_input_embeddings().weight, words)
    ids = torch.randint(1, 50, (3, 6))
    with torch.no_grad():
        expected = lm(input_ids=ids).logits[:, -1, words]
        got = clf(input_ids=ids).logits
    assert (got - expected).abs().max() < 1e-5


def test_encode_texts_template_truncation_and_errors() -> None:
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz :'?")
    rows = encode_texts(tok, ["abc", "it’s café"], 6, template="q: {}")
    assert tok.decode(rows[0]) == "q: abc"
    assert tok.decode(rows[1]) == "q: it'"  # curly apostrophe mapped, cut at 6
    assert tok.decode(encode_texts(tok, ["it’s café"], 4, truncation_side="left")[0]) == "cafe"
    with pytest.raises(LLMLabError, match="max_length"):
        encode_texts(tok, ["a"], 0)


def test_encode_texts_refuses_a_text_containing_the_pad_token(smollm2) -> None:
    _, tokenizer = smollm2
    rows = encode_texts(tokenizer, ["A fine film."], 16, template="Review: {}\nSentiment:")
    assert tokenizer.decode(rows[0]) == "Review: A fine film.\nSentiment:"
    with pytest.raises(LLMLabError, match="pad token"):
        encode_texts(tokenizer, ["A fine film.<|im_end|>"], 16)


def test_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (200,), generator=g)
    p = torch.where(torch.rand(200, generator=g) < 0.6, y, torch.randint(0, 3, (200,), generator=g))
    ours = classification_metrics(y, p, 3)
    assert ours["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert ours["f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert ours["confusion"] == confusion_matrix(y, p).tolist()


def test_evaluate_classify_and_features_agree() -> None:
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz ")
    model = GPTForSequenceClassification(GPT(GPTConfig(tok.vocab_size, 32, 1, 2, 16)), 2).eval()
    texts = ["a good film", "bad", "quite a long and boring story"]
    rows = encode_texts(tok, texts, 32)
    result = evaluate_classifier(model, list(zip(rows, [1, 0, 0], strict=True)), 0, 2)
    probs = result["probabilities"]
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(1), torch.ones(3))
    labels = ["neg", "pos"]
    one = classify(model, tok, texts[0], labels, max_length=32)
    many = classify(model, tok, texts, labels, max_length=32)
    assert isinstance(one, tuple) and one == many[0]
    assert [lab for lab, _ in many] == [labels[int(k)] for k in probs.argmax(1)]
    assert all(p == pytest.approx(float(probs[i].max())) for i, (_, p) in enumerate(many))
    features = extract_features(model, rows, 0)
    logits = model.score(features)
    assert torch.allclose(torch.softmax(logits, 1), probs, atol=1e-6)


def test_baselines() -> None:
    majority = majority_baseline([1, 1, 0], [1, 0, 0, 0])
    assert majority["label"] == 1 and majority["accuracy"] == 0.25
    train = [("a great film", 1), ("great fun", 1), ("awful film", 0), ("awful mess", 0)] * 5
    test = [("great", 1), ("awful", 0)]
    result = tfidf_baseline(train, test, test)
    assert result["accuracy"] == 1.0 and result["n_train"] == 20
    with pytest.raises(LLMLabError, match="2 classes"):
        tfidf_baseline([("a", 1)], test, test)


def test_load_classifier_wraps_the_sprint09_model(sprint09_run) -> None:
    model, tokenizer, kind = load_classifier("sprint09", ["rotten", "fresh"])
    assert kind == "gpt" and isinstance(model, GPTForSequenceClassification)
    trained = GPT.load(sprint09_run / "checkpoints" / "last")
    assert isinstance(tokenizer, CharTokenizer)
    scratch, _, _ = load_classifier("scratch", ["rotten", "fresh"])
    assert scratch.config == model.config
    assert not torch.equal(scratch.transformer.wte.weight, model.transformer.wte.weight)
    ids = torch.tensor([tokenizer.encode("Good.")])
    with torch.no_grad():
        assert model(ids).logits.shape == (1, 2)
    assert trained.config.n_embd == model.config.n_embd
    batch = collate([(tokenizer.encode("ab"), 1)], 0)
    assert batch["labels"].tolist() == [1]
