"""Search correctness on real MiniLM embeddings of stdlib docstrings, through real FAISS and SQLite."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from encoders.errors import Conflict, NotReady
from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec
from index.catalog import Catalog
from index.collection import Collection
from index.query.filters import Filter, Match
from index.requests import PointInput, Query
from index.segments.policy import EngineSettings

N_QUERIES = 100


# Small segments, so searches cross several sealed segments (flat or HNSW) and the appendable one.
ENGINE = EngineSettings(seal_points=700, max_segment_points=700, merge_factor=4)


def _load(tmp_path: Path, registry: ModelRegistry, vectors: np.ndarray, index: IndexSpec, metric: str = "cosine") -> Collection:
    catalog = Catalog(tmp_path, registry, ENGINE)
    catalog.load_all()
    collection = catalog.create("c", model=None, dim=vectors.shape[1], metric=metric, index=index)  # type: ignore[arg-type]
    for start in range(0, len(vectors), 500):
        collection.upsert(
            [PointInput(id=i, vector=vectors[i].tolist(), payload={"bucket": i % 100, "parity": i % 2}) for i in range(start, min(start + 500, len(vectors)))]
        )
    collection.optimize()
    return collection


def _ids(collection: Collection, query: Query) -> list[int]:
    return [int(h.id) for h in collection.query(query)]


@pytest.fixture(scope="module")
def split(sentence_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Documents and held-out queries from the same real text distribution."""
    return sentence_vectors[N_QUERIES:], sentence_vectors[:N_QUERIES]


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_exact_search_equals_numpy_brute_force(tmp_path: Path, registry: ModelRegistry, split: tuple[np.ndarray, np.ndarray], metric: str) -> None:
    docs, queries = split
    if metric != "cosine":  # unnormalised vectors make ip and l2 rank differently from cosine
        docs = docs * np.random.default_rng(1).uniform(0.5, 2.0, size=(len(docs), 1)).astype(np.float32)
    collection = _load(tmp_path, registry, docs, IndexSpec("flat"), metric)
    if metric == "l2":
        truth = np.argsort(((queries[:, None] - docs[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :10]
    else:
        truth = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :10]
    agree = 0
    for q, expected in zip(queries, truth, strict=True):
        hits = collection.query(Query(vector=q.tolist(), k=10))
        got = [int(h.id) for h in hits]
        assert all(a >= b - 1e-6 for a, b in zip([h.score for h in hits], [h.score for h in hits][1:])), "scores descend"
        agree += got == expected.tolist()
    # Float32 ties can swap neighbours; anything but a near-total match is a bug.
    assert agree >= len(queries) - 2


def test_hnsw_recall_at_10_against_exact(tmp_path: Path, registry: ModelRegistry, split: tuple[np.ndarray, np.ndarray]) -> None:
    docs, queries = split
    collection = _load(tmp_path, registry, docs, IndexSpec("hnsw", m=16, ef_construction=100, ef_search=64))
    exact_recall = []
    for q in queries:
        approx = set(_ids(collection, Query(vector=q.tolist(), k=10)))
        exact = set(_ids(collection, Query(vector=q.tolist(), k=10, exact=True)))
        exact_recall.append(len(approx & exact) / 10)
    recall = float(np.mean(exact_recall))
    print(f"HNSW(m=16, ef_search=64) recall@10 vs exact on {len(docs)} MiniLM vectors: {recall:.3f}")
    assert recall >= 0.95


@pytest.mark.parametrize("brute_force_limit", [4096, 50], ids=["brute-force", "selector"])
@pytest.mark.parametrize("index", [IndexSpec("flat"), IndexSpec("hnsw", m=16, ef_search=32)], ids=["flat", "hnsw"])
def test_filters_still_return_k_results(
    tmp_path: Path,
    registry: ModelRegistry,
    split: tuple[np.ndarray, np.ndarray],
    index: IndexSpec,
    brute_force_limit: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small match sets are scored directly; larger ones go through FAISS with a bitmap selector."""
    monkeypatch.setattr("index.query.planner.BRUTE_FORCE_LIMIT", brute_force_limit)
    docs, queries = split
    collection = _load(tmp_path, registry, docs, index)
    overlaps = []
    for match, allowed in [
        (Match("bucket", (7,)), lambda i: i % 100 == 7),  # ~1%
        (Match("parity", (1,)), lambda i: i % 2 == 1),  # 50%
        (Match("bucket", (1, 2, 3)), lambda i: i % 100 in (1, 2, 3)),
    ]:
        keep = np.flatnonzero([allowed(i) for i in range(len(docs))])
        for q in queries[:20]:
            hits = _ids(collection, Query(vector=q.tolist(), k=10, filter=Filter((match,))))
            assert len(hits) == 10 and all(allowed(i) for i in hits)
            exact = keep[np.argsort(-(docs[keep] @ q), kind="stable")[:10]]
            overlaps.append(len(set(hits) & set(exact.tolist())) / 10)
    # Flat and brute force are exact; filtered HNSW is approximate but must stay close.
    assert np.mean(overlaps) >= (0.99 if index.type == "flat" or brute_force_limit > len(docs) else 0.9)


def test_deleted_and_replaced_points_never_come_back(tmp_path: Path, registry: ModelRegistry, split: tuple[np.ndarray, np.ndarray]) -> None:
    docs, queries = split
    collection = _load(tmp_path, registry, docs[:500], IndexSpec("hnsw", m=16))
    q = queries[0]
    top = _ids(collection, Query(vector=q.tolist(), k=5))
    collection.delete(top[:2])
    # Re-upserting an id with a far-away vector must retire its old vector.
    collection.upsert([PointInput(id=top[2], vector=(-q).tolist())])
    after = _ids(collection, Query(vector=q.tolist(), k=5))
    assert not set(top[:3]) & set(after)
    assert after[:2] == top[3:5]
    assert collection.count() == 498
    exact = _ids(collection, Query(vector=q.tolist(), k=5, exact=True))
    assert exact == after


def test_sealed_segments_and_replay_restore_the_same_answers(tmp_path: Path, registry: ModelRegistry, split: tuple[np.ndarray, np.ndarray]) -> None:
    docs, queries = split
    collection = _load(tmp_path, registry, docs[:1000], IndexSpec("flat"))
    collection.delete([0, 1, 2])
    collection.upsert([PointInput(id=5000 + i, vector=docs[1000 + i].tolist()) for i in range(200)])
    before = [_ids(collection, Query(vector=q.tolist(), k=10)) for q in queries[:20]]
    sealed = [s["id"] for s in collection.info()["segments"] if s["state"] == "sealed"]
    collection.close()

    assert len(sealed) == 2  # 1000 rows sealed as segments of at most 700; the 200 new rows are in the appendable one
    reopened = Catalog(tmp_path, registry, ENGINE)
    reopened.load_all()
    again = reopened.get("c")
    segments = again.info()["segments"]
    assert [s["id"] for s in segments if s["state"] == "sealed"] == sealed  # loaded from its files, not rebuilt
    assert segments[-1] == {**segments[-1], "state": "appendable", "points": 200}  # only rows no segment holds are replayed
    assert again.count() == 1197 and again.info()["dead_rows"] == 3
    assert [_ids(again, Query(vector=q.tolist(), k=10)) for q in queries[:20]] == before


def test_unreadable_segment_falls_back_to_replaying_the_store(tmp_path: Path, registry: ModelRegistry, split: tuple[np.ndarray, np.ndarray]) -> None:
    docs, queries = split
    collection = _load(tmp_path, registry, docs[:1500], IndexSpec("flat"))
    expected = [_ids(collection, Query(vector=q.tolist(), k=10)) for q in queries[:10]]
    sealed = [s["id"] for s in collection.info()["segments"] if s["state"] == "sealed"]
    collection.close()
    assert len(sealed) == 3  # 700 + 700 + 100
    (tmp_path / "collections" / "c" / "segments" / sealed[0] / "index.faiss").write_bytes(b"not a faiss index")
    reopened = Catalog(tmp_path, registry, ENGINE)
    reopened.load_all()
    again = reopened.get("c")
    segments = again.info()["segments"]
    assert [s["id"] for s in segments if s["state"] == "sealed"] == sealed[1:]
    assert segments[-1]["points"] == 700  # the unreadable segment's rows, replayed from the store
    assert not (tmp_path / "collections" / "c" / "segments" / sealed[0]).exists()
    assert [_ids(again, Query(vector=q.tolist(), k=10)) for q in queries[:10]] == expected


def test_a_collection_that_cannot_load_is_reported_not_fatal(tmp_path: Path, registry: ModelRegistry, split: tuple[np.ndarray, np.ndarray]) -> None:
    docs, _ = split
    _load(tmp_path, registry, docs[:50], IndexSpec("flat")).close()
    broken = Catalog(tmp_path, registry)
    broken.load_all()
    broken.create("other", model=None, dim=4, metric="ip", index=IndexSpec())
    broken.close()
    (tmp_path / "collections" / "c" / "collection.json").write_text("{ not json")
    reopened = Catalog(tmp_path, registry)
    reopened.load_all()
    assert reopened.ready.is_set() and reopened.names() == ["other"]
    with pytest.raises(NotReady) as err:
        reopened.get("c")
    assert err.value.code == "collection_unavailable" and "JSONDecodeError" in err.value.message
    reopened.drop("c")
    assert not (tmp_path / "collections" / "c").exists()


def test_one_process_per_data_dir(tmp_path: Path, registry: ModelRegistry) -> None:
    first = Catalog(tmp_path, registry)
    with pytest.raises(Conflict) as err:
        Catalog(tmp_path, registry)
    assert err.value.code == "data_dir_locked" and str(os.getpid()) in err.value.message
    first.close()
    Catalog(tmp_path, registry).close()
