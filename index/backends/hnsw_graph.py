"""HNSW graphs built for their data: insertion ordered by local intrinsic dimensionality (LID), and the search
depth that reaches a target recall measured on held-out vectors when the graph is built.

HNSW recall depends on the data's intrinsic dimensionality and on the order points are inserted in (Elliott &
Clark, "The Impacts of Data, Ordering, and Intrinsic Dimensionality on Recall in HNSW"). A sealed segment is
built once, off the write path, so Trove chooses both for free:

1. LID per point by the maximum-likelihood estimator (Levina & Bickel; Amsaleg et al.) from its distances to its
   ``LID_NEIGHBOURS`` nearest neighbours among a seeded reference sample of the segment (one blocked matrix
   product per chunk of points; the sample bounds the pass at n x ``LID_REFERENCE`` products).
2. A few vectors are held out; the rest are inserted in the configured order; the held ones (and recent
   queries) search the graph at a ladder of depths against their exact neighbours among the inserted ones, and
   the smallest depth reaching the target recall@10 is kept (index/backends/calibration.py). The held vectors
   are then inserted too, last.
3. The graph's entries are permuted back to the caller's order (FAISS ``permute_entries``), so position i
   holds ``vectors[i]`` whatever the insertion order was.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import faiss
import numpy as np

from index.backends.calibration import (
    CALIBRATION_K,
    MIN_QUERIES,
    SearchAt,
    calibration_probes,
    held_out,
    measure,
    scan_depths,
)

InsertionOrder = Literal["lid_desc", "lid_asc", "arrival"]
INSERTION_ORDERS: tuple[InsertionOrder, ...] = ("lid_desc", "lid_asc", "arrival")

LID_NEIGHBOURS = 20
LID_REFERENCE = 10_000
EF_LADDER = (10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024)
SPREAD_CONFIDENCE = 0.99  # see surprising_count
ADD_CHUNK = 10_000  # rows per FAISS add between progress reports (and cancellation checks)

Progress = Callable[[int], None]  # rows inserted so far; may raise (a cancelled job)


@dataclass(frozen=True)
class GraphReport:
    """What a graph's build measured: its LID distribution, insertion order and calibrated search depth."""

    order: InsertionOrder
    lid_mean: float
    lid_p10: float
    lid_p50: float
    lid_p90: float
    ef_search: int | None  # the deeper of the two below; None: too few vectors to measure (fallback depth)
    recall_at_10: float | None  # measured on the held vectors at ef_search
    held_ef: int | None  # the depth the held vectors needed
    query_ef: int | None  # the depth the collection's recent queries needed (None: fewer than MIN_QUERIES of them)
    query_recall_at_10: float | None  # measured on those queries at ef_search
    queries: int
    target_recall: float
    held: int
    seed: int
    # (ef, (r_1 .. r_10)) up to ef_search: r_j is the share of each probe's exact top-j found in the graph's
    # top-10 at depth ef (the lower of the two probe sets). It prices a segment holding only part of a result.
    curve: tuple[tuple[int, tuple[float, ...]], ...]
    lid_seconds: float
    build_seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def on_queries(self) -> bool:
        """Whether the depth was measured on queries the collection answered (not only on held vectors)."""
        return self.queries >= MIN_QUERIES

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GraphReport:
        curve = tuple((int(ef), tuple(recalls)) for ef, recalls in data.get("curve", ()))
        return cls(**{**data, "curve": curve})

    def depth(self, k: int, share: float = 1.0) -> int | None:
        """The calibrated depth for a top-k query when this segment holds ``share`` of the searched points.

        A query's top-k falls across segments; taking the points as spread at random, this segment holds
        c ~ Binomial(k, share) of them, its own best c. The depth is the smallest whose expected share of those
        found reaches the target: a segment holding a tenth of the points needs its top one or two, far
        shallower than a whole top-10. None when uncalibrated; past k = 10 the depth scales with k.
        """
        if self.ef_search is None:
            return None
        if k > CALIBRATION_K or share >= 1.0 or not self.curve:
            return max(k, math.ceil(self.ef_search * max(1.0, k / CALIBRATION_K)))
        held = np.arange(1, k + 1)
        weights = binomial_pmf(k, share)[1:] * held  # points of the top-k expected here, by how many there are
        for ef, recalls in self.curve:
            if float(np.dot(weights, recalls[:k])) >= self.target_recall * float(weights.sum()):
                return max(k, ef)
        return max(k, self.ef_search)


def binomial_pmf(k: int, p: float) -> np.ndarray:
    """P(c = j) for j = 0..k, c ~ Binomial(k, p): exact for the small k of a top-k (scipy.stats would cost the
    server ~60 MB of imports for this)."""
    j = np.arange(k + 1)
    return np.array([math.comb(k, i) for i in range(k + 1)], np.float64) * p**j * (1 - p) ** (k - j)


@functools.lru_cache(maxsize=4096)
def surprising_count(k: int, share: float) -> int:
    """More of a top-k than this in a segment holding ``share`` of the points means they are not spread at
    random (data that arrived sorted, say): the segment's share-priced depth was too shallow for it."""
    return int(np.searchsorted(np.cumsum(binomial_pmf(k, share)), SPREAD_CONFIDENCE - 1e-12))


