"""Measuring a fitted compression on held queries: the search depths that reach its target recall, each stage's recall@10.

Held queries are never points of the searched set, so no query finds itself: stored vectors held out are
removed from the searched set while measuring (a mask over the new segments, which every stage honours as a
filter), and query samples (those given with the config, else the collection's recent queries) are searched as
queries are, unmasked (a mask is a filter, which some coarse stages answer deeper: a binary graph walk asks for
FILTER_MARGIN times the candidates, so a masked measurement overstated an unfiltered query's recall@10, 0.955
measured where new queries got 0.934). Exact top-10 is taken over the same searched set. The fit then searches the new segments as a query
will (``View.search`` at the default depth) on a ladder of coarse depths, bisected to the smallest that reaches
the target on every held set, less two standard errors of the estimate there (index/backends/calibration.py
``scan_with_margin``), and, with that depth fixed, the smallest share each rescoring stage may keep, by the same bound. An explicit
``oversample`` is measured, not changed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.transforms.bebr import MIN_SELECTING_QUERIES as BEBR_MIN_QUERIES
from encoders.transforms.leanvec import MIN_QUERIES as LEANVEC_MIN_QUERIES
from index.backends.calibration import CALIBRATION_K, MARGIN_ERRORS, per_probe_recall, scan_with_margin, standard_error
from index.compression.multistage import MultiStageIndex, SearchDepth, Stage
from index.compression.spec import MAX_OVERSAMPLE, CompressionSpec
from index.segments.view import View

# Stored vectors held out: at most this many, and at most this share of the points.
HELD_VECTORS = 200
HELD_SHARE = 0.1


@dataclass(frozen=True)
class HeldSet:
    """One set of held queries: where they came from, their vectors, their exact top-10 rows in the searched set."""

    name: str  # "stored" or "queries"
    source: str
    vectors: np.ndarray
    truth: np.ndarray
    masked: bool  # searched with the held stored rows kept out (stored vectors); else over every row


@dataclass(frozen=True)
class Measurement:
    """What the fit chose and measured: the depths, the recall per held set, the stages' recall."""

    depth: SearchDepth
    aimed_at: float | None  # the least mean recall@10 the bound asked of a held set at the depths kept: the target plus its margin
    chosen_by: str  # "fit" (target_recall) or "config" (an explicit oversample)
    reached: bool
    recall: dict[str, float]  # held set -> recall@10 of the answer at ``depth``
    stages: list[dict[str, Any]]
    scoring: dict[str, Any] | None = None  # binary codes: each coarse scoring's depth for the aim, its recall and time

    def report(self, spec: CompressionSpec, held: Sequence[HeldSet]) -> dict[str, Any]:
        return {
            "search": {
                **self.depth.to_json(),
                "chosen_by": self.chosen_by,
                "target_recall": spec.rerank.target_recall if self.chosen_by == "fit" else None,
                "aimed_at": self.aimed_at,
                "reached": self.reached,
                "recall_at_10": self.recall,
            },
            "held_queries": {h.name: {"count": len(h.vectors), "from": h.source} for h in held},
            "stages": self.stages,
        } | ({"scoring": self.scoring} if self.scoring is not None else {})


