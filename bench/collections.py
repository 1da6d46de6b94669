"""Trove collections as the bench suites drive them in process: a catalog on a folder, batched upserts that let
the optimizer run between them, single-query latency taken in turns, recall against exact search."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 5000


def open_catalog(root: Path, **engine: int | float) -> Any:
    from encoders.registry import ModelRegistry
    from index.catalog import Catalog
    from index.segments.policy import EngineSettings

    catalog = Catalog(root, ModelRegistry(root / "models"), EngineSettings(**engine))  # type: ignore[arg-type]
    catalog.load_all()
    return catalog


def fill(collection: Any, docs: np.ndarray, first_id: int = 0, settle: bool = True) -> None:
    """Upsert in batches, running the optimizer after each as the service's loop would between writes."""
    from index.requests import PointInput

    for start in range(0, len(docs), BATCH):
        collection.upsert([PointInput(id=first_id + start + i, vector=v) for i, v in enumerate(docs[start : start + BATCH])])
        if settle:
            collection.optimize()


def serve(collection: Any, queries: np.ndarray, k: int) -> None:
    """Answer ``queries`` one by one, as traffic (a collection learns its search depths from what it served)."""
    from index.requests import Query

    for q in queries:
        collection.query_batch([Query(vector=q, k=k, with_payload=False)])


def single_query_ms(collections: dict[str, Any], queries: np.ndarray, k: int, oversample: float | None = None, clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Single-query p50 latency of each collection, taking turns query by query (one noise for all).

    ``clock``: wall time by default; ``time.process_time`` gives the CPU each query costs, on all threads."""
    from index.requests import Query

    samples: dict[str, list[float]] = {name: [] for name in collections}
    for q in queries:
        for name, collection in collections.items():
            started = clock()
            collection.query_batch([Query(vector=q, k=k, with_payload=False, oversample=oversample)])
            samples[name].append(clock() - started)
    return {name: float(np.percentile(s[5:], 50) * 1000) for name, s in samples.items()}


def recall_of(collection: Any, queries: np.ndarray, truth: np.ndarray, oversample: float | None = None) -> float:
    from bench.metrics import recall_at_k
    from index.requests import Query

    hits = collection.query_batch([Query(vector=q, k=10, with_payload=False, oversample=oversample) for q in queries])
    found = np.array([([int(h.id) for h in r] + [-1] * 10)[:10] for r in hits])
    return recall_at_k(found, truth, 10)
