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
# A native rebuild re-embeds the copied store this many points per call of the encoding path (as a backfill's window).
REBUILD_WINDOW = 4096
# Catch-up passes outside the write lock at most; the last, under it, should carry at most about CATCH_UP_LOCKED points.
CATCH_UP_PASSES = 4
CATCH_UP_LOCKED = 256
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
        self._remove_other_spaces()
        self.loaded = True
        log.info("%s: loaded %d sealed segments, replayed %d rows", self.config.name, len(self.engine.info()) - 1, replayed)

    def _remove_other_spaces(self) -> None:
        """Stores and segments of index spaces collection.json does not name: a reprojection or rebuild interrupted
        before its commit point (its copy), or after it (the space it replaced)."""
        current = self.root / self.config.store_file
        for path in self.root.glob("store*.sqlite"):
            if path != current:
                remove_store_files(path)
        for folder in (*self.root.glob("segments"), *self.root.glob("segments-store*")):
            if folder != self._segments_dir(self.config):
                shutil.rmtree(folder, ignore_errors=True)

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
            store = self._copy_store(config)
            try:
                store.map_vectors(lambda v: self.inputs.normalise(mapping(v)), progress)
                engine = self._open_engine(config, store)
                if before_commit is not None:
                    before_commit()
            except BaseException:
                store.close()
                store.remove_files()
                raise
            replaced = self._adopt_space(config, store, engine, serving)
        self._drop_space(*replaced)

    def rebuild(
        self, config: CollectionConfig, vectors_of: Callable[[list[StoredPoint]], np.ndarray], progress: Progress, before_commit: Callable[[], None]
    ) -> dict[str, int]:
        """Derive every stored vector anew from its point (``vectors_of``: a model's own embedding of its text) into a new
        index space (``config``), while queries and writes go on.

        The store is copied under the write lock (one online backup), then outside it the copy's vectors are replaced
        a window at a time and its segments built. Writes meanwhile go to the serving store; catch-up passes carry
        them over (Store.catch_up), the last one under the write lock, followed by ``before_commit`` (which may raise)
        and collection.json naming the new store: the commit point, as for a reprojection. A failure, a cancel or a
        crash before it leaves the collection as it was (the copy is removed, or replaced by the next attempt).
        Returns how many points the copy took (``copied``) and how many writes meanwhile the catch-up carried over.
        """
        self.check_reprojectable("rebuilt")
        serving = load_serving(self.root, config, self.registry)
        version = config.serving_version
        with self.write_lock:
            store = self._copy_store(config)
        engine: SegmentEngine | None = None
        try:
            store.drop_staged()  # a streamed build in flight commits to the serving store, or fails on the space check
            total, done, after = store.count(), 0, -1
            while points := store.page(after, REBUILD_WINDOW):
                store.set_vectors(np.array([p.row for p in points], np.int64), self.inputs.normalise(vectors_of(points)), version)
                after, done = points[-1].row, done + len(points)
                progress(0.95 * done / max(total, 1), done, total)
            engine = self._open_engine(config, store)
            caught_up = {"added": 0, "removed": 0}

            def catch_up(into: SegmentEngine) -> int:
                added, vectors, removed = store.catch_up(self.store, lambda p: self.inputs.normalise(vectors_of(p)), version)
                into.apply(added, vectors, removed)
                caught_up["added"] += len(added)
                caught_up["removed"] += len(removed)
                return len(added) + len(removed)

            for _ in range(CATCH_UP_PASSES):  # each pass is shorter than the one before while writes are slower than re-embedding
                if catch_up(engine) <= CATCH_UP_LOCKED:
                    break
            with self.write_lock:
                catch_up(engine)
                if (store.text_index, store.payload_indexes) != (self.store.text_index, self.store.payload_indexes):
                    raise Conflict(
                        "a text or payload index was added, dropped or still filling during the rebuild; nothing was changed, run it again",
                        code="side_indexes_changed",
                    )
                before_commit()
                replaced = self._adopt_space(config, store, engine, serving)
        except BaseException:
            store.close()
            store.remove_files()
            if engine is not None:
                engine.close()
                engine.remove_files()
            raise
        self._drop_space(*replaced)  # no progress call after the commit: a cancel there would report a committed rebuild cancelled
        return {"copied": total, **caught_up}

    def _copy_store(self, config: CollectionConfig) -> Store:
        """A consistent copy of the store under ``config.store_file``, opened at ``config.dim`` (the caller holds the write lock)."""
        target = self.root / config.store_file
        remove_store_files(target)  # a leftover of an interrupted attempt
        self.store.copy_to(target)
        return Store(target, config.dim)

    def _open_engine(self, config: CollectionConfig, store: Store) -> SegmentEngine:
        """New segments over ``store``'s rows, for the index space ``config`` names."""
        engine = SegmentEngine(self._segments_dir(config), self.segment_factory(config, None), self.engine_settings, self.write_lock)
        engine.remove_files()  # a leftover of an interrupted attempt
        engine.open(store.live_rows(), store.vectors_of_rows)
        return engine

    def _adopt_space(self, config: CollectionConfig, store: Store, engine: SegmentEngine, serving: Serving) -> tuple[Store, SegmentEngine]:
        """The commit point of a new index space: save collection.json naming it, then serve it (the caller holds the write lock).
        Returns the store and engine it replaced, for ``_drop_space`` once the lock is released."""
        replaced = self.store, self.engine
        config.save(self.root / "collection.json")
        self.config, self.store, self.engine, self._serving = config, store, engine, serving
        self.filters = FilterPlanner(store)
        self.relevance.reload()
        return replaced

    @staticmethod
    def _drop_space(store: Store, engine: SegmentEngine) -> None:
        store.close()
        store.remove_files()
        engine.close()
        engine.remove_files()

    def check_reprojectable(self, action: str = "reprojected") -> None:
        """Refuse moving a compressed collection to a new index space (``action``: reprojected, or rebuilt natively)."""
        if self.config.compression is not None:
            # The fitted compression stages belong to the current space; they would need a refit in the new one.
            raise Conflict(
                f"collection {self.config.name!r} is compressed, and compressed collections cannot be {action} into a new space"
                + ("; use mode 'query_side'" if action == "reprojected" else ""),
                code="reproject_compressed" if action == "reprojected" else "rebuild_compressed",
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

    def lingered_seconds(self) -> float:
        """Seconds the coalescer waited for batches to fill (for /metrics)."""
        return self._coalescer.lingered_seconds()

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
            "models": [{"version": m.version, "name": m.name, "dim": m.dim, "serving": m.version == cfg.serving_version, "retired": m.retired} for m in cfg.models],
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