def pick_held_rows(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The stored rows held out of the searched set (sorted): at most HELD_VECTORS, at most HELD_SHARE of them."""
    count = min(HELD_VECTORS, int(len(rows) * HELD_SHARE))
    return np.sort(rng.choice(rows, count, replace=False)) if count else np.zeros(0, np.int64)


GIVEN_QUERIES = "the query samples given with the config"


def query_learners(spec: CompressionSpec) -> list[tuple[str, int]]:
    """(name, the fewest samples it learns from) of each stage of ``spec`` that learns from query samples."""
    learners = []
    if spec.leanvec is not None and spec.leanvec.variant == "ood":
        learners.append(("LeanVec-OOD", LEANVEC_MIN_QUERIES))
    if spec.quantizer.kind == "binary" and spec.quantizer.learned:
        learners.append(("the learned binary codes", BEBR_MIN_QUERIES))
    return learners


def split_queries(
    spec: CompressionSpec, queries: np.ndarray | None, rng: np.random.Generator, source: str = GIVEN_QUERIES
) -> tuple[np.ndarray | None, tuple[np.ndarray | None, str]]:
    """(the query samples the fit learns from, (those it measures on, where they came from)).

    LeanVec-OOD and learned binary codes learn from the samples: a quarter of them are held out of the fit (when
    enough remain to learn from), so the measured recall is not that of queries it was shaped for; else it is
    measured on all, and says so."""
    if queries is None:
        return None, (None, "")
    learners = [(name, least) for name, least in query_learners(spec) if len(queries) >= least]
    if not learners:
        return queries, (queries, source)
    names, least = " and ".join(name for name, _ in learners), max(least for _, least in learners)
    order = rng.permutation(len(queries))
    held = len(queries) // 4 if len(queries) - len(queries) // 4 >= least else 0
    if not held:
        return queries, (queries, f"{source} (too few to hold some out: {names} also learned from these)")
    return queries[np.sort(order[held:])], (queries[np.sort(order[:held])], f"{source} that {names} did not learn from")


def held_sets(view: View, held_rows: np.ndarray, queries: np.ndarray | None, query_source: str) -> tuple[np.ndarray, list[HeldSet]]:
    """(the searched rows: every row of ``view`` but the held ones, the held sets with their exact top-10: the stored
    vectors' among the searched rows, the queries' among every row)."""
    searched = np.setdiff1d(view.live_rows(), held_rows, assume_unique=True)
    sets = []
    if len(held_rows):
        sets.append(("stored", "stored vectors, removed from the searched set while measuring", view.vectors(held_rows)[1]))
    if queries is not None and len(queries):
        sets.append(("queries", query_source, np.ascontiguousarray(queries, np.float32)))
    allowed = view.masks(searched)
    return searched, [
        HeldSet(name, source, v, view.search(v, CALIBRATION_K, allowed if name == "stored" else None, exact=True)[1], name == "stored") for name, source, v in sets
    ]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top-10 (its found rows, -1 none) that ``found`` holds in its first 10."""
    hits = [np.intersect1d(f[:CALIBRATION_K][f[:CALIBRATION_K] >= 0], t[t >= 0]).size / max(1, int((t >= 0).sum())) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 1.0


def _ladder(low: int, high: int) -> tuple[int, ...]:
    """Doubling depths from ``low``, ending exactly at ``high``."""
    rungs = [low]
    while rungs[-1] * 2 < high:
        rungs.append(rungs[-1] * 2)
    return tuple(dict.fromkeys([*rungs, max(high, low)]))


def compressed_indexes(view: View) -> list[MultiStageIndex]:
    return [index for p in view.parts if isinstance(index := getattr(p.searcher, "index", None), MultiStageIndex)]


def measure(view: View, searched: np.ndarray, held: Sequence[HeldSet], spec: CompressionSpec) -> Measurement:
    """Choose the depths (unless the config fixes the oversample), set them on the view's compressed segments,
    measure the answer's and each stage's recall there."""
    k, target = CALIBRATION_K, spec.rerank.target_recall
    aim: float | None = None
    indexes = compressed_indexes(view)
    probes = {h.name: (h.vectors, h.truth) for h in held}
    rescoring = indexes[0].rescoring_stages if indexes else 0

    allowed = view.masks(searched)
    masks = {id(h.vectors): allowed if h.masked else None for h in held}

    def search_at(depth: SearchDepth, vectors: np.ndarray) -> np.ndarray:
        for index in indexes:
            index.depth = depth
        return view.search(vectors, k, masks[id(vectors)])[1]

    explicit = spec.rerank.oversample
    top = max(k, min(len(searched), math.floor(k * MAX_OVERSAMPLE)))
    if explicit is not None:
        depth = SearchDepth(explicit)
    elif probes:
        _, curve, aim = scan_with_margin(lambda v, coarse: search_at(SearchDepth(coarse / k), v), probes, target, _ladder(k, top), k)
        coarse = curve[-1][0]
        keeps = SearchDepth(coarse / k).keeps(k, coarse, rescoring)[1:]
        for stage in range(rescoring):  # with the coarse depth fixed, the fewest candidates each later stage may keep

            def keep_at(v: np.ndarray, keep: int, stage: int = stage) -> np.ndarray:
                trial = [*keeps[:stage], keep, *keeps[stage + 1 :]]
                return search_at(SearchDepth(coarse / k, tuple(c / coarse for c in trial)), v)

            reached, curve, _ = scan_with_margin(keep_at, probes, target, _ladder(k, keeps[stage]), k)
            if len(reached) == len(probes):  # else the default stays: the target is out of reach anyway
                keeps[stage] = curve[-1][0]
        depth = SearchDepth(coarse / k, tuple(c / coarse for c in keeps))
    else:
        depth = SearchDepth()
    scoring = _scorings(indexes, probes, target, _ladder(k, top), search_at) if probes and any(i._hamming is not None for i in indexes) else None
    found = {h.name: search_at(depth, h.vectors) for h in held}
    recall = {h.name: round(_recall(found[h.name], h.truth), 4) for h in held}
    if aim is not None:  # what the bound asked of the held sets at the depths kept (each reached at least its own)
        aim = target + MARGIN_ERRORS * min(standard_error(per_probe_recall(found[h.name][:, :k], h.truth)) for h in held)
    return Measurement(
        scoring=scoring,
        depth=depth,
        aimed_at=None if aim is None else round(aim, 4),
        chosen_by="config" if explicit is not None else "fit",
        reached=bool(recall) and all(r >= target for r in recall.values()),
        recall=recall,
        stages=stage_recall(view, searched, held),
    )


def _scorings(
    indexes: Sequence[MultiStageIndex], probes: dict[str, tuple[np.ndarray, np.ndarray]], target: float, ladder: tuple[int, ...],
    search_at: Callable[[SearchDepth, np.ndarray], np.ndarray],
) -> dict[str, Any]:
    """Binary codes, both coarse scorings: the coarse depth (as an oversample) each needs for ``target`` on every held set (less the margin)
    (rescoring keeping half), the recall there and the search time per held query; the config's scoring serves."""
    k, serving = CALIBRATION_K, indexes[0].scoring
    out: dict[str, Any] = {"serving": serving}
    try:
        for mode in ("symmetric", "asymmetric"):
            for index in indexes:
                index.scoring = mode
            reached, curve, _ = scan_with_margin(lambda v, coarse: search_at(SearchDepth(coarse / k), v), probes, target, ladder, k)
            depth = SearchDepth(curve[-1][0] / k)
            started, queries = time.perf_counter(), 0
            recall = {}
            for name, (vectors, truth) in probes.items():
                recall[name] = round(_recall(search_at(depth, vectors), truth), 4)
                queries += len(vectors)
            seconds = time.perf_counter() - started
            out[mode] = {"oversample": depth.oversample, "reached": len(reached) == len(probes), "recall_at_10": recall, "ms_per_query": round(1000 * seconds / max(1, queries), 4)}
    finally:
        for index in indexes:
            index.scoring = serving
    return out


def stage_recall(view: View, searched: np.ndarray, held: Sequence[HeldSet]) -> list[dict[str, Any]]:
    """Each stage with its bytes per vector and the recall@10 of its own ranking against exact top-10, per held set
    and the lower of them (``recall_at_10``): measured in each compressed segment over its searched positions
    (against that segment's exact top-10), averaged weighted by points."""
    parts = [p for p in view.parts if isinstance(getattr(p.searcher, "index", None), MultiStageIndex)]
    if not parts:
        return []
    stages = parts[0].searcher.index.stages()  # type: ignore[attr-defined]
    weights = np.array([p.size for p in parts], np.float64)
    by_set: dict[str, list[float]] = {}
    for h in held:
        per_part = []
        for part in parts:
            allowed = np.zeros(part.size, bool)
            allowed[part.positions(searched)[1]] = True
            index: MultiStageIndex = part.searcher.index  # type: ignore[attr-defined]
            truth = index.search(h.vectors, CALIBRATION_K, allowed=allowed, exact=True)[1]
            per_part.append([_recall(rows, truth) for _, rows in index.ranked_stages(h.vectors, CALIBRATION_K, allowed)])
        by_set[h.name] = [round(float(r), 4) for r in np.average(np.array(per_part), axis=0, weights=weights)]
    return [_stage_json(stage, {name: r[i] for name, r in by_set.items()}) for i, stage in enumerate(stages)]


def _stage_json(stage: Stage, recall: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": stage.name, "bytes_per_vector": stage.bytes_per_vector, "storage": stage.storage}
    if recall:
        out |= {"recall_at_10": min(recall.values()), "recall_at_10_by_queries": recall}
    return out
