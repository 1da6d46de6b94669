"""HNSW segments that know their data: LID estimates, insertion orders, the search depth calibrated at build
(index/backends/hnsw_graph.py) and what collections make of it. Real FAISS, real SQLite; no mocks."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec
from index.backends.hnsw_graph import (
    INSERTION_ORDERS,
    GraphReport,
    build_hnsw,
    estimate_lid,
    insertion_order,
)
from index.catalog import Catalog
from index.requests import PointInput, Query
from index.segments.policy import EngineSettings
from index.segments.recent_queries import RecentQueries


def clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors around 30 shared centres (the centres' seed is fixed, so draws with other seeds are the same data)."""
    centres = np.random.default_rng(100).normal(size=(30, dim))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, 30, n)] + 0.6 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at_10(index: faiss.Index, docs: np.ndarray, queries: np.ndarray, ef: int) -> float:
    params = faiss.SearchParametersHNSW()
    params.efSearch = ef
    found = index.search(queries, 10, params=params)[1]
    truth = faiss.knn(queries, docs, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    return float(np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth, strict=True)]))


def graph(dim: int = 32) -> faiss.IndexHNSWFlat:
    index = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    return index


@pytest.mark.parametrize("dim", [2, 4, 8])
def test_lid_estimate_recovers_the_dimension_of_a_linear_subspace(dim: int) -> None:
    rng = np.random.default_rng(dim)
    basis = np.linalg.qr(rng.normal(size=(48, dim)))[0]
    points = (rng.normal(size=(4000, dim)) @ basis.T).astype(np.float32)
    lid = estimate_lid(points)
    assert 0.8 * dim <= float(np.median(lid)) <= 1.25 * dim


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 50.0, allow_nan=False), min_size=1, max_size=60), st.sampled_from(INSERTION_ORDERS))
def test_insertion_order_is_a_permutation_sorted_as_asked(lid: list[float], order: str) -> None:
    values = np.array(lid, np.float32)
    sequence = insertion_order(values, order)  # type: ignore[arg-type]
    assert sorted(sequence.tolist()) == list(range(len(values)))
    steps = np.diff(values[sequence])
    if order == "lid_desc":
        assert (steps <= 0).all()
    elif order == "lid_asc":
        assert (steps >= 0).all()
    else:
        assert sequence.tolist() == list(range(len(values)))


@pytest.mark.parametrize("order", INSERTION_ORDERS)
def test_every_order_leaves_position_i_holding_vector_i(order: str) -> None:
    docs = clustered(3000)
    index = graph()
    seen: list[int] = []
    report = build_hnsw(index, docs, order, 0.95, seen.append)  # type: ignore[arg-type]
    assert index.ntotal == len(docs) and np.array_equal(index.reconstruct_n(0, len(docs)), docs)
    assert seen[-1] == len(docs) and seen == sorted(seen)
    # Each stored vector finds itself: the graph's links point at the permuted positions too.
    params = faiss.SearchParametersHNSW()
    params.efSearch = 64
    found = index.search(docs[:500], 1, params=params)[1][:, 0]
    assert (found == np.arange(500)).mean() >= 0.99
    assert report.order == order and report.held == 150 and report.ef_search is not None


def test_the_calibrated_depth_reaches_the_target_on_new_queries_from_the_same_data() -> None:
    docs, fresh = clustered(6000), clustered(400, seed=9)
    index = graph()
    report = build_hnsw(index, docs, "arrival", 0.95, lambda _: None)
    assert report.ef_search is not None and report.recall_at_10 is not None and report.recall_at_10 >= 0.95
    assert report.ef_search == report.held_ef and report.query_ef is None and report.queries == 0
    assert recall_at_10(index, docs, fresh, report.depth(10) or 0) >= 0.93
    # A lower target never asks for a deeper search.
    lower = build_hnsw(graph(), docs, "arrival", 0.8, lambda _: None)
    assert lower.ef_search is not None and lower.ef_search <= report.ef_search


def test_recent_queries_that_lie_apart_from_the_documents_deepen_the_search() -> None:
    """Queries far from every cluster need a deeper walk than held documents: calibrating on them finds that."""
    docs = clustered(6000)
    rng = np.random.default_rng(5)
    apart = rng.normal(size=(600, 32)).astype(np.float32)
    apart /= np.linalg.norm(apart, axis=1, keepdims=True)
    seen, unseen = apart[:200], apart[200:]
    blind = build_hnsw(graph(), docs, "arrival", 0.95, lambda _: None)
    index = graph()
    informed = build_hnsw(index, docs, "arrival", 0.95, lambda _: None, queries=seen)
    assert informed.queries == 200 and informed.query_ef is not None and blind.ef_search is not None
    assert informed.ef_search == max(informed.held_ef or 0, informed.query_ef) and informed.ef_search > blind.ef_search
    assert informed.query_recall_at_10 is not None and informed.query_recall_at_10 >= 0.95
    assert recall_at_10(index, docs, unseen, informed.depth(10) or 0) >= 0.92


