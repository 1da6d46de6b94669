"""Exact search over a flat block: FAISS's kernel or a blocked matrix product, whichever is faster.

FAISS's flat search takes its BLAS path only from ``distance_compute_blas_threshold`` queries on, and never
with a selector; below that, or with one, it scores query by query. A coalesced batch of 16-256 queries is
far cheaper as one matrix product. So a batch of a few queries or more runs with FAISS's threshold lowered, and
without a selector where few rows are excluded (deleted, or filtered out): it searches k + excluded deep and the
excluded rows are dropped after, which is exact. That keeps the whole search inside FAISS, where the GIL is
free; the numpy matrix product (the other path) takes the GIL back between its steps, which under HTTP load
costs it the event loop's share. Which path wins depends on the batch size, the dimension and the machine,
so it is measured on first use per (dimension, batch-size bucket): index/backends/measured_choice.py. A mask
that allows few rows (a selective filter) is answered apart: those rows are gathered and scored alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import faiss
import numpy as np

from index.backends.measured_choice import MeasuredChoice

Ranked = tuple[np.ndarray, np.ndarray]
# Database rows per matrix product: bounds the score block to BLOCK_ROWS x batch floats.
BLOCK_ROWS = 32_768
# Up to this many excluded rows FAISS searches deeper without a selector (and so by BLAS); more, with one.
OVERFETCH_MAX = 1_024
# Where at most this share of the rows per query is allowed (a selective filter), the allowed rows are gathered
# and scored alone: FAISS's selector still visits every row for every query. Measured on 1M x 384 rows, 2 cores:
# one query at 1% allowed 4.7 ms gathered against 7.4 ms through the selector; at 5% the selector was ahead
# (20 vs 23 ms), and for 16 queries gathering won up to 20% (121 vs 334 ms). So: 2% a query, at most 20%.
GATHER_SHARE = 0.02
GATHER_SHARE_MAX = 0.2
# FAISS 1.15 raised its BLAS threshold to 128,000 queries, which kept every coalesced batch off BLAS. In servers
# under HTTP load (100k x 384, `trove bench service --systems trove-flat`) BLAS won from 5 queries on (a batch of 5-8: 18 ms
# against 25, of 9-16: 23 against 86) and lost below (one query: 18 ms against 6), so the threshold is lowered
# only while a batch of 5 or more runs (a search running beside one may take the other kernel: as exact, only
# its speed differs).
BLAS_MIN_QUERIES = 5
_blas_lock = threading.Lock()
_blas_batches = 0  # batches running with the lowered threshold
_faiss_threshold = faiss.cvar.distance_compute_blas_threshold


@contextmanager
def _blas_threshold_lowered() -> Iterator[None]:
    global _blas_batches
    with _blas_lock:
        _blas_batches += 1
        faiss.cvar.distance_compute_blas_threshold = BLAS_MIN_QUERIES
    try:
        yield
    finally:
        with _blas_lock:
            _blas_batches -= 1
            if _blas_batches == 0:
                faiss.cvar.distance_compute_blas_threshold = _faiss_threshold


def matmul_search(vectors: np.ndarray, queries: np.ndarray, k: int, metric: Literal["ip", "l2"], allowed: np.ndarray | None = None) -> Ranked:
    """Top-k (raw scores, positions) as FAISS's flat search gives them (inner products descending, squared L2
    ascending, -1 past the allowed rows), by one matrix product per block of BLOCK_ROWS rows."""
    n = len(vectors)
    best = np.full((len(queries), k), -np.inf if metric == "ip" else np.inf, np.float32)
    where = np.full((len(queries), k), -1, np.int64)
    q_norms = (queries * queries).sum(1)[:, None] if metric == "l2" else None
    for start in range(0, n, BLOCK_ROWS):
        block = vectors[start : start + BLOCK_ROWS]
        scores = queries @ block.T
        if q_norms is not None:
            scores = q_norms - 2 * scores + (block * block).sum(1)[None, :]
        key = -scores if metric == "ip" else scores  # ascending is better
        if allowed is not None:
            key[:, ~allowed[start : start + len(block)]] = np.inf
        take = min(k, key.shape[1])
        top = np.argpartition(key, take - 1, axis=1)[:, :take] if take < key.shape[1] else np.broadcast_to(np.arange(key.shape[1]), key.shape)
        top_key = np.take_along_axis(key, top, axis=1)
        merged_key = np.concatenate([-best if metric == "ip" else best, top_key], axis=1)
        merged_pos = np.concatenate([where, np.where(np.isinf(top_key), -1, top + start)], axis=1)
        order = np.argsort(merged_key, axis=1, kind="stable")[:, :k]
        chosen = np.take_along_axis(merged_key, order, axis=1)
        best = (-chosen if metric == "ip" else chosen).astype(np.float32)
        where = np.take_along_axis(merged_pos, order, axis=1)
    where[np.isinf(best)] = -1
    return best, where


CHOOSER: MeasuredChoice[Ranked] = MeasuredChoice()


def faiss_search(index: faiss.IndexFlat, queries: np.ndarray, k: int, params: faiss.SearchParameters, allowed: np.ndarray | None) -> Ranked:
    """FAISS's flat search. A batch of BLAS_MIN_QUERIES or more runs FAISS's BLAS kernel: where at most
    OVERFETCH_MAX rows are excluded, k + excluded deep without the selector (params.sel), the excluded rows then
    dropped and the rest moved up, -1 past the allowed ones. Smaller batches keep FAISS's own kernel."""
    if len(queries) < BLAS_MIN_QUERIES:
        return index.search(queries, k, params=params)
    if allowed is None:
        with _blas_threshold_lowered():
            return index.search(queries, k)
    excluded = len(allowed) - int(np.count_nonzero(allowed))
    if excluded > OVERFETCH_MAX:
        return index.search(queries, k, params=params)
    with _blas_threshold_lowered():
        scores, rows = index.search(queries, min(k + excluded, index.ntotal))
    keep = (rows >= 0) & allowed[np.maximum(rows, 0)]
    # A stable sort of "dropped" flags moves the kept hits to the front in their ranked order.
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(keep, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    rows = np.where(kept, np.take_along_axis(rows, order, axis=1), -1)
    # Past the allowed rows, the worst score, as FAISS fills it.
    empty = np.finfo(np.float32).max * (-1 if index.metric_type == faiss.METRIC_INNER_PRODUCT else 1)
    return np.where(kept, scores, np.float32(empty)), rows


def gather_search(vectors: np.ndarray, queries: np.ndarray, k: int, metric: Literal["ip", "l2"], allowed: np.ndarray) -> Ranked:
    """Top-k over the allowed rows alone: gathered, then scored by the matrix product."""
    positions = np.flatnonzero(allowed)
    scores, where = matmul_search(vectors[positions], queries, k, metric)
    return scores, np.append(positions, -1)[where]  # -1 (not found) picks the appended -1


def flat_search(index: faiss.IndexFlat, queries: np.ndarray, k: int, metric: Literal["ip", "l2"], params: faiss.SearchParameters, allowed: np.ndarray | None) -> Ranked:
    """A CPU flat index's top-k: the allowed rows gathered where they are few, else by the measured faster path.
    The matrix product reads FAISS's own storage (no copy)."""
    vectors = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    if allowed is not None and np.count_nonzero(allowed) <= min(GATHER_SHARE * len(queries), GATHER_SHARE_MAX) * len(allowed):
        return gather_search(vectors, queries, k, metric, allowed)
    return CHOOSER.run(
        index.d,
        len(queries),
        {"faiss": lambda: faiss_search(index, queries, k, params, allowed), "matmul": lambda: matmul_search(vectors, queries, k, metric, allowed)},
    )