def _l2_knn(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    distances, ids = faiss.knn(np.ascontiguousarray(queries, np.float32), np.ascontiguousarray(base, np.float32), k)
    return np.sqrt(np.maximum(distances, 0.0)), ids


def estimate_lid(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each vector's MLE local intrinsic dimensionality from its nearest neighbours in a reference sample.

    L2 distances whatever the metric: LID is a property of the neighbourhood's geometry (for unit vectors, inner
    product and L2 rank alike). A point whose neighbours are all duplicates gets 0 (nothing to measure).
    """
    n = len(vectors)
    k = min(LID_NEIGHBOURS, n - 1)
    if k < 2:
        return np.zeros(n, np.float32)
    rng = np.random.default_rng(seed)
    reference = np.sort(rng.choice(n, LID_REFERENCE, replace=False)) if n > LID_REFERENCE else np.arange(n)
    in_reference = np.zeros(n, bool)
    in_reference[reference] = True
    distances, ids = _l2_knn(vectors, vectors[reference], k + 1)
    # A reference point finds itself first: drop that column for it, the last column for everyone else.
    own = in_reference & (reference[np.maximum(ids[:, 0], 0)] == np.arange(n))
    near = np.where(own[:, None], distances[:, 1:], distances[:, :k])
    farthest = near[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.maximum(near[:, :-1], 1e-12) / farthest)
        lid = -1.0 / logs.mean(axis=1)
    return np.where(np.isfinite(lid) & (farthest[:, 0] > 0), lid, 0.0).astype(np.float32)


def insertion_order(lid: np.ndarray, order: InsertionOrder) -> np.ndarray:
    """Positions in the order they are inserted (stable: ties keep arrival order)."""
    if order == "arrival":
        return np.arange(len(lid))
    key = -lid if order == "lid_desc" else lid
    return np.argsort(key, kind="stable")


def hnsw_search_at(index: faiss.IndexHNSW) -> SearchAt:
    def search(probe: np.ndarray, ef: int) -> np.ndarray:
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef
        return index.search(probe, CALIBRATION_K, params=params)[1]

    return search


def _scan(index: faiss.IndexHNSW, probes: dict[str, tuple[np.ndarray, np.ndarray]], target: float) -> tuple[dict[str, int], list[tuple[int, tuple[float, ...]]]]:
    return scan_depths(hnsw_search_at(index), probes, target, EF_LADDER, CALIBRATION_K - 1)  # below k a walk keeps k anyway


def build_hnsw(
    index: faiss.IndexHNSW,
    vectors: np.ndarray,
    order: InsertionOrder,
    target_recall: float,
    progress: Progress,
    seed: int = 0,
    queries: np.ndarray | None = None,
) -> GraphReport:
    """Insert ``vectors`` into the empty HNSW ``index`` as described above; position i ends up holding vectors[i].

    ``queries`` (recent query vectors, optional) are a second calibration set: the depth kept is the deeper one."""
    n = len(vectors)
    started = time.perf_counter()
    lid = estimate_lid(vectors, seed)
    lid_seconds = time.perf_counter() - started
    held = held_out(n, seed)
    rest = np.setdiff1d(np.arange(n), held)
    sequence = np.concatenate([rest[insertion_order(lid[rest], order)], held])
    position_of = np.empty(n, np.int64)
    position_of[sequence] = np.arange(n)
    inserted = 0

    def insert(until: int) -> None:
        nonlocal inserted
        for start in range(inserted, until, ADD_CHUNK):
            stop = min(start + ADD_CHUNK, until)
            index.add(np.ascontiguousarray(vectors[sequence[start:stop]], dtype=np.float32))
            progress(stop)
        inserted = until

    insert(len(rest))
    truths = calibration_probes(vectors, held, queries, position_of, index.metric_type)
    reached, curve = _scan(index, truths, target_recall) if truths else ({}, [])
    ef = curve[-1][0] if curve else None
    measured = {name: measure(hnsw_search_at(index), *truth, ef) for name, truth in truths.items()} if ef is not None else {}
    insert(n)
    index.permute_entries(position_of)  # new entry i is the one inserted at position_of[i], i.e. vectors[i]
    quantiles = np.quantile(lid, [0.1, 0.5, 0.9]) if n else np.zeros(3)
    return GraphReport(
        order=order,
        lid_mean=float(lid.mean()) if n else 0.0,
        lid_p10=float(quantiles[0]),
        lid_p50=float(quantiles[1]),
        lid_p90=float(quantiles[2]),
        ef_search=ef,
        recall_at_10=measured.get("held"),
        held_ef=reached.get("held"),
        query_ef=reached.get("queries"),
        query_recall_at_10=measured.get("queries"),
        queries=len(truths["queries"][0]) if "queries" in truths else 0,
        target_recall=target_recall,
        held=len(held),
        seed=seed,
        curve=tuple(curve),
        lid_seconds=lid_seconds,
        build_seconds=time.perf_counter() - started,
    )


def recalibrate(index: faiss.IndexHNSW, queries: np.ndarray, report: GraphReport) -> GraphReport:
    """The depth of a built graph measured again on recent queries, against their exact neighbours over the
    graph's own stored vectors; never shallower than the held vectors needed at build (whose recall figure
    stays the one measured then)."""
    probe = np.ascontiguousarray(queries, np.float32)
    truth = faiss.downcast_index(index.storage).search(probe, CALIBRATION_K)[1]
    reached, curve = _scan(index, {"queries": (probe, truth)}, report.target_recall)
    ef = max(report.held_ef or 0, curve[-1][0])
    return replace(report, ef_search=ef, query_ef=reached.get("queries"), query_recall_at_10=measure(hnsw_search_at(index), probe, truth, ef), queries=len(probe), curve=tuple(curve))


def pooled_lid(graphs: list[tuple[GraphReport, int]]) -> dict[str, float] | None:
    """A collection's LID summary from its segments' (report, live points): each figure weighted by points."""
    total = sum(points for _, points in graphs)
    if not total:
        return None
    return {
        name: sum(getattr(report, f"lid_{name}") * points for report, points in graphs) / total
        for name in ("mean", "p10", "p50", "p90")
    }
