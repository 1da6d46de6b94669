"""The full-text index in the real SQLite store, and the fusion math against hand-computed examples.

The store's invariant: the FTS5 table holds exactly the live rows that have text, each with its text,
whatever sequence of upserts, overwrites, deletes, streamed-build commits and index fills led there;
a fill that runs while writers write and delete ends in the same state.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.errors import Cancelled, Conflict, InvalidInput, NotReady
from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec
from index.catalog import Catalog
from index.query.fusion import Fusion, Ranked, fuse
from index.requests import PointInput, Query
from index.storage import text_index
from index.storage.store import PointRecord, Store
from index.storage.text_index import TextIndexSpec, match_expression

# ---- fusion --------------------------------------------------------------


def test_rrf_against_a_hand_computed_example() -> None:
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    keyword = [("b", 12.0), ("d", 3.0)]
    fused = fuse({"dense": dense, "keyword": keyword}, Fusion())
    # k = 1 (the default): a = 1/2, b = 1/3 + 1/2, c = 1/4, d = 1/3.
    assert [key for key, _, _ in fused] == ["b", "a", "d", "c"]
    expected = {"a": 1 / 2, "b": 1 / 3 + 1 / 2, "c": 1 / 4, "d": 1 / 3}
    assert all(math.isclose(score, expected[key]) for key, score, _ in fused)
    sources = {key: places for key, _, places in fused}
    assert sources["b"] == {"dense": Ranked(2, 0.8), "keyword": Ranked(1, 12.0)}
    assert sources["d"] == {"keyword": Ranked(2, 3.0)}
    # k = 60 (Cormack et al.): a = 1/61, b = 1/62 + 1/61, c = 1/63, d = 1/62.
    cormack = {key: score for key, score, _ in fuse({"dense": dense, "keyword": keyword}, Fusion(k=60.0))}
    assert list(cormack) == ["b", "a", "d", "c"]
    assert all(math.isclose(cormack[key], value) for key, value in {"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63, "d": 1 / 62}.items())


def test_rrf_weights_and_k() -> None:
    fused = fuse({"dense": [("a", 1.0), ("b", 0.5)], "keyword": [("b", 2.0), ("a", 1.0)]}, Fusion(weights={"dense": 1.0, "keyword": 3.0}, k=0.0))
    # k = 0: a = 1/1 + 3/2 = 2.5, b = 1/2 + 3/1 = 3.5.
    assert [(key, score) for key, score, _ in fused] == [("b", 3.5), ("a", 2.5)]


def test_dbsf_against_a_hand_computed_example() -> None:
    dense = [("a", 0.9), ("b", 0.6), ("c", 0.3)]  # mean 0.6, population std sqrt(0.06) = 0.244949
    keyword = [("c", 10.0), ("d", 2.0)]  # mean 6, std 4: lower bound -6, range 24
    fused = dict((key, score) for key, score, _ in fuse({"dense": dense, "keyword": keyword}, Fusion(method="dbsf", weights={"dense": 2.0, "keyword": 1.0})))
    std = math.sqrt(0.06)
    low, span = 0.6 - 3 * std, 6 * std
    assert math.isclose(fused["a"], 2 * (0.9 - low) / span)
    assert math.isclose(fused["b"], 2 * 0.5)  # the mean maps to 0.5
    assert math.isclose(fused["c"], 2 * (0.3 - low) / span + (10 + 6) / 24)
    assert math.isclose(fused["d"], (2 + 6) / 24)
    # One score alone (no spread) maps to 0.5.
    assert fuse({"dense": [("x", 0.3)]}, Fusion(method="dbsf"))[0][1] == 0.5


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    st.lists(st.integers(0, 30), unique=True, max_size=20),
    st.lists(st.integers(0, 30), unique=True, max_size=20),
    st.floats(0, 100),
)
def test_rrf_is_the_sum_of_reciprocal_ranks(dense: list[int], keyword: list[int], k: float) -> None:
    fused = fuse({"dense": [(d, 1.0) for d in dense], "keyword": [(w, 1.0) for w in keyword]}, Fusion(k=k))
    assert sorted(key for key, _, _ in fused) == sorted(set(dense) | set(keyword))
    for key, score, places in fused:
        by_hand = sum(1 / (k + lst.index(key) + 1) for lst in (dense, keyword) if key in lst)
        assert math.isclose(score, by_hand)
        assert {name: p.rank for name, p in places.items()} == {n: lst.index(key) + 1 for n, lst in (("dense", dense), ("keyword", keyword)) if key in lst}
    assert [s for _, s, _ in fused] == sorted((s for _, s, _ in fused), reverse=True)


@pytest.mark.parametrize(
    "fusion, field",
    [
        (Fusion(method="dbsf", k=10.0), "k"),
        (Fusion(k=-1.0), "k"),
        (Fusion(k=math.inf), "k"),
        (Fusion(weights={"dense": -1.0}), "weights"),
        (Fusion(weights={"dense": 0.0, "keyword": 0.0}), "weights"),
        (Fusion(weights={"sparse": 1.0}), "weights"),
        (Fusion(weights={"dense": math.nan}), "weights"),
        (Fusion(weights={"dense": 1e308, "keyword": 1e308}), "weights"),  # the fused score would overflow to inf
        (Fusion(k=1e300), "k"),
        (Fusion(depth=0), "depth"),
        (Fusion(depth=10_001), "depth"),
    ],
)
def test_bad_fusion_settings_are_refused_naming_the_field(fusion: Fusion, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        fusion.check({"query": 3})
    assert err.value.code == "invalid_fusion" and err.value.details == {"query": 3, "field": field}


def test_query_text_is_taken_literally() -> None:
    # FTS5 operators, quotes and column filters in the text are terms, never syntax.
    assert match_expression('NEAR(a b) "x" text: AND a') == '"NEAR(a" OR "b)" OR """x""" OR "text:" OR "AND" OR "a"'


# ---- the store's index ---------------------------------------------------

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def _record(point_id: int, text: str | None) -> PointRecord:
    return PointRecord(id=point_id, vector=np.array([1.0, float(point_id)], np.float32), text=text)


def _check_in_step(store: Store) -> None:
    conn = sqlite3.connect(store.path)
    try:
        indexed = dict(conn.execute("SELECT rowid, text FROM points_text").fetchall())
        stored = dict(conn.execute("SELECT row, text FROM points WHERE text IS NOT NULL").fetchall())
    finally:
        conn.close()
    assert indexed == stored


texts = st.one_of(st.none(), st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.dictionaries(st.integers(0, 12), texts, min_size=1, max_size=5)),
        st.tuples(st.just("delete"), st.lists(st.integers(0, 12), min_size=1, max_size=4)),
        st.tuples(st.just("build"), st.dictionaries(st.integers(0, 12), texts, min_size=1, max_size=5)),
        st.tuples(st.just("index"), st.none()),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
def test_every_write_path_keeps_the_index_in_step(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, object]]) -> None:
    store = Store(tmp_path_factory.mktemp("store") / "store.sqlite", 2)
    try:
        for kind, arg in ops:
            if kind == "upsert":
                assert isinstance(arg, dict)
                store.upsert([_record(i, t) for i, t in arg.items()], 1)
            elif kind == "delete":
                assert isinstance(arg, list)
                store.delete(arg)
            elif kind == "build":
                assert isinstance(arg, dict)
                first = store.reserve_rows(len(arg))
                store.stage("b", np.arange(first, first + len(arg)), [_record(i, t) for i, t in arg.items()])
                store.commit_staged("b", 1)
            elif store.text_index is None:
                store.create_text_index(TextIndexSpec())
                store.fill_text_index(lambda *a: None, chunk=3)
            if store.text_index is not None:
                _check_in_step(store)
        if store.text_index is not None:  # and the index answers what the points say
            for word in WORDS:
                found = {row for row, _ in store.keyword_search(word, 100)}
                expected = {row for row, p in store.by_rows(store.live_rows().tolist()).items() if p.text and word in p.text.split()}
                assert found == expected
    finally:
        store.close()


def test_a_fill_while_writers_overwrite_and_delete_ends_in_step(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite", 2)
    rng = np.random.default_rng(3)
    store.upsert([_record(i, " ".join(rng.choice(WORDS, 3))) for i in range(3000)], 1)
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        local = np.random.default_rng(4)
        while not stop.is_set():
            ids = [int(i) for i in local.choice(4000, 20, replace=False)]
            if writes % 3 == 0:
                store.delete(ids)
            else:
                store.upsert([_record(i, " ".join(local.choice(WORDS, 2)) if i % 5 else None) for i in ids], 1)
            writes += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        store.create_text_index(TextIndexSpec())
        assert store.text_index is not None and not store.text_index.ready
        progress: list[int] = []
        store.fill_text_index(lambda f, done, total: progress.append(done), chunk=100)
    finally:
        stop.set()
        thread.join()
    assert store.text_index is not None and store.text_index.ready
    assert writes > 0 and len(progress) >= 10 and progress == sorted(progress)
    _check_in_step(store)
    store.close()


def test_unknown_tokenizer_is_refused() -> None:
    with pytest.raises(InvalidInput) as err:
        TextIndexSpec("snowball")
    assert err.value.code == "invalid_tokenizer"


def test_an_interrupted_fill_resumes_and_a_cancelled_one_leaves_no_index(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "data", ModelRegistry())
    catalog.load_all()
    collection = catalog.create("c", model=None, dim=2, metric="ip", index=IndexSpec())
    collection.upsert([PointInput(id=i, vector=[1.0, float(i)], text=f"{WORDS[i % 8]} item{i}") for i in range(500)])

    def cancel(fraction: float, done: int, total: int) -> None:
        raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        collection.indexes.build_text(TextIndexSpec(), cancel)
    assert collection.indexes.text_info() is None
    # A crash mid-fill: the index exists, unfinished, with some rows; queries say so (503) until a fill resumes it.
    collection.store.create_text_index(TextIndexSpec())
    with collection.store._transaction() as conn:
        text_index.fill(conn, -1, 100)
    catalog.close()
    catalog = Catalog(tmp_path / "data", ModelRegistry())
    catalog.load_all()
    collection = catalog.get("c")
    assert collection.indexes.text_info() == {"tokenizer": "porter", "state": "filling", "indexed": 100}
    with pytest.raises(NotReady) as err:
        collection.query(Query(text="alpha", mode="keyword"))
    assert err.value.code == "text_index_building"
    with pytest.raises(Conflict):
        collection.indexes.build_text(TextIndexSpec("trigram"), lambda *a: None)  # another tokenizer: not a resume
    assert collection.indexes.build_text(TextIndexSpec(), lambda *a: None)["indexed"] == 500
    _check_in_step(collection.store)
    assert {h.id for h in collection.query(Query(text="charlie", mode="keyword", k=100))} == {i for i in range(500) if i % 8 == 2}
    catalog.close()
