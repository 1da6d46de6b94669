"""Sharded collections on a real local Ray: shards are actors; kill -9 of one keeps every acknowledged write, and
queries and writes while one is down answer as the README says. One Ray for the module (it takes seconds to start)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encoders.errors import TroveError
from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec
from index.collection import Collection
from index.compression.spec import CompressionSpec
from index.config import CollectionConfig, ModelVersion, MuveraSpec
from index.multivector import MultiVectorCollection
from index.requests import PointInput, Query
from index.segments.policy import EngineSettings
from index.shards.collection import ShardedCollection, ShardWriteFailed
from index.shards.handles import ShardRuntime, ShardUnavailable
from index.shards.routing import shard_of
from tests.test_shards import same_results

ray = pytest.importorskip("ray")

DIM = 8
ENGINE = EngineSettings(seal_points=200, max_segment_points=100_000, merge_factor=4)
RUNTIME = ShardRuntime(ray=True, cpus_per_shard=0.25, timeout_s=30.0, optimizer_interval_s=0.2)  # dead actors fail at once; the timeout only guards a busy machine


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")  # as index/shards/handles.py starts a local Ray
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def config(name: str) -> CollectionConfig:
    return CollectionConfig(name=name, dim=DIM, metric="cosine", index=IndexSpec(type="flat"), models=(ModelVersion(version=1, name=None, dim=DIM),))


def shard_pid(collection: ShardedCollection, shard: int, timeout: float = 180) -> int:
    """The shard actor's process id, waiting while it restarts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid: int = collection.shards[shard].call("pid").result(5)
            return pid
        except ShardUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_kill9_of_a_shard_actor_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    registry = ModelRegistry()
    sharded = ShardedCollection.create(tmp_path / "sharded", config("sharded"), 3, registry, ENGINE, RUNTIME)
    single = Collection.create(tmp_path / "single", config("single"), registry, ENGINE)
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((5000, DIM)).astype(np.float32)
    first = [PointInput(id=i, vector=vectors[i].tolist(), payload={"g": i % 3}) for i in range(600)]
    sharded.upsert(first)
    single.upsert(first)
    # Congruence on Ray actors too: the same exact answers as one collection.
    queries = [Query(vector=vectors[i].tolist(), k=15) for i in range(20)] + [Query(vector=vectors[5].tolist(), k=9, min_score=0.2, filter=None)]
    for got, want in zip(sharded.query_batch(queries), single.query_batch(queries), strict=True):
        same_results(got, want)

    acked: list[int] = []
    refused: list[TroveError] = []
    stop = threading.Event()

    def write_stream() -> None:
        next_id = 600
        while not stop.is_set() and next_id + 10 <= len(vectors):
            batch = [PointInput(id=i, vector=vectors[i].tolist()) for i in range(next_id, next_id + 10)]
            try:
                sharded.upsert(batch)
                acked.extend(range(next_id, next_id + 10))
            except (ShardWriteFailed, ShardUnavailable) as err:  # not acknowledged: the client would resend
                refused.append(err)
            next_id += 10

    writer = threading.Thread(target=write_stream)
    writer.start()
    while len(acked) < 200:
        time.sleep(0.05)
    victim = shard_pid(sharded, 1)
    os.kill(victim, signal.SIGKILL)
    acked_at_kill = len(acked)
    assert shard_pid(sharded, 1) != victim  # Ray restarted it from its data dir
    restarted_at = len(acked)
    while len(acked) < restarted_at + 100:
        time.sleep(0.05)
    stop.set()
    writer.join()

    assert acked_at_kill >= 200 and len(acked) >= restarted_at + 100
    stored = {}
    for i in acked:
        point = sharded.get(i, with_vector=True)
        stored[i] = point.vector
    assert len(stored) == len(acked)
    assert np.allclose(np.stack([stored[i] for i in acked]), unit(vectors[acked]), atol=1e-6)
    assert sharded.count() >= 600 + len(acked)
    info = sharded.info()
    assert all(s["state"] == "up" for s in info["shards"]) and info["shards"][1]["pid"] != victim
    sharded.close()
    single.close()


@pytest.fixture
def ray_http(make_client: Callable[..., TestClient]) -> TestClient:
    """The service with Ray shards that stay down once killed (no restarts), so the outage lasts the test."""
    return make_client(ray_shards=True, shard_cpus=0.25, shard_max_restarts=0, shard_timeout_s=30.0)


