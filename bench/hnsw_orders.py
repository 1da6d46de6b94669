"""The HNSW insertion-order study of `trove bench ann --part orders`: does LID-ordered insertion pay here?

Per data set, in one run: one graph per insertion order (descending LID, ascending LID, arrival), same M and
ef_construction, built by Trove's own builder (index/backends/hnsw_graph.py); recall@10 of each at fixed depths
on the test queries, and the batched QPS of each at the smallest depth reaching the target recall on the tuning
queries; the seal-time cost of the LID pass (timed inside each build: the seal without it is the rest).
Whether the calibrated depth keeps the documented recall through collections is bench/hnsw_depth.py's.
"""

from __future__ import annotations

import time
from typing import Any

import faiss
import numpy as np

from bench.datasets import Dataset
from bench.metrics import recall_at_k
from index.backends.faiss_index import FALLBACK_EF_SEARCH
from index.backends.hnsw_graph import (
    EF_LADDER,
    INSERTION_ORDERS,
    build_hnsw,
    hnsw_search_at,
)

FIXED_DEPTHS = (16, 32, 64, 128)
QPS_ROUNDS = 3  # batched timings per order, interleaved so machine load hits every order alike
# Graphs kept together for interleaved timings up to this many bytes of vectors; past it (the 1M set: 4.6 GB for
# three) each graph is timed right after its build and freed.
INTERLEAVED_BYTES = 2 << 30


def _graph(dim: int, m: int, ef_construction: int) -> faiss.IndexHNSWFlat:
    index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    return index


def _depth_for(index: faiss.IndexHNSWFlat, queries: np.ndarray, truth: np.ndarray, target: float) -> tuple[int, bool]:
    for ef in EF_LADDER:
        if recall_at_k(hnsw_search_at(index)(queries, ef), truth, 10) >= target:
            return ef, True
    return EF_LADDER[-1], False


def _timings(graphs: dict[str, faiss.IndexHNSWFlat], queries: np.ndarray, depths: dict[str, int]) -> dict[str, float]:
    """Batched QPS of each graph at its depth: QPS_ROUNDS timings each, in rotating turns, the median kept."""
    names = list(graphs)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(QPS_ROUNDS):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            started = time.perf_counter()
            hnsw_search_at(graphs[name])(queries, depths[name])
            timings[name].append(time.perf_counter() - started)
    return {name: len(queries) / float(np.median(t)) for name, t in timings.items()}


def study(dataset: Dataset, m: int, ef_construction: int, target: float, step: Any) -> dict[str, Any]:
    docs = np.ascontiguousarray(dataset.docs, np.float32)
    tune, test = dataset.tune.vectors, dataset.test.vectors
    tune_truth, test_truth = dataset.truth(dataset.tune).ids[:, :10], dataset.truth(dataset.test).ids[:, :10]
    interleaved = docs.nbytes * len(INSERTION_ORDERS) <= INTERLEAVED_BYTES
    orders: dict[str, dict[str, Any]] = {}
    graphs: dict[str, faiss.IndexHNSWFlat] = {}
    for order in INSERTION_ORDERS:
        step(f"{order}: building")
        index = _graph(dataset.dim, m, ef_construction)
        report = build_hnsw(index, docs, order, target, lambda _: None)
        depth, reached = _depth_for(index, tune, tune_truth, target)
        orders[order] = {
            "recall_at_10": {str(ef): recall_at_k(hnsw_search_at(index)(test, ef), test_truth, 10) for ef in FIXED_DEPTHS},
            "calibrated_ef": report.ef_search,
            "recall_at_calibrated_ef": recall_at_k(hnsw_search_at(index)(test, report.ef_search or FALLBACK_EF_SEARCH), test_truth, 10),
            "ef_for_target": depth,
            "reaches_target": reached,
            "build_seconds": report.build_seconds,
            "lid_seconds": report.lid_seconds,
            "lid": {"mean": report.lid_mean, "p10": report.lid_p10, "p50": report.lid_p50, "p90": report.lid_p90},
        }
        if interleaved:
            graphs[order] = index
        else:
            orders[order]["qps_at_target"] = _timings({order: index}, test, {order: depth})[order]
            del index
    if interleaved:
        step("QPS at the target recall")
        for order, qps in _timings(graphs, test, {o: orders[o]["ef_for_target"] for o in graphs}).items():
            orders[order]["qps_at_target"] = qps
    del graphs
    arrival = orders["arrival"]
    return {
        "name": dataset.name,
        "label": dataset.label,
        "synthetic": dataset.synthetic,
        "docs": len(docs),
        "test_queries": len(test),
        "qps_timing": "interleaved across orders" if interleaved else "each graph right after its build (three would not fit in memory together)",
        "orders": orders,
        "seal": {
            "with_lid_seconds": arrival["build_seconds"],
            "without_lid_seconds": arrival["build_seconds"] - arrival["lid_seconds"],
            "lid_seconds": arrival["lid_seconds"],
            "ratio": arrival["build_seconds"] / (arrival["build_seconds"] - arrival["lid_seconds"]),
        },
    }


def markdown(result: dict[str, Any], target: float) -> str:
    orders = result["orders"]
    lines = [
        f"## {result['name']}" + (" (SYNTHETIC)" if result["synthetic"] else ""),
        "",
        f"{result['label']}. {result['docs']:,} documents, {result['test_queries']} held-out test queries.",
        "",
        "| order | " + " | ".join(f"recall@10 ef={ef}" for ef in FIXED_DEPTHS) + f" | ef for {target} (tuning) | QPS at it (batched) | calibrated ef | recall@10 there | LID mean / p50 | build s |",
        "|---|" + "---|" * (len(FIXED_DEPTHS) + 6),
    ]
    for order, row in orders.items():
        recalls = " | ".join(f"{row['recall_at_10'][str(ef)]:.3f}" for ef in FIXED_DEPTHS)
        reached = "" if row["reaches_target"] else " (not reached)"
        lines.append(
            f"| {order} | {recalls} | {row['ef_for_target']}{reached} | {row['qps_at_target']:,.0f} | {row['calibrated_ef']} "
            f"| {row['recall_at_calibrated_ef']:.3f} | {row['lid']['mean']:.1f} / {row['lid']['p50']:.1f} | {row['build_seconds']:.1f} |"
        )
    seal = result["seal"]
    gains = "; ".join(
        f"{order} " + ", ".join(f"{100 * (orders[order]['recall_at_10'][str(ef)] - orders['arrival']['recall_at_10'][str(ef)]):+.1f}" for ef in FIXED_DEPTHS)
        for order in orders
        if order != "arrival"
    )
    lines += [
        "",
        f"QPS timed {result['qps_timing']}.",
        "",
        (
            f"Seal time (arrival order, held-out calibration included): {seal['with_lid_seconds']:.1f} s with the LID pass "
            f"({seal['lid_seconds']:.1f} s), {seal['without_lid_seconds']:.1f} s without it: **{seal['ratio']:.2f}x**."
        ),
        "",
        f"Points of recall@10 over arrival order at ef = {', '.join(map(str, FIXED_DEPTHS))}: {gains}.",
    ]
    return "\n".join(lines)
