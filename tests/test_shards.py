"""Sharded collections with in-process shards (the same ShardServer code a Ray actor runs): routing, writes,
congruence with a one-shard collection, and the HTTP surface. tests/test_shards_ray.py runs them as Ray actors."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.errors import InvalidInput
from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec
from index.catalog import Catalog
from index.collection import Collection
from index.config import MuveraSpec
from index.query.filters import Filter, Match
from index.requests import Hit, PointInput, Query
from index.segments.policy import EngineSettings
from index.shards.collection import ShardedCollection, merge
from index.shards.routing import shard_of
from tests.corpus import stdlib_labelled

DIM = 16
ENGINE = EngineSettings(seal_points=300, max_segment_points=100_000, merge_factor=4)


def test_routing_is_stable_and_tells_int_from_string_ids() -> None:
    # Pinned: these decide where stored points live, so a change of hash would lose them on reopen.
    assert [shard_of(i, 4) for i in (0, 1, 2, 3, 7)] == [1, 2, 0, 1, 2]
    assert (shard_of("7", 1000), shard_of(7, 1000)) == (103, 890)
    counts = np.bincount([shard_of(i, 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900  # about even: 1000 each


def test_merge_keeps_the_best_k_across_shards() -> None:
    a = [Hit(id=1, score=0.9), Hit(id=2, score=0.5)]
    b = [Hit(id=3, score=0.7), Hit(id=4, score=0.6)]
    assert [h.id for h in merge([a, b], 3)] == [1, 3, 4]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShardedCollection, Collection, np.ndarray]]:
    """A 3-shard and a one-shard collection holding the same 900 points (sealed segments and appendable rows)."""
    catalog = Catalog(tmp_path_factory.mktemp("shards"), ModelRegistry(), ENGINE)
    catalog.ready.set()
    sharded = catalog.create("sharded", model=None, dim=DIM, metric="cosine", index=IndexSpec(type="flat"), shards=3)
    single = catalog.create("single", model=None, dim=DIM, metric="cosine", index=IndexSpec(type="flat"))
    assert isinstance(sharded, ShardedCollection) and isinstance(single, Collection)
    vectors = np.random.default_rng(7).standard_normal((900, DIM)).astype(np.float32)
    points = [PointInput(id=i if i % 3 else f"p{i}", vector=vectors[i].tolist(), payload={"group": i % 5, "rank": i}) for i in range(900)]
    for start in range(0, 900, 150):
        assert sharded.upsert(points[start : start + 150]).count == single.upsert(points[start : start + 150]).count == 150
    sharded.optimize(seal=False)
    single.optimize(seal=False)
    yield sharded, single, vectors
    catalog.close()


def same_results(a: list[Hit], b: list[Hit], tolerance: float = 1e-5) -> None:
    """The same hits: scores equal to float rounding (FAISS batches its sums differently), and the same id at every
    place whose score is clear of the others' (equal scores may come in either order, also at the cut)."""
    assert len(a) == len(b)
    scores = np.array([h.score for h in a])
    assert np.allclose(scores, [h.score for h in b], atol=tolerance)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if (np.abs(np.delete(scores, i) - scores[i]) > tolerance).all():
            assert (x.id, x.payload) == (y.id, y.payload)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 40),
    groups=st.none() | st.lists(st.integers(0, 4), min_size=1, max_size=3, unique=True),
    min_score=st.none() | st.floats(-0.5, 0.6),
    exact=st.booleans(),
    batch=st.integers(1, 4),
)
def test_sharded_answers_exact_queries_as_one_collection(
    pair: tuple[ShardedCollection, Collection, np.ndarray], seed: int, k: int, groups: list[int] | None, min_score: float | None, exact: bool, batch: int
) -> None:
    sharded, single, vectors = pair
    rng = np.random.default_rng(seed)
    where = Filter(must=(Match("group", tuple(groups)),)) if groups else None
    queries = [
        Query(vector=(vectors[rng.integers(900)] + 0.3 * rng.standard_normal(DIM)).tolist(), k=k, filter=where, min_score=min_score, exact=exact)
        for _ in range(batch)
    ]
    for got, want in zip(sharded.query_batch(queries), single.query_batch(queries), strict=True):
        same_results(got, want)


