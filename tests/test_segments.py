"""The segment engine against simple models: a dict of live points, brute-force numpy search, the merge policy's rules.

Real SQLite, real FAISS, real files; collections with tiny segment sizes so every seal, merge, vacuum and
restart path runs within a few steps.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from encoders.errors import Conflict, InvalidInput
from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec, gpu_count
from index.catalog import Catalog
from index.collection import Collection
from index.compression.spec import CompressionSpec
from index.config import MuveraSpec
from index.query.filters import Filter, Match
from index.requests import PointInput, Query
from index.segments.policy import EngineSettings, SegmentStats, next_task, tier

DIM = 8
IDS = st.integers(min_value=0, max_value=40)
TINY = EngineSettings(seal_points=6, max_segment_points=20, merge_factor=3, vacuum_dead_share=0.3)


# ---- the merge policy ----------------------------------------------------------------------


@given(
    appendable=st.integers(0, 100),
    sizes=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000)), max_size=40),
    seal=st.integers(1, 500),
    factor=st.integers(2, 6),
)
def test_policy_seals_first_and_never_merges_past_the_limit(appendable: int, sizes: list[tuple[int, int]], seal: int, factor: int) -> None:
    engine = EngineSettings(seal_points=seal, max_segment_points=max(seal, 2000), merge_factor=factor, vacuum_dead_share=0.25)
    segments = [SegmentStats(f"s{i}", live + dead, dead) for i, (live, dead) in enumerate(sizes)]
    task = next_task(appendable, 0, segments, engine)
    if appendable >= seal:
        assert task is not None and task.kind == "seal"
        return
    if task is None:
        return
    chosen = [s for s in segments if s.id in task.segments]
    if task.kind == "vacuum":
        assert len(chosen) == 1 and chosen[0].dead / chosen[0].size >= 0.25
    else:
        assert task.kind == "merge" and 2 <= len(chosen) <= factor
        assert sum(s.live for s in chosen) == task.points <= engine.max_segment_points
        assert len({tier(s.live, engine) for s in chosen}) == 1, "a merge takes segments of one tier"
        assert all(s.dead / max(s.size, 1) < 0.25 for s in segments), "vacuums come before merges"


# ---- the engine against a dict model -------------------------------------------------------


class EngineMachine(RuleBasedStateMachine):
    """Upserts, overwrites, deletes, queries, seals, merges, vacuums and restarts; queries must match the model."""

    index_type = "flat"

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="trove-engine-"))
        self.registry = ModelRegistry(self.root / "models")
        self.catalog = Catalog(self.root, self.registry, TINY)
        self.catalog.load_all()
        self.collection = self.catalog.create("c", model=None, dim=DIM, metric="ip", index=IndexSpec(type=self.index_type, m=8))  # type: ignore[arg-type]
        self.model: dict[int, np.ndarray] = {}

    def teardown(self) -> None:
        self.catalog.close()
        shutil.rmtree(self.root, ignore_errors=True)

    @rule(ids=st.lists(IDS, min_size=1, max_size=8, unique=True), seed=st.integers(0, 2**32 - 1))
    def upsert(self, ids: list[int], seed: int) -> None:
        vectors = np.random.default_rng(seed).normal(size=(len(ids), DIM)).astype(np.float32)
        self.collection.upsert([PointInput(id=i, vector=v.tolist()) for i, v in zip(ids, vectors, strict=True)])
        self.model.update(zip(ids, vectors, strict=True))

    @rule(ids=st.lists(IDS, min_size=1, max_size=6, unique=True))
    def delete(self, ids: list[int]) -> None:
        ack = self.collection.delete(ids)
        assert ack.count == len([i for i in ids if i in self.model])
        for i in ids:
            self.model.pop(i, None)

    @rule()
    def seal(self) -> None:
        self.collection.engine.rebuild("seal")

    @rule()
    def optimize(self) -> None:
        self.collection.optimize()
        assert self.collection.optimizer_task() is None

    @precondition(lambda self: len([s for s in self.collection.info()["segments"] if s["state"] == "sealed"]) >= 2)
    @rule(data=st.data())
    def merge(self, data: st.DataObject) -> None:
        sealed = [s["id"] for s in self.collection.info()["segments"] if s["state"] == "sealed"]
        picked = data.draw(st.lists(st.sampled_from(sealed), min_size=2, max_size=len(sealed), unique=True))
        self.collection.engine.rebuild("merge", picked)

    @precondition(lambda self: any(s["state"] == "sealed" for s in self.collection.info()["segments"]))
    @rule(data=st.data())
    def vacuum(self, data: st.DataObject) -> None:
        sealed = [s["id"] for s in self.collection.info()["segments"] if s["state"] == "sealed"]
        self.collection.engine.rebuild("vacuum", [data.draw(st.sampled_from(sealed))])

    @rule()
    def restart(self) -> None:
        self.catalog.close()
        self.catalog = Catalog(self.root, self.registry, TINY)
        self.catalog.load_all()
        self.collection = self.catalog.get("c")

    @rule(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 50), exact=st.booleans())
    def query(self, seed: int, k: int, exact: bool) -> None:
        q = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
        hits = self.collection.query(Query(vector=q.tolist(), k=k, exact=exact, with_payload=False))
        ids = list(self.model)
        truth = sorted(((float(self.model[i] @ q), i) for i in ids), reverse=True)[:k]
        assert len(hits) == min(k, len(ids))
        for hit in hits:
            assert hit.id in self.model, f"hit {hit.id} is not live"
            assert abs(hit.score - float(self.model[int(hit.id)] @ q)) < 1e-4, "a hit carries an old vector's score"
        if exact or self.index_type == "flat":
            assert np.allclose([h.score for h in hits], [s for s, _ in truth], atol=1e-4), "not the exact top-k"

    @invariant()
    def counts_agree(self) -> None:
        view = self.collection.engine.view()
        assert view.points == len(self.model) == self.collection.count()
        assert np.array_equal(view.live_rows(), self.collection.store.live_rows())


class HnswEngineMachine(EngineMachine):
    index_type = "hnsw"


class IvfEngineMachine(EngineMachine):
    index_type = "ivf"


STATEFUL = settings(max_examples=25, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestEngineFlat = EngineMachine.TestCase
TestEngineFlat.settings = STATEFUL
TestEngineHnsw = HnswEngineMachine.TestCase
TestEngineHnsw.settings = STATEFUL
TestEngineIvf = IvfEngineMachine.TestCase
TestEngineIvf.settings = STATEFUL


# ---- concurrency: writers, readers and the optimizer at once -------------------------------

STRESS_KINDS: dict[str, dict[str, Any]] = {
    "flat": {},
    "hnsw": {"index": IndexSpec(type="hnsw", m=8)},
    "ivf": {"index": IndexSpec(type="ivf")},
    "binary1": {"compression": {"quantizer": {"kind": "binary"}}},
    "binary1-hnsw": {"index": IndexSpec(type="hnsw", m=8), "compression": {"quantizer": {"kind": "binary"}}},
    "lvq8": {"compression": {"leanvec": {"dim": 8}, "quantizer": {"kind": "lvq8"}}},
    "int8-mmap": {"compression": {"quantizer": {"kind": "int8"}, "rerank": {"with": "int8", "storage": "mmap"}}},
    "multivector": {"multivector": True},
}
STRESS_DIM = 16


def _stress_collection(root: Path, kind: str) -> Collection:
    catalog = Catalog(root, ModelRegistry(root / "models"), EngineSettings(seal_points=64, max_segment_points=256, merge_factor=3, vacuum_dead_share=0.25))
    catalog.load_all()
    options = STRESS_KINDS[kind]
    if options.get("multivector"):
        return catalog.create("c", model=None, dim=STRESS_DIM, metric="cosine", index=IndexSpec(), multivector=True, muvera=MuveraSpec(k_sim=2, d_proj=8, r_reps=2))
    return catalog.create("c", model=None, dim=STRESS_DIM, metric="cosine", index=options.get("index", IndexSpec()))


def _point(kind: str, point_id: int, rng: np.random.Generator) -> PointInput:
    if kind == "multivector":
        return PointInput(id=point_id, vectors=rng.normal(size=(3, STRESS_DIM)).tolist(), payload={"even": point_id % 2 == 0})
    return PointInput(id=point_id, vector=rng.normal(size=STRESS_DIM).tolist(), payload={"even": point_id % 2 == 0})


@pytest.mark.parametrize("kind", list(STRESS_KINDS))
def test_concurrent_writes_queries_and_optimizer(tmp_path: Path, kind: str) -> None:
    """Writers overwrite ids [0, 400) and delete ids [400, 800) once each; readers query (filtered or not,
    exact or not) while the optimizer seals, merges and vacuums, and compressed kinds refit once. No thread may
    raise, and no query that starts after a delete is acknowledged may return the deleted id."""
    collection = _stress_collection(tmp_path, kind)
    rng = np.random.default_rng(0)
    collection.upsert([_point(kind, i, rng) for i in range(800)])
    spec = STRESS_KINDS[kind].get("compression")
    if spec:
        collection.compression.fit(CompressionSpec.from_json(spec), None, lambda *a: None)
    deleted: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def guarded(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                errors.append(exc)
                stop.set()

        return run

    def writer(seed: int) -> None:
        local = np.random.default_rng(seed)
        pending = list(range(400 + seed, 800, 2))
        while not stop.is_set():
            collection.upsert([_point(kind, int(i), local) for i in local.choice(400, 8, replace=False)])
            if pending:
                gone = [pending.pop() for _ in range(min(3, len(pending)))]
                collection.delete(gone)
                with lock:
                    deleted.update(gone)

    def reader(seed: int) -> None:
        local = np.random.default_rng(seed)
        while not stop.is_set():
            with lock:
                before = set(deleted)
            point = _point(kind, 0, local)
            query = Query(
                vector=point.vector,
                vectors=point.vectors,
                k=int(local.integers(1, 40)),
                exact=bool(local.random() < 0.2),
                filter=Filter((Match("even", (True,)),)) if local.random() < 0.3 else None,
                with_payload=True,
            )
            hits = collection.query(query)
            found = {int(h.id) for h in hits}
            assert not found & before, f"deleted ids returned: {sorted(found & before)}"
            if query.filter is not None:
                assert all(h.payload == {"even": True} for h in hits)

    def optimizer() -> None:
        while not stop.is_set():
            if collection.optimize() == 0:
                time.sleep(0.01)
        if spec:  # a refit while writes go on
            collection.compression.fit(CompressionSpec.from_json(spec), None, lambda *a: None)

    threads = [threading.Thread(target=guarded(lambda s=s: writer(s))) for s in (0, 1)]
    threads += [threading.Thread(target=guarded(lambda s=s: reader(s))) for s in (2, 3)]
    threads.append(threading.Thread(target=guarded(optimizer)))
    for t in threads:
        t.start()
    time.sleep(4.0)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert not errors, repr(errors[0])
    collection.optimize()
    info = collection.info()
    assert info["points"] == 800 - len(deleted) == collection.engine.view().points
    assert any(s["state"] == "sealed" for s in info["segments"]), "the optimizer never sealed a segment"


# ---- CPU and GPU agree with brute force on the same data -----------------------------------

DEVICES = ["cpu"] + (["gpu"] if gpu_count() > 0 else [])
CONGRUENT: dict[str, dict[str, Any] | None] = {
    "flat": None,
    "hnsw": None,
    "binary1-hnsw": {"quantizer": {"kind": "binary"}, "rerank": {"oversample": 400}},
    "leanvec16-hnsw": {"leanvec": {"dim": 16}, "rerank": {"oversample": 100}},
    "binary1": {"quantizer": {"kind": "binary"}, "rerank": {"oversample": 400}},
    "int8": {"quantizer": {"kind": "int8"}, "rerank": {"oversample": 50}},
    "lvq8": {"leanvec": {"dim": 16}, "quantizer": {"kind": "lvq8"}, "rerank": {"oversample": 100}},
    # Mixture data has no Matryoshka structure (prefixes carry no more than other dims): a deep funnel.
    "matryoshka-funnel": {"matryoshka": {"funnel": [8, 16]}, "rerank": {"oversample": 1000}},
}


@pytest.fixture(scope="module")
def congruence_data() -> np.ndarray:
    """Clustered vectors (a Gaussian mixture), so neighbourhoods exist as in real embeddings."""
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(40, 32))
    return (centers[rng.integers(0, 40, 10_000)] + 0.4 * rng.normal(size=(10_000, 32))).astype(np.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", list(CONGRUENT))
def test_search_agrees_with_brute_force_on_each_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, congruence_data: np.ndarray, device: str, config: str) -> None:
    monkeypatch.setenv("TROVE_FAISS_DEVICE", "auto" if device == "gpu" else "cpu")
    docs = congruence_data
    catalog = Catalog(tmp_path, ModelRegistry(tmp_path / "models"), EngineSettings(seal_points=3000, max_segment_points=3000))
    catalog.load_all()
    index = IndexSpec(type="hnsw", m=16, ef_search=128) if "hnsw" in config else IndexSpec()
    collection = catalog.create("c", model=None, dim=docs.shape[1], metric="ip", index=index)
    collection.upsert([PointInput(id=i, vector=v.tolist(), payload={"odd": i % 2}) for i, v in enumerate(docs)])
    if CONGRUENT[config] is not None:
        collection.compression.fit(CompressionSpec.from_json(CONGRUENT[config]), None, lambda *a: None)
    else:
        collection.optimize()
    collection.delete(list(range(0, 600, 3)))
    collection.upsert([PointInput(id=10_000 + i, vector=docs[i].tolist(), payload={"odd": 1}) for i in range(50)])  # the appendable segment
    live = {i: docs[i] for i in range(10_000) if not (i < 600 and i % 3 == 0)} | {10_000 + i: docs[i] for i in range(50)}
    assert len([s for s in collection.info()["segments"] if s["state"] == "sealed"]) == 4
    queries = np.random.default_rng(4).normal(size=(5, docs.shape[1])).astype(np.float32)
    odd = Filter((Match("odd", (1,)),))  # about 5,000 rows: more than the brute-force filter path takes
    for k in (10, 3000):
        for filtered in (False, True):
            ids = [i for i in live if not filtered or i >= 10_000 or i % 2 == 1]
            matrix = np.stack([live[i] for i in ids])
            shares = []
            for q in queries:
                hits = collection.query(Query(vector=q.tolist(), k=k, filter=odd if filtered else None, with_payload=False))
                truth = np.sort(matrix @ q)[::-1][:k]
                got = np.array([h.score for h in hits])
                assert len(got) == min(k, len(ids)) and all(h.id in live for h in hits)
                shares.append(np.isclose(got[:, None], truth[None, :], atol=1e-4).any(axis=1).mean())
            # Compressed and graph search are approximate: with these depths nearly all of the exact top-k survive.
            share = min(shares) if config == "flat" else float(np.mean(shares))
            assert share >= (1.0 if config == "flat" else 0.95), f"k={k} filtered={filtered}: {share:.3f} of the exact top-k"
    catalog.close()


def test_scanned_codes_refuse_an_hnsw_coarse_stage(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path, ModelRegistry(tmp_path / "models"))
    catalog.load_all()
    collection = catalog.create("c", model=None, dim=32, metric="ip", index=IndexSpec(type="hnsw"))
    collection.upsert([PointInput(id=i, vector=v.tolist()) for i, v in enumerate(np.random.default_rng(0).normal(size=(64, 32)))])
    for kind in ("int8", "lvq8"):
        with pytest.raises(InvalidInput) as err:
            collection.compression.fit(CompressionSpec.from_json({"quantizer": {"kind": kind}}), None, lambda *a: None)
        assert err.value.code == "compression_index_unsupported"
    assert collection.info()["compression"] is None and [s["state"] for s in collection.info()["segments"]] == ["appendable"]
    catalog.close()


def test_a_collection_dropped_during_a_rebuild_stays_gone(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path, ModelRegistry(tmp_path / "models"))
    catalog.load_all()
    collection = catalog.create("c", model=None, dim=16, metric="ip", index=IndexSpec(type="hnsw", m=8))
    collection.upsert([PointInput(id=i, vector=v.tolist()) for i, v in enumerate(np.random.default_rng(0).normal(size=(3000, 16)))])
    started, dropped = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def slow(fraction: float, done: int, total: int) -> None:
        started.set()
        dropped.wait(30)

    def seal() -> None:
        try:
            collection.engine.rebuild("seal", progress=slow)
        except BaseException as exc:  # noqa: BLE001 - the failure is what the test looks at
            failures.append(exc)

    worker = threading.Thread(target=seal)
    worker.start()
    assert started.wait(30)
    catalog.drop("c")
    dropped.set()
    worker.join(60)
    assert len(failures) == 1 and isinstance(failures[0], Conflict) and failures[0].code == "collection_closed", repr(failures)
    assert not (tmp_path / "collections" / "c").exists() and catalog.names() == []
    catalog.close()


def test_a_streamed_build_is_invisible_until_its_commit_and_leaves_nothing_when_cancelled(tmp_path: Path) -> None:
    from encoders.errors import Cancelled
    from index.storage.store import PointRecord

    catalog = Catalog(tmp_path, ModelRegistry(tmp_path / "models"))
    catalog.load_all()
    collection = catalog.create("c", model=None, dim=DIM, metric="ip", index=IndexSpec())
    vectors = np.random.default_rng(0).normal(size=(900, DIM)).astype(np.float32)
    collection.upsert([PointInput(id=i, vector=vectors[i].tolist()) for i in range(100)])
    records = [PointRecord(id=i, vector=vectors[i]) for i in range(50, 900)]  # ids 50..99 replace existing points
    build = collection.begin_build(len(records), collection.serving)
    build.add(records[:400])
    # Staged and indexed, not live: reads, counts and queries see only the 100 committed points.
    assert collection.count() == 100 and collection.engine.view().points == 100
    assert all(int(h.id) < 100 for h in collection.query(Query(vector=vectors[500].tolist(), k=50)))
    collection.upsert([PointInput(id=5000, vector=vectors[0].tolist())])  # writes go on during the build
    build.add(records[400:])
    ack = build.commit()
    assert ack.count == 850 and collection.count() == 901 and collection.engine.view().points == 901
    assert collection.info()["dead_rows"] == 50  # the 50 replaced points, dead in the appendable segment
    q = vectors[700]
    assert collection.query(Query(vector=q.tolist(), k=1))[0].score == pytest.approx(float((vectors @ q).max()), rel=1e-5)

    cancelled = collection.begin_build(300, collection.serving)

    def stop(done: int) -> None:
        raise Cancelled("cancelled on request")

    before = sorted(p.name for p in (tmp_path / "collections" / "c" / "segments").iterdir())
    with pytest.raises(Cancelled):
        try:
            cancelled.add([PointRecord(id=10_000 + i, vector=vectors[i]) for i in range(200)])
            cancelled.add([PointRecord(id=20_000 + i, vector=vectors[i]) for i in range(100)], stop)
        except BaseException:
            cancelled.abort()
            raise
    del cancelled
    import gc

    gc.collect()
    assert collection.count() == 901 and collection.store._conn().execute("SELECT COUNT(*) FROM staged_points").fetchone()[0] == 0
    assert sorted(p.name for p in (tmp_path / "collections" / "c" / "segments").iterdir()) == before
    catalog.close()
    reopened = Catalog(tmp_path, ModelRegistry(tmp_path / "models"))
    reopened.load_all()
    assert reopened.get("c").count() == 901 and reopened.get("c").engine.view().points == 901
    reopened.close()
