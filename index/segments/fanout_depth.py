"""The search depth measured on what a query sees: every HNSW segment searched and the results merged.

Each HNSW segment prices its own depth for its share of the searched points (``GraphReport.depth``), each aimed at
the target on its own; merged over ten segments that overshot (recall@10 0.973 and 0.982 where 0.95 was asked,
bench/results/ann-orders.md before this step). So the collection measures the merged answer: probes search the
whole view at a ladder of scales applied to every calibrated segment's depth, against their exact top-10 over the
view, and the smallest scale whose merged recall@10, less two standard errors, reaches the target
(``scan_with_margin``) is kept, by the same scan as a segment's own depth (index/backends/calibration.py).

The probes are the collection's recent queries, so the scale is measured once queries arrive (until then each
segment's own depth serves, priced from its held-out vectors). Stored vectors make no probes here: every one is a
node of its segment's graph, whose links are its own neighbours, so the walk finds them far more easily than a
query's (recall 0.955 on stored vectors at the depth where queries from the same data had 0.931). Queries served
while the scan runs search at its trial depths, as during a compression fit's measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from index.backends.calibration import (
    CALIBRATION_K,
    MIN_QUERIES,
    measure,
    scan_with_margin,
)
from index.segments.sealed import SealedSegment
from index.segments.view import View

# Scales tried, in percent of each segment's priced depth (bisected between the last two rungs).
SCALE_LADDER = (10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 115, 130, 150, 175, 200, 250, 300, 400, 600)


@dataclass(frozen=True)
class FanoutDepth:
    """The scale measured over a set of segments, and what it reached."""

    segments: tuple[str, ...]  # the calibrated segments it was measured over (sorted ids); another set: not valid
    scale: float
    recall_at_10: float  # merged, on the probes, at ``scale``
    aimed_at: float
    target_recall: float
    queries: int  # recent queries it was measured on
    seen: int  # the collection's recent-query count when measured

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FanoutDepth:
        return cls(**{**data, "segments": tuple(data["segments"])})


def measure_fanout(view: View, segments: Sequence[SealedSegment], queries: np.ndarray, seen: int, target: float) -> FanoutDepth:
    """Choose and set the scale of ``segments``' depths (the view's calibrated HNSW segments) at which ``view``
    answers the recent ``queries`` (at least MIN_QUERIES of them) at the target recall@10."""
    if len(queries) < MIN_QUERIES:
        raise ValueError(f"the merged depth is measured on at least {MIN_QUERIES} recent queries, not {len(queries)}")
    vectors = np.ascontiguousarray(queries, np.float32)
    truth = view.search(vectors, CALIBRATION_K, exact=True)[1]

    def search_at(probe: np.ndarray, percent: int) -> np.ndarray:
        for segment in segments:
            segment.set_depth_scale(percent / 100)
        return view.search(probe, CALIBRATION_K)[1]

    _, curve, aim = scan_with_margin(search_at, {"queries": (vectors, truth)}, target, SCALE_LADDER, SCALE_LADDER[0] - 1)
    percent = curve[-1][0]
    recall = measure(search_at, vectors, truth, percent)
    return FanoutDepth(
        segments=tuple(sorted(s.id for s in segments)),
        scale=percent / 100,
        recall_at_10=round(recall, 4),
        aimed_at=round(aim, 4),
        target_recall=target,
        queries=len(vectors),
        seen=seen,
    )
