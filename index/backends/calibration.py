"""Measuring the search depth an approximate index needs (an HNSW ef, an IVF nprobe) to reach a target recall.

A build holds out a few of its vectors (``held_out``), indexes the rest, and searches the index with the held
vectors (and the collection's recent queries, when there are enough) at a ladder of depths against their exact
neighbours among the indexed vectors (``calibration_probes``); ``scan_depths`` finds the smallest depth that
reaches the target, bisecting between the ladder's last two rungs, and keeps the recall curve per depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import faiss
import numpy as np

CALIBRATION_K = 10  # the depth is measured for recall@10; deeper queries scale it by k / 10
MIN_CALIBRATED = 2_000  # smaller indexes are cheap to search deep: they keep the configured fallback depth
MAX_HELD = 256
MIN_QUERIES = 32  # recent queries a calibration needs before it trusts them
MARGIN_ERRORS = 2.0  # see scan_with_margin

SearchAt = Callable[[np.ndarray, int], np.ndarray]  # (probe vectors, depth) -> their top-10 positions
Probes = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (probe vectors, their exact top-10 positions)


def held_out(n: int, seed: int) -> np.ndarray:
    """The positions a build holds out to measure its search depth on (none for an index too small to bother)."""
    rng = np.random.default_rng(seed + 1)
    return np.sort(rng.choice(n, min(MAX_HELD, n // 20), replace=False)) if n >= MIN_CALIBRATED else np.zeros(0, np.int64)


def calibration_probes(
    vectors: np.ndarray, held: np.ndarray, queries: np.ndarray | None, position_of: np.ndarray, metric: int
) -> Probes:
    """Held vectors (and recent queries, when there are enough) with their exact top-10 among the vectors that
    are not held, as index positions (``position_of`` maps a vector to its position)."""
    probes: dict[str, np.ndarray] = {}
    if len(held):
        probes["held"] = np.ascontiguousarray(vectors[held], np.float32)
        if queries is not None and len(queries) >= MIN_QUERIES:
            probes["queries"] = np.ascontiguousarray(queries, np.float32)
    truths: Probes = {}
    for name, probe in probes.items():
        _, near = faiss.knn(probe, vectors, CALIBRATION_K + len(held), metric=metric)
        inserted_only = np.where(np.isin(near, held), -1, near)
        truths[name] = probe, np.stack([position_of[row[row >= 0][:CALIBRATION_K]] for row in inserted_only])
    return truths


def standard_error(recalls: np.ndarray) -> float:
    """The standard error of a sample's mean recall@10, from the spread of its per-probe ``recalls``.

    A query's neighbours are found or missed together (a hard query misses several), so the error is that of n
    queries, not of 10 n neighbours: taken as binomial over the neighbours it was about half as large, and depths
    aimed two such errors above 0.95 served new queries 0.946 and 0.942 (WordNet 5k)."""
    return float(np.std(recalls, ddof=1)) / math.sqrt(len(recalls)) if len(recalls) >= 2 else 0.0


def scan_with_margin(
    search_at: SearchAt, probes: Probes, target: float, ladder: tuple[int, ...], floor: int
) -> tuple[dict[str, int], list[tuple[int, tuple[float, ...]]], float]:
    """``scan_depths`` for the smallest depth at which every probe set's mean recall@10, less MARGIN_ERRORS
    standard errors of it at that depth, reaches the target: so that new queries reach it too (a depth whose
    sample just reaches the target serves less about half the time; two standard errors leave that at about one
    in forty). Returns the scan's results and the recall aimed at: the least mean recall@10 the bound asked of a
set at the chosen depth (the target plus that set's margin there; every set reached at least its own).

    The margin is the error at the depth chosen. Taking the spread at the depth that just reached the target,
    where per-query recall spreads most, and aiming the mean above the target by that much chose depths up to
    twice as deep for the same bound (LeanVec-OOD + LVQ-8 on WordNet, 75 held queries: oversample 553 where the
    bound held from about 300)."""
    reached, curve, errors = _scan(search_at, probes, target, ladder, floor, MARGIN_ERRORS)
    return reached, curve, target + MARGIN_ERRORS * min(errors.values(), default=0.0)


def per_probe_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each probe's recall@10: the share of its exact top-10 (``truth``) that ``found`` holds."""
    return (truth[:, :, None] == found[:, None, :]).any(axis=2).mean(axis=1)


def measure(search_at: SearchAt, probe: np.ndarray, truth: np.ndarray, depth: int) -> float:
    """Recall@10 of ``probe`` against ``truth`` at ``depth``."""
    return float(_top_j_recalls(search_at(probe, depth), truth)[-1])


def _top_j_recalls(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(r_1 .. r_10): for each j, the mean share of a probe's exact top-j that ``found`` (its top-10) holds."""
    hit = (truth[:, :, None] == found[:, None, :]).any(axis=2)  # (probes, 10): truth rank j found at all
    return hit.cumsum(axis=1).mean(axis=0) / np.arange(1, truth.shape[1] + 1)


def scan_depths(
    search_at: SearchAt, probes: Probes, target: float, ladder: tuple[int, ...], floor: int
) -> tuple[dict[str, int], list[tuple[int, tuple[float, ...]]]]:
    """The smallest depth (an HNSW ef, an IVF nprobe) at which every probe set's recall@10 reaches ``target``: up
    the ``ladder``, then bisected between its last two rungs (never below ``floor``; the ladder's top if never).

    Returns the depth each set first reached it at among those measured, and the curve up to the chosen depth:
    per measured depth, the lower r_1..r_10 of the sets."""
    reached, curve, _ = _scan(search_at, probes, target, ladder, floor, 0.0)
    return reached, curve


def _scan(
    search_at: SearchAt, probes: Probes, target: float, ladder: tuple[int, ...], floor: int, margin_errors: float
) -> tuple[dict[str, int], list[tuple[int, tuple[float, ...]]], dict[str, float]]:
    """``scan_depths`` where a set reaches the target when its mean recall@10 less ``margin_errors`` standard errors
    does; also returns each set's standard error at the chosen depth."""
    measured: dict[int, dict[str, tuple[np.ndarray, float]]] = {}

    def bound(depth: int, name: str) -> float:
        curve, error = measured[depth][name]
        return float(curve[-1]) - margin_errors * error

    def at(depth: int) -> bool:
        if depth not in measured:
            measured[depth] = {}
            for name, (probe, truth) in probes.items():
                found = search_at(probe, depth)
                measured[depth][name] = (_top_j_recalls(found, truth), standard_error(per_probe_recall(found, truth)))
        return all(bound(depth, name) >= target for name in probes)

    low, high = floor, ladder[-1]
    for depth in ladder:
        if at(depth):
            high = depth
            break
        low = depth
    while high - low > 1 and at(high):
        middle = (low + high) // 2
        if at(middle):
            high = middle
        else:
            low = middle
    depths = sorted(d for d in measured if d <= high)
    reached = {name: next(d for d in depths if bound(d, name) >= target) for name in probes if any(bound(d, name) >= target for d in depths)}
    curve = [(d, tuple(round(float(v), 4) for v in np.min([c for c, _ in measured[d].values()], axis=0))) for d in depths]
    return reached, curve, {name: error for name, (_, error) in measured[depths[-1]].items()}