def test_a_small_graph_is_not_calibrated_and_keeps_the_fallback_depth() -> None:
    report = build_hnsw(graph(), clustered(500), "lid_desc", 0.95, lambda _: None)
    assert report.ef_search is None and report.held == 0 and report.depth(10) is None
    assert GraphReport.from_json(json.loads(json.dumps(report.to_json()))) == report


def test_recent_queries_keep_the_last_ones_in_a_ring() -> None:
    ring = RecentQueries(dim=2, capacity=4)
    assert ring.sample().shape == (0, 2)
    ring.add(np.array([[1, 1], [2, 2], [3, 3]], np.float32))
    ring.add(np.array([[4, 4], [5, 5]], np.float32))
    assert sorted(ring.sample()[:, 0].tolist()) == [2, 3, 4, 5]
    ring.add(np.arange(20, dtype=np.float32).reshape(10, 2))
    assert sorted(ring.sample()[:, 0].tolist()) == [12, 14, 16, 18]
    ring.clear()
    assert ring.sample().shape == (0, 2) and ring.count == 0 and ring.seen == 15
    ring.add(np.array([[7, 7]], np.float32))
    assert ring.sample().tolist() == [[7, 7]]


def open_catalog(root: Path, points: int) -> Catalog:
    catalog = Catalog(root, ModelRegistry(root / "models"), EngineSettings(seal_points=points, max_segment_points=points, merge_factor=1000))
    catalog.load_all()
    return catalog


def test_a_collection_on_the_default_hnsw_config_searches_each_segment_at_its_calibrated_depth(tmp_path: Path) -> None:
    docs, fresh = clustered(9000), clustered(300, seed=11)
    catalog = open_catalog(tmp_path, 3000)
    collection = catalog.create("c", model=None, dim=32, metric="ip", index=IndexSpec(type="hnsw", m=16, ef_construction=80))
    collection.upsert([PointInput(id=i, vector=v) for i, v in enumerate(docs[:3000])])
    collection.optimize(seal=True)
    collection.query_batch([Query(vector=q, k=10, with_payload=False) for q in fresh[:100]])  # recent queries
    collection.upsert([PointInput(id=3000 + i, vector=v) for i, v in enumerate(docs[3000:])])
    collection.optimize(seal=True)
    info = collection.info()
    graphs = [s["graph"] for s in info["segments"] if s["state"] == "sealed"]
    assert len(graphs) == 3 and all(g["ef_search"] and g["order"] == "lid_desc" for g in graphs)
    # Fed by the query path: the later seals calibrate on the 100 queries, the first is re-measured on them.
    assert [g["queries"] for g in graphs] == [100, 100, 100]
    lid = info["index"]["lid"]
    assert lid is not None and 1 < lid["p10"] <= lid["p50"] <= lid["p90"]
    assert info["index"]["ef_search"] is None and info["index"]["target_recall"] == 0.95
    hits = collection.query_batch([Query(vector=q, k=10, with_payload=False) for q in fresh[100:]])
    found = np.array([[int(h.id) for h in r] for r in hits])
    truth = faiss.knn(fresh[100:], docs, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    assert np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth, strict=True)]) >= 0.93
    catalog.close()
    # The reports are part of each segment's files: a restart serves the same depths without rebuilding.
    reopened = open_catalog(tmp_path, 3000).get("c")
    again = [s["graph"] for s in reopened.info()["segments"] if s["state"] == "sealed"]
    assert again == graphs
    reopened.close()


def test_segments_written_before_the_graph_settings_existed_still_load(tmp_path: Path) -> None:
    """A segment.json whose index block lacks target_recall / insertion_order (older Trove) is not rebuilt."""
    catalog = open_catalog(tmp_path, 2500)
    collection = catalog.create("c", model=None, dim=32, metric="ip", index=IndexSpec(type="hnsw", m=16, ef_construction=80, ef_search=64))
    collection.upsert([PointInput(id=i, vector=v) for i, v in enumerate(clustered(2500))])
    collection.optimize(seal=True)
    (sealed,) = [s["id"] for s in collection.info()["segments"] if s["state"] == "sealed"]
    catalog.close()
    meta_path = next(tmp_path.rglob(f"{sealed}/segment.json"))
    meta = json.loads(meta_path.read_text())
    for added in ("target_recall", "insertion_order"):
        del meta["index"][added]
    del meta["graph"]
    meta_path.write_text(json.dumps(meta))
    reopened = open_catalog(tmp_path, 2500).get("c")
    segments = reopened.info()["segments"]
    assert [s["id"] for s in segments if s["state"] == "sealed"] == [sealed] and "graph" not in segments[0]
    assert reopened.info()["points"] == 2500
    reopened.close()


