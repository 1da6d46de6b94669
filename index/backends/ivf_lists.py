"""IVF segments: inverted lists trained on the segment's own vectors, and the number of lists a query probes
measured when the segment is built to reach the target recall (as HNSW segments measure their ef,
index/backends/hnsw_graph.py).

A segment of n vectors gets ``nlist`` = 4 sqrt(n) lists unless the config names one (FAISS's rule of thumb
between sqrt(n) and 16 sqrt(n); never more than n / 39, the fewest training points per list FAISS accepts),
trained by k-means on a seeded sample. Held-out vectors (and recent queries) then search the lists at a ladder
of nprobe values against their exact neighbours, and the smallest that reaches the target recall@10 is kept.
Vectors are added with their positions as ids, so the held ones, added last, keep theirs.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from index.backends.calibration import (
    SearchAt,
    calibration_probes,
    held_out,
    measure,
    scan_depths,
)
from index.backends.hnsw_graph import ADD_CHUNK, Progress

NPROBE_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
MIN_TRAIN_PER_LIST = 39
TRAIN_PER_LIST = 64  # k-means sample: this many points per list at most


@dataclass(frozen=True)
class ListsReport:
    nlist: int
    nprobe: int | None  # None: too few vectors to measure (FALLBACK_NPROBE applies)
    recall_at_10: float | None  # on the held vectors at nprobe
    query_recall_at_10: float | None  # on the recent queries at nprobe (None without enough of them)
    queries: int
    held: int
    target_recall: float
    seed: int
    train_seconds: float
    build_seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ListsReport:
        return cls(**data)


def default_nlist(n: int) -> int:
    return max(1, min(round(4 * math.sqrt(n)), n // MIN_TRAIN_PER_LIST))


def _ivf_at(index: faiss.IndexIVF) -> SearchAt:
    def search(probe: np.ndarray, nprobe: int) -> np.ndarray:
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
        return index.search(probe, 10, params=params)[1]

    return search


def build_ivf(
    dim: int,
    metric: int,
    nlist: int | None,
    vectors: np.ndarray,
    target_recall: float,
    progress: Progress,
    seed: int = 0,
    queries: np.ndarray | None = None,
) -> tuple[faiss.IndexIVFFlat, ListsReport]:
    """An IVF-flat index over ``vectors`` (position i has id i), trained here, with its nprobe measured."""
    n = len(vectors)
    started = time.perf_counter()
    lists = max(1, min(nlist or default_nlist(n), n))
    index = faiss.IndexIVFFlat(faiss.IndexFlat(dim, metric), dim, lists, metric)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(n, TRAIN_PER_LIST * lists), replace=False))
    index.cp.seed = seed
    index.train(np.ascontiguousarray(vectors[sample], np.float32))
    train_seconds = time.perf_counter() - started
    held = held_out(n, seed)
    sequence = np.concatenate([np.setdiff1d(np.arange(n), held), held])
    for start in range(0, n - len(held), ADD_CHUNK):
        chunk = sequence[start : min(start + ADD_CHUNK, n - len(held))]
        index.add_with_ids(np.ascontiguousarray(vectors[chunk], np.float32), chunk.astype(np.int64))
        progress(start + len(chunk))
    truths = calibration_probes(vectors, held, queries, np.arange(n), metric)
    ladder = tuple(p for p in NPROBE_LADDER if p < lists) + (lists,)
    nprobe = scan_depths(_ivf_at(index), truths, target_recall, ladder, 0)[1][-1][0] if truths else None
    recalls = {name: measure(_ivf_at(index), *truth, nprobe) for name, truth in truths.items()} if nprobe is not None else {}
    if len(held):
        index.add_with_ids(np.ascontiguousarray(vectors[held], np.float32), held.astype(np.int64))
    progress(n)
    index.make_direct_map()  # reconstruct by id (rerank, merges), saved with the index
    report = ListsReport(
        nlist=lists,
        nprobe=nprobe,
        recall_at_10=recalls.get("held"),
        query_recall_at_10=recalls.get("queries"),
        queries=len(truths["queries"][0]) if "queries" in truths else 0,
        held=len(held),
        target_recall=target_recall,
        seed=seed,
        train_seconds=train_seconds,
        build_seconds=time.perf_counter() - started,
    )
    return index, report
