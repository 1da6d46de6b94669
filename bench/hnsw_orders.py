"""The HNSW insertion-order study of `trove bench ann --part orders`: does LID-ordered insertion pay here, and does
the recall-targeted search depth keep the documented recall?

Per data set, in one run:
- one graph per insertion order (descending LID, ascending LID, arrival), same M and ef_construction, built by
  Trove's own builder (index/backends/hnsw_graph.py); recall@10 of each at fixed depths on the test queries,
  and the batched QPS of each at the smallest depth reaching the target recall on the tuning queries;
- the seal-time cost: the arrival graph built with the LID pass and held-out calibration, against a plain FAISS
  add of the same vectors (no LID, no calibration);
- recall-targeted depth through real collections (the default HNSW config, one segment and ten segments):
  recall@10 on held-out test queries, which the calibration never saw.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.collections import fill, open_catalog, recall_of
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


def _graph(dim: int, m: int, ef_construction: int) -> faiss.IndexHNSWFlat:
    index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    return index


def _depth_for(index: faiss.IndexHNSWFlat, queries: np.ndarray, truth: np.ndarray, target: float) -> tuple[int, bool]:
    for ef in EF_LADDER:
        if recall_at_k(hnsw_search_at(index)(queries, ef), truth, 10) >= target:
            return ef, True
    return EF_LADDER[-1], False


def _collection_recall(dataset: Dataset, segments: int, m: int, ef_construction: int, tune_truth: np.ndarray, test_truth: np.ndarray) -> dict[str, Any]:
    """A collection on the default HNSW config, sealed into ``segments`` segments before any query (depths
    from held vectors); then the tuning queries run as traffic and the optimizer re-measures each segment's
    depth on them (its calibrate tasks). Recall@10 on the test queries, which neither step saw, after each."""
    from index.backends.faiss_index import IndexSpec

    per_segment = -(-len(dataset.docs) // segments)

    def graphs(collection: Any) -> list[dict[str, Any]]:
        return [s["graph"] for s in collection.info()["segments"] if s.get("graph")]

    with tempfile.TemporaryDirectory(prefix="bench-orders-") as tmp:
        catalog = open_catalog(Path(tmp), seal_points=per_segment, max_segment_points=per_segment, merge_factor=1000)
        collection = catalog.create("c", model=None, dim=dataset.dim, metric="ip", index=IndexSpec(type="hnsw", m=m, ef_construction=ef_construction))
        fill(collection, dataset.docs)
        collection.optimize(seal=True)
        held_recall, held_graphs = recall_of(collection, dataset.test.vectors, test_truth), graphs(collection)
        recall_of(collection, dataset.tune.vectors, tune_truth)  # traffic
        calibrations = collection.engine.optimize()
        query_recall, query_graphs = recall_of(collection, dataset.test.vectors, test_truth), graphs(collection)
        lid = collection.info()["index"]["lid"]
        catalog.close()
    return {
        "segments": len(held_graphs),
        "held_only": {"recall_at_10": held_recall, "ef_search": sorted({g["ef_search"] for g in held_graphs if g["ef_search"] is not None})},
        "after_queries": {"recall_at_10": query_recall, "ef_search": sorted({g["ef_search"] for g in query_graphs if g["ef_search"] is not None}), "calibrations": calibrations},
        "held_recall_at_10": [round(g["recall_at_10"], 4) for g in held_graphs if g["recall_at_10"] is not None],
        "lid": lid,
    }


def study(dataset: Dataset, m: int, ef_construction: int, target: float, step: Any) -> dict[str, Any]:
    docs = np.ascontiguousarray(dataset.docs, np.float32)
    tune, test = dataset.tune.vectors, dataset.test.vectors
    tune_truth, test_truth = dataset.truth(dataset.tune).ids[:, :10], dataset.truth(dataset.test).ids[:, :10]
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
        graphs[order] = index
    step("QPS at the target recall")
    timings: dict[str, list[float]] = {order: [] for order in INSERTION_ORDERS}
    for turn in range(QPS_ROUNDS):
        for order in INSERTION_ORDERS[turn % 3 :] + INSERTION_ORDERS[: turn % 3]:
            started = time.perf_counter()
            hnsw_search_at(graphs[order])(test, orders[order]["ef_for_target"])
            timings[order].append(time.perf_counter() - started)
    for order in INSERTION_ORDERS:
        orders[order]["qps_at_target"] = len(test) / float(np.median(timings[order]))
    del graphs
    step("seal time without the LID pass")
    plain = _graph(dataset.dim, m, ef_construction)
    started = time.perf_counter()
    plain.add(docs)
    plain_seconds = time.perf_counter() - started
    step("recall-targeted depth through collections")
    collections = {str(s): _collection_recall(dataset, s, m, ef_construction, tune_truth, test_truth) for s in (1, 10)}
    return {
        "name": dataset.name,
        "label": dataset.label,
        "synthetic": dataset.synthetic,
        "docs": len(docs),
        "test_queries": len(test),
        "orders": orders,
        "seal": {"plain_add_seconds": plain_seconds, "trove_arrival_seconds": orders["arrival"]["build_seconds"], "ratio": orders["arrival"]["build_seconds"] / plain_seconds},
        "collections": collections,
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
    lines += [
        "",
        (
            f"Seal time: Trove's build (LID pass {orders['arrival']['lid_seconds']:.1f} s, held-out calibration, arrival order) "
            f"{seal['trove_arrival_seconds']:.1f} s vs a plain FAISS add {seal['plain_add_seconds']:.1f} s: **{seal['ratio']:.2f}x**."
        ),
        "",
        (
            f"Recall-targeted depth through collections (default HNSW config, target {target}): recall@10 on the held-out "
            "test queries with the depths measured at seal on held vectors, then after the tuning queries ran as traffic "
            "and the optimizer re-measured each segment's depth on them:"
        ),
        "",
        "| segments | recall@10, held-vector depths | ef | recall@10 after re-measuring on queries | ef | held-vector recall@10 at seal |",
        "|---|---|---|---|---|---|",
    ]
    for count, row in result["collections"].items():
        held = row["held_recall_at_10"]
        measured = f"{min(held):.3f} to {max(held):.3f}" if held else "not calibrated (segments too small)"
        before, after = row["held_only"], row["after_queries"]
        lines.append(
            f"| {count} | {before['recall_at_10']:.3f} | {before['ef_search'] or 'fallback'} | {after['recall_at_10']:.3f} | {after['ef_search'] or 'fallback'} | {measured} |"
        )
    return "\n".join(lines)
