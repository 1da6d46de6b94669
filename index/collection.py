"""A collection ties an encoder, the SQLite store and its segments (index/segments/) together.

Write path: validate and embed outside any lock, commit to SQLite (the acknowledgement point), then append
to the appendable segment and mark replaced rows dead, both under the collection's write lock, and publish
a new view. Queries read one view each; the optimizer seals, merges and vacuums segments off the write path.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import Conflict, NotFound
from encoders.registry import ModelRegistry
from index.backends.faiss_index import gpu_count
from index.compression.lifecycle import Compression, load_fitted
from index.compression.state import FittedCompression
from index.config import CollectionConfig
from index.ingest.points import PointInputs
from index.ingest.streamed_build import StreamedBuild
from index.models.versions import Serving, load_serving
from index.query.coalescer import Coalescer
from index.query.planner import FilterPlanner
from index.query.runner import QueryRunner
from index.relevance.state import Relevance
from index.requests import Hit, PointInput, Query, WriteAck
from index.segments.engine import SegmentEngine
from index.segments.policy import EngineSettings, Task
from index.segments.sealed import SealedSegment, SegmentFactory
from index.storage.side_indexes import SideIndexes
from index.storage.store import (
    PointRecord,
    Store,
    StoredPoint,
    remove_store_files,
    stacked_vectors,
    validate_point_id,
)
from index.storage.text_index import TextIndexSpec

log = logging.getLogger(__name__)

# Points per sealed segment a build writes (and holds in memory at once); the optimizer merges them later.
BUILD_CHUNK = 50_000
Progress = Callable[[float, int, int], None]


class Collection:
    """The facade over a collection's parts: its store and segments (the write and read paths here), its inputs
    (index/ingest/points.py), compression (index/compression/lifecycle.py), relevance calibrator
    (index/relevance/state.py) and side indexes (index/storage/side_indexes.py)."""

    def __init__(self, root: Path, config: CollectionConfig, registry: ModelRegistry, engine: EngineSettings | None = None):
        self.root = root
        self.config = config
        self.registry = registry
        self._serving = load_serving(root, config, registry)
        self.inputs = self.make_inputs()
        self.store = Store(root / config.store_file, self.index_dim)
        self.filters = FilterPlanner(self.store)
        self.compression = Compression(self, load_fitted(root, config))
        self.write_lock = threading.Lock()
        self.engine_settings = engine or EngineSettings()
        self.engine = SegmentEngine(self._segments_dir(config), self.segment_factory(config, self.compression.fitted), self.engine_settings, self.write_lock)
        self.relevance = self.make_relevance()
        self.indexes = SideIndexes(self)
        self.queries = self.make_queries()
        self._coalescer: Coalescer[Query, list[Hit]] = Coalescer(self.query_batch)
        self.loaded = False

    def make_inputs(self) -> PointInputs:
        return PointInputs(self)

    def make_relevance(self) -> Relevance:
        return Relevance(self)

    def make_queries(self) -> QueryRunner:
        return QueryRunner(self)

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
        with self.write_lock:
            replayed = self.engine.open(self.store.live_rows(), self.store.vectors_of_rows)
        for legacy in (*self.root.glob("index*"), *self.root.glob("compression/g*/snapshots")):
            shutil.rmtree(legacy, ignore_errors=True)  # whole-index snapshots of the engine before segments
        self.loaded = True
        log.info("%s: loaded %d sealed segments, replayed %d rows", self.config.name, len(self.engine.info()) - 1, replayed)

    def segment_factory(self, config: CollectionConfig, fitted: FittedCompression | None) -> SegmentFactory:
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
        with self.write_lock:
            config.save(self.root / "collection.json")
            self.config, self._serving = config, serving
            self.engine.factory = self.segment_factory(config, self.compression.fitted)
            self.relevance.reload()

    def reproject(
        self, config: CollectionConfig, mapping: Callable[[np.ndarray], np.ndarray], progress: Callable[[float, int, int], None],
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        """Map every stored vector into a new index space (``config.dim``) by one pass, with no model inference.

        The mapped vectors go to a new store file and new segments while queries keep using the current
        ones; writes wait. collection.json naming the new store file is the commit point: a crash before it
        leaves the old store and config in force, a crash after it the new ones. ``before_commit`` runs once
        all is built and may raise to leave everything as it was (shards commit together, index/shards/).
        """
        self.check_reprojectable()
        serving = load_serving(self.root, config, self.registry)
        with self.write_lock:
            target = self.root / config.store_file
            remove_store_files(target)  # a leftover of an interrupted attempt
            self.store.copy_to(target)
            store = Store(target, config.dim)
            engine = SegmentEngine(self._segments_dir(config), self.segment_factory(config, None), self.engine_settings, self.write_lock)
            try:
                store.map_vectors(lambda v: self.inputs.normalise(mapping(v)), progress)
                engine.remove_files()  # a leftover of an interrupted attempt
                engine.open(store.live_rows(), store.vectors_of_rows)
                if before_commit is not None:
                    before_commit()
            except BaseException:
                store.close()
                store.remove_files()
                raise
            old_store, old_engine = self.store, self.engine
            config.save(self.root / "collection.json")
            self.config, self.store, self.engine, self._serving = config, store, engine, serving
            self.filters = FilterPlanner(store)
            self.relevance.reload()
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
        return self.write(self.inputs.prepare(points, serving), serving)

    def write(self, records: Sequence[PointRecord], serving: Serving, expected_rows: Sequence[int] | None = None) -> WriteAck:
        """Commit prepared records as ``serving``'s version, then index them. With ``expected_rows`` a point
        is written only if it still holds the row it was read from (Store.upsert); ``count`` says how many were."""
        with self.write_lock:
            self._check_space(serving)
            result = self.store.upsert(records, serving.version, expected_rows)
            if not len(result.rows):
                return WriteAck(operation_id=result.seq, count=0)
            self.engine.apply(result.rows, stacked_vectors([r for r in records if r.id not in result.skipped]), result.replaced)
        return WriteAck(operation_id=result.seq, count=len(result.rows))

    def begin_build(self, capacity: int, serving: Serving) -> StreamedBuild:
        """A build of at most ``capacity`` points, streamed chunk by chunk into sealed segments (index/ingest/streamed_build.py)."""
        return StreamedBuild(self, capacity, serving)

    def commit_build(self, build_id: str, segments: Sequence[SealedSegment], serving: Serving) -> WriteAck:
        """Make a streamed build's staged points live and serve its segments, in one step for queries."""
        with self.write_lock:
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
        with self.write_lock:
            result = self.store.delete(point_ids)
            self.engine.apply(np.zeros(0, np.int64), np.zeros((0, self.index_dim), np.float32), result.rows)
        return WriteAck(operation_id=result.seq, count=len(result.rows))

    @property
    def serving(self) -> Serving:
        """The model version serving now; capture it once per request so a promotion cannot split one."""
        return self._serving

    def _check_space(self, serving: Serving) -> None:
        """Under the write lock: vectors mapped for a space a reprojection has since replaced must not be written."""
        if serving.space != self._serving.space:
            raise Conflict("the collection was reprojected while this write was prepared; send it again", code="index_space_changed")

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
        """A batch of queries answered together, in this thread (index/query/runner.py)."""
        return self.queries.batch(queries)

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
            "compression": self.compression.info(),
            "points": self.count(),
            "memory_bytes": view.memory_bytes(),
            "stages": self.compression.stages(),
            "operation_id": self.store.last_seq,
            "dead_rows": view.dead,
            "segments": self.engine.info(),
            "relevance": self.relevance.info(),
            "text_index": self.indexes.text_info(),
            "payload_indexes": self.indexes.payload_info(),
            "created_at": cfg.created_at,
        }

