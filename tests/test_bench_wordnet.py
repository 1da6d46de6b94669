"""The WordNet corpus parser, on a hand-written data file (no real WordNet install needed), and the embedding cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.cache import cached_embeddings, cached_token_sets
from bench.wordnet import (
    WordNetCorpus,
    example_corpus,
    load_corpus,
    query_split,
    split_gloss,
)

# A license header line, then three synsets. The third has ten words ("0a": the word count is hex),
# the first a pointer, the second an adjective marker and a capitalised duplicate of "thing".
DATA_NOUN = """\
  1 This software and database is being provided to you, the LICENSEE, by  
00001740 03 n 02 entity 0 thing 0 001 ~ 00001930 n 0000 | that which exists; "an entity of its own"  
00001930 03 n 03 physical_entity 0 Thing 1 whole(a) 0 000 | an entity that has physical existence  
00002137 03 n 0a a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 j 0 000 | the first ten letters  
"""


@pytest.fixture
def wordnet_dir(tmp_path: Path) -> Path:
    (tmp_path / "data.noun").write_text(DATA_NOUN)
    for name in ("data.verb", "data.adj", "data.adv"):
        (tmp_path / name).write_text("")
    return tmp_path


def relevant_of(corpus: WordNetCorpus, query: str) -> list[int]:
    return corpus.relevant[corpus.queries.index(query)].tolist()


def test_documents_are_glosses_in_file_order(wordnet_dir: Path) -> None:
    corpus = load_corpus(wordnet_dir)
    assert corpus.doc_keys == ["n:00001740", "n:00001930", "n:00002137"]
    assert corpus.doc_texts == [
        'that which exists; "an entity of its own"',
        "an entity that has physical existence",
        "the first ten letters",
    ]


def test_entry_documents_are_lemmas_then_gloss_with_the_same_queries(wordnet_dir: Path) -> None:
    glosses, entries = load_corpus(wordnet_dir), load_corpus(wordnet_dir, doc_text="entry")
    # "Thing" and "thing" normalise alike: an entry names a lemma once.
    assert entries.doc_texts[:2] == [
        'entity, thing: that which exists; "an entity of its own"',
        "physical entity, thing, whole: an entity that has physical existence",
    ]
    assert entries.queries == glosses.queries and all(np.array_equal(a, b) for a, b in zip(entries.relevant, glosses.relevant, strict=True))
    with pytest.raises(ValueError, match="gloss, entry"):
        load_corpus(wordnet_dir, doc_text="lemmas")


def test_lemmas_are_normalised_deduplicated_and_sorted(wordnet_dir: Path) -> None:
    corpus = load_corpus(wordnet_dir)
    assert corpus.queries == sorted(corpus.queries)
    assert corpus.queries == sorted(["entity", "thing", "physical entity", "whole", *"abcdefghij"])


def test_relevant_sets(wordnet_dir: Path) -> None:
    corpus = load_corpus(wordnet_dir)
    assert relevant_of(corpus, "thing") == [0, 1]
    assert relevant_of(corpus, "whole") == [1]
    assert relevant_of(corpus, "j") == [2]
    assert all(r.dtype == np.int32 for r in corpus.relevant)


def test_head_keeps_queries_with_a_relevant_document(wordnet_dir: Path) -> None:
    head = load_corpus(wordnet_dir).head(2)
    assert head.doc_keys == ["n:00001740", "n:00001930"]
    assert head.queries == ["entity", "physical entity", "thing", "whole"]
    assert relevant_of(head, "thing") == [0, 1]


def test_missing_files_name_the_install_script(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="install_wordnet.sh"):
        load_corpus(tmp_path)


def test_malformed_line_is_rejected(wordnet_dir: Path) -> None:
    # Fields that disagree with the pointer count mean a misparse (or a corrupt file): fail loudly.
    line = "00001740 03 n 02 entity 0 thing 0 002 ~ 00001930 n 0000 | too few pointers\n"
    (wordnet_dir / "data.noun").write_text(line)
    with pytest.raises(ValueError, match="n:00001740"):
        load_corpus(wordnet_dir)


def test_query_split_is_deterministic_and_disjoint() -> None:
    tune, test = query_split(101, seed=3)
    again_tune, again_test = query_split(101, seed=3)
    assert np.array_equal(tune, again_tune) and np.array_equal(test, again_test)
    assert len(test) == 50 and len(tune) == 51
    assert not set(tune.tolist()) & set(test.tolist())
    assert sorted([*tune.tolist(), *test.tolist()]) == list(range(101))
    assert not np.array_equal(query_split(101, seed=4)[1], test)


def test_embedding_cache_reuses_only_matching_model_and_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROVE_BENCH_CACHE", str(tmp_path))
    calls: list[int] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return np.full((len(texts), 4), len(calls), dtype=np.float32)

    first = cached_embeddings("t", ["a", "b"], encode, "m1")
    again = cached_embeddings("t", ["a", "b"], encode, "m1")
    assert calls == [2] and np.array_equal(first, again) and again.dtype == np.float32
    assert json.loads((tmp_path / "t.json").read_text())["count"] == 2
    cached_embeddings("t", ["a", "c"], encode, "m1")  # texts changed
    cached_embeddings("t", ["a", "c"], encode, "m2")  # model changed
    assert calls == [2, 2, 2]


def test_token_set_cache_round_trips_ragged_sets_and_reencodes_on_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROVE_BENCH_CACHE", str(tmp_path))
    calls: list[int] = []

    def encode(texts: list[str]) -> list[np.ndarray]:
        calls.append(len(texts))
        return [np.full((len(t), 3), i + len(calls), dtype=np.float32) for i, t in enumerate(texts)]

    first = cached_token_sets("tok", ["a", "bbb", "cc"], encode, "m1")
    again = cached_token_sets("tok", ["a", "bbb", "cc"], encode, "m1")
    assert calls == [3] and [s.shape for s in again] == [(1, 3), (3, 3), (2, 3)]
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert json.loads((tmp_path / "tok.json").read_text())["tokens"] == 6
    cached_token_sets("tok", ["a", "bbb"], encode, "m1")  # texts changed
    cached_token_sets("tok", ["a", "bbb"], encode, "m2")  # model changed
    assert calls == [3, 2, 2]


def test_usage_examples_are_queries_for_their_synsets_definition(wordnet_dir: Path) -> None:
    corpus = example_corpus(load_corpus(wordnet_dir))
    assert corpus.doc_texts == ["that which exists", "an entity that has physical existence", "the first ten letters"]
    assert corpus.queries == ["an entity of its own"]
    assert relevant_of(corpus, "an entity of its own") == [0]


def test_split_gloss_takes_every_quoted_example_and_keeps_a_definition() -> None:
    assert split_gloss('to move fast; "he ran"; "she ran home"') == ("to move fast", ["he ran", "she ran home"])
    assert split_gloss("no examples here") == ("no examples here", [])
    assert split_gloss('"only an example"') == ('"only an example"', ["only an example"])  # no definition: the gloss stays the document
