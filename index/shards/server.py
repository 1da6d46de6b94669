"""One shard: a segment-engine collection in its own folder, with the calls a ShardedCollection makes of it.

The same class runs in the service's process (in-process shards) and as the body of a Ray actor (cluster
mode), so every call below is what both modes execute. Opening is idempotent: an actor that Ray restarts
after a crash finds its folder, loads the sealed segments and replays the rest of its store, so every
write it acknowledged (committed to SQLite) is there again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import Cancelled, Conflict, NotReady
from encoders.registry import ModelRegistry
from encoders.transforms.base import Pipeline
from encoders.transforms.lvq import Int8Quantizer
from index.collection import Collection
from index.compression.spec import CompressionSpec
from index.config import CollectionConfig
from index.ingest.streamed_build import StreamedBuild
from index.models.versions import load_serving
from index.multivector import MultiVectorCollection, Shortlist
from index.requests import Hit, PointInput, Query, WriteAck
from index.segments.policy import EngineSettings
from index.storage import atomic
from index.storage.store import PointRecord, StoredPoint

log = logging.getLogger(__name__)

# A staged change gives up (and changes nothing) if the collection has not decided by then.
SWAP_WAIT_S = 900.0


class StagedChange:
    """Collection-wide work on this shard (a compression install, a reprojection) running on its own thread up to
    its commit point, where it waits for the collection's decision: every shard commits, or none."""

    def __init__(self, work: Callable[[Callable[[], None]], Any]):
        self._built, self._decided = threading.Event(), threading.Event()
        self._commit = False
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name="trove-shard-change", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[Callable[[], None]], Any]) -> None:
        try:
            self._result = work(self._before_commit)
        except BaseException as err:  # handed to whoever waits: wait_built, or finish
            self._error = err
        finally:
            self._built.set()

    def _before_commit(self) -> None:
        self._built.set()
        if not self._decided.wait(SWAP_WAIT_S) or not self._commit:
            raise Cancelled("the collection did not commit this change on its shards", code="change_dropped")

    def wait_built(self) -> None:
        self._built.wait()
        if self._error is not None:
            raise self._error

    def finish(self, commit: bool) -> Any:
        self._commit = commit
        self._decided.set()
        self._thread.join()
        if not commit:
            return None
        if self._error is not None:
            raise self._error
        return self._result


