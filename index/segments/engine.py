"""The segments of one collection: the write path's index side, the views queries read, and rebuilds.

Writes (under the collection's write lock, after the SQLite commit) append to the appendable segment and
mark replaced or deleted rows dead in whichever segment holds them, then publish a new view: O(batch) work
plus a copy of the touched segments' liveness arrays, never O(collection).

Rebuilds (seal, merge, vacuum, a compression refit) read the live rows of their input segments as of their
start, build new sealed segments off the lock, and swap them in under the lock, carrying over the deletes that
happened meanwhile. ``segments/manifest.json`` lists the sealed segments; writing it is the commit point of a
rebuild (a crash before leaves the old segments, after it the new ones; files no manifest names are removed
at start). Start-up loads the listed segments, derives their bitmaps from the store, and replays into the
appendable segment only the live rows no sealed segment holds.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import Conflict
from index.backends.calibration import MIN_QUERIES
from index.backends.hnsw_graph import pooled_lid
from index.segments.appendable import AppendableSegment
from index.segments.fanout_depth import FanoutDepth, measure_fanout
from index.segments.policy import (
    EngineSettings,
    SegmentStats,
    Task,
    TaskKind,
    next_task,
)
from index.segments.recent_queries import CAPACITY, RecentQueries
from index.segments.sealed import (
    SealedSegment,
    SegmentFactory,
    StaleSegment,
    VectorSource,
)
from index.segments.view import View, positions_in
from index.storage import atomic

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FANOUT = "fanout.json"  # the depth scale measured over the merged answers of the sealed segments it names
RECALIBRATE_EVERY = 64 * CAPACITY  # queries answered between two measurements of a segment's search depth

Progress = Callable[[float, int, int], None]
VectorReader = Callable[[np.ndarray], Iterable[tuple[np.ndarray, np.ndarray]]]  # sorted rows -> (rows, vectors) chunks
Segment = AppendableSegment | SealedSegment


def _no_progress(fraction: float, done: int, total: int) -> None:
    return None


class SegmentEngine:
    def __init__(self, folder: Path, factory: SegmentFactory, settings: EngineSettings, write_lock: threading.Lock):
        self.folder = folder
        self.factory = factory
        self.settings = settings
        self._lock = write_lock  # the collection's: a write's commit and its index update are one step for a swap
        self._rebuild_lock = threading.Lock()  # one rebuild at a time (the optimizer, a compression fit)
        self._next_id = 1
        self.bytes_written = 0  # segment files and manifests this engine wrote since it opened
        self._sealed: list[SealedSegment] = []
        self._frozen: list[AppendableSegment] = []  # full appendable segments waiting for (or in) a seal
        self._appendable = self._new_appendable()
        self._view = View((), factory.metric, factory.dim)
        self._closed = False
        self.recent_queries = RecentQueries(factory.dim)  # the collection's query path feeds it
        self._calibrated_at: dict[str, int] = {}  # segment -> recent_queries.seen when its depth was last measured
        self.fanout: FanoutDepth | None = None

    # ---- views -------------------------------------------------------------------------------

    def view(self) -> View:
        """The current immutable view; take it once per query."""
        return self._view

    def _publish(self) -> None:
        self._apply_fanout()
        segments: list[Segment] = [*self._sealed, *self._frozen, self._appendable]
        self._view = View(tuple(s.part() for s in segments), self.factory.metric, self.factory.dim)

    def _new_id(self, prefix: str) -> str:
        segment_id = f"{prefix}{self._next_id:08d}"
        self._next_id += 1
        return segment_id

    def _new_appendable(self) -> AppendableSegment:
        return AppendableSegment(self._new_id("a"), self.factory.dim, self.factory.metric)

    # ---- writes (the caller holds the write lock) ----------------------------------------------

    def apply(self, added: np.ndarray, vectors: np.ndarray, removed: np.ndarray) -> None:
        """Index committed rows and mark ``removed`` rows dead, then publish one view with both."""
        if len(added):
            self._appendable.append(np.asarray(added, np.int64), np.asarray(vectors, np.float32))
        if len(removed):
            rows = np.unique(np.asarray(removed, np.int64))
            for segment in (*self._sealed, *self._frozen, self._appendable):
                held, at = positions_in(segment.rows, rows)  # no Part per segment on the write path
                if len(at):
                    segment.kill(at)
                    rows = rows[~held]
                    if not len(rows):
                        break
        self._publish()

    # ---- start-up ------------------------------------------------------------------------------

    def open(self, live_rows: np.ndarray, read_vectors: VectorReader) -> int:
        """Load the manifest's segments, derive their bitmaps from the store's live rows, replay the rest; rows replayed.

        The caller holds the write lock (or no one else has the engine yet).
        """
        live_rows = np.sort(np.asarray(live_rows, np.int64))
        manifest = self._read_manifest()
        if (self.folder / FANOUT).exists():  # queries are counted from 0 again, as for each segment's own depth
            self.fanout = replace(FanoutDepth.from_json(atomic.read_json(self.folder / FANOUT)), seen=0)
        self._next_id = max(self._next_id, int(manifest.get("next_id", 1)))
        loaded: list[SealedSegment] = []
        for segment_id in manifest.get("segments", []):
            try:
                loaded.append(self.factory.load(self.folder / segment_id))
            except StaleSegment as exc:  # its rows are replayed from the store and sealed again
                log.warning("%s: segment %s not loaded (%s)", self.folder.parent.name, segment_id, exc)
        names = {s.id for s in loaded}
        for leftover in self.folder.iterdir() if self.folder.is_dir() else []:
            if leftover.is_dir() and leftover.name not in names:
                shutil.rmtree(leftover, ignore_errors=True)
        for segment in loaded:
            held, _ = positions_in(live_rows, segment.rows)
            segment.set_live(held)
        covered = np.concatenate([s.rows for s in loaded] or [np.zeros(0, np.int64)])
        missing = np.setdiff1d(live_rows, covered, assume_unique=True)
        self._sealed = loaded
        self._appendable = self._new_appendable()
        for rows, vectors in read_vectors(missing):
            self._appendable.append(rows, vectors)
        if len(loaded) != len(manifest.get("segments", [])):
            self._write_manifest()
        self._publish()
        return len(missing)

    # ---- the optimizer -------------------------------------------------------------------------

    def next_task(self) -> Task | None:
        """A seal, vacuum or merge (policy.py); else an HNSW segment whose search depth is due to be measured on
        recent queries (never measured on queries yet, or RECALIBRATE_EVERY queries ago); else the depth scale of
        the merged answer (``calibrate`` naming no segment, index/segments/fanout_depth.py), when due."""
        stats = [SegmentStats(s.id, s.size, s.dead) for s in self._sealed]
        task = next_task(self._appendable.size, sum(f.size for f in self._frozen), stats, self.settings)
        if task is not None:
            return task
        if self.recent_queries.count < MIN_QUERIES:
            return None
        seen = self.recent_queries.seen
        for segment in self._sealed:
            graph = segment.graph
            if segment.calibrates and graph is not None and (not graph.on_queries or seen - self._calibrated_at.get(segment.id, 0) >= RECALIBRATE_EVERY):
                return Task("calibrate", (segment.id,), segment.size)
        if self._fanout_due():
            return Task("calibrate", (), sum(s.size for s in self._calibrating()))
        return None

    def _calibrating(self) -> list[SealedSegment]:
        return [s for s in self._sealed if s.calibrates]

    def _fanout_due(self) -> bool:
        """Measured once enough queries arrived, again for another set of calibrated segments, and again every
        RECALIBRATE_EVERY queries (after each segment's own re-measure, which next_task puts first)."""
        segments = self._calibrating()
        if not segments or self.recent_queries.count < MIN_QUERIES:
            return False
        fanout = self.fanout
        return fanout is None or fanout.segments != tuple(sorted(s.id for s in segments)) or self.recent_queries.seen - fanout.seen >= RECALIBRATE_EVERY

    def _apply_fanout(self) -> None:
        """Every calibrated segment searches at the measured scale if it was measured over them all, else at 1."""
        segments = self._calibrating()
        fanout = self.fanout
        scale = fanout.scale if fanout is not None and fanout.segments == tuple(sorted(s.id for s in segments)) else 1.0
        for segment in segments:
            if segment.depth_scale != scale:
                segment.set_depth_scale(scale)

    def calibrate(self, segment_id: str | None) -> None:
        """Re-measure one segment's search depth on the recent queries (a merge may have removed it: then nothing),
        or (``None``) the depth scale of the merged answer, persisted beside the manifest."""
        with self._rebuild_lock:
            seen, queries = self.recent_queries.seen, self.recent_queries.sample()
            if segment_id is None:
                segments = self._calibrating()
                if not segments or len(queries) < MIN_QUERIES:
                    return
                try:
                    fanout = measure_fanout(self._view, segments, queries, seen, self.factory.index.target_recall)
                    atomic.write_json(self.folder / FANOUT, fanout.to_json())
                    self.fanout = fanout
                finally:
                    with self._lock:  # the trial scales give way to the measured one (or the last one, on a failure)
                        self._publish()
                return
            segment = next((s for s in self._sealed if s.id == segment_id), None)
            if segment is not None and segment.calibrates:
                segment.recalibrate(queries)
                self._calibrated_at[segment.id] = seen
                self.fanout = None  # measured over the old depth: due again, next
                (self.folder / FANOUT).unlink(missing_ok=True)

    def run(self, task: Task, progress: Progress = _no_progress) -> list[SealedSegment]:
        """One optimizer task; the segments it wrote (none for a calibration)."""
        if task.kind == "calibrate":
            self.calibrate(task.segments[0] if task.segments else None)
            return []
        return self.rebuild(task.kind, task.segments, progress)

    def optimize(self, progress: Progress = _no_progress, seal: bool = False) -> int:
        """Run rebuilds until the policy asks for none (library use and tests; the service runs them as jobs).

        ``seal`` first seals the appendable segment whatever its size (everything indexed, as a benchmark wants).
        """
        done = 0
        if seal and self._appendable.size:
            self.rebuild("seal", (), progress)
            done += 1
        while (task := self.next_task()) is not None:
            self.run(task, progress)
            done += 1
        return done

    def rebuild(
        self,
        kind: TaskKind | str,
        segment_ids: Sequence[str] = (),
        progress: Progress = _no_progress,
        factory: SegmentFactory | None = None,
        verify: Callable[[list[SealedSegment]], None] | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> list[SealedSegment]:
        """Rewrite segments as sealed ones of their live rows; returns the new segments.

        ``kind`` "seal" takes the appendable segment (and any left frozen), "merge" and "vacuum" the named
        sealed segments, "all" every segment (a new ``factory``: a compression refit). ``verify`` sees the
        built segments before the swap and may raise; ``on_commit`` runs under the write lock just before it.
        A failure or cancel (``progress`` raising) leaves every segment as it was.
        """
        factory = factory or self.factory
        with self._rebuild_lock:
            with self._lock:
                self._check_open()
                if kind in ("seal", "all") and self._appendable.size:
                    self._frozen.append(self._appendable)
                    self._appendable = self._new_appendable()
                    self._publish()
                inputs: list[Segment]
                if kind == "seal":
                    inputs = list(self._frozen)
                elif kind == "all":
                    inputs = [*self._sealed, *self._frozen]
                else:
                    inputs = [s for s in self._sealed if s.id in segment_ids]
                used = [np.flatnonzero(s.part().live) for s in inputs]
            rows = np.concatenate([s.rows[u] for s, u in zip(inputs, used, strict=True)] or [np.zeros(0, np.int64)])
            order = np.argsort(rows, kind="stable")
            total = len(rows)
            built: list[SealedSegment] = []
            try:
                for start in range(0, total, self.settings.max_segment_points):
                    chunk = order[start : start + self.settings.max_segment_points]
                    vectors = VectorSource(len(chunk), lambda lo, hi, chunk=chunk: self._gather(inputs, used, chunk[lo:hi]))
                    with self._lock:  # ids come from one counter, which streamed builds draw on too
                        segment_id = self._new_id("s")
                    built.append(
                        factory.build(
                            self.folder,
                            segment_id,
                            rows[chunk],
                            vectors,
                            lambda n, s=start: progress((s + n) / max(total, 1), s + n, total),
                            str(kind),
                            self.recent_queries.sample(),
                        )
                    )
                    self._note_built(built[-1])
                if verify is not None:
                    verify(built)
                with self._lock:
                    self._check_open()
                    live = np.concatenate([s.part().live[u] for s, u in zip(inputs, used, strict=True)] or [np.zeros(0, bool)])
                    for start, segment in zip(range(0, total, self.settings.max_segment_points), built, strict=True):
                        segment.set_live(live[order[start : start + self.settings.max_segment_points]])
                    if on_commit is not None:
                        on_commit()
                    gone = {id(s) for s in inputs}
                    sealed = [s for s in self._sealed if id(s) not in gone] + built
                    self._write_manifest([s.id for s in sealed])
                    self._sealed = sealed
                    self._frozen = [f for f in self._frozen if id(f) not in gone]
                    self.factory = factory
                    self._publish()
            except BaseException as exc:
                for segment in built:
                    segment.retire()
                if self._closed and not isinstance(exc, Conflict):  # its files went with the collection
                    self._check_open()
                raise
        for segment in inputs:
            if isinstance(segment, SealedSegment):
                segment.retire()
        return built  # no progress report after the swap: a job's report is its cancel checkpoint, and this is committed

    # ---- streamed builds: segments for rows not yet committed ------------------------------------

    def build_segment(self, rows: np.ndarray, vectors: np.ndarray, progress: Progress = _no_progress) -> SealedSegment:
        """A sealed segment of rows reserved for a build, off the lock; no view or manifest names it until
        ``publish_built``. Discarded unless published (its files go when the object does)."""
        with self._lock:
            self._check_open()
            segment_id = self._new_id("s")
            factory = self.factory
        order = np.argsort(rows, kind="stable")
        total = len(rows)
        segment = factory.build(
            self.folder, segment_id, rows[order], VectorSource.of(vectors[order]), lambda n: progress(n / max(total, 1), n, total), "build", self.recent_queries.sample()
        )
        self._note_built(segment)
        return segment

    def _note_built(self, segment: SealedSegment) -> None:
        """A new segment: its depth was measured on the recent queries of now; count the bytes it wrote."""
        self._calibrated_at[segment.id] = self.recent_queries.seen
        self.bytes_written += sum(f.stat().st_size for f in segment.folder.iterdir())

    def check_built(self, built: Sequence[SealedSegment]) -> None:
        """Under the write lock, before the build's SQLite commit: the segments still fit the collection."""
        self._check_open()
        signature = self.factory.signature()
        if any({k: s.meta.get(k) for k in signature} != signature for s in built):
            raise Conflict("the collection's index or compression changed during the build (a fit swapped it); nothing was written, run the build again", code="index_changed")

    def publish_built(self, built: Sequence[SealedSegment], removed: np.ndarray) -> None:
        """Under the write lock, right after the SQLite commit that made the built rows live (and ``check_built``):
        serve the built segments and mark ``removed`` rows (the points the build replaced) dead."""
        self._sealed = [*self._sealed, *built]
        self._write_manifest()
        self.apply(np.zeros(0, np.int64), np.zeros((0, self.factory.dim), np.float32), removed)

    def _gather(self, inputs: Sequence[Segment], used: Sequence[np.ndarray], picked: np.ndarray) -> np.ndarray:
        """Vectors of positions ``picked`` of the inputs' live rows concatenated (in that order)."""
        bounds = np.cumsum([0, *(len(u) for u in used)])
        out = np.empty((len(picked), self.factory.dim), np.float32)
        owner = np.searchsorted(bounds, picked, side="right") - 1
        for i, segment in enumerate(inputs):
            mine = np.flatnonzero(owner == i)
            if len(mine):
                out[mine] = segment.part().searcher.vectors(used[i][picked[mine] - bounds[i]])
        return out

    # ---- manifest ------------------------------------------------------------------------------

    def _read_manifest(self) -> dict[str, Any]:
        path = self.folder / MANIFEST
        return atomic.read_json(path) if path.exists() else {}

    def _write_manifest(self, segment_ids: Sequence[str] | None = None) -> None:
        ids = [s.id for s in self._sealed] if segment_ids is None else list(segment_ids)
        atomic.write_json(self.folder / MANIFEST, {"segments": ids, "next_id": self._next_id, "signature": self.factory.signature()})
        self.bytes_written += (self.folder / MANIFEST).stat().st_size

    def _check_open(self) -> None:
        if self._closed:
            raise Conflict("the collection was closed or dropped while this rebuild ran; nothing was changed", code="collection_closed")

    def close(self) -> None:
        """Drop the view; the files stay (a restart loads them). A rebuild still running fails at its swap."""
        with self._lock:
            self._closed = True
            self._sealed, self._frozen = [], []
            self._view = View((), self.factory.metric, self.factory.dim)

    def remove_files(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def lid(self) -> dict[str, float] | None:
        """The estimated LID of the points in HNSW segments (None without any): see index/backends/hnsw_graph.py."""
        return pooled_lid([(s.graph, s.size - s.dead) for s in self._sealed if s.graph is not None])

    def info(self) -> list[dict[str, Any]]:
        out = [s.info() for s in self._sealed]
        for state, segment in [*(("sealing", f) for f in self._frozen), ("appendable", self._appendable)]:
            part = segment.part()
            out.append({"id": segment.id, "state": state, "index": "exact", "points": part.size - part.dead, "dead": part.dead, "memory_bytes": part.memory_bytes()})
        return out
