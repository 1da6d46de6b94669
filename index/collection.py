"""A collection ties an encoder, the SQLite store and a FAISS index together.

Write path: validate and embed outside any lock, commit to SQLite (the
acknowledgement point), then append to FAISS and flip liveness, all under the
collection's write lock so FAISS always holds a prefix of the committed rows.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoders.base import Encoder, l2_normalize
from encoders.errors import InvalidInput, NotFound
from encoders.registry import ModelRegistry
from index import snapshots
from index.config import CollectionConfig
from index.faiss_backend import FaissMetric, VectorIndex, exact_search, write_index
from index.filters import Filter
from index.store import PointId, PointRecord, Store, StoredPoint, validate_point_id

log = logging.getLogger(__name__)

# Filters matching at most this many points are answered by brute force over
# exactly those points: always k results, and cheaper than walking a graph.
BRUTE_FORCE_LIMIT = 4096
# Rows appended to FAISS between progress reports (and cancellation checks) in bulk writes.
BULK_CHUNK = 10_000


@dataclass(frozen=True)
class PointInput:
    id: Any
    text: str | None = None
    vector: Sequence[float] | None = None
    payload: dict[str, Any] | None = None


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


@dataclass(frozen=True)
class Hit:
    id: PointId
    score: float
    payload: dict[str, Any] | None = None
    vector: list[float] | None = None


@dataclass(frozen=True)
class WriteAck:
    operation_id: int
    count: int


@dataclass
class _Liveness:
    """Which rows are live. Replaced wholesale on every write so readers never see half an update."""

    mask: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    dead: int = 0  # rows < len(mask) that are not live


class Collection:
    def __init__(self, root: Path, config: CollectionConfig, registry: ModelRegistry):
        self.root = root
        self.config = config
        model = config.serving_model.name
        self.encoder: Encoder | None = registry.get(model) if model else None
        self.store = Store(root / "store.sqlite", config.dim)
        self._index = VectorIndex(config.dim, self._faiss_metric, config.index)
        self._live = _Liveness()
        self._write_lock = threading.Lock()
        self._snapshot_seq = 0
        self.loaded = False

    # ---- lifecycle -------------------------------------------------------

    @classmethod
    def create(cls, root: Path, config: CollectionConfig, registry: ModelRegistry) -> Collection:
        root.mkdir(parents=True)
        try:
            config.save(root / "collection.json")
            collection = cls(root, config, registry)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        collection.loaded = True
        return collection

    @classmethod
    def open(cls, root: Path, registry: ModelRegistry) -> Collection:
        return cls(root, CollectionConfig.load(root / "collection.json"), registry)

    def load(self) -> None:
        """Newest readable snapshot, then replay the rows committed after it."""
        for seq, path in snapshots.snapshots(self.root / "index"):
            try:
                index = VectorIndex.load(path, self._faiss_metric, self.config.index)
            except RuntimeError as exc:  # unreadable file: fall back to an older one
                log.warning("%s: snapshot %s unreadable (%s), trying an older one", self.config.name, path, exc)
                continue
            if index.dim == self.config.dim and index.ntotal <= self.store.next_row():
                self._index, self._snapshot_seq = index, seq
                break
        replayed = self._catch_up()
        self._set_liveness(self.store.live_rows())
        self.loaded = True
        log.info("%s: loaded snapshot %d, replayed %d rows", self.config.name, self._snapshot_seq, replayed)

    def _catch_up(self, index: VectorIndex | None = None) -> int:
        """Append every committed row ``index`` lacks; rows deleted since hold zeros and are never live."""
        index = index or self._index
        start = index.ntotal
        for rows, vectors in self.store.vectors_after_row(start):
            gap = int(rows[0]) - index.ntotal
            if gap:
                index.add(index.ntotal, np.zeros((gap, self.config.dim), np.float32))
            dense = np.zeros((int(rows[-1]) - int(rows[0]) + 1, self.config.dim), np.float32)
            dense[rows - rows[0]] = vectors
            index.add(int(rows[0]), dense)
        tail = self.store.next_row() - index.ntotal
        if tail > 0:
            index.add(index.ntotal, np.zeros((tail, self.config.dim), np.float32))
        return index.ntotal - start

    def snapshot(self) -> Path | None:
        """Persist FAISS if anything changed since the last snapshot. Writes block only while copying."""
        with self._write_lock:
            seq = self.store.last_seq
            if seq == self._snapshot_seq:
                return None
            copy = self._index.cpu_copy()
        folder = self.root / "index"
        tmp = snapshots.temp_path(folder, seq)
        write_index(copy, tmp)
        path = snapshots.commit_snapshot(folder, seq, tmp)
        self._snapshot_seq = seq
        return path

    @property
    def ops_since_snapshot(self) -> int:
        return self.store.last_seq - self._snapshot_seq

    def close(self) -> None:
        self.store.close()

    # ---- writes ----------------------------------------------------------

    def upsert(self, points: Sequence[PointInput]) -> WriteAck:
        records = self.prepare(points)
        with self._write_lock:
            result = self.store.upsert(records, self.config.serving_version)
            if self._index.ntotal == int(result.rows[0]):
                self._index.add(int(result.rows[0]), np.stack([r.vector for r in records]))
            else:  # an earlier append failed after its commit: repair from the store
                self._catch_up()
            self._update_liveness(added=result.rows, removed=result.replaced)
        return WriteAck(operation_id=result.seq, count=len(records))

    def bulk_upsert(self, records: Sequence[PointRecord], on_indexed: Callable[[int], None] = lambda n: None) -> WriteAck:
        """Index a large batch into a copy of FAISS while queries keep using the current one, then commit and swap.

        ``on_indexed(n)`` reports progress and may raise (e.g. Cancelled): until the
        store commit at the end nothing is changed. Other writes wait for the swap.
        """
        with self._write_lock:
            candidate = VectorIndex(self.config.dim, self._faiss_metric, self.config.index, cpu_index=self._index.cpu_copy())
            self._catch_up(candidate)
            first_row = candidate.ntotal
            for start in range(0, len(records), BULK_CHUNK):
                chunk = records[start : start + BULK_CHUNK]
                candidate.add(first_row + start, np.stack([r.vector for r in chunk]))
                on_indexed(start + len(chunk))
            result = self.store.upsert(records, self.config.serving_version)
            assert int(result.rows[0]) == first_row, "rows are allocated only under the write lock"
            self._index = candidate
            self._update_liveness(added=result.rows, removed=result.replaced)
        return WriteAck(operation_id=result.seq, count=len(records))

    def delete(self, ids: Sequence[Any]) -> WriteAck:
        point_ids = [validate_point_id(i) for i in ids]
        with self._write_lock:
            result = self.store.delete(point_ids)
            self._update_liveness(added=np.zeros(0, np.int64), removed=result.rows)
        return WriteAck(operation_id=result.seq, count=len(result.rows))

    def check_point(self, point: PointInput, where: dict[str, Any]) -> np.ndarray | None:
        """Validate one point: its final vector, or None when its text still needs embedding."""
        validate_point_id(point.id)
        if point.text is not None and not point.text.strip():
            raise InvalidInput("text must not be empty", code="empty_text", details=where)
        if point.vector is not None:
            return self._check_vector(point.vector, where)
        if point.text is not None:
            self.require_encoder("points", where)
            return None
        raise InvalidInput("a point needs 'text' or 'vector'", code="missing_content", details=where)

    def prepare(self, points: Sequence[PointInput]) -> list[PointRecord]:
        """Validate every point, then embed the texts in one batch. Any error rejects the whole batch."""
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
            embedded = self.require_encoder("points", {}).encode_docs([str(points[i].text) for i in to_embed])
            for i, vector in zip(to_embed, embedded, strict=True):
                vectors[i] = self.normalise(vector)
        return [PointRecord(id=p.id, vector=v, text=p.text, payload=p.payload) for p, v in zip(points, vectors, strict=True) if v is not None]

    def require_encoder(self, what: str, where: dict[str, Any]) -> Encoder:
        if self.encoder is None:
            raise InvalidInput(
                f"collection {self.config.name!r} has no model, so {what} need a 'vector'",
                code="text_not_supported",
                details=where,
            )
        return self.encoder

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

    def _update_liveness(self, added: np.ndarray, removed: np.ndarray) -> None:
        mask = self._live.mask
        needed = int(added.max()) + 1 if len(added) else 0
        # Grow geometrically so appends stay amortised O(1) per row.
        new = np.zeros(len(mask) if needed <= len(mask) else max(needed, 2 * len(mask)), dtype=bool)
        new[: len(mask)] = mask
        new[added] = True
        new[removed] = False
        self._set_mask(new)

    def _set_liveness(self, live_rows: np.ndarray) -> None:
        mask = np.zeros(max(self.store.next_row(), 1), dtype=bool)
        mask[live_rows] = True
        self._set_mask(mask)

    def _set_mask(self, mask: np.ndarray) -> None:
        ntotal = self._index.ntotal
        self._live = _Liveness(mask=mask, dead=int(ntotal - mask[:ntotal].sum()))

    # ---- reads -----------------------------------------------------------

    def get(self, point_id: Any, with_vector: bool = False) -> StoredPoint:
        point = self.store.get(validate_point_id(point_id), with_vector=with_vector)
        if point is None:
            raise NotFound(f"no point {point_id!r} in collection {self.config.name!r}", code="point_not_found", details={"id": point_id})
        return point

    def count(self) -> int:
        return self.store.count()

    def query(self, query: Query) -> list[Hit]:
        return self.query_batch([query])[0]

    def query_batch(self, queries: Sequence[Query]) -> list[list[Hit]]:
        vectors = self._query_vectors(queries)
        results: list[list[Hit]] = [[] for _ in queries]
        # Unfiltered queries with the same search settings share one FAISS call.
        groups: dict[tuple[bool, float | None], list[int]] = {}
        for i, q in enumerate(queries):
            if q.filter is None:
                groups.setdefault((q.exact, q.oversample), []).append(i)
            else:
                results[i] = self._hits(q, *self._search(vectors[i : i + 1], q.k, q))
        for (exact, oversample), members in groups.items():
            k = max(queries[i].k for i in members)
            scores, rows = self._search(vectors[members], k, queries[members[0]])
            for j, i in enumerate(members):
                results[i] = self._hits(queries[i], scores[j : j + 1, : queries[i].k], rows[j : j + 1, : queries[i].k])
        return results

    def _query_vectors(self, queries: Sequence[Query]) -> np.ndarray:
        out = np.zeros((len(queries), self.config.dim), np.float32)
        texts: list[int] = []
        for i, q in enumerate(queries):
            where = {"query": i}
            if (q.text is None) == (q.vector is None):
                raise InvalidInput("a query needs exactly one of 'text' or 'vector'", code="invalid_query", details=where)
            if q.text is not None:
                if not q.text.strip():
                    raise InvalidInput("query text must not be empty", code="empty_text", details=where)
                self.require_encoder("queries", where)
                texts.append(i)
            else:
                assert q.vector is not None
                out[i] = self._check_vector(q.vector, where)
        if texts:
            embedded = self.require_encoder("queries", {}).encode_queries([str(queries[i].text) for i in texts])
            out[texts] = np.stack([self.normalise(v) for v in embedded])
        return out

    def _search(self, vectors: np.ndarray, k: int, q: Query) -> tuple[np.ndarray, np.ndarray]:
        live = self._live
        ef = math.ceil(k * q.oversample) if q.oversample else None
        if q.filter is None:
            allowed = None if live.dead == 0 else live.mask
        else:
            sql, params = q.filter.to_sql()
            rows = self.store.rows_where(sql, params)
            rows = rows[rows < self._index.ntotal]
            if len(rows) <= BRUTE_FORCE_LIMIT:
                return exact_search(self._index.reconstruct(rows), rows, vectors, k, self._faiss_metric)
            allowed = np.zeros(self._index.ntotal, dtype=bool)
            allowed[rows] = True
        scores, found = self._index.search(vectors, k, allowed=allowed, ef_search=ef, exact=q.exact)
        if allowed is not None and (found < 0).any() and self.config.index.type == "hnsw":
            # The graph walk ran out of allowed neighbours: answer exactly rather than short.
            candidates = np.flatnonzero(allowed)
            scores, found = exact_search(self._index.reconstruct(candidates), candidates, vectors, k, self._faiss_metric)
        return scores, found

    def _hits(self, q: Query, scores: np.ndarray, rows: np.ndarray) -> list[Hit]:
        pairs = [(int(r), self._user_score(float(s))) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]
        if q.min_score is not None:
            pairs = [(r, s) for r, s in pairs if s >= q.min_score]
        if not pairs:
            return []
        stored = self.store.by_rows([r for r, _ in pairs], with_vector=q.with_vector)
        return [
            Hit(
                id=stored[r].id,
                score=s,
                payload=stored[r].payload if q.with_payload else None,
                vector=stored[r].vector.tolist() if q.with_vector and stored[r].vector is not None else None,
            )
            for r, s in pairs
            if r in stored  # deleted between the search and this read
        ]

    def _user_score(self, raw: float) -> float:
        """Higher is closer for every metric: l2 reports the negated Euclidean distance."""
        return -math.sqrt(max(raw, 0.0)) if self.config.metric == "l2" else raw

    @property
    def _faiss_metric(self) -> FaissMetric:
        return "l2" if self.config.metric == "l2" else "ip"

    # ---- reporting -------------------------------------------------------

    def info(self) -> dict[str, Any]:
        cfg = self.config
        serving = cfg.serving_model
        return {
            "name": cfg.name,
            "model": serving.name,
            "models": [{"version": m.version, "name": m.name, "dim": m.dim, "serving": m.version == cfg.serving_version} for m in cfg.models],
            "dim": cfg.dim,
            "metric": cfg.metric,
            "multivector": False,
            "index": {"type": cfg.index.type, "m": cfg.index.m, "ef_construction": cfg.index.ef_construction, "ef_search": cfg.index.ef_search, "device": "gpu" if self._index.on_gpu else "cpu"},
            "compression": None,
            "points": self.count(),
            "memory_bytes": self._index.memory_bytes() + self._live.mask.nbytes,
            "stages": [{"name": "float32", "bytes_per_vector": 4 * cfg.dim}],
            "operation_id": self.store.last_seq,
            "snapshot_operation_id": self._snapshot_seq,
            "dead_rows": self._live.dead,
            "created_at": cfg.created_at,
        }