class ShardServer:
    def __init__(
        self, folder: str, config: dict[str, Any], engine: EngineSettings, optimizer_interval_s: float,
        registry: ModelRegistry | None = None, models_dir: str | None = None,
    ):
        from index.catalog import (
            collection_class,  # the catalog opens sharded collections, which open these
        )

        registry = registry or ModelRegistry(Path(models_dir) if models_dir else None, confined=True)
        root = Path(folder)
        self.collection: Collection
        if (root / "collection.json").exists():  # a restart, or a service opening its collections
            loaded = CollectionConfig.load(root / "collection.json")
            self.collection = collection_class(loaded)(root, loaded, registry, engine)
            self.collection.load()
        else:
            root.parent.mkdir(parents=True, exist_ok=True)
            created = CollectionConfig.from_json(config)
            # A multi-vector shard draws its FDE matrices from the spec's seed: every shard draws the same ones.
            self.collection = collection_class(created).create(root, created, registry, engine)
        self._staged: dict[str, tuple[list[PointRecord], int]] = {}
        self._builds: dict[str, StreamedBuild] = {}
        self._changes: dict[str, StagedChange] = {}
        self._staged_lock = threading.Lock()
        self._stop = threading.Event()
        # Each shard seals, merges and vacuums its own segments, where its data lives.
        self._optimizer = threading.Thread(target=self._optimize, args=(optimizer_interval_s,), name="trove-shard-optimizer", daemon=True)
        self._optimizer.start()

    def _optimize(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                task = self.collection.optimizer_task()
                if task is not None:
                    self.collection.run_optimizer_task(task, lambda *_: None)
            except Exception:  # the store holds every write regardless; the next tick tries again
                log.exception("shard %s: optimizer task failed", self.collection.root)

    # ---- writes: validate and embed everywhere first, then commit everywhere ----

    def prepare(self, points: Sequence[PointInput]) -> str:
        """Validate and embed ``points``; hold the records under a token for ``commit``. Raises before holding anything."""
        serving = self.collection.serving
        records = self.collection.inputs.prepare(points, serving)
        token = uuid.uuid4().hex
        with self._staged_lock:
            self._staged[token] = (records, serving.version)
        return token

    def commit(self, token: str) -> WriteAck:
        """Write what ``prepare`` held; acknowledged once this shard's SQLite transaction committed."""
        with self._staged_lock:
            staged = self._staged.pop(token, None)
        if staged is None:
            raise NotReady("this shard restarted between the two steps of the write; it committed nothing of it", code="write_lost")
        records, version = staged
        serving = self.collection.serving
        if serving.version != version:
            raise Conflict("the serving model changed while this write was prepared; send it again", code="serving_changed")
        return self.collection.write(records, serving)

    def discard(self, token: str) -> None:
        with self._staged_lock:
            self._staged.pop(token, None)

    def delete(self, ids: Sequence[Any]) -> WriteAck:
        return self.collection.delete(ids)

    # ---- reads ----

    def get(self, point_id: Any, with_vector: bool) -> StoredPoint:
        return self.collection.get(point_id, with_vector)

    def scroll(self, offset: int | None, limit: int, with_vector: bool) -> tuple[list[StoredPoint], int | None]:
        return self.collection.scroll(offset, limit, with_vector)

    def query_batch(self, queries: Sequence[Query]) -> list[list[Hit]]:
        return self.collection.query_batch(queries)

    def token_shortlists(self, queries: Sequence[Query], fdes: np.ndarray) -> list[Shortlist | None]:
        """Multi-vector: each query's FDE candidates on this shard (rows of its store, best first; None for ``exact``)."""
        return self._tokens().queries._shortlists(queries, fdes)

    def token_answers(self, queries: Sequence[Query], sets: Sequence[np.ndarray], shortlists: Sequence[Shortlist | None]) -> list[list[Hit]]:
        """Multi-vector: each query's hits from its part of the merged shortlist, by exact Chamfer (or FDE order
        with ``fde_only``); with no shortlist (``exact``), from every allowed point of this shard."""
        queries_of = self._tokens().queries
        return [queries_of._answer(q, tokens, found) for q, tokens, found in zip(queries, sets, shortlists, strict=True)]

    def _tokens(self) -> MultiVectorCollection:
        assert isinstance(self.collection, MultiVectorCollection), "token queries go to multi-vector shards"
        return self.collection

    def query_vectors(self, queries: Sequence[Query]) -> Any:
        return self.collection.inputs.query_vectors(queries)

    def count(self) -> int:
        return self.collection.count()

    def optimize(self, seal: bool) -> int:
        return self.collection.optimize(seal=seal)

    # ---- the store, read across shards by collection-wide jobs (index/shards/stores.py) ----

    def rows_where(self, sql: str, params: list[Any]) -> np.ndarray:
        return self.collection.store.rows_where(sql, params)

    def by_rows(self, rows: Sequence[int], with_vector: bool) -> dict[int, StoredPoint]:
        return self.collection.store.by_rows(rows, with_vector)

    def stored(self, point_id: Any, with_vector: bool) -> StoredPoint | None:
        return self.collection.store.get(point_id, with_vector)

    # ---- model versions: maps installed and checked everywhere first, then one switch per shard ----

    def prepare_switch(self, config: dict[str, Any], files: dict[str, bytes]) -> None:
        """Write the compatibility maps ``config`` names (paths relative to the shard's folder) and load its serving model."""
        for relative, data in files.items():
            path = self.collection.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(path, data)
        load_serving(self.collection.root, CollectionConfig.from_json(config), self.collection.registry)

    def switch(self, config: dict[str, Any]) -> None:
        self.collection.switch_config(CollectionConfig.from_json(config))

    # ---- builds: the driver reads, checks and embeds; each shard stages and indexes its rows, then commits ----

    def begin_build(self, capacity: int) -> str:
        build = self.collection.begin_build(capacity, self.collection.serving)
        with self._staged_lock:
            self._builds[build.id] = build
        return build.id

    def build_add(self, token: str, records: Sequence[PointRecord]) -> int:
        self._builds[token].add(records)
        return len(records)

    def build_commit(self, token: str) -> WriteAck:
        with self._staged_lock:
            build = self._builds.pop(token)
        return build.commit()

    def build_abort(self, token: str) -> None:
        with self._staged_lock:
            build = self._builds.pop(token, None)
        if build is not None:
            build.abort()

    # ---- compression: the collection-wide fit samples every shard, then installs one pipeline on each ----

    def compression_sample(self, size: int, seed: int) -> np.ndarray:
        view = self.collection.engine.view()
        live = view.live_rows()
        rows = np.sort(np.random.default_rng(seed).choice(live, min(len(live), size), replace=False))
        vectors: np.ndarray = view.vectors(rows)[1]
        return vectors

    def stage_compression(
        self, spec: CompressionSpec, pipeline: Pipeline, rerank: Int8Quantizer | None, queries: np.ndarray | None,
        held_queries: tuple[np.ndarray | None, str], used: dict[str, Any],
    ) -> str:
        """Index this shard with the collection's fitted pipeline and measure it, up to the swap; then wait for ``finish``."""
        rng = np.random.default_rng(used["seed"])  # the held rows it draws are this shard's own
        compression = self.collection.compression
        return self._stage(lambda before: compression.install(spec, pipeline, rerank, queries, held_queries, used, lambda *_: None, time.perf_counter(), rng, before))

    def check_reprojectable(self) -> None:
        self.collection.check_reprojectable()

    def stage_reproject(self, config: dict[str, Any], files: dict[str, bytes], mapping: Callable[[np.ndarray], np.ndarray]) -> str:
        """Install the maps ``config`` names, map this shard's stored vectors into a new store and segments, up to
        the commit (writes to this shard wait meanwhile, as on one collection); then wait for ``finish``."""
        self.prepare_switch(config, files)
        target = CollectionConfig.from_json(config)
        return self._stage(lambda before: self.collection.reproject(target, mapping, lambda *_: None, before))

    def _stage(self, work: Callable[[Callable[[], None]], Any]) -> str:
        """Run ``work`` up to its commit point; its token, or its error (nothing changed)."""
        staged = StagedChange(work)
        staged.wait_built()
        token = uuid.uuid4().hex
        with self._staged_lock:
            self._changes[token] = staged
        return token

    def finish(self, token: str, commit: bool) -> Any:
        """Commit the staged change (its result), or drop it (None): every shard commits, or none does."""
        with self._staged_lock:
            staged = self._changes.pop(token, None)
        if staged is None:
            raise NotReady("this shard restarted while a change was staged on it; it serves what it had", code="change_lost")
        return staged.finish(commit)

    def info(self) -> dict[str, Any]:
        return self.collection.info() | {"node": socket.gethostname(), "pid": os.getpid()}

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self._stop.set()
        self._optimizer.join()
        self.collection.close()