@pytest.fixture(scope="module")
def token_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShardedCollection, Collection, list[np.ndarray]]]:
    """A 3-shard and a one-shard multi-vector collection holding the same 600 token sets (sealed and appendable rows)."""
    root = tmp_path_factory.mktemp("token_shards")
    catalog = Catalog(root, ModelRegistry(), ENGINE)
    catalog.ready.set()
    spec = MuveraSpec(k_sim=2, d_proj=8, r_reps=4, max_tokens=16)
    made = {
        name: catalog.create(name, model=None, dim=DIM, metric="cosine", index=IndexSpec(type="flat"), multivector=True, muvera=spec, shards=shards)
        for name, shards in (("sharded", 3), ("single", 1))
    }
    sharded, single = made["sharded"], made["single"]
    assert isinstance(sharded, ShardedCollection) and isinstance(single, Collection)
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((20, DIM))
    sets = [(centres[rng.integers(20, size=rng.integers(2, 9))] + 0.4 * rng.standard_normal((1, DIM))).astype(np.float32) for _ in range(600)]
    points = [PointInput(id=i if i % 4 else f"t{i}", vectors=t.tolist(), payload={"group": i % 5}) for i, t in enumerate(sets)]
    for start in range(0, 600, 200):
        assert sharded.upsert(points[start : start + 200]).count == single.upsert(points[start : start + 200]).count == 200
    sharded.optimize(seal=False)
    single.optimize(seal=False)
    # Every shard drew the same FDE matrices from the spec's seed, and so did the one-shard collection.
    drawn = [{p.name: p.read_bytes() for p in (folder / "pipeline").rglob("*") if p.is_file()} for folder in [*(root / "collections" / "sharded" / "shards").iterdir(), root / "collections" / "single"]]
    assert drawn[0] and all(d == drawn[0] for d in drawn)
    yield sharded, single, sets
    catalog.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 25),
    groups=st.none() | st.lists(st.integers(0, 4), min_size=1, max_size=3, unique=True),
    min_score=st.none() | st.floats(0.0, 3.0),
    ranking=st.sampled_from(["rerank", "exact", "fde_only"]),
    oversample=st.none() | st.floats(1.0, 20.0),
    batch=st.integers(1, 3),
)
def test_sharded_multivector_answers_as_one_collection(
    token_pair: tuple[ShardedCollection, Collection, list[np.ndarray]],
    seed: int, k: int, groups: list[int] | None, min_score: float | None, ranking: str, oversample: float | None, batch: int,
) -> None:
    """The merged FDE shortlist reranked by exact Chamfer: the same hits, Chamfer and FDE scores as one collection."""
    sharded, single, sets = token_pair
    rng = np.random.default_rng(seed)
    where = Filter(must=(Match("group", tuple(groups)),)) if groups else None
    queries = [
        Query(
            vectors=(sets[rng.integers(600)][: rng.integers(1, 5)] + 0.3 * rng.standard_normal(DIM)).tolist(), k=k, filter=where, min_score=min_score,
            exact=ranking == "exact", fde_only=ranking == "fde_only", oversample=oversample,
        )
        for _ in range(batch)
    ]
    for got, want in zip(sharded.query_batch(queries), single.query_batch(queries), strict=True):
        same_results(got, want, tolerance=1e-4)
        assert np.allclose([h.fde_score or 0.0 for h in got], [h.fde_score or 0.0 for h in want], atol=1e-4)