def test_the_http_api_reports_each_segments_graph_and_the_collections_lid(make_client: Callable[..., TestClient]) -> None:
    client = make_client(seal_points=2500, max_segment_points=2500, optimizer_interval_s=0.05)
    error = client.post("/v1/collections", json={"name": "g", "dim": 32, "metric": "ip", "index": {"type": "hnsw", "insertion_order": "sideways"}})
    assert error.status_code == 422 and error.json()["error"]["code"]
    error = client.post("/v1/collections", json={"name": "g", "dim": 32, "metric": "ip", "index": {"type": "hnsw", "target_recall": 1.5}})
    assert error.status_code == 422
    created = client.post("/v1/collections", json={"name": "g", "dim": 32, "metric": "ip", "index": {"type": "hnsw", "m": 16, "ef_construction": 80}})
    assert created.status_code == 201, created.text
    docs = clustered(2500)
    for start in range(0, 2500, 500):
        points = [{"id": start + i, "vector": v.tolist()} for i, v in enumerate(docs[start : start + 500])]
        assert client.put("/v1/collections/g/points", json={"points": points}).status_code == 200
    deadline = time.monotonic() + 60
    info = client.get("/v1/collections/g").json()
    while not any(s["state"] == "sealed" for s in info["segments"]):
        assert time.monotonic() < deadline, "the optimizer did not seal the appendable segment"
        time.sleep(0.05)
        info = client.get("/v1/collections/g").json()
    (sealed,) = [s for s in info["segments"] if s["state"] == "sealed"]
    assert sealed["index"] == "hnsw" and sealed["graph"]["ef_search"] >= 10 and sealed["graph"]["recall_at_10"] >= 0.95
    assert info["index"]["ef_search"] is None and info["index"]["insertion_order"] == "lid_desc"
    assert info["index"]["lid"]["p50"] == pytest.approx(sealed["graph"]["lid_p50"])
    hits = client.post("/v1/collections/g/query", json={"vector": docs[7].tolist(), "k": 3}).json()["results"]
    assert hits[0]["id"] == 7
    metrics = client.get("/metrics").text
    assert f'trove_collection_lid{{collection="g",stat="p50"}} {info["index"]["lid"]["p50"]}' in metrics


def test_a_segment_holding_more_of_a_result_than_its_share_is_searched_again_at_full_depth(tmp_path: Path) -> None:
    """Points that arrived sorted by topic put a query's whole top-10 in one segment of ten: priced for a tenth
    of the result, that segment's first search is too shallow, so the view searches it again at full depth
    (without that second search recall here is 0.92)."""
    centres = np.random.default_rng(100).normal(size=(10, 48))
    rng = np.random.default_rng(1)
    topic = np.repeat(np.arange(10), 2000)  # arrival order: topic by topic, one segment each
    docs = centres[topic] + 1.4 * rng.normal(size=(20_000, 48))
    docs = (docs / np.linalg.norm(docs, axis=1, keepdims=True)).astype(np.float32)
    queries = centres[rng.integers(0, 10, 400)] + 1.4 * rng.normal(size=(400, 48))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    catalog = open_catalog(tmp_path, 2000)
    collection = catalog.create("c", model=None, dim=48, metric="ip", index=IndexSpec(type="hnsw", m=8, ef_construction=40))
    for start in range(0, 20_000, 2000):
        collection.upsert([PointInput(id=start + i, vector=v) for i, v in enumerate(docs[start : start + 2000])])
        collection.optimize(seal=True)
    assert len([s for s in collection.info()["segments"] if s["state"] == "sealed"]) == 10
    truth = faiss.knn(queries, docs, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    assert np.mean([len(set(topic[t])) == 1 for t in truth]) > 0.8  # the premise: one segment holds the result
    hits = collection.query_batch([Query(vector=q, k=10, with_payload=False) for q in queries])
    found = np.array([[int(h.id) for h in r] for r in hits])
    assert np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth, strict=True)]) >= 0.935
    catalog.close()


