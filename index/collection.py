"""A collection ties an encoder, the SQLite store and its segments (index/segments/) together.

Write path: validate and embed outside any lock, commit to SQLite (the acknowledgement point), then append
to the appendable segment and mark replaced rows dead, both under the collection's write lock, and publish
a new view. Queries read one view each; the optimizer seals, merges and vacuums segments off the write path.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from encoders.base import Encoder, l2_normalize
from encoders.errors import Conflict, InvalidInput, NotFound, NotReady
from encoders.registry import ModelRegistry
from encoders.transforms.base import Pipeline
from encoders.transforms.common import DEFAULT_MAX_SAMPLES
from encoders.transforms.lvq import Int8Quantizer
from index.backends.calibration import MIN_QUERIES
from index.backends.faiss_index import FaissMetric, gpu_count
from index.compression import fit_report
from index.compression import state as compressed_state
from index.compression.multistage import MultiStageIndex
from index.compression.spec import CompressionSpec
from index.compression.state import FittedCompression
from index.config import CollectionConfig
from index.ingest.streamed_build import StreamedBuild
from index.models.versions import Serving, load_serving
from index.query.coalescer import Coalescer
from index.query.filters import Filter
from index.query.fusion import Fusion, Ranked, fuse
from index.query.planner import FilterPlanner
from index.relevance.calibrators import PROFILE_DEPTH, Calibrator, query_words
from index.relevance.fit import (
    Example,
    FitOptions,
    check_fit,
    fit_and_report,
    label_candidates,
)
from index.segments.engine import SegmentEngine
from index.segments.policy import EngineSettings, Task
from index.segments.sealed import SealedSegment, SegmentFactory
from index.segments.view import View
from index.storage import atomic
from index.storage.payload_index import PayloadIndexSpec
from index.storage.store import (
    PointId,
    PointRecord,
    Store,
    StoredPoint,
    remove_store_files,
    validate_point_id,
)
from index.storage.text_index import TextIndexSpec

log = logging.getLogger(__name__)

# Points per sealed segment a build writes (and holds in memory at once); the optimizer merges them later.
BUILD_CHUNK = 50_000
# A compression fit measures recall@10 on at most this many query samples (beside held stored vectors).
HELD_QUERIES = 200
Progress = Callable[[float, int, int], None]


@dataclass(frozen=True)
class PointInput:
    id: Any
    text: str | None = None
    vector: Sequence[float] | None = None
    payload: dict[str, Any] | None = None
    vectors: Sequence[Sequence[float]] | None = None  # token vectors (multi-vector collections)


@dataclass(frozen=True)
class Query:
    text: str | None = None
    vector: Sequence[float] | None = None
    k: int = 10
    filter: Filter | None = None
    min_score: float | None = None
    with_payload: bool = True
    with_vector: bool = False
    exact: bool = False
    oversample: float | None = None
    min_relevance: float | Literal["default"] | None = None  # "default": the fitted operating point
    vectors: Sequence[Sequence[float]] | None = None  # token vectors (multi-vector collections)
    fde_only: bool = False  # multi-vector: rank by FDE similarity, skip the Chamfer rerank
    with_relevance_details: bool = False  # answer the query's own relevance map and where it cuts
    mode: Literal["dense", "keyword", "hybrid"] = "dense"  # keyword: BM25 over the text index; hybrid: both, fused
    fusion: Fusion | None = None  # hybrid only; Fusion() when None
    rows_only: bool = False  # hybrid's dense side: each Hit's id is its store row, and nothing is read from the store

    with_relevance: bool = False  # answer each hit's calibrated relevance (min_relevance and details imply it)

    @property
    def uses_relevance(self) -> bool:
        return self.with_relevance or self.min_relevance is not None or self.with_relevance_details


@dataclass(frozen=True)
class Hit:
    id: PointId
    score: float
    payload: dict[str, Any] | None = None
    vector: list[float] | None = None
    relevance: float | None = None
    fde_score: float | None = None  # multi-vector: the FDE inner product that shortlisted the point
    vectors: list[list[float]] | None = None  # multi-vector: the stored token vectors
    sources: dict[str, Ranked] | None = None  # keyword and hybrid: rank and score in each list the hit came from


class Hits(list[Hit]):
    """One query's hits, and (when asked) its relevance details: the parameters of its own map and where it cuts."""

    relevance_details: dict[str, Any] | None = None


@dataclass(frozen=True)
class WriteAck:
    operation_id: int
    count: int


def reject_token_vectors(vectors: object, where: dict[str, Any]) -> None:
    if vectors is not None:
        raise InvalidInput("'vectors' (token vectors) need a multi-vector collection; give one 'vector'", code="vectors_not_supported", details=where)


def relevance_details(calibrator: Calibrator, scores: np.ndarray, vector: np.ndarray, words: np.ndarray, relevance: np.ndarray, cut: float | None) -> dict[str, Any]:
    """Why one query's list was cut where it was: its own map (slope, offset, rank decay on the raw score), the
    threshold applied (else the fitted one), and how many of its candidates pass it, down to which score."""
    threshold = cut if cut is not None else calibrator.threshold
    found = ~np.isnan(scores[0])
    passing = found & (relevance >= threshold) if threshold is not None else found
    return {
        "calibrator": calibrator.name,
        **calibrator.parameters(scores, vector, words)[0],
        "query_words": int(words[0]),
        "min_relevance": cut,
        "fitted_threshold": calibrator.threshold,
        "candidates": int(found.sum()),
        "passing": int(passing.sum()),
        "lowest_passing_score": float(scores[0][passing].min()) if passing.any() else None,
    }