def test_writes_reads_and_deletes_route_to_one_shard(pair: tuple[ShardedCollection, Collection, np.ndarray]) -> None:
    sharded, single, _ = pair
    assert sharded.count() == single.count() == 900
    assert sharded.get("p3").payload == {"group": 3, "rank": 3}
    assert sharded.get(4, with_vector=True).vector is not None
    per_shard = [s["points"] for s in sharded.info()["shards"]]
    assert sum(per_shard) == 900 and min(per_shard) > 200
    scrolled: list[Any] = []
    offset = None
    while True:
        page, offset = sharded.scroll(offset, 128)
        scrolled += [p.id for p in page]
        if offset is None:
            break
    assert sorted(map(str, scrolled)) == sorted(str(i if i % 3 else f"p{i}") for i in range(900))


def test_a_bad_point_rejects_the_whole_batch_on_every_shard(pair: tuple[ShardedCollection, Collection, np.ndarray]) -> None:
    sharded, _, vectors = pair
    batch = [PointInput(id=10_000 + i, vector=vectors[i].tolist()) for i in range(30)] + [PointInput(id=20_000, vector=[1.0, 2.0])]
    with pytest.raises(InvalidInput) as err:
        sharded.upsert(batch)
    assert err.value.code == "wrong_dimension" and err.value.details["index"] == 30  # its place in the whole batch
    assert sharded.count() == 900
    assert all(sharded.query(Query(vector=vectors[i].tolist(), k=1))[0].id != 10_000 + i for i in range(30))


def test_approximate_recall_within_band(tmp_path: Path) -> None:
    """HNSW segments per shard: recall@10 against exact search stays at or above 0.9, and the sharded
    collection's is no more than 0.03 below the one-shard collection's (in practice it is higher: each shard's
    graph is smaller and is searched to the same depth)."""
    catalog = Catalog(tmp_path, ModelRegistry(), EngineSettings(seal_points=500, max_segment_points=100_000, merge_factor=4))
    catalog.ready.set()
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((20, DIM * 2))
    vectors = (centres[rng.integers(20, size=6000)] + 0.4 * rng.standard_normal((6000, DIM * 2))).astype(np.float32)
    index = IndexSpec(type="hnsw")
    sharded = catalog.create("s", model=None, dim=DIM * 2, metric="cosine", index=index, shards=3)
    single = catalog.create("o", model=None, dim=DIM * 2, metric="cosine", index=index)
    for collection in (sharded, single):
        for start in range(0, 6000, 1000):
            collection.upsert([PointInput(id=i, vector=vectors[i].tolist()) for i in range(start, start + 1000)])
        collection.optimize(seal=True)
    queries = [Query(vector=(vectors[i] + 0.2 * rng.standard_normal(DIM * 2)).tolist(), k=10) for i in rng.integers(6000, size=100)]
    truth = [{h.id for h in hits} for hits in single.query_batch([Query(vector=q.vector, k=10, exact=True) for q in queries])]

    def recall(collection: Collection | ShardedCollection) -> float:
        return float(np.mean([len(truth[i] & {h.id for h in hits}) / 10 for i, hits in enumerate(collection.query_batch(queries))]))

    assert all(s["segments"] >= 2 for s in sharded.info()["shards"])  # sealed HNSW segments, not just exact appendable rows
    r_sharded, r_single = recall(sharded), recall(single)
    assert r_sharded >= 0.9 and r_sharded >= r_single - 0.03, (r_sharded, r_single)
    catalog.close()


# ---- over HTTP ----------------------------------------------------------------