def test_the_optimizer_measures_each_segments_depth_again_on_the_queries_it_answers(tmp_path: Path) -> None:
    """Sealed before any query, a segment's depth comes from held documents; queries that lie apart need more.
    Once queries arrive, the optimizer's calibrate task re-measures it on them; the result survives a restart."""
    docs = clustered(6000)
    rng = np.random.default_rng(5)
    apart = rng.normal(size=(400, 32)).astype(np.float32)
    apart /= np.linalg.norm(apart, axis=1, keepdims=True)
    catalog = open_catalog(tmp_path, 6000)
    collection = catalog.create("c", model=None, dim=32, metric="ip", index=IndexSpec(type="hnsw", m=16, ef_construction=80))
    collection.upsert([PointInput(id=i, vector=v) for i, v in enumerate(docs)])
    collection.optimize(seal=True)
    (before,) = [s["graph"] for s in collection.info()["segments"] if s["state"] == "sealed"]
    assert before["queries"] == 0 and collection.optimizer_task() is None  # no queries yet: nothing to measure
    truth = faiss.knn(apart[200:], docs, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]

    def recall() -> float:
        hits = collection.query_batch([Query(vector=q, k=10, with_payload=False) for q in apart[200:]])
        found = np.array([[int(h.id) for h in r] for r in hits])
        return float(np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth, strict=True)]))

    collection.query_batch([Query(vector=q, k=10, with_payload=False) for q in apart[:200]])
    blind = recall()
    task = collection.optimizer_task()
    assert task is not None and task.kind == "calibrate"
    result = collection.run_optimizer_task(task, lambda *a: None)
    assert result["task"] == "calibrate" and result["segments"] == []
    (after,) = [s["graph"] for s in collection.info()["segments"] if s["state"] == "sealed"]
    assert after["queries"] == 400 and after["ef_search"] > before["ef_search"] and after["query_recall_at_10"] >= 0.95
    assert recall() >= 0.93 > blind
    merged = collection.optimizer_task()  # then the merged answer's depth, on the same queries
    assert merged is not None and merged.kind == "calibrate" and merged.segments == ()
    collection.run_optimizer_task(merged, lambda *a: None)
    fanout = collection.engine.fanout
    assert fanout is not None and fanout.queries == 600 and fanout.recall_at_10 >= fanout.aimed_at > 0.95
    assert collection.optimizer_task() is None  # measured: not due again until many more queries
    catalog.close()
    reopened = open_catalog(tmp_path, 6000).get("c")
    (segment,) = [s for s in reopened.info()["segments"] if s["state"] == "sealed"]
    assert segment["graph"] == after and segment["depth_scale"] == fanout.scale
    reopened.close()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.one_of(st.just(0.0), st.just(1.0), st.floats(1e-12, 1.0)))  # shares are counts over counts; scipy overflows near 1e-308
def test_the_binomial_pricing_matches_scipy(k: int, share: float) -> None:
    from scipy.stats import binom

    from index.backends.hnsw_graph import binomial_pmf, surprising_count

    assert np.allclose(binomial_pmf(k, share), binom.pmf(np.arange(k + 1), k, share), atol=1e-12)
    assert surprising_count(k, share) == int(binom.ppf(0.99, k, share))


def test_the_merged_depth_is_measured_again_for_a_new_set_of_segments(tmp_path: Path) -> None:
    """A scale measured over some segments does not apply to another set: a seal puts every segment back at its own
    depth (scale 1) until the optimizer measures the merged answer over the new set."""
    docs, queries = clustered(6000), clustered(100, seed=3)
    catalog = open_catalog(tmp_path, 2000)
    collection = catalog.create("c", model=None, dim=32, metric="ip", index=IndexSpec(type="hnsw", m=8, ef_construction=40))
    collection.upsert([PointInput(id=i, vector=v) for i, v in enumerate(docs[:4000])])
    collection.optimize(seal=True)
    collection.query_batch([Query(vector=q, k=10, with_payload=False) for q in queries])
    collection.optimize()
    first = collection.engine.fanout
    assert first is not None and len(first.segments) == 2
    collection.upsert([PointInput(id=4000 + i, vector=v) for i, v in enumerate(docs[4000:])])
    collection.engine.rebuild("seal")
    sealed = [s for s in collection.info()["segments"] if s["state"] == "sealed"]
    assert len(sealed) == 3 and {s["depth_scale"] for s in sealed} == {1.0}
    task = collection.optimizer_task()
    assert task is not None and task.kind == "calibrate" and task.segments == ()
    collection.run_optimizer_task(task, lambda *a: None)
    again = collection.engine.fanout
    assert again is not None and len(again.segments) == 3 and set(first.segments) < set(again.segments)
    assert {s["depth_scale"] for s in collection.info()["segments"] if s["state"] == "sealed"} == {again.scale}
    catalog.close()