class Collection:
    def __init__(self, root: Path, config: CollectionConfig, registry: ModelRegistry, engine: EngineSettings | None = None):
        self.root = root
        self.config = config
        self.registry = registry
        self._serving = load_serving(root, config, registry)
        self.store = Store(root / config.store_file, self.index_dim)
        self.filters = FilterPlanner(self.store)
        self._fitted = self._load_fitted()
        self._write_lock = threading.Lock()
        self.engine_settings = engine or EngineSettings()
        self.engine = SegmentEngine(self._segments_dir(config), self._segment_factory(config, self._fitted), self.engine_settings, self._write_lock)
        self.calibrator: Calibrator | None = self._load_calibrator()
        self._coalescer: Coalescer[Query, list[Hit]] = Coalescer(self.query_batch)
        self.loaded = False

    @property
    def index_dim(self) -> int:
        return self.index_dim_for(self.config)

    def index_dim_for(self, config: CollectionConfig) -> int:
        """Dimension of what the segments and the store's vector column hold (multi-vector collections hold FDEs)."""
        return config.dim

    # ---- lifecycle -------------------------------------------------------

    @classmethod
    def create(
        cls, root: Path, config: CollectionConfig, registry: ModelRegistry, engine: EngineSettings | None = None, text_index: TextIndexSpec | None = None
    ) -> Collection:
        root.mkdir(parents=True)
        try:
            config.save(root / "collection.json")
            collection = cls(root, config, registry, engine)
            if text_index is not None:
                collection.store.create_text_index(text_index)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        collection.loaded = True
        return collection

    def load(self) -> None:
        """Load the sealed segments and replay into the appendable one the live rows they lack."""
        self.store.drop_staged()  # what a build interrupted by a crash had staged
        with self._write_lock:
            replayed = self.engine.open(self.store.live_rows(), self.store.vectors_of_rows)
        for legacy in (*self.root.glob("index*"), *self.root.glob("compression/g*/snapshots")):
            shutil.rmtree(legacy, ignore_errors=True)  # whole-index snapshots of the engine before segments
        self.loaded = True
        log.info("%s: loaded %d sealed segments, replayed %d rows", self.config.name, len(self.engine.info()) - 1, replayed)

    def _segment_factory(self, config: CollectionConfig, fitted: FittedCompression | None) -> SegmentFactory:
        model = config.serving_model
        return SegmentFactory(
            dim=self.index_dim_for(config),
            metric="l2" if config.metric == "l2" else "ip",
            index=config.index,
            space=config.store_file,
            compression=fitted,
            model={"name": model.name, "dim": model.dim, "version": model.version},
        )

    def _segments_dir(self, config: CollectionConfig) -> Path:
        """Segments belong to one store file: after a reprojection, older ones hold vectors of the old space."""
        store = Path(config.store_file).stem
        return self.root / ("segments" if store == "store" else f"segments-{store}")

    def optimize(self, seal: bool = False) -> int:
        """Seal, vacuum and merge until the policy is satisfied, in this thread; the service runs these as jobs.

        ``seal`` also seals the appendable segment below its threshold, so every row is in an indexed segment.
        """
        return self.engine.optimize(seal=seal)

    def optimizer_task(self) -> Task | None:
        return self.engine.next_task()

    def run_optimizer_task(self, task: Task, progress: Progress) -> dict[str, Any]:
        """One optimizer job: a seal, merge or vacuum; its result names the segments it wrote."""
        started = time.perf_counter()
        built = self.engine.run(task, progress)
        return {"task": task.kind, "inputs": list(task.segments), "segments": [s.id for s in built], "points": sum(s.size for s in built), "seconds": time.perf_counter() - started}

    def close(self) -> None:
        self._coalescer.close()
        self.engine.close()
        self.store.close()

    # ---- model versions (index/models/upgrades.py decides; these swap) -----------

    def switch_config(self, config: CollectionConfig) -> None:
        """Serve another model version of the same index space: persist, then swap in one step.

        Queries that already captured the old serving state finish on it.
        """
        serving = load_serving(self.root, config, self.registry)  # loads the model before anything changes
        with self._write_lock:
            config.save(self.root / "collection.json")
            self.config, self._serving = config, serving
            self.engine.factory = self._segment_factory(config, self._fitted)
            self.calibrator = self._load_calibrator()

    def reproject(self, config: CollectionConfig, mapping: Callable[[np.ndarray], np.ndarray], progress: Callable[[float, int, int], None]) -> None:
        """Map every stored vector into a new index space (``config.dim``) by one pass, with no model inference.

        The mapped vectors go to a new store file and new segments while queries keep using the current
        ones; writes wait. collection.json naming the new store file is the commit point: a crash before it
        leaves the old store and config in force, a crash after it the new ones.
        """
        self.check_reprojectable()
        serving = load_serving(self.root, config, self.registry)
        with self._write_lock:
            target = self.root / config.store_file
            remove_store_files(target)  # a leftover of an interrupted attempt
            self.store.copy_to(target)
            store = Store(target, config.dim)
            engine = SegmentEngine(self._segments_dir(config), self._segment_factory(config, None), self.engine_settings, self._write_lock)
            try:
                store.map_vectors(lambda v: self.normalise(mapping(v)), progress)
                engine.remove_files()  # a leftover of an interrupted attempt
                engine.open(store.live_rows(), store.vectors_of_rows)
            except BaseException:
                store.close()
                store.remove_files()
                raise
            old_store, old_engine = self.store, self.engine
            config.save(self.root / "collection.json")
            self.config, self.store, self.engine, self._serving = config, store, engine, serving
            self.filters = FilterPlanner(store)
            self.calibrator = self._load_calibrator()
        old_store.close()
        old_store.remove_files()
        old_engine.close()
        old_engine.remove_files()

    def check_reprojectable(self) -> None:
        if self.config.compression is not None:
            # The fitted compression stages belong to the current space; they would need a refit in the new one.
            raise Conflict(
                f"collection {self.config.name!r} is compressed, and reprojection into a new space is not supported for compressed collections; use mode 'query_side'",
                code="reproject_compressed",
            )

    # ---- writes ----------------------------------------------------------

    def upsert(self, points: Sequence[PointInput]) -> WriteAck:
        serving = self._serving
        return self.write(self.prepare(points, serving), serving)

    def write(self, records: Sequence[PointRecord], serving: Serving, expected_rows: Sequence[int] | None = None) -> WriteAck:
        """Commit prepared records as ``serving``'s version, then index them. With ``expected_rows`` a point
        is written only if it still holds the row it was read from (Store.upsert); ``count`` says how many were."""
        with self._write_lock:
            self._check_space(serving)
            result = self.store.upsert(records, serving.version, expected_rows)
            if not len(result.rows):
                return WriteAck(operation_id=result.seq, count=0)
            self.engine.apply(result.rows, np.stack([r.vector for r in records if r.id not in result.skipped]), result.replaced)
        return WriteAck(operation_id=result.seq, count=len(result.rows))

    def begin_build(self, capacity: int, serving: Serving) -> StreamedBuild:
        """A build of at most ``capacity`` points, streamed chunk by chunk into sealed segments (index/ingest/streamed_build.py)."""
        return StreamedBuild(self, capacity, serving)

    def commit_build(self, build_id: str, segments: Sequence[SealedSegment], serving: Serving) -> WriteAck:
        """Make a streamed build's staged points live and serve its segments, in one step for queries."""
        with self._write_lock:
            self._check_space(serving)
            self.engine.check_built(segments)
            result = self.store.commit_staged(build_id, serving.version)
            self.engine.publish_built(segments, result.replaced)
        return WriteAck(operation_id=result.seq, count=len(result.rows))

    def bulk_upsert(self, records: Sequence[PointRecord], serving: Serving, on_indexed: Callable[[int], None] = lambda n: None) -> WriteAck:
        """A large batch as a streamed build: sealed segments of BUILD_CHUNK rows, then one commit.

        ``on_indexed(n)`` reports progress and may raise (a cancel): until the commit nothing changes.
        """
        build = self.begin_build(len(records), serving)
        try:
            for start in range(0, len(records), BUILD_CHUNK):
                build.add(records[start : start + BUILD_CHUNK], lambda n, s=start: on_indexed(s + n))
            return build.commit()
        except BaseException:
            build.abort()
            raise

    def delete(self, ids: Sequence[Any]) -> WriteAck:
        point_ids = [validate_point_id(i) for i in ids]
        with self._write_lock:
            result = self.store.delete(point_ids)
            self.engine.apply(np.zeros(0, np.int64), np.zeros((0, self.index_dim), np.float32), result.rows)
        return WriteAck(operation_id=result.seq, count=len(result.rows))

    def check_point(self, point: PointInput, where: dict[str, Any]) -> np.ndarray | None:
        """Validate one point: its final vector, or None when its text still needs embedding."""
        validate_point_id(point.id)
        if point.text is not None and not point.text.strip():
            raise InvalidInput("text must not be empty", code="empty_text", details=where)
        reject_token_vectors(point.vectors, where)
        if point.vector is not None:
            return self._check_vector(point.vector, where)
        if point.text is not None:
            self.require_encoder("points", where)
            return None
        raise InvalidInput("a point needs 'text' or 'vector'", code="missing_content", details=where)

    def prepare(self, points: Sequence[PointInput], serving: Serving, on_done: Callable[[int], None] | None = None) -> list[PointRecord]:
        """Validate every point, then embed the texts in one call of the encoding path (``on_done(n)``: n embedded). Any error rejects the whole batch."""
        if not points:
            raise InvalidInput("a batch needs at least one point", code="empty_batch")
        seen: set[PointId] = set()
        vectors: list[np.ndarray | None] = []
        for i, point in enumerate(points):
            where = {"index": i, "id": point.id}
            vectors.append(self.check_point(point, where))
            if point.id in seen:
                raise InvalidInput(f"id {point.id!r} appears twice in the batch", code="duplicate_id", details=where)
            seen.add(point.id)
        to_embed = [i for i, v in enumerate(vectors) if v is None]
        if to_embed:
            embedded = self.embed_texts([str(points[i].text) for i in to_embed], serving, on_done)
            for i, vector in zip(to_embed, embedded, strict=True):
                vectors[i] = vector
        return self.records(points, [v for v in vectors if v is not None])

    def embed_texts(self, texts: list[str], serving: Serving, on_done: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """What ``check_point`` returns for a point with a vector, made from the texts of those without (``on_done(n)``: n finished)."""
        return list(self.to_index(self.require_encoder("points", {}, serving).encode_docs(texts, on_done), serving))

    def records(self, points: Sequence[PointInput], vectors: list[np.ndarray]) -> list[PointRecord]:
        """The rows to write, from validated points and their checked or embedded vectors."""
        return [PointRecord(id=p.id, vector=v, text=p.text, payload=p.payload) for p, v in zip(points, vectors, strict=True)]

    def require_encoder(self, what: str, where: dict[str, Any], serving: Serving | None = None) -> Encoder:
        encoder = (serving or self._serving).encoder
        if encoder is None:
            raise InvalidInput(
                f"collection {self.config.name!r} has no model, so {what} need a 'vector'",
                code="text_not_supported",
                details=where,
            )
        return encoder

    @property
    def serving(self) -> Serving:
        """The model version serving now; capture it once per request so a promotion cannot split one."""
        return self._serving

    def to_index(self, embedded: np.ndarray, serving: Serving) -> np.ndarray:
        """Vectors from ``serving``'s model, mapped into the index's space and normalised as the metric wants."""
        return self.normalise(serving.to_index(embedded))

    def _check_space(self, serving: Serving) -> None:
        """Under the write lock: vectors mapped for a space a reprojection has since replaced must not be written."""
        if serving.space != self._serving.space:
            raise Conflict("the collection was reprojected while this write was prepared; send it again", code="index_space_changed")

    def _check_vector(self, values: Sequence[float], where: dict[str, Any]) -> np.ndarray:
        with np.errstate(over="ignore"):  # values beyond float32 become inf and are rejected below
            vector = np.asarray(values, dtype=np.float32)
        if vector.shape != (self.config.dim,):
            raise InvalidInput(
                f"vector has dimension {vector.shape[0] if vector.ndim == 1 else vector.shape}, collection expects {self.config.dim}",
                code="wrong_dimension",
                details={**where, "expected": self.config.dim, "got": int(vector.size)},
            )
        if not np.isfinite(vector).all():
            raise InvalidInput("vector contains NaN or infinite values", code="non_finite_vector", details=where)
        if self.config.metric == "cosine" and not np.any(vector):
            raise InvalidInput("a zero vector has no direction, so no cosine", code="zero_vector", details=where)
        return self.normalise(vector)

    def normalise(self, vector: np.ndarray) -> np.ndarray:
        return l2_normalize(vector) if self.config.metric == "cosine" else vector.astype(np.float32, copy=False)

    # ---- reads -----------------------------------------------------------

    def get(self, point_id: Any, with_vector: bool = False) -> StoredPoint:
        point = self.store.get(validate_point_id(point_id), with_vector=with_vector)
        if point is None:
            raise NotFound(f"no point {point_id!r} in collection {self.config.name!r}", code="point_not_found", details={"id": point_id})
        return point

    def count(self) -> int:
        return self.store.count()

    def scroll(self, offset: int | None, limit: int, with_vector: bool = False) -> tuple[list[StoredPoint], int | None]:
        """A page of points in storage order after the cursor ``offset`` (None: from the start), and the next cursor
        (None after the last page). Cursors are store rows: opaque to users, stable under writes elsewhere."""
        points = self.store.page(-1 if offset is None else offset, limit + 1, with_vector)
        return points[:limit], points[limit - 1].row if len(points) > limit else None

    def query(self, query: Query) -> list[Hit]:
        """One query; concurrent callers are answered together in one batch (index/query/coalescer.py)."""
        return self._coalescer.submit(query)

    async def query_async(self, query: Query) -> list[Hit]:
        """As ``query``, awaited from an event loop: the batch runs on the coalescer's threads."""
        return await self._coalescer.submit_async(query)

    def batch_sizes(self) -> dict[int, int]:
        """Batches the coalescer formed, by size (for /metrics)."""
        return self._coalescer.sizes()

    def query_batch(self, queries: Sequence[Query]) -> list[list[Hit]]:
        """Dense queries share FAISS calls; keyword ones ask the text index, hybrid ones both, then fuse."""
        for i, q in enumerate(queries):
            self._check_mode(q, {"query": i})
        results: list[list[Hit]] = [[] for _ in queries]
        dense = [i for i, q in enumerate(queries) if q.mode != "keyword"]
        # Hybrid queries fetch their dense candidates beside the plain dense queries, in the same batch.
        asked = [queries[i] if queries[i].mode == "dense" else self._dense_candidates(queries[i]) for i in dense]
        try:
            found = dict(zip(dense, self._dense_batch(asked) if asked else [], strict=True))
        except InvalidInput as err:  # name the query by its place in the whole batch, keyword queries included
            if isinstance(err.details.get("query"), int):
                err.details["query"] = dense[err.details["query"]]
            raise
        for i, q in enumerate(queries):
            if q.mode == "dense":
                results[i] = found[i]
                continue
            fusion = q.fusion or Fusion()
            where, params = q.filter.to_sql(self.store.ready_payload_indexes()) if q.filter is not None else (None, [])
            keyword = self.store.keyword_search(str(q.text), q.k if q.mode == "keyword" else fusion.depth_for(q.k), where, params)
            if q.mode == "keyword":
                ranked = [(row, score, {"keyword": Ranked(n + 1, score)}) for n, (row, score) in enumerate(keyword)]
            else:
                # min_score keeps a prefix of the fused ranking, so the first k of it are all that can be chosen
                ranked = fuse({"dense": [(int(h.id), h.score) for h in found[i]], "keyword": keyword}, fusion, q.k)
            results[i] = self._fused_hits(q, ranked)
        return results

    def _check_mode(self, q: Query, where: dict[str, Any]) -> None:
        """Keyword and hybrid queries need a ready text index and a text; 400s (503 while it fills) before any search."""
        if q.fusion is not None and q.mode != "hybrid":
            raise InvalidInput("'fusion' applies to mode 'hybrid' only", code="fusion_needs_hybrid", details=where)
        if q.mode == "dense":
            return
        state = self.store.text_index
        if state is None:
            raise InvalidInput(
                f"mode {q.mode!r} needs a text index, and collection {self.config.name!r} has none; add one with PUT /v1/collections/{self.config.name}/text_index",
                code="no_text_index",
                details=where,
            )
        if not state.ready:
            raise NotReady(
                f"the text index of collection {self.config.name!r} is still being filled (or its fill was interrupted: PUT .../text_index again)",
                code="text_index_building",
                details=where,
            )
        if q.text is None or not q.text.strip():
            raise InvalidInput(f"mode {q.mode!r} needs a non-empty 'text' for its keyword search", code="keyword_needs_text", details=where)
        if q.mode == "keyword" and (q.vector is not None or q.vectors is not None):
            raise InvalidInput("mode 'keyword' searches the text only; give no 'vector' or 'vectors'", code="invalid_query", details=where)
        if q.uses_relevance:
            raise InvalidInput(
                "min_relevance and with_relevance_details calibrate dense scores; they apply to mode 'dense' only", code="relevance_needs_dense", details=where
            )
        if q.fusion is not None:
            q.fusion.check(where)

    def _dense_candidates(self, q: Query) -> Query:
        """A hybrid query's dense side: its vector(s) if given, else its text embedded; rows and scores only."""
        given = q.vector is not None or q.vectors is not None
        return replace(q, mode="dense", fusion=None, text=None if given else q.text, k=(q.fusion or Fusion()).depth_for(q.k), min_score=None, rows_only=True)

    def _fused_hits(self, q: Query, ranked: list[tuple[int, float, dict[str, Ranked]]]) -> list[Hit]:
        """The first k ranked rows that pass min_score, with their stored ids and payloads (and vectors)."""
        chosen = [entry for entry in ranked if q.min_score is None or entry[1] >= q.min_score][: q.k]
        stored = self.points_by_rows([row for row, _, _ in chosen], q.with_vector)
        return [
            Hit(
                id=point.id,
                score=score,
                payload=point.payload if q.with_payload else None,
                vector=point.vector.tolist() if point.vector is not None else None,
                vectors=point.tokens.tolist() if point.tokens is not None else None,
                sources=sources,
            )
            for row, score, sources in chosen
            if (point := stored.get(row)) is not None  # deleted between the search and this read
        ]

    def points_by_rows(self, rows: Sequence[int], with_vector: bool) -> dict[int, StoredPoint]:
        return self.store.by_rows(rows, with_vector)

    def serving_calibrator(self, queries: Sequence[Query]) -> Calibrator | None:
        """The calibrator these queries are answered with; a 400 when one asks for relevance and there is none."""
        calibrator = self.calibrator
        if calibrator is None and any(q.uses_relevance for q in queries):
            raise InvalidInput(
                f"with_relevance, min_relevance and with_relevance_details need a relevance calibrator, and collection {self.config.name!r} has none for its serving model; fit one with POST /v1/collections/{self.config.name}/relevance",
                code="no_calibrator",
            )
        return calibrator

    def _dense_batch(self, queries: Sequence[Query]) -> list[list[Hit]]:
        calibrator = self.serving_calibrator(queries)
        vectors = self.query_vectors(queries)
        results: list[list[Hit]] = [[] for _ in queries]

        def depth(q: Query) -> int:
            # Relevance reads the query's score profile, which needs the top PROFILE_DEPTH scores; only asked for.
            return max(q.k, PROFILE_DEPTH) if calibrator is not None and q.uses_relevance else q.k

        def answer(members: list[int], scores: np.ndarray, rows: np.ndarray) -> None:
            """The hits of queries that shared one search; relevance in one calibrator call for those that ask."""
            user = self._user_scores(scores, rows)
            asking = [j for j, i in enumerate(members) if queries[i].uses_relevance]
            relevance = None
            if asking and calibrator is not None:
                words = query_words([queries[members[j]].text for j in asking])
                relevance = dict(zip(asking, calibrator.relevance(user[asking], vectors[members][asking], words), strict=True))
            for j, i in enumerate(members):
                q = queries[i]
                if relevance is None or j not in relevance:
                    results[i] = Hits(self._hits(q, user[j], rows[j], None, None))
                    continue
                assert calibrator is not None
                cut = calibrator.threshold if q.min_relevance == "default" else q.min_relevance
                hits = Hits(self._hits(q, user[j], rows[j], relevance[j], cut))
                if q.with_relevance_details:
                    hits.relevance_details = relevance_details(calibrator, user[j : j + 1], vectors[i : i + 1], query_words([q.text]), relevance[j], cut)
                results[i] = hits

        # Unfiltered queries with the same search settings share one FAISS call; the depth is one of
        # those settings, so an approximate answer never depends on which queries shared its batch.
        groups: dict[tuple[int, bool, float | None], list[int]] = {}
        for i, q in enumerate(queries):
            if q.filter is None:
                groups.setdefault((depth(q), q.exact, q.oversample), []).append(i)
            else:
                answer([i], *self._search(vectors[i : i + 1], depth(q), q))
        for (k, _, _), members in groups.items():
            answer(members, *self._search(vectors[members], k, queries[members[0]]))
        return results

    def query_vectors(self, queries: Sequence[Query]) -> np.ndarray:
        """Validated, embedded and normalised query vectors in the index's space, one row per query."""
        serving = self._serving
        out = np.zeros((len(queries), self.config.dim), np.float32)
        texts: list[int] = []
        for i, q in enumerate(queries):
            where = {"query": i}
            reject_token_vectors(q.vectors, where)
            if (q.text is None) == (q.vector is None):
                raise InvalidInput("a query needs exactly one of 'text' or 'vector'", code="invalid_query", details=where)
            if q.text is not None:
                if not q.text.strip():
                    raise InvalidInput("query text must not be empty", code="empty_text", details=where)
                self.require_encoder("queries", where, serving)
                texts.append(i)
            else:
                assert q.vector is not None
                out[i] = self._check_vector(q.vector, where)
        if texts:
            embedded = self.require_encoder("queries", {}, serving).encode_queries([str(queries[i].text) for i in texts])
            out[texts] = self.to_index(embedded, serving)
        return out

    def _search(self, vectors: np.ndarray, k: int, q: Query) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (raw scores, rows) over one view of the segments, filtered by ``q.filter``."""
        view = self.engine.view()
        self.engine.recent_queries.add(vectors)
        ef = math.ceil(k * q.oversample) if q.oversample else None
        if q.filter is None:
            return view.search(vectors, k, None, ef, q.exact)
        return self.filters.search(view, vectors, k, q.filter, self._faiss_metric, ef, q.exact)

    def _hits(self, q: Query, scores: np.ndarray, rows: np.ndarray, relevance: np.ndarray | None, min_relevance: float | None) -> list[Hit]:
        """The first k found rows that pass min_score and min_relevance, with their stored ids and payloads."""
        keep = rows >= 0
        if q.min_score is not None:
            keep &= scores >= q.min_score
        if min_relevance is not None and relevance is not None:
            keep &= relevance >= min_relevance
        chosen = np.flatnonzero(keep)[: q.k]
        if not len(chosen):
            return []
        if q.rows_only:
            return [Hit(id=int(rows[j]), score=float(scores[j])) for j in chosen]
        stored = self.store.by_rows(rows[chosen].tolist(), with_vector=q.with_vector, with_text=False, with_payload=q.with_payload)
        return [
            Hit(
                id=point.id,
                score=float(scores[j]),
                payload=point.payload if q.with_payload else None,
                vector=point.vector.tolist() if q.with_vector and point.vector is not None else None,
                relevance=float(relevance[j]) if relevance is not None else None,
            )
            for j in chosen
            if (point := stored.get(int(rows[j]))) is not None  # deleted between the search and this read
        ]

    def _user_scores(self, raw: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Higher is closer for every metric (l2 reports the negated Euclidean distance); NaN where nothing was found."""
        scores = -np.sqrt(np.maximum(raw, 0.0)) if self.config.metric == "l2" else raw.astype(np.float32)
        return np.where(rows >= 0, scores, np.nan)

    # ---- relevance -------------------------------------------------------

    @property
    def _relevance_dir(self) -> Path:
        return self.root / "relevance" / f"v{self.config.serving_version}"

    def _load_calibrator(self) -> Calibrator | None:
        folder = self._relevance_dir
        if not (folder / "calibrator.json").exists():
            return None
        calibrator = Calibrator.load(folder)
        if calibrator.threshold is None and (folder / "report.json").exists():  # saved before calibrators kept their operating point
            calibrator.threshold = json.loads((folder / "report.json").read_text())["threshold"]
        return calibrator

    def fit_relevance(self, examples: Sequence[Example], options: FitOptions, progress: Callable[[float, int, int], None]) -> dict[str, Any]:
        """Retrieve candidates for labelled queries, fit a calibrator, save it with its report and examples, serve it."""
        check_fit(self, examples, options)
        ids, scores, vectors = self.relevance_profiles(examples, lambda done: progress(0.5 * done / len(examples), done, len(examples)))
        calibrator, report = fit_and_report(label_candidates(examples, ids, scores, vectors), options, progress)
        report["model_version"] = self.config.serving_version
        folder = self._relevance_dir
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = atomic.new_temp_dir(folder.parent, folder.name)
        calibrator.save(staging)
        (staging / "report.json").write_text(json.dumps(report, indent=2))
        (staging / "examples.jsonl").write_text("".join(json.dumps({"query": e.query, "relevant": list(e.relevant)}) + "\n" for e in examples))
        shutil.rmtree(folder, ignore_errors=True)
        atomic.publish_dir(staging, folder)  # fsynced whole: a crash leaves the old calibrator or none, never half of one
        self.calibrator = calibrator
        return report

    def relevance_profiles(self, examples: Sequence[Example], on_done: Callable[[int], None]) -> tuple[list[list[Any]], list[list[float]], np.ndarray]:
        """Each labelled query's top PROFILE_DEPTH ids and scores, and its vector: what a calibrator learns from."""
        vectors = self.query_vectors([Query(text=e.query, k=PROFILE_DEPTH, with_payload=False) for e in examples])
        ids: list[list[Any]] = []
        scores: list[list[float]] = []
        for start in range(0, len(examples), 64):
            chunk = [Query(vector=v, k=PROFILE_DEPTH, with_payload=False) for v in vectors[start : start + 64]]
            for hits in self.query_batch(chunk):
                ids.append([h.id for h in hits])
                scores.append([h.score for h in hits])
            on_done(len(ids))
        return ids, scores, vectors

    def relevance_report(self) -> dict[str, Any] | None:
        """The fit report of the serving model's calibrator (None when there is none)."""
        report_path = self._relevance_dir / "report.json"
        return json.loads(report_path.read_text()) if self.calibrator is not None and report_path.exists() else None

    def relevance_info(self) -> dict[str, Any] | None:
        """The serving version's calibrator; else the newest one of an earlier version, marked stale (it calibrates another model's scores)."""
        report = self.relevance_report()
        if report is not None:
            return {**{k: report[k] for k in ("calibrator", "threshold", "model_version", "pr_auc")}, "stale": False}
        older = self._older_relevance_dir()
        if older is None:
            return None
        stale = json.loads((older / "report.json").read_text())
        return {
            **{k: stale[k] for k in ("calibrator", "threshold", "model_version", "pr_auc")},
            "stale": True,
            "message": f"fitted for model version {stale['model_version']}, not the serving version {self.config.serving_version}; "
            f"refit from its stored examples with POST /v1/collections/{self.config.name}/relevance {{\"refit\": true}}",
        }

    def _older_relevance_dir(self) -> Path | None:
        """The relevance folder of the newest non-serving version that has a fitted report and its examples."""
        found = [
            (m.version, folder)
            for m in self.config.models
            if m.version != self.config.serving_version
            and (folder := self.root / "relevance" / f"v{m.version}").joinpath("report.json").exists()
            and folder.joinpath("examples.jsonl").exists()
        ]
        return max(found)[1] if found else None

    def stored_examples_path(self) -> Path:
        """The labelled examples a refit uses: the serving version's own, else those of the newest earlier version."""
        own = self._relevance_dir / "examples.jsonl"
        folder = own.parent if own.exists() else self._older_relevance_dir()
        if folder is None:
            raise NotFound(f"collection {self.config.name!r} has no stored relevance examples to refit from", code="no_stored_examples")
        return folder / "examples.jsonl"

    # ---- compression -----------------------------------------------------

    def _load_fitted(self) -> FittedCompression | None:
        """The fitted compression to serve: only when it was fitted for the configured one (else search stays exact)."""
        fitted = compressed_state.current(self.root)
        if fitted is not None and fitted.spec != self.config.compression:
            log.warning("%s: fitted compression %s differs from the configured one; serving exact float search", self.config.name, fitted.folder.name)
            return None
        return fitted

    @property
    def compression_unfitted(self) -> bool:
        return self.config.compression is not None and self._fitted is None

    def compression_query_vectors(self, queries: Sequence[str | Sequence[float]]) -> np.ndarray:
        """Query samples for LeanVec-OOD (texts embedded as queries, vectors checked), one row each."""
        return self.query_vectors([Query(text=q) if isinstance(q, str) else Query(vector=q) for q in queries])

    def pending_compression_queries(self) -> np.ndarray | None:
        """Query samples given with the config and not yet used by a fit."""
        return compressed_state.load_queries(compressed_state.root(self.root))

    def set_compression(self, spec: CompressionSpec, queries: np.ndarray | None) -> None:
        """Configure compression without fitting it (a new collection): searches stay exact until a fit."""
        compressed_state.save_queries(compressed_state.root(self.root), queries)
        with self._write_lock:
            self.config = replace(self.config, compression=spec)
            self.config.save(self.root / "collection.json")

    def fit_compression(self, spec: CompressionSpec, queries: np.ndarray | None, progress: Progress, seed: int = 0) -> dict[str, Any]:
        """Fit ``spec`` on a sample of the stored vectors, index every row into a new generation, measure recall, swap.

        Queries keep using the current index until the swap; a failure or cancel leaves everything as it was.
        """
        started = time.perf_counter()
        spec.check_for(self.config, 0 if queries is None else len(queries), self.index_dim)
        view = self.engine.view()
        live = view.live_rows()
        spec.check_points(len(live))
        rng = np.random.default_rng(seed)
        sample = view.vectors(np.sort(rng.choice(live, min(len(live), DEFAULT_MAX_SAMPLES), replace=False)))[1]
        progress(0.0, 0, len(live))
        learned, held_queries = fit_report.split_queries(spec, queries, rng)
        pipeline = Pipeline(spec.transforms(seed)).fit(sample, learned)
        rerank = Int8Quantizer(seed=seed).fit(sample) if spec.rerank.with_ == "int8" else None
        used = {"seed": seed, "points": int(len(live)), "sample": len(sample), "queries": 0 if queries is None else len(queries)}
        return self.install_compression(spec, pipeline, rerank, queries, held_queries, used, progress, started, rng)

    def install_compression(
        self, spec: CompressionSpec, pipeline: Pipeline, rerank: Int8Quantizer | None, queries: np.ndarray | None, held_queries: tuple[np.ndarray | None, str],
        used: dict[str, Any], progress: Progress, started: float, rng: np.random.Generator,
    ) -> dict[str, Any]:
        """Index every row with a fitted pipeline into a new generation, choose its search depth and measure its
        recall on held queries (stored vectors kept out of the searched set, and ``held_queries``, else the recent
        queries), swap. A sharded collection fits one pipeline and installs it on every shard through this."""
        held_rows = fit_report.pick_held_rows(self.engine.view().live_rows(), rng)
        recent = self.engine.recent_queries.sample()
        probe, probe_source = held_queries
        if probe is None and len(recent) >= MIN_QUERIES:
            probe, probe_source = recent, "the collection's recent queries"
        probe = None if probe is None else probe[rng.permutation(len(probe))[:HELD_QUERIES]]
        folder = compressed_state.new_generation(self.root)
        config = replace(self.config, compression=spec)
        fitted = FittedCompression(folder, spec, pipeline, rerank, report={})
        model = self.config.serving_model
        fitted.report = {"fitted_at": time.time(), "model": {"name": model.name, "dim": model.dim, "version": model.version}, **used}

        def measure(built: list[SealedSegment]) -> None:
            view = View(tuple(s.part() for s in built), self.engine.factory.metric, self.config.dim)
            searched, held = fit_report.held_sets(view, held_rows, probe, probe_source)
            fitted.report |= fit_report.measure(view, searched, held, spec).report(spec, held)
            fitted.report["fit_seconds"] = time.perf_counter() - started

        def commit() -> None:  # under the write lock, just before the new segments replace the old ones
            fitted.save_state()
            compressed_state.commit(self.root, folder)
            config.save(self.root / "collection.json")
            self.config, self._fitted = config, fitted

        try:
            fitted.save_transforms()
            compressed_state.save_queries(folder, queries)
            # Every segment, the appendable one included, is rewritten with the fitted pipeline.
            self.engine.rebuild(
                "all", progress=lambda f, done, total: progress(0.95 * f, done, total), factory=self._segment_factory(config, fitted), verify=measure, on_commit=commit
            )
        except BaseException:
            if self._fitted is None or self._fitted.folder != folder:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        compressed_state.save_queries(compressed_state.root(self.root), None)
        progress(1.0, used["points"], used["points"])
        return {**fitted.report, "generation": folder.name}

    def compression_info(self) -> dict[str, Any] | None:
        spec = self.config.compression
        if spec is None:
            return None
        fitted = self._fitted
        info: dict[str, Any] = {**spec.to_json(), "state": "fitted" if fitted else "unfitted"}
        if fitted is None:
            pending = self.pending_compression_queries()
            return info | {"search": "exact float (until a fit: PUT .../compression, or a build)", "queries": 0 if pending is None else len(pending)}
        report = fitted.report
        extra = {k: report[k] for k in ("fitted_at", "points", "sample", "queries", "held_queries", "held_from", "search", "model", "seed") if k in report}
        compressed = [p.searcher.index for p in self.engine.view().parts if isinstance(p.searcher, SealedSegment) and isinstance(p.searcher.index, MultiStageIndex)]
        storage = {
            "ram_bytes": sum(i.memory_bytes() for i in compressed),
            "disk_bytes": sum(i.disk_bytes() for i in compressed),
            "device": "gpu" if any(i.on_gpu for i in compressed) else "cpu",
        }
        return info | {"search": "multistage", "generation": fitted.folder.name, **extra, **storage}

    # ---- the full-text index (index/storage/text_index.py) ----------------

    def check_text_index(self, spec: TextIndexSpec) -> None:
        """409 when an index exists that a fill of ``spec`` would not resume (a ready one, or another tokenizer)."""
        state = self.store.text_index
        if state is not None and (state.ready or state.spec != spec):
            raise Conflict(
                f"collection {self.config.name!r} already has a text index ({state.spec.tokenizer}, {'ready' if state.ready else 'unfinished'}); "
                f"DELETE /v1/collections/{self.config.name}/text_index first to change it",
                code="text_index_exists",
                details={"tokenizer": state.spec.tokenizer, "ready": state.ready},
            )

    def build_text_index(self, spec: TextIndexSpec, progress: Progress) -> dict[str, Any]:
        """Index the text of the stored points while writes go on (each write indexes its own points from the
        start); a failure or cancel removes the unfinished index. A crash leaves it unfinished: this resumes it."""
        self.check_text_index(spec)
        started = time.perf_counter()
        self.store.create_text_index(spec)
        try:
            indexed = self.store.fill_text_index(progress)
        except BaseException:
            self.store.drop_text_index()
            raise
        return {**spec.to_json(), "indexed": indexed, "points": self.count(), "seconds": time.perf_counter() - started}

    def drop_text_index(self) -> None:
        if not self.store.drop_text_index():
            raise NotFound(f"collection {self.config.name!r} has no text index", code="no_text_index")

    def text_index_info(self) -> dict[str, Any] | None:
        state = self.store.text_index
        if state is None:
            return None
        return {**state.spec.to_json(), "state": "ready" if state.ready else "filling", "indexed": self.store.text_indexed_count()}

    # ---- payload indexes (index/storage/payload_index.py) ---------------------

    def check_payload_index(self, spec: PayloadIndexSpec) -> None:
        """409 when the key has an index that a fill of ``spec`` would not resume (a ready one, or another type)."""
        current = self.store.payload_indexes.get(spec.key)
        if current is not None and (current.ready or current.spec != spec):
            raise Conflict(
                f"collection {self.config.name!r} already has a payload index on {spec.key!r} ({current.spec.type}, {'ready' if current.ready else 'unfinished'}); "
                f"DELETE /v1/collections/{self.config.name}/indexes/{spec.key} first to change it",
                code="payload_index_exists",
                details={"key": spec.key, "type": current.spec.type, "ready": current.ready},
            )

    def build_payload_index(self, spec: PayloadIndexSpec, progress: Progress) -> dict[str, Any]:
        """Index ``spec.key`` over the stored points while writes go on (each write indexes, and type-checks, its own
        points from the start); a failure (a value of another type), cancel or crash mid-way removes the index,
        except a crash, which leaves it unfinished: this resumes it."""
        self.check_payload_index(spec)
        started = time.perf_counter()
        self.store.create_payload_index(spec)
        try:
            counts = self.store.fill_payload_index(spec.key, progress)
        except BaseException:
            self.store.drop_payload_index(spec.key)
            raise
        return {**spec.to_json(), **counts, "seconds": time.perf_counter() - started}

    def drop_payload_index(self, key: str) -> None:
        if not self.store.drop_payload_index(key):
            raise NotFound(f"collection {self.config.name!r} has no payload index on {key!r}", code="no_payload_index", details={"key": key})

    def payload_indexes_info(self, with_counts: bool = False) -> list[dict[str, Any]]:
        """Each index's key, type and state (``filling`` until its job has indexed the points stored before it)."""
        return [
            {**index.spec.to_json(), "state": "ready" if index.ready else "filling", **(self.store.payload_index_stats(index) if with_counts else {})}
            for index in self.store.payload_indexes.values()
        ]

    @property
    def _faiss_metric(self) -> FaissMetric:
        return "l2" if self.config.metric == "l2" else "ip"

    # ---- reporting -------------------------------------------------------

    def info(self) -> dict[str, Any]:
        cfg = self.config
        serving = cfg.serving_model
        view = self.engine.view()
        on_gpu = cfg.index.type == "flat" and gpu_count() > 0
        return {
            "name": cfg.name,
            "model": serving.name,
            "models": [{"version": m.version, "name": m.name, "dim": m.dim, "serving": m.version == cfg.serving_version} for m in cfg.models],
            "dim": cfg.dim,
            "metric": cfg.metric,
            "multivector": False,
            "index": {**asdict(cfg.index), "device": "gpu" if on_gpu else "cpu", "lid": self.engine.lid()},
            "compression": self.compression_info(),
            "points": self.count(),
            "memory_bytes": view.memory_bytes(),
            "stages": self._fitted.report["stages"] if self._fitted else [{"name": "float32", "bytes_per_vector": 4 * cfg.dim}],
            "operation_id": self.store.last_seq,
            "dead_rows": view.dead,
            "segments": self.engine.info(),
            "relevance": self.relevance_info(),
            "text_index": self.text_index_info(),
            "payload_indexes": self.payload_indexes_info(),
            "created_at": cfg.created_at,
        }

