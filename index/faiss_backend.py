"""FAISS indexes whose labels are store rows; the one place that decides GPU or CPU.

Rows are dense (0..n-1, allocated by the store without gaps), so a FAISS
position *is* the row and no id map is needed. Deleted or replaced rows stay in
the index as dead entries, excluded at search time by a bitmap selector.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import faiss
import numpy as np

T = TypeVar("T")
FaissMetric = Literal["ip", "l2"]
# FAISS GPU k-selection tops out here; above it we fall back to exact CPU scoring.
GPU_MAX_K = 2048


def gpu_count() -> int:
    """GPUs usable by FAISS: needs a GPU build of faiss and a visible device. TROVE_FAISS_DEVICE=cpu opts out."""
    if os.environ.get("TROVE_FAISS_DEVICE", "auto") == "cpu" or not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


_search_threads: int | None = None  # None: OpenMP's default


def set_search_threads(threads: int) -> None:
    """OpenMP threads per FAISS call, for every thread of the process.

    omp_set_num_threads only binds the calling thread, and searches run on request
    threads, so each search re-applies the setting on its own thread.
    """
    global _search_threads
    _search_threads = threads
    faiss.omp_set_num_threads(threads)


@dataclass(frozen=True)
class IndexSpec:
    type: Literal["flat", "hnsw"] = "flat"
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128


class _SharedReads:
    """CPU FAISS: searches may run together, mutations run alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    def read(self, fn: Callable[[], T]) -> T:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            return fn()
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    def write(self, fn: Callable[[], T]) -> T:
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            return fn()
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class _OwnerThread:
    """GPU FAISS indexes are not thread-safe: one thread owns the index and runs every call."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faiss-gpu")

    def read(self, fn: Callable[[], T]) -> T:
        return self._pool.submit(fn).result()

    write = read


def _faiss_metric(metric: FaissMetric) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def _new_cpu_index(dim: int, metric: FaissMetric, spec: IndexSpec) -> faiss.Index:
    if spec.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.m, _faiss_metric(metric))
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
        return index
    return faiss.IndexFlat(dim, _faiss_metric(metric))


def _bitmap_selector(mask: np.ndarray) -> tuple[faiss.IDSelector, np.ndarray]:
    """A selector over rows; the packed array is returned so the caller keeps it alive during the search."""
    packed = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed)), packed


class PlacedIndex:
    """A FAISS index on the GPU (one owner thread runs every call) or the CPU (searches share, writes run alone),
    whose rows are store rows appended in order."""

    def __init__(self, cpu_index: Any, on_gpu: bool, to_gpu: Callable[[Any, Any], Any]):
        self.on_gpu = on_gpu
        if on_gpu:
            self._gpu_resources = faiss.StandardGpuResources()
            self._index = to_gpu(self._gpu_resources, cpu_index)
            self._guard: _SharedReads | _OwnerThread = _OwnerThread()
        else:
            self._index = cpu_index
            self._guard = _SharedReads()

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def _append(self, first_row: int, rows: np.ndarray) -> None:
        def run() -> None:
            if first_row != self._index.ntotal:
                raise RuntimeError(f"rows must be appended in order: index has {self._index.ntotal}, got {first_row}")
            self._index.add(rows)

        self._guard.write(run)


class VectorIndex(PlacedIndex):
    """Exact (flat) or HNSW search over rows 0..ntotal-1, on the GPU when FAISS can use one.

    HNSW stays on the CPU: FAISS has no GPU HNSW. Scores are raw inner products,
    or squared L2 distances, as FAISS returns them.
    """

    def __init__(self, dim: int, metric: FaissMetric, spec: IndexSpec, cpu_index: faiss.Index | None = None):
        self.dim = dim
        self.metric = metric
        self.spec = spec
        cpu_index = cpu_index if cpu_index is not None else _new_cpu_index(dim, metric, spec)
        super().__init__(cpu_index, spec.type == "flat" and gpu_count() > 0, lambda resources, index: faiss.index_cpu_to_gpu(resources, 0, index))

    def memory_bytes(self) -> int:
        vectors = self.ntotal * self.dim * 4
        if self.spec.type == "hnsw":
            # Level-0 links (2M) plus the expected upper levels (about M / (M-1) more).
            vectors += self.ntotal * (2 * self.spec.m + self.spec.m // max(self.spec.m - 1, 1)) * 4
        return vectors

    def add(self, first_row: int, vectors: np.ndarray) -> None:
        self._append(first_row, np.ascontiguousarray(vectors, dtype=np.float32))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        ef_search: int | None = None,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) per query; rows are -1 where fewer than k allowed points exist.

        ``allowed`` is a boolean mask over rows (len >= ntotal); None means every row.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.ntotal) if self.ntotal else 0
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return self._guard.read(lambda: self._search(queries, k, allowed, ef_search, exact))

    def _search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None, ef_search: int | None, exact: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        if _search_threads is not None:
            faiss.omp_set_num_threads(_search_threads)
        if self.on_gpu:
            return self._search_gpu(queries, k, allowed)
        index = self._index
        if exact and self.spec.type == "hnsw":
            index = faiss.downcast_index(self._index.storage)
        selector, _keepalive = (None, None) if allowed is None else _bitmap_selector(allowed[: self.ntotal])
        if isinstance(index, faiss.IndexHNSW):
            params: faiss.SearchParameters = faiss.SearchParametersHNSW()
            params.efSearch = max(ef_search or self.spec.ef_search, k)
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        scores, rows = index.search(queries, k, params=params)
        return scores, rows

    def _search_gpu(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """GPU flat has no selectors: search deeper until k allowed rows turn up, then filter."""
        if allowed is None:
            return self._index.search(queries, k)
        allowed = allowed[: self.ntotal]
        depth = k
        while True:
            depth = min(depth * 4, self.ntotal, GPU_MAX_K)
            scores, rows = self._index.search(queries, depth)
            keep = (rows >= 0) & allowed[np.maximum(rows, 0)]
            if keep.sum(axis=1).min() >= k or depth in (self.ntotal, GPU_MAX_K):
                break
        if keep.sum(axis=1).min() < min(k, int(allowed.sum())):
            # Already on the owner thread: call FAISS directly, not through the guard.
            candidates = np.flatnonzero(allowed)
            return exact_search(self._index.reconstruct_batch(candidates), candidates, queries, k, self.metric)
        out_scores = np.full((len(queries), k), -np.inf if self.metric == "ip" else np.inf, np.float32)
        out_rows = np.full((len(queries), k), -1, np.int64)
        for q in range(len(queries)):
            hit = np.flatnonzero(keep[q])[:k]
            out_scores[q, : len(hit)] = scores[q, hit]
            out_rows[q, : len(hit)] = rows[q, hit]
        return out_scores, out_rows

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._guard.read(lambda: self._index.reconstruct_batch(rows))

    def clone(self) -> VectorIndex:
        """A copy to build into while this one keeps serving."""
        return VectorIndex(self.dim, self.metric, self.spec, cpu_index=self.cpu_copy())

    def cpu_copy(self) -> faiss.Index:
        return self._guard.read(lambda: faiss.index_gpu_to_cpu(self._index) if self.on_gpu else faiss.clone_index(self._index))

    @classmethod
    def load(cls, path: Path, metric: FaissMetric, spec: IndexSpec) -> VectorIndex:
        cpu_index = faiss.read_index(str(path))
        return cls(cpu_index.d, metric, spec, cpu_index=cpu_index)


def write_index(cpu_index: faiss.Index, path: Path) -> None:
    faiss.write_index(cpu_index, str(path))


def exact_search(
    vectors: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int, metric: FaissMetric
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over a small candidate set (filtered searches that match few points)."""
    k_eff = min(k, len(rows))
    scores = np.full((len(queries), k), -np.inf if metric == "ip" else np.inf, np.float32)
    out_rows = np.full((len(queries), k), -1, np.int64)
    if k_eff == 0:
        return scores, out_rows
    if metric == "ip":
        sims = queries @ vectors.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k_eff]
    else:
        sims = (queries**2).sum(1)[:, None] - 2 * queries @ vectors.T + (vectors**2).sum(1)[None, :]
        order = np.argsort(sims, axis=1, kind="stable")[:, :k_eff]
    scores[:, :k_eff] = np.take_along_axis(sims, order, axis=1)
    out_rows[:, :k_eff] = rows[order]
    return scores, out_rows
