"""Fusing ranked lists (dense and BM25) into one: reciprocal rank fusion or distribution-based score fusion.

- rrf: a point scores the sum over lists of ``weight / (k + rank)``, rank counted from 1 (Cormack et al.,
  2009). Only ranks count, so scores of any scale fuse. k = 1 by default, not Cormack's 60: on held-out
  WordNet lemma queries (glosses and dictionary entries) it fused better (bench/results/hybrid.md).
- dbsf: each list's scores are mapped to [0, 1] by the list's mean +- 3 standard deviations (population),
  clipped, and a point scores the weighted sum of what it got in each list (as Qdrant's DBSF). A list whose
  scores are all equal maps them to 0.5. A point absent from a list gets nothing from it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeVar

import numpy as np

from encoders.errors import InvalidInput

Method = Literal["rrf", "dbsf"]
LISTS = ("dense", "keyword")
RRF_K = 1.0  # chosen on tuning queries, better on held-out ones: bench/suites/hybrid.py
# Candidates each list contributes unless the query says: the top-k alone would fuse too little.
DEFAULT_DEPTH = 100
MAX_DEPTH = 10_000
# Bounds on weights and the RRF constant: beyond them a fused score could overflow to infinity.
MAX_WEIGHT = 1e6
MAX_RRF_K = 1e6

Key = TypeVar("Key", bound=Hashable)


class Ranked(NamedTuple):
    """Where a point stood in one list: its rank (from 1) and that list's score."""

    rank: int
    score: float


@dataclass(frozen=True)
class Fusion:
    method: Method = "rrf"
    weights: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(LISTS, 1.0))
    k: float | None = None  # rrf only; RRF_K when None
    depth: int | None = None  # candidates per list; max(query k, DEFAULT_DEPTH) when None

    def check(self, where: Mapping[str, object]) -> None:
        """400 ``invalid_fusion`` for settings that cannot fuse, naming the field."""

        def bad(message: str, **details: object) -> InvalidInput:
            return InvalidInput(message, code="invalid_fusion", details={**where, **details})

        if self.method not in ("rrf", "dbsf"):
            raise bad(f"fusion.method is 'rrf' or 'dbsf', not {self.method!r}", field="method")
        unknown = sorted(set(self.weights) - set(LISTS))
        if unknown:
            raise bad(f"fusion.weights names the lists {', '.join(LISTS)}, not {', '.join(unknown)}", field="weights")
        values = list(self.weights.values())
        if any(not math.isfinite(w) or not 0 <= w <= MAX_WEIGHT for w in values):
            raise bad(f"fusion.weights are between 0 and {MAX_WEIGHT:g}", field="weights")
        if not any(self.weight(name) > 0 for name in LISTS):
            raise bad("at least one fusion weight must be above 0", field="weights")
        if self.k is not None:
            if self.method != "rrf":
                raise bad("fusion.k is the RRF constant; dbsf has none", field="k")
            if not math.isfinite(self.k) or not 0 <= self.k <= MAX_RRF_K:
                raise bad(f"fusion.k is between 0 and {MAX_RRF_K:g}", field="k")
        if self.depth is not None and not 1 <= self.depth <= MAX_DEPTH:
            raise bad(f"fusion.depth is between 1 and {MAX_DEPTH}", field="depth")

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 1.0))

    def depth_for(self, k: int) -> int:
        return max(k, self.depth if self.depth is not None else DEFAULT_DEPTH)


def fuse(lists: Mapping[str, Sequence[tuple[Key, float]]], fusion: Fusion, limit: int | None = None) -> list[tuple[Key, float, dict[str, Ranked]]]:
    """The best ``limit`` (default: all) keys of the given lists (each best first) with their fused scores and
    where they stood in each list, best first; ties keep the order of first appearance (lists in the order given)."""
    fused: dict[Key, float] = {}
    for name, entries in lists.items():
        weight = fusion.weight(name)
        if fusion.method == "dbsf":
            gains = (weight * _dbsf_normalise(np.array([s for _, s in entries], np.float64))).tolist()
        else:
            k = RRF_K if fusion.k is None else fusion.k
            gains = [weight / (k + rank) for rank in range(1, len(entries) + 1)]
        for (key, _), gain in zip(entries, gains, strict=True):
            fused[key] = fused.get(key, 0.0) + gain
    order = sorted(fused, key=fused.__getitem__, reverse=True)[:limit]  # stable, also reversed: ties stay first-seen first
    positions = {name: {key: n for n, (key, _) in enumerate(entries)} for name, entries in lists.items()}
    return [
        (key, fused[key], {name: Ranked(n + 1, lists[name][n][1]) for name, at in positions.items() if (n := at.get(key)) is not None})
        for key in order
    ]


def _dbsf_normalise(scores: np.ndarray) -> np.ndarray:
    if not len(scores):
        return scores
    mean, std = scores.mean(), scores.std()
    if std == 0:
        return np.full(len(scores), 0.5)
    return np.clip((scores - (mean - 3 * std)) / (6 * std), 0.0, 1.0)
