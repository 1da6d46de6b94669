"""FAISS indexes whose labels are store rows; the one place that decides GPU or CPU.

An index holds one sealed segment's vectors at positions 0..n-1 (the segment maps positions to store
rows). Deleted or replaced rows stay in it as dead entries, excluded at search time by a bitmap selector,
until the optimizer rewrites the segment.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import faiss
import numpy as np

from index.backends.flat_path import flat_search
from index.backends.hnsw_graph import InsertionOrder

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


# The HNSW search depth where nothing chose one: graphs too small to calibrate, compressed coarse stages.
FALLBACK_EF_SEARCH = 128
FALLBACK_NPROBE = 16  # likewise, IVF lists probed


@dataclass(frozen=True)
class IndexSpec:
    type: Literal["flat", "hnsw", "ivf"] = "flat"
    m: int = 32
    ef_construction: int = 200
    # None: each sealed HNSW segment searches at the depth measured when it was built to reach target_recall.
    ef_search: int | None = None
    target_recall: float = 0.95
    # Descending LID: on WordNet 117k it gained 0.2 to 2.2 points of recall@10 over arrival order at ef 16 to 128
    # and reached 0.95 at ef 128 where arrival needed 192; ascending lost 1.4 to 3.4 (bench/results/ann-orders.md).
    insertion_order: InsertionOrder = "lid_desc"
    nlist: int | None = None  # IVF lists per segment; None: 4 sqrt(n) (index/backends/ivf_lists.py)
    nprobe: int | None = None  # IVF lists probed; None: the number measured at build to reach target_recall

    @property
    def search_depth(self) -> int:
        return self.ef_search or FALLBACK_EF_SEARCH


class _SharedReads:
    """CPU FAISS: searches may run together, mutations run alone (sealed segments never mutate: their
    searches only pay for a lock round trip, no wake-ups)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

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
                if not self._readers and self._writers_waiting:
                    self._cond.notify_all()

    def write(self, fn: Callable[[], T]) -> T:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            return fn()
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class _OwnerThread:
    """GPU FAISS indexes are not thread-safe: one thread owns the device and runs every call on it."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faiss-gpu")

    def read(self, fn: Callable[[], T]) -> T:
        return self._pool.submit(fn).result()

    write = read


_gpu_lock = threading.Lock()
_gpu: tuple[Any, _OwnerThread] | None = None


def _gpu_device() -> tuple[Any, _OwnerThread]:
    """The one FAISS GPU resources object (scratch memory, streams) and owner thread, shared by every segment."""
    global _gpu
    with _gpu_lock:
        if _gpu is None:
            _gpu = (faiss.StandardGpuResources(), _OwnerThread())
        return _gpu


def faiss_metric_code(metric: FaissMetric) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def new_cpu_index(dim: int, metric: FaissMetric, spec: IndexSpec) -> faiss.Index:
    if spec.type == "ivf":
        raise ValueError("IVF indexes are trained on their segment: index/backends/ivf_lists.py builds them")
    if spec.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.m, faiss_metric_code(metric))
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.search_depth
        return index
    return faiss.IndexFlat(dim, faiss_metric_code(metric))


def bitmap_selector(mask: np.ndarray) -> tuple[faiss.IDSelector, np.ndarray]:
    """A selector over rows; the packed array is returned so the caller keeps it alive during the search."""
    packed = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed)), packed


class PlacedIndex:
    """A FAISS index on the GPU (one owner thread runs every call) or the CPU (searches share, writes run alone),
    whose rows are store rows appended in order."""

    def __init__(self, cpu_index: Any, on_gpu: bool, to_gpu: Callable[[Any, Any], Any]):
        self.on_gpu = on_gpu
        if on_gpu:
            resources, owner = _gpu_device()
            self._guard: _SharedReads | _OwnerThread = owner
            self._index = owner.read(lambda: to_gpu(resources, cpu_index))
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
        cpu_index = cpu_index if cpu_index is not None else new_cpu_index(dim, metric, spec)
        self._host = cpu_index  # on the GPU: the host copy (memory-mapped when loaded) answers what the GPU cannot
        super().__init__(cpu_index, spec.type == "flat" and gpu_count() > 0, lambda resources, index: faiss.index_cpu_to_gpu(resources, 0, index))

    def cpu_graph(self) -> faiss.IndexHNSW:
        """The HNSW graph itself (always on the CPU), for measuring its search depth."""
        if self.spec.type != "hnsw":
            raise TypeError("a flat index has no graph")
        return self._host

    def memory_bytes(self) -> int:
        vectors = self.ntotal * self.dim * 4
        if self.spec.type == "ivf":
            # Codes plus the 8-byte id of each list entry, the direct map, and the centroids.
            return vectors + self.ntotal * 16 + int(self._host.nlist) * self.dim * 4
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
        return self._search_cpu(self._index, queries, k, allowed, ef_search, exact)

    def _search_cpu(
        self, index: faiss.Index, queries: np.ndarray, k: int, allowed: np.ndarray | None, ef_search: int | None, exact: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        if exact and self.spec.type == "hnsw":
            index = faiss.downcast_index(index.storage)
        selector, _keepalive = (None, None) if allowed is None else bitmap_selector(allowed[: self.ntotal])
        if isinstance(index, faiss.IndexHNSW):
            params: faiss.SearchParameters = faiss.SearchParametersHNSW()
            params.efSearch = max(ef_search or self.spec.search_depth, k)
        elif isinstance(index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF()  # ``ef_search`` is the lists to probe; all of them when exact
            params.nprobe = int(index.nlist) if exact else min(int(index.nlist), ef_search or self.spec.nprobe or FALLBACK_NPROBE)
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        if isinstance(index, faiss.IndexFlat):
            return flat_search(index, queries, k, self.metric, params, None if allowed is None else allowed[: self.ntotal])
        scores, rows = index.search(queries, k, params=params)
        return scores, rows

    def _search_gpu(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """GPU flat has no selectors: search deeper until k allowed rows turn up, then filter.

        What the GPU cannot answer (k above its selection limit, too few allowed rows near the queries)
        is answered on the host copy with a selector: no rows are copied off the device.
        """
        if k > GPU_MAX_K:
            return self._search_cpu(self._host, queries, k, allowed, None, True)
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
            return self._search_cpu(self._host, queries, k, allowed, None, True)
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


def exact_search(
    vectors: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int, metric: FaissMetric, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over a small block of vectors (an appendable segment, a filter matching few points).

    ``allowed`` masks the block's vectors; results are (scores, rows) as FAISS gives them, -1 past the end.
    """
    better = -1.0 if metric == "ip" else 1.0  # sort key sign: FAISS inner products descend, L2 distances ascend
    k_eff = min(k, len(rows) if allowed is None else int(allowed.sum()))
    scores = np.full((len(queries), k), -np.inf if metric == "ip" else np.inf, np.float32)
    out_rows = np.full((len(queries), k), -1, np.int64)
    if k_eff == 0:
        return scores, out_rows
    sims = queries @ vectors.T
    if metric == "l2":
        sims = (queries**2).sum(1)[:, None] - 2 * sims + (vectors**2).sum(1)[None, :]
    key = better * sims
    if allowed is not None:
        key[:, ~allowed] = np.inf
    if k_eff < key.shape[1]:
        top = np.argpartition(key, k_eff - 1, axis=1)[:, :k_eff]
        order = np.take_along_axis(top, np.argsort(np.take_along_axis(key, top, axis=1), axis=1, kind="stable"), axis=1)
    else:
        order = np.argsort(key, axis=1, kind="stable")
    scores[:, :k_eff] = np.take_along_axis(sims, order, axis=1)
    out_rows[:, :k_eff] = rows[order]
    return scores, out_rows