def test_queries_and_writes_while_a_shard_is_down(ray_http: TestClient) -> None:
    http = ray_http
    assert http.post("/v1/collections", json={"name": "r", "dim": DIM, "shards": 3}).status_code == 201
    vectors = np.random.default_rng(5).standard_normal((300, DIM)).astype(np.float32)
    assert http.put("/v1/collections/r/points", json={"points": [{"id": i, "vector": vectors[i].tolist()} for i in range(300)]}).json()["count"] == 300
    info = http.get("/v1/collections/r").json()
    assert info["placement"] == "ray" and [s["state"] for s in info["shards"]] == ["up"] * 3
    os.kill(info["shards"][2]["pid"], signal.SIGKILL)

    query: dict[str, Any] = {"vector": vectors[0].tolist(), "k": 10}
    down = http.post("/v1/collections/r/query", json=query)
    assert down.status_code == 503, down.text
    error = down.json()["error"]
    assert error["code"] == "shard_unavailable" and error["details"]["shard"] == 2 and "shard 2" in error["message"]

    partial = http.post("/v1/collections/r/query", json=query | {"allow_partial": True})
    assert partial.status_code == 200 and partial.json()["partial"] is True and partial.json()["unavailable_shards"] == [2]
    live = [i for i in range(300) if shard_of(i, 3) != 2]
    scores = unit(vectors[live]) @ unit(vectors[0])
    assert [h["id"] for h in partial.json()["results"]] == [live[j] for j in np.argsort(-scores)[:10]]
    batch = {"queries": [query | {"allow_partial": True}, query | {"allow_partial": True}]}
    assert http.post("/v1/collections/r/query/batch", json=batch).json()["partial"] is True
    batch["queries"][1]["allow_partial"] = False
    assert http.post("/v1/collections/r/query/batch", json=batch).status_code == 503

    # An upsert touching the down shard is refused before any shard commits: nothing of it is stored.
    new = [{"id": 1000 + i, "vector": vectors[i].tolist()} for i in range(12)]
    assert {shard_of(p["id"], 3) for p in new} == {0, 1, 2}
    refused = http.put("/v1/collections/r/points", json={"points": new})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shard_unavailable"
    lookup = http.post("/v1/collections/r/points/lookup", json={"ids": [p["id"] for p in new if shard_of(p["id"], 3) != 2]}).json()
    assert lookup["points"] == []
    # A delete has no validation step: the live shards apply theirs, and the answer says exactly which did not.
    gone = http.post("/v1/collections/r/points/delete", json={"ids": [0, 1, 2, 3, 4, 5]})
    assert gone.status_code == 503, gone.text
    details = gone.json()["error"]["details"]
    on_down = [i for i in range(6) if shard_of(i, 3) == 2]
    assert gone.json()["error"]["code"] == "shard_write_failed" and details["committed_shards"] == sorted({shard_of(i, 3) for i in range(6)} - {2})
    assert details["unconfirmed_ids"] == on_down and [f["shard"] for f in details["failed_shards"]] == [2]

    info = http.get("/v1/collections/r").json()
    assert [s["state"] for s in info["shards"]] == ["up", "up", "unavailable"]
    assert info["points"] == len(live) - (6 - len(on_down))  # the live shards' points: the down one's are not counted
    metrics = http.get("/metrics").text
    assert 'trove_shard_up{collection="r",node="",shard="2"} 0.0' in metrics


def test_multivector_queries_and_an_all_or_none_compression_fit_on_ray_actors(tmp_path: Path) -> None:
    """The two-step calls work across processes: a multi-vector query's merged shortlist and Chamfer rerank answer
    as one collection; a compression fit stages on every shard actor and swaps on all of them."""
    registry = ModelRegistry()
    spec = MuveraSpec(k_sim=2, d_proj=8, r_reps=4, max_tokens=16)
    made = {
        name: replace(config(name), multivector=True, muvera=spec, metric="ip")
        for name in ("sharded", "single")
    }
    sharded = ShardedCollection.create(tmp_path / "sharded", made["sharded"], 2, registry, ENGINE, RUNTIME)
    single = MultiVectorCollection.create(tmp_path / "single", made["single"], registry, ENGINE)
    rng = np.random.default_rng(2)
    sets = [unit(rng.standard_normal((int(rng.integers(2, 6)), DIM))).astype(np.float32) for _ in range(1200)]
    points = [PointInput(id=i, vectors=t.tolist()) for i, t in enumerate(sets)]
    sharded.upsert(points)
    single.upsert(points)
    queries = [Query(vectors=sets[i][:2].tolist(), k=8, fde_only=i % 3 == 1, exact=i % 3 == 2) for i in range(12)]
    for got, want in zip(sharded.query_batch(queries), single.query_batch(queries), strict=True):
        same_results(got, want, tolerance=1e-4)
    report = sharded.compression.fit(CompressionSpec.from_json({"quantizer": {"kind": "binary"}, "rerank": {"oversample": 8}}), None, lambda *_: None)
    assert [s["points"] for s in report["shards"]] == [s["points"] for s in sharded.info()["shards"]]
    assert sharded.info()["compression"]["shards_fitted"] == 2
    sharded.close()
    single.close()
