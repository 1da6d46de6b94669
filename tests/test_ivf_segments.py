"""IVF segments (index/backends/ivf_lists.py): lists trained per segment, nprobe measured at build, filters,
deletes, exact search, restarts and the HTTP contract's "ivf" index. Real FAISS and SQLite; no mocks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
from fastapi.testclient import TestClient

from index.backends.faiss_index import IndexSpec
from index.backends.ivf_lists import default_nlist
from index.query.filters import Filter, Match
from index.requests import PointInput, Query
from tests.test_hnsw_graph import clustered, open_catalog


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth, strict=True)]))


def test_an_ivf_collection_probes_the_lists_its_segments_measured_and_keeps_the_target_recall(tmp_path: Path) -> None:
    docs, fresh = clustered(8000), clustered(300, seed=12)
    catalog = open_catalog(tmp_path, 4000)
    collection = catalog.create("c", model=None, dim=32, metric="ip", index=IndexSpec(type="ivf"))
    collection.upsert([PointInput(id=i, vector=v, payload={"even": i % 2 == 0}) for i, v in enumerate(docs)])
    collection.optimize(seal=True)
    sealed = [s for s in collection.info()["segments"] if s["state"] == "sealed"]
    assert len(sealed) == 2 and all(s["index"] == "ivf" for s in sealed)
    for segment in sealed:
        lists = segment["lists"]
        assert lists["nlist"] == default_nlist(4000) == 4000 // 39 and 1 <= lists["nprobe"] <= lists["nlist"]
        assert lists["held"] == 200 and lists["recall_at_10"] >= 0.95
    truth = faiss.knn(fresh, docs, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    found = [[int(h.id) for h in r] for r in collection.query_batch([Query(vector=q, k=10, with_payload=False) for q in fresh])]
    assert recall(found, truth) >= 0.93
    # Exact probes every list: the true top-10.
    exact = [[int(h.id) for h in r] for r in collection.query_batch([Query(vector=q, k=10, with_payload=False, exact=True) for q in fresh[:50]])]
    assert recall(exact, truth[:50]) == 1.0
    # Deleted points never come back; a filter still gets k hits (short lists fall back to exact).
    collection.delete([int(i) for i in truth[0][:5]])
    hits = collection.query(Query(vector=fresh[0], k=10, with_payload=False))
    assert len(hits) == 10 and not {int(h.id) for h in hits} & {int(i) for i in truth[0][:5]}
    odd = collection.query(Query(vector=fresh[1], k=10, with_payload=True, filter=Filter((Match("even", (False,)),))))
    assert len(odd) == 10 and all(int(h.id) % 2 == 1 for h in odd)
    catalog.close()
    reopened = open_catalog(tmp_path, 4000).get("c")
    again = [s for s in reopened.info()["segments"] if s["state"] == "sealed"]
    assert [s["lists"] for s in again] == [s["lists"] for s in sealed] and reopened.info()["points"] == 7995
    reopened.close()


def test_a_fixed_nprobe_in_the_config_wins_over_the_measured_one(tmp_path: Path) -> None:
    docs = clustered(4000)
    catalog = open_catalog(tmp_path, 4000)
    collection = catalog.create("c", model=None, dim=32, metric="ip", index=IndexSpec(type="ivf", nlist=40, nprobe=40))
    collection.upsert([PointInput(id=i, vector=v) for i, v in enumerate(docs)])
    collection.optimize(seal=True)
    (sealed,) = [s for s in collection.info()["segments"] if s["state"] == "sealed"]
    assert sealed["lists"]["nlist"] == 40
    truth = faiss.knn(docs[:50], docs, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    found = [[int(h.id) for h in r] for r in collection.query_batch([Query(vector=q, k=10, with_payload=False) for q in docs[:50]])]
    assert recall(found, truth) == 1.0  # every list probed
    catalog.close()


def test_the_http_api_creates_ivf_collections_and_refuses_them_compressed(make_client: Callable[..., TestClient]) -> None:
    client = make_client(seal_points=2500, max_segment_points=2500)
    created = client.post("/v1/collections", json={"name": "i", "dim": 32, "metric": "ip", "index": {"type": "ivf", "nlist": 32}})
    assert created.status_code == 201, created.text
    assert client.get("/v1/collections/i").json()["index"]["nlist"] == 32
    refused = client.post(
        "/v1/collections", json={"name": "j", "dim": 32, "metric": "ip", "index": {"type": "ivf"}, "compression": {"quantizer": {"kind": "binary"}}}
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "compression_index_unsupported"
    assert client.post("/v1/collections", json={"name": "k", "dim": 32, "index": {"type": "ivf", "nprobe": 0}}).status_code == 422
