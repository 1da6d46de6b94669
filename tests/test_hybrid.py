"""Keyword and hybrid queries on real text: the bundled MiniLM, real SQLite FTS5, real FAISS, real HTTP.

Rare words the dense model maps poorly are found by keyword and hybrid search; filters, k, payloads and
batches behave as for dense queries, also on compressed and multi-vector collections; writes, deletes,
restarts and a kill -9 mid-write leave the text index in step with the points.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec
from index.catalog import Catalog
from index.collection import Collection
from index.compression.spec import CompressionSpec
from index.query.filters import Filter, Match
from index.requests import PointInput, Query
from index.storage.text_index import TextIndexSpec
from service.client import TroveAPIError, TroveClient
from tests.conftest import ServerProcess

N_RARE = 40


def _words(text: str) -> list[str]:
    """Words as the unicode61 tokenizer splits ASCII text: runs of letters and digits, case folded."""
    return re.findall(r"[a-z0-9]+", text.lower())


@pytest.fixture
def catalog(tmp_path: Path, registry: ModelRegistry) -> Any:
    catalog = Catalog(tmp_path / "data", registry)
    catalog.load_all()
    yield catalog
    catalog.close()


def _filled(catalog: Catalog, sentences: list[str], vectors: np.ndarray, name: str = "docs", tokenizer: str = "unicode61") -> Collection:
    collection = catalog.create(name, model="minilm-l6", dim=None, metric="cosine", index=IndexSpec(), text_index=TextIndexSpec(tokenizer))
    # The vectors are MiniLM's embeddings of these texts (what the collection would compute), made once per session.
    collection.upsert([PointInput(id=i, text=s, vector=v, payload={"odd": i % 2}) for i, (s, v) in enumerate(zip(sentences, vectors, strict=True))])
    return collection


def _rare_words(sentences: list[str]) -> dict[str, int]:
    """A fixed sample of words that occur in exactly one sentence, each with that sentence's index, no two from
    the same sentence (overwriting one word's sentence must not take another picked word with it)."""
    df = Counter(w for s in sentences for w in set(_words(s)))
    rare = sorted(w for w, n in df.items() if n == 1 and len(w) >= 7 and w.isalpha())
    picked: dict[str, int] = {}
    for j in np.random.default_rng(0).permutation(len(rare)):
        sentence = next(i for i, s in enumerate(sentences) if rare[j] in _words(s))
        if sentence not in picked.values():
            picked[rare[j]] = sentence
        if len(picked) == N_RARE:
            break
    return picked


def _rank(hits: list[Any], point_id: int) -> int | None:
    return next((j for j, h in enumerate(hits) if h.id == point_id), None)


def test_rare_words_are_found_by_keyword_and_hybrid(catalog: Catalog, sentences: list[str], sentence_vectors: np.ndarray) -> None:
    collection = _filled(catalog, sentences, sentence_vectors)
    rare = _rare_words(sentences)
    ranks = {mode: [_rank(h, rare[w]) for w, h in zip(rare, collection.query_batch([Query(text=w, mode=mode) for w in rare]), strict=True)] for mode in ("dense", "keyword", "hybrid")}
    dense_missed = sum(r is None for r in ranks["dense"])
    assert dense_missed >= N_RARE // 8, f"the dense model found nearly every rare word ({ranks['dense']}): the test proves nothing"
    assert ranks["keyword"] == [0] * N_RARE  # each word is in one sentence only: BM25 finds exactly it
    assert all(r is not None for r in ranks["hybrid"]), ranks["hybrid"]
    assert sum(r == 0 for r in ranks["hybrid"]) > sum(r == 0 for r in ranks["dense"])


def test_filters_k_payloads_vectors_and_sources(catalog: Catalog, sentences: list[str], sentence_vectors: np.ndarray) -> None:
    collection = _filled(catalog, sentences, sentence_vectors)
    rare = _rare_words(sentences)
    word, doc = next((w, d) for w, d in rare.items() if d % 2 == 1)
    odd = Filter((Match("odd", (1,)),))
    even = Filter((Match("odd", (0,)),))
    for mode in ("keyword", "hybrid"):
        # keyword: the rare word's sentence first, then others with "file"; hybrid: that sentence among the dense hits
        text = f"{word} file" if mode == "keyword" else word
        hits = collection.query(Query(text=text, mode=mode, k=7, filter=odd, with_vector=True))
        assert len(hits) == 7 and (hits[0].id == doc if mode == "keyword" else doc in [h.id for h in hits])
        assert all(h.payload == {"odd": 1} for h in hits)
        assert all(h.vector is not None and np.allclose(h.vector, sentence_vectors[int(h.id)], atol=1e-6) for h in hits)
        assert all(h.sources and set(h.sources) <= {"dense", "keyword"} for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert doc not in [h.id for h in collection.query(Query(text=word, mode=mode, k=50, filter=even))]
        bare = collection.query(Query(text=word, mode=mode, with_payload=False))
        assert all(h.payload is None and h.vector is None for h in bare)
    keyword = collection.query(Query(text="socket connection", mode="keyword", k=20))
    assert [h.sources["keyword"].rank for h in keyword if h.sources] == list(range(1, 21))
    assert all(h.sources == {"keyword": type(h.sources["keyword"])(h.sources["keyword"].rank, h.score)} for h in keyword if h.sources)
    # hybrid: each hit's sources are its places in the dense and BM25 lists at the fusion depth
    hybrid = collection.query(Query(text="socket connection", mode="hybrid", k=20))
    dense_top = [h.id for h in collection.query(Query(text="socket connection", k=100))]
    keyword_top = [h.id for h in collection.query(Query(text="socket connection", mode="keyword", k=100))]
    for h in hybrid:
        assert h.sources is not None
        assert (h.sources["dense"].rank if "dense" in h.sources else None) == (dense_top.index(h.id) + 1 if h.id in dense_top else None)
        assert (h.sources["keyword"].rank if "keyword" in h.sources else None) == (keyword_top.index(h.id) + 1 if h.id in keyword_top else None)
    # min_score applies to the mode's own score (BM25 here)
    cut = keyword[5].score
    assert [h.id for h in collection.query(Query(text="socket connection", mode="keyword", k=20, min_score=cut))] == [h.id for h in keyword if h.score >= cut]


def test_writes_deletes_builds_and_restarts_keep_the_index_in_step(tmp_path: Path, registry: ModelRegistry, sentences: list[str], sentence_vectors: np.ndarray) -> None:
    catalog = Catalog(tmp_path / "data", registry)
    catalog.load_all()
    collection = _filled(catalog, sentences[:1000], sentence_vectors[:1000])
    rare = _rare_words(sentences[:1000])
    words = list(rare)
    overwritten, deleted = words[:10], words[10:20]
    # Overwrite: same id, text without its rare word; delete: the point goes, and with it its text.
    collection.upsert([PointInput(id=rare[w], text="an overwritten point", vector=sentence_vectors[rare[w]]) for w in overwritten])
    collection.delete([rare[w] for w in deleted])
    # A streamed build (its rows go live in one commit) adds points with new text.
    collection.bulk_upsert(collection.inputs.prepare([PointInput(id=f"b{i}", text=f"zyxbuild{i} record", vector=sentence_vectors[i]) for i in range(30)], collection.serving), collection.serving)

    def check(c: Collection) -> None:
        found = c.query_batch([Query(text=w, mode="keyword") for w in words])
        for w, hits in zip(words, found, strict=True):
            assert [h.id for h in hits] == ([] if w in overwritten or w in deleted else [rare[w]]), w
        assert {h.id for h in c.query(Query(text="overwritten", mode="keyword", k=50))} == {rare[w] for w in overwritten}
        assert [h.id for h in c.query(Query(text="zyxbuild7", mode="keyword"))] == ["b7"]
        assert "b7" in [h.id for h in c.query(Query(text="zyxbuild7", mode="hybrid"))]
        assert c.info()["text_index"] == {"tokenizer": "unicode61", "state": "ready", "indexed": 1000 - 10 + 30}

    check(collection)
    catalog.close()
    again = Catalog(tmp_path / "data", registry)
    again.load_all()
    check(again.get("docs"))
    again.close()


def test_an_index_added_later_as_a_job(client: TestClient, sentences: list[str], sentence_vectors: np.ndarray) -> None:
    assert client.post("/v1/collections", json={"name": "later", "dim": 384}).status_code == 201
    points = [{"id": i, "text": s, "vector": v.tolist()} for i, (s, v) in enumerate(zip(sentences[:600], sentence_vectors[:600], strict=True))]
    assert client.put("/v1/collections/later/points", json={"points": points}).status_code == 200
    _error(client.post("/v1/collections/later/query", json={"text": "socket", "mode": "keyword"}), 400, "no_text_index")
    response = client.put("/v1/collections/later/text_index", json={"tokenizer": "porter"})
    assert response.status_code == 202, response.text
    job = _wait(client, response.json()["job_id"])
    assert job["state"] == "succeeded" and job["kind"] == "text_index" and job["result"]["indexed"] == 600 and job["done"] == 600
    assert client.get("/v1/collections/later").json()["text_index"] == {"tokenizer": "porter", "state": "ready", "indexed": 600}
    # a vectors-only collection: hybrid takes the dense side from the given vector, BM25 from the text
    body = {"text": "sockets", "vector": sentence_vectors[0].tolist(), "mode": "hybrid", "k": 5}
    results = client.post("/v1/collections/later/query", json=body).json()["results"]
    assert next(r for r in results if r["id"] == 0)["sources"]["dense"]["rank"] == 1  # the given vector is point 0's
    assert any("keyword" in r["sources"] for r in results)
    assert all(re.search(r"socket", sentences[r["id"]], re.I) for r in results if "keyword" in r["sources"])  # porter: "sockets" finds "socket"
    _error(client.put("/v1/collections/later/text_index", json={}), 409, "text_index_exists")
    assert client.delete("/v1/collections/later/text_index").status_code == 204
    _error(client.delete("/v1/collections/later/text_index"), 404, "no_text_index")
    _error(client.post("/v1/collections/later/query", json={"text": "socket", "mode": "hybrid", "vector": sentence_vectors[0].tolist()}), 400, "no_text_index")


def test_http_modes_batches_and_errors(client: TestClient, sentences: list[str], sentence_vectors: np.ndarray) -> None:
    assert client.post("/v1/collections", json={"name": "t", "text_index": {}}).json()["text_index"] == {"tokenizer": "porter", "state": "ready", "indexed": 0}
    points = [{"id": i, "text": s, "vector": v.tolist(), "payload": {"n": i}} for i, (s, v) in enumerate(zip(sentences[:300], sentence_vectors[:300], strict=True))]
    client.put("/v1/collections/t/points", json={"points": points})
    queries = [
        {"text": "compress data with zlib", "mode": "keyword", "k": 3},
        {"text": "compress data with zlib", "mode": "hybrid", "k": 3, "fusion": {"method": "dbsf", "weights": {"dense": 1, "keyword": 0.5}}},
        {"text": "compress data with zlib", "mode": "hybrid", "k": 3, "fusion": {"method": "rrf", "k": 10, "depth": 20}},
        {"text": "compress data with zlib", "k": 3},
    ]
    batch = client.post("/v1/collections/t/query/batch", json={"queries": queries}).json()["results"]
    for q, results in zip(queries, batch, strict=True):
        single = client.post("/v1/collections/t/query", json=q).json()["results"]
        assert [r["id"] for r in single] == [r["id"] for r in results] and len(results) == 3
        assert all(r["payload"] == {"n": r["id"]} for r in results)
        assert ("sources" in results[0]) == (q.get("mode", "dense") != "dense")
    bad = [
        ({"text": "x", "mode": "hybrid", "fusion": {"method": "dbsf", "k": 5}}, 400, "invalid_fusion"),
        ({"text": "x", "mode": "hybrid", "fusion": {"weights": {"dense": 0, "keyword": 0}}}, 400, "invalid_fusion"),
        ({"text": "x", "mode": "hybrid", "fusion": {"depth": 0}}, 400, "invalid_fusion"),
        ({"text": "x", "mode": "hybrid", "fusion": {"method": "dbsf", "weights": {"dense": 1e308, "keyword": 1e308}}}, 400, "invalid_fusion"),
        ({"text": "x", "fusion": {"method": "rrf"}}, 400, "fusion_needs_hybrid"),
        ({"vector": sentence_vectors[0].tolist(), "mode": "keyword"}, 400, "keyword_needs_text"),
        ({"text": "x", "vector": sentence_vectors[0].tolist(), "mode": "keyword"}, 400, "invalid_query"),
        ({"text": "   ", "mode": "hybrid"}, 400, "keyword_needs_text"),
        ({"text": "x", "mode": "hybrid", "min_relevance": 0.5}, 400, "relevance_needs_dense"),
        ({"text": "x", "mode": "fuzzy"}, 422, "validation_error"),
        ({"text": "x", "mode": "hybrid", "fusion": {"method": "linear"}}, 422, "validation_error"),
    ]
    for body, status, code in bad:
        _error(client.post("/v1/collections/t/query", json=body), status, code)
    # one bad query rejects the batch, naming it
    response = client.post("/v1/collections/t/query/batch", json={"queries": [queries[0], bad[0][0]]})
    _error(response, 400, "invalid_fusion")
    assert response.json()["error"]["details"]["query"] == 1
    response = client.post("/v1/collections/t/query/batch", json={"queries": [queries[0], {"vector": [1.0, 2.0], "mode": "hybrid", "text": "x"}]})
    _error(response, 400, "wrong_dimension")
    assert response.json()["error"]["details"]["query"] == 1  # its place in the batch, the keyword query counted
    _error(client.post("/v1/collections", json={"name": "u", "text_index": {"tokenizer": "snowball"}}), 422, "validation_error")
    # FTS5 syntax in a query is taken as words, never as an error
    assert client.post("/v1/collections/t/query", json={"text": 'NEAR("a" "b") AND * OR -', "mode": "keyword"}).status_code == 200


def test_compressed_collection_fuses_its_compressed_dense_search(catalog: Catalog, sentences: list[str], sentence_vectors: np.ndarray) -> None:
    collection = _filled(catalog, sentences, sentence_vectors)
    rare = _rare_words(sentences)
    collection.compression.fit(CompressionSpec.from_json({"quantizer": {"kind": "binary"}}), None, lambda *a: None)
    assert collection.compression.info()["state"] == "fitted"  # type: ignore[index]
    words = list(rare)[:10]
    hybrid = collection.query_batch([Query(text=w, mode="hybrid") for w in words])
    dense = collection.query_batch([Query(text=w, k=100) for w in words])
    for w, hits, dense_hits in zip(words, hybrid, dense, strict=True):
        assert rare[w] in [h.id for h in hits]
        dense_ranks = {h.id: n + 1 for n, h in enumerate(dense_hits)}
        assert all(h.sources["dense"].rank == dense_ranks[h.id] for h in hits if h.sources and "dense" in h.sources)


def test_multivector_collection_hybrid(client: TestClient, registry: ModelRegistry, sentences: list[str]) -> None:
    muvera = {"k_sim": 3, "d_proj": 16, "r_reps": 10, "projection": "ams", "seed": 5, "max_tokens": 100}
    assert client.post("/v1/collections", json={"name": "mv", "multivector": True, "muvera": muvera, "text_index": {"tokenizer": "unicode61"}}).status_code == 201
    docs = sentences[:150]
    tokens = registry.get("minilm-l6").encode_tokens(docs)
    points = [{"id": i, "text": s, "vectors": t.tolist(), "payload": {"odd": i % 2}} for i, (s, t) in enumerate(zip(docs, tokens, strict=True))]
    assert client.put("/v1/collections/mv/points", json={"points": points}).status_code == 200
    rare = _rare_words(docs)
    word = next(w for w, d in rare.items() if d % 2 == 1)
    body = {"text": word, "mode": "hybrid", "k": 5, "with_vector": True, "filter": {"must": [{"key": "odd", "match": 1}]}}
    results = client.post("/v1/collections/mv/query", json=body).json()["results"]
    assert rare[word] in [r["id"] for r in results]
    assert all(r["payload"] == {"odd": 1} and np.allclose(r["vectors"], tokens[r["id"]], atol=1e-6) for r in results)
    assert any("dense" in r["sources"] for r in results) and all("fde_score" not in r for r in results)
    keyword = client.post("/v1/collections/mv/query", json={"text": word, "mode": "keyword"}).json()["results"]
    assert [r["id"] for r in keyword] == [rare[word]]


# ---- a real server, kill -9 mid-write --------------------------------------

ENGINE_ENV = {"TROVE_SEAL_POINTS": "200", "TROVE_MAX_SEGMENT_POINTS": "1000", "TROVE_MERGE_FACTOR": "3", "TROVE_OPTIMIZER_INTERVAL_S": "0.02"}


def test_kill_9_mid_write_leaves_text_index_and_points_in_step(start_server: Callable[..., ServerProcess]) -> None:
    """Writers overwrite and delete texted points; kill -9; after each restart every id's current text, and
    only that, is found by its words, and the index holds as many entries as there are points with text.

    Each write gives a point the words ``v<version>`` and ``p<id>``: a stale entry left by an overwrite or a
    delete, or a missing one, shows as a keyword hit that GET contradicts. A second collection's index is
    filled by a job that the kill interrupts; after the restart a PUT resumes it.
    """
    dim, ids_range = 16, 300
    rng = np.random.default_rng(11)
    server = start_server(**ENGINE_ENV)
    with TroveClient(server.url) as trove:
        trove.create_collection("w", dim=dim, text_index={"tokenizer": "unicode61"})
        trove.create_collection("later", dim=dim)
        trove.upsert("later", [{"id": i, "text": f"later p{i} batch{i % 7}", "vector": rng.normal(size=dim).tolist()} for i in range(5000)])
    latest: dict[int, int] = {}  # id -> version of its newest acknowledged write (-1: deleted)
    in_flight: dict[int, int] = {}
    version = 0
    for round_ in range(3):
        stop = threading.Event()
        acked = 0

        def writer(url: str) -> None:
            nonlocal version, acked
            with httpx.Client(base_url=url, timeout=10) as http:
                while not stop.is_set():
                    version += 1
                    batch = [int(i) for i in rng.choice(ids_range, 8, replace=False)]
                    in_flight.clear()
                    try:
                        if version % 5 == 0:
                            in_flight.update(dict.fromkeys(batch, -1))
                            response = http.post("/v1/collections/w/points/delete", json={"ids": batch})
                        else:
                            in_flight.update(dict.fromkeys(batch, version))
                            points = [{"id": i, "text": f"point p{i} written v{version}", "vector": rng.normal(size=dim).tolist()} for i in batch]
                            response = http.put("/v1/collections/w/points", json={"points": points})
                    except httpx.TransportError:
                        return
                    if response.status_code == 200:
                        latest.update(in_flight)
                        in_flight.clear()
                        acked += 1

        thread = threading.Thread(target=writer, args=(server.url,))
        thread.start()
        if round_ == 0:  # the kill lands during the fill (or just after it)
            with TroveClient(server.url) as trove:
                trove.add_text_index("later")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and acked < 30:
            time.sleep(0.005)
        server.kill9()
        stop.set()
        thread.join(timeout=30)
        assert acked, "the writer made no progress before the kill"

        server = start_server(**ENGINE_ENV)
        with TroveClient(server.url) as trove:
            _check_in_step(trove, latest, in_flight, ids_range)
            later = trove.collection("later")["text_index"]
            if later["state"] != "ready":  # interrupted: a PUT resumes the fill
                assert trove.wait_job(trove.add_text_index("later"))["state"] == "succeeded"
            assert trove.collection("later")["text_index"] == {"tokenizer": "porter", "state": "ready", "indexed": 5000}
            hits = trove.query("later", text="batch3", mode="keyword", k=1000).results
            assert sorted(h.id for h in hits) == [i for i in range(5000) if i % 7 == 3]
    server.stop()


def _check_in_step(trove: TroveClient, latest: dict[int, int], in_flight: dict[int, int], ids_range: int) -> None:
    current: dict[int, int] = {}
    for point_id in range(ids_range):
        try:
            text = trove.get_point("w", point_id).text
            assert text is not None
            current[point_id] = int(text.rsplit("v", 1)[1])
        except TroveAPIError as err:
            assert err.status == 404, err
            current[point_id] = -1
    applied = [current[i] == v for i, v in in_flight.items() if v != latest.get(i, -1)]
    assert all(applied) or not any(applied), "the in-flight batch was half-written"
    for point_id, got in current.items():
        if not (point_id in in_flight and applied and all(applied)):
            assert got == latest.get(point_id, -1), f"id {point_id}: acknowledged {latest.get(point_id, -1)}, found {got}"
    if applied and all(applied):
        latest.update(in_flight)
    in_flight.clear()
    live = {i: v for i, v in current.items() if v != -1}
    info = trove.collection("w")
    assert info["points"] == len(live) and info["text_index"]["indexed"] == len(live)
    # every live point is found by its own words, and no other point by them
    queries = [{"text": f"p{i} v{v}", "mode": "keyword", "k": 3} for i, v in live.items()]
    for start in range(0, len(queries), 200):
        chunk = list(live.items())[start : start + 200]
        results = trove.query_batch("w", queries[start : start + 200]).results
        for (point_id, _), hits in zip(chunk, results, strict=True):
            assert hits[0].id == point_id and hits[0].sources is not None and hits[0].sources["keyword"].rank == 1
    for point_id in [i for i, v in current.items() if v == -1][:50]:
        assert trove.query("w", text=f"p{point_id}", mode="keyword").results == []


def _error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


def _wait(client: TestClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.05)
    raise TimeoutError(job_id)