@pytest.fixture
def http(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(seal_points=200)


def test_create_validates_shards(http: TestClient) -> None:
    for bad, status in ((0, 422), (65, 422), ("2", 400)):  # out of range; not a JSON integer
        answer = http.post("/v1/collections", json={"name": "x", "dim": 4, "shards": bad})
        assert answer.status_code == status and "body.shards" in answer.json()["error"]["message"], answer.text
    for refused in ({"text_index": {}}, {"compression": {"quantizer": {"kind": "binary"}}}):
        answer = http.post("/v1/collections", json={"name": "x", "dim": 384, "shards": 2, **refused})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "sharded_unsupported", (refused, answer.text)
    assert http.get("/v1/collections").json()["collections"] == []


def test_sharded_collection_over_http(http: TestClient) -> None:
    created = http.post("/v1/collections", json={"name": "docs", "shards": 3})
    assert created.status_code == 201, created.text
    shards = created.json()["shards"]
    assert [s["shard"] for s in shards] == [0, 1, 2] and all(s["state"] == "up" and s["node"] for s in shards)
    texts = ["the cat sat on the mat", "stock markets fell sharply", "a recipe for bread", "rain is expected tomorrow", "the team won the final"]
    ack = http.put("/v1/collections/docs/points", json={"points": [{"id": i, "text": t, "payload": {"n": i}} for i, t in enumerate(texts)]})
    assert ack.status_code == 200 and ack.json()["count"] == 5
    bad = http.put("/v1/collections/docs/points", json={"points": [{"id": 10, "text": "fine"}, {"id": 11, "text": "  "}]})
    assert bad.status_code == 400 and bad.json()["error"]["details"]["index"] == 1
    found = http.post("/v1/collections/docs/query", json={"text": "baking bread", "k": 2}).json()
    assert found["results"][0]["id"] == 2 and "partial" not in found
    filtered = http.post("/v1/collections/docs/query", json={"text": "baking bread", "k": 5, "filter": {"must": [{"key": "n", "match": {"any": [3, 4]}}]}}).json()
    assert {h["id"] for h in filtered["results"]} == {3, 4}
    batch = http.post("/v1/collections/docs/query/batch", json={"queries": [{"text": "weather", "k": 1, "allow_partial": True}, {"text": "football", "k": 1, "allow_partial": True}]}).json()
    assert [r[0]["id"] for r in batch["results"]] == [3, 4] and batch["partial"] is False
    info = http.get("/v1/collections/docs").json()
    assert info["points"] == 5 and sum(s["points"] for s in info["shards"]) == 5 and info["placement"] == "in_process"
    assert http.get("/v1/collections/docs/points/3").json()["payload"] == {"n": 3}
    assert http.post("/v1/collections/docs/points/delete", json={"ids": [3, 99]}).json()["count"] == 1
    assert http.get("/v1/collections/docs/points/3").status_code == 404
    metrics = http.get("/metrics").text
    assert 'trove_shard_points{collection="docs",node=' in metrics and "trove_shard_up" in metrics
    for method, path, body in (
        ("put", "/v1/collections/docs/text_index", {}),
        ("post", "/v1/collections/docs/query", {"text": "bread", "mode": "keyword"}),
    ):
        answer = getattr(http, method)(path, json=body)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "sharded_unsupported", (path, answer.text)
    assert http.delete("/v1/collections/docs").status_code == 204


def _job(http: TestClient, job_id: str) -> dict[str, Any]:
    for _ in range(1200):
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise TimeoutError(job_id)


@pytest.mark.parametrize("kind", [{}, {"multivector": True, "muvera": {"k_sim": 3, "d_proj": 16, "r_reps": 10}}], ids=["dense", "multivector"])
def test_relevance_is_fitted_and_applied_after_the_merge_as_on_one_collection(http: TestClient, kind: dict[str, Any]) -> None:
    """One calibrator for the whole collection reads the merged candidates (multi-vector: the merged Chamfer
    ranking): same fit, same relevance, same cuts, same hits as one collection."""
    docs, queries, relevant = stdlib_labelled()
    examples = [{"query": q, "relevant": r} for q, r in zip(queries, relevant, strict=True)]
    reports = {}
    for name, shards in (("one", 1), ("three", 3)):
        assert http.post("/v1/collections", json={"name": name, "shards": shards, **kind}).status_code == 201
        http.put(f"/v1/collections/{name}/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(docs)]}).raise_for_status()
        missing = http.post(f"/v1/collections/{name}/query", json={"text": "parse JSON", "min_relevance": 0.5})
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "no_calibrator"
        job = _job(http, http.post(f"/v1/collections/{name}/relevance", json={"examples": examples, "target_recall": 0.9}).json()["job_id"])
        assert job["state"] == "succeeded", job
        reports[name] = job["result"]
    assert reports["three"]["threshold"] == pytest.approx(reports["one"]["threshold"], abs=1e-4)
    assert reports["three"]["pr_auc"] == pytest.approx(reports["one"]["pr_auc"], abs=1e-4)
    info = http.get("/v1/collections/three").json()
    assert info["relevance"]["calibrator"] == reports["one"]["calibrator"] and info["multivector"] == bool(kind)
    for text in ["Decode JSON documents", "Queue of tasks for worker threads", "Compute the square root"]:
        plain = [http.post(f"/v1/collections/{n}/query", json={"text": text, "k": 20}).json() for n in ("one", "three")]
        assert [h["id"] for h in plain[1]["results"]] == [h["id"] for h in plain[0]["results"]]
        # Dense collections answer relevance only when asked; multi-vector ones with every reranked query: both as one collection does.
        assert [["relevance" in h for h in p["results"]] for p in plain] == [[bool(kind)] * 20] * 2
        for asked in ({"k": 20, "with_relevance": True}, {"k": 20, "min_relevance": "default", "with_relevance_details": True}, {"k": 5, "min_relevance": 0.01, "min_score": 0.2}):
            one, three = (http.post(f"/v1/collections/{n}/query", json={"text": text, **asked}).json() for n in ("one", "three"))
            assert [h["id"] for h in three["results"]] == [h["id"] for h in one["results"]], (text, asked)
            assert np.allclose([h["relevance"] for h in three["results"]], [h["relevance"] for h in one["results"]], atol=1e-4)
            if "relevance_details" in one:
                assert {k: v for k, v in three["relevance_details"].items() if not isinstance(v, float)} == {
                    k: v for k, v in one["relevance_details"].items() if not isinstance(v, float)
                }


def test_compression_is_fitted_once_across_shards_and_installed_on_each(http: TestClient, tmp_path: Path) -> None:
    """One pipeline, fitted on a sample from every shard: each shard holds the same fitted transforms; recall of the
    compressed search is no more than 0.05 below the one-shard collection's with the same config."""
    rng = np.random.default_rng(9)
    centres = rng.standard_normal((12, 32))
    vectors = (centres[rng.integers(12, size=3000)] + 0.5 * rng.standard_normal((3000, 32))).astype(np.float32)
    probe = (vectors[rng.integers(3000, size=60)] + 0.3 * rng.standard_normal((60, 32))).astype(np.float32)
    spec = {"quantizer": {"kind": "binary"}, "rerank": {"oversample": 8}}
    recall = {}
    for name, shards in (("one", 1), ("three", 3)):
        assert http.post("/v1/collections", json={"name": name, "dim": 32, "metric": "ip", "shards": shards}).status_code == 201
        for start in range(0, 3000, 1000):
            http.put(f"/v1/collections/{name}/points", json={"points": [{"id": i, "vector": vectors[i].tolist()} for i in range(start, start + 1000)]}).raise_for_status()
        job = _job(http, http.put(f"/v1/collections/{name}/compression", json=spec).json()["job_id"])
        assert job["state"] == "succeeded" and job["progress"] == 1.0, job
        found = http.post(f"/v1/collections/{name}/query/batch", json={"queries": [{"vector": q.tolist(), "k": 10} for q in probe]}).json()["results"]
        exact = http.post(f"/v1/collections/{name}/query/batch", json={"queries": [{"vector": q.tolist(), "k": 10, "params": {"exact": True}} for q in probe]}).json()["results"]
        recall[name] = np.mean([len({h["id"] for h in f} & {h["id"] for h in e}) / 10 for f, e in zip(found, exact, strict=True)])
    report = job["result"]
    assert report["points"] == 3000 and [s["points"] for s in report["shards"]] == [s["points"] for s in http.get("/v1/collections/three").json()["shards"]]
    compression = http.get("/v1/collections/three/compression").json()["compression"]
    assert compression["state"] == "fitted" and compression["shards_fitted"] == 3
    folders = sorted((tmp_path / "data" / "collections" / "three" / "shards").iterdir())
    fitted = [{p.relative_to(g).as_posix(): p.read_bytes() for p in (g / "pipeline").rglob("*") if p.is_file()} for f in folders for g in (f / "compression").glob("g*")]
    assert len(fitted) == 3 and fitted[0] and fitted[0] == fitted[1] == fitted[2]  # the same transforms, byte for byte
    # Each shard shortlists its own k * oversample, so the sharded search sees more candidates, never fewer.
    assert recall["three"] >= recall["one"] - 0.05, recall


def test_a_compression_fit_failing_on_one_shard_switches_none(http: TestClient, tmp_path: Path) -> None:
    """Shards 0 and 2 build and measure the new compression, shard 1 cannot (a file where its compression folder
    goes): none swaps, the job names shard 1 and the rolled-back shards, and searches answer as before. Once
    the obstacle is gone, a new fit installs on every shard."""
    vectors = np.random.default_rng(5).standard_normal((1500, DIM)).astype(np.float32)
    assert http.post("/v1/collections", json={"name": "c", "dim": DIM, "shards": 3}).status_code == 201
    http.put("/v1/collections/c/points", json={"points": [{"id": i, "vector": v.tolist()} for i, v in enumerate(vectors)]}).raise_for_status()
    queries = {"queries": [{"vector": v.tolist(), "k": 10} for v in vectors[:30]]}
    before = http.post("/v1/collections/c/query/batch", json=queries).json()["results"]
    shards = tmp_path / "data" / "collections" / "c" / "shards"
    (shards / "001" / "compression").write_text("in the way")
    spec = {"quantizer": {"kind": "binary"}, "rerank": {"oversample": 8}}
    failed = _job(http, http.put("/v1/collections/c/compression", json=spec).json()["job_id"])
    assert failed["state"] == "failed" and failed["error"]["code"] == "compression_failed", failed
    details = failed["error"]["details"]
    assert [f["shard"] for f in details["failed_shards"]] == [1] and details["rolled_back_shards"] == [0, 2]
    info = http.get("/v1/collections/c").json()
    assert info["compression"] is None and all(s["points"] > 400 for s in info["shards"])
    assert not list((shards / "000" / "compression").glob("g*")) and not list((shards / "002" / "compression").glob("g*"))
    assert http.post("/v1/collections/c/query/batch", json=queries).json()["results"] == before
    (shards / "001" / "compression").unlink()
    done = _job(http, http.put("/v1/collections/c/compression", json=spec).json()["job_id"])
    assert done["state"] == "succeeded" and done["progress"] == 1.0, done
    assert http.get("/v1/collections/c").json()["compression"]["shards_fitted"] == 3


def test_a_build_splits_rows_by_shard_in_one_job(http: TestClient, tmp_path: Path) -> None:
    """One job, one progress figure; the sharded collection then answers as the one-shard collection built from the
    same file; a build failing on a bad row leaves every shard as it was."""
    import json

    vectors = np.random.default_rng(4).standard_normal((2000, DIM)).astype(np.float32)
    good, bad = tmp_path / "rows.jsonl", tmp_path / "bad.jsonl"
    good.write_text("".join(json.dumps({"id": i, "vector": v.tolist(), "payload": {"g": i % 4}}) + "\n" for i, v in enumerate(vectors)))
    bad.write_text("".join(json.dumps({"id": 5000 + i, "vector": v.tolist() if i != 150 else [1.0]}) + "\n" for i, v in enumerate(vectors[:300])))
    for name, shards in (("one", 1), ("three", 3)):
        assert http.post("/v1/collections", json={"name": name, "dim": DIM, "shards": shards}).status_code == 201
        job = _job(http, http.post(f"/v1/collections/{name}/builds", json={"source": {"path": str(good), "format": "jsonl"}}).json()["job_id"])
        assert job["state"] == "succeeded" and job["progress"] == 1.0 and job["result"]["points"] == 2000, job
        failed = _job(http, http.post(f"/v1/collections/{name}/builds", json={"source": {"path": str(bad), "format": "jsonl"}}).json()["job_id"])
        assert failed["state"] == "failed" and "row 151" in failed["error"]["message"], failed
    info = http.get("/v1/collections/three").json()
    assert info["points"] == 2000 and all(s["points"] > 500 and s["segments"] >= 2 for s in info["shards"])
    queries = [{"vector": v.tolist(), "k": 12, "params": {"exact": True}} for v in vectors[:40:3]]
    one, three = (http.post(f"/v1/collections/{n}/query/batch", json={"queries": queries}).json()["results"] for n in ("one", "three"))
    for got, want in zip(three, one, strict=True):
        same_results([Hit(id=h["id"], score=h["score"], payload=h.get("payload")) for h in got], [Hit(id=h["id"], score=h["score"], payload=h.get("payload")) for h in want])


def test_a_reopened_catalog_serves_its_sharded_collections(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path, ModelRegistry(), ENGINE)
    catalog.ready.set()
    sharded = catalog.create("s", model=None, dim=DIM, metric="l2", index=IndexSpec(type="flat"), shards=2)
    vectors = np.random.default_rng(1).standard_normal((700, DIM)).astype(np.float32)
    sharded.upsert([PointInput(id=f"x{i}", vector=v.tolist()) for i, v in enumerate(vectors)])
    sharded.delete(["x0", "x1"])
    before = sharded.query(Query(vector=vectors[5].tolist(), k=5))
    catalog.close()
    reopened = Catalog(tmp_path, ModelRegistry(), ENGINE)
    reopened.load_all()
    again = reopened.get("s")
    assert isinstance(again, ShardedCollection) and again.count() == 698 and again.config.metric == "l2"
    assert [(h.id, h.score) for h in again.query(Query(vector=vectors[5].tolist(), k=5))] == [(h.id, h.score) for h in before]
    reopened.close()


def test_a_query_side_upgrade_switches_every_shard_and_rolls_back(make_client: Callable[..., TestClient], models_dir: Path, static_model: str, tmp_path: Path) -> None:
    """The map is fitted once on a sample across shards; promote and rollback switch every shard's serving version."""
    import json

    http = make_client(models_dir=models_dir)
    docs, queries, _ = stdlib_labelled()
    assert http.post("/v1/collections", json={"name": "up", "model": static_model, "shards": 3}).status_code == 201
    http.put("/v1/collections/up/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(docs)]}).raise_for_status()
    shards = sorted((tmp_path / "data" / "collections" / "up" / "shards").iterdir())

    def serving() -> list[int]:
        return [json.loads((f / "collection.json").read_text())["serving_version"] for f in shards]

    def ids() -> list[list[Any]]:
        answer = http.post("/v1/collections/up/query/batch", json={"queries": [{"text": q, "k": 5} for q in queries[:8]]}).json()
        return [[h["id"] for h in r] for r in answer["results"]]

    before = ids()
    job = _job(http, http.post("/v1/collections/up/upgrades", json={"model": "minilm-l6", "sample": 400}).json()["job_id"])
    assert job["state"] == "succeeded", job
    report = job["result"]
    assert report["sample"]["fit"] + report["sample"]["held_out"] == 400 and report["metrics"]["neighbour_recall"]["new_new"] == 1.0
    # Shard 2 cannot write its config (a folder in the way): the shards that switched are switched back.
    config = shards[2] / "collection.json"
    saved = config.read_bytes()
    config.unlink()
    (config / "in-the-way").mkdir(parents=True)
    refused = http.post(f"/v1/collections/up/upgrades/{report['upgrade_id']}/promote")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "switch_failed", refused.text
    assert refused.json()["error"]["details"]["switched_back"] == [0, 1] and [f["shard"] for f in refused.json()["error"]["details"]["failed_shards"]] == [2]
    shutil.rmtree(config)
    config.write_bytes(saved)
    assert serving() == [1, 1, 1] and ids() == before and http.get("/v1/collections/up").json()["model"] == static_model
    promoted = http.post(f"/v1/collections/up/upgrades/{report['upgrade_id']}/promote")
    assert promoted.status_code == 200 and promoted.json()["version"] == 2, promoted.text
    assert serving() == [2, 2, 2] and all((f / "upgrades" / report["upgrade_id"] / "map").is_dir() for f in shards)
    assert http.get("/v1/collections/up").json()["model"] == "minilm-l6" and ids() != before
    http.put("/v1/collections/up/points", json={"points": [{"id": "new", "text": "Open a file and read its lines."}]}).raise_for_status()
    assert http.get("/v1/collections/up/points/new").json()["model_version"] == 2
    backfill = _job(http, http.post(f"/v1/collections/up/upgrades/{report['upgrade_id']}/backfill").json()["job_id"])
    assert backfill["state"] == "failed" and backfill["error"]["code"] == "sharded_unsupported", backfill
    rolled = http.post(f"/v1/collections/up/upgrades/{report['upgrade_id']}/rollback")
    assert rolled.status_code == 200 and serving() == [1, 1, 1] and ids() == before


def test_a_reproject_upgrade_commits_on_every_shard_or_none(make_client: Callable[..., TestClient], models_dir: Path, static_model: str, sentences: list[str], tmp_path: Path) -> None:
    """Every shard maps its stored vectors into the new model's space up to its commit; shard 1 failing (a folder
    where its new store goes) drops the others' work and the collection stays in its old space; once it can, the
    promotion commits on all three, and rollback serves the old model mapped into the new space."""
    import json

    http = make_client(models_dir=models_dir)
    assert http.post("/v1/collections", json={"name": "re", "model": static_model, "shards": 3}).status_code == 201
    http.put("/v1/collections/re/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(sentences[:500])]}).raise_for_status()
    shards = sorted((tmp_path / "data" / "collections" / "re" / "shards").iterdir())
    job = _job(http, http.post("/v1/collections/re/upgrades", json={"model": "minilm-l6", "sample": 500, "method": "ridge", "mode": "reproject"}).json()["job_id"])
    assert job["state"] == "succeeded" and job["result"]["mode"] == "reproject", job
    upgrade_id = job["result"]["upgrade_id"]

    def dims() -> list[int]:
        return [json.loads((f / "collection.json").read_text())["dim"] for f in shards]

    def top(text: str) -> Any:
        return http.post("/v1/collections/re/query", json={"text": text, "k": 1}).json()["results"][0]["id"]

    before = [top(sentences[i]) for i in (7, 70, 300)]
    (shards[1] / f"store-{upgrade_id}.sqlite").mkdir()
    failed = _job(http, http.post(f"/v1/collections/re/upgrades/{upgrade_id}/promote").json()["job_id"])
    assert failed["state"] == "failed" and failed["error"]["code"] == "reproject_failed", failed
    assert [f["shard"] for f in failed["error"]["details"]["failed_shards"]] == [1] and failed["error"]["details"]["rolled_back_shards"] == [0, 2]
    assert dims() == [256, 256, 256] and not any((f / f"store-{upgrade_id}.sqlite").is_file() for f in shards)
    assert http.get("/v1/collections/re").json()["dim"] == 256 and [top(sentences[i]) for i in (7, 70, 300)] == before
    (shards[1] / f"store-{upgrade_id}.sqlite").rmdir()
    promoted = _job(http, http.post(f"/v1/collections/re/upgrades/{upgrade_id}/promote").json()["job_id"])
    assert promoted["state"] == "succeeded", promoted
    info = http.get("/v1/collections/re").json()
    assert dims() == [384, 384, 384] and info["dim"] == 384 and info["model"] == "minilm-l6" and info["points"] == 500
    assert top(sentences[7]) == 7 and http.get("/v1/collections/re/points/7").json()["model_version"] == 1
    assert http.post(f"/v1/collections/re/upgrades/{upgrade_id}/rollback").status_code == 200
    assert http.get("/v1/collections/re").json()["dim"] == 384 and top(sentences[7]) == 7
