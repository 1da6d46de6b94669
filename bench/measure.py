"""Measuring one peer on one data set: build it, walk its sweep on the tuning queries, pick its best setting,
then measure that setting on the held-out test queries."""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench.datasets import Dataset, QuerySet
from bench.groundtruth import GroundTruth
from bench.metrics import latency_ms, mrr, ndcg_at_k, recall_at_k
from bench.peers import BuildSettings, Params, Peer, PeerUnavailable

MIN_SINGLE = 20  # single-query samples taken even past the time budget, so p50 means something
WARMUP = 8
ROUND_QUERIES = 10  # queries each system answers per round of an interleaved single-query measurement


@dataclass(frozen=True)
class Point:
    """One search setting measured on one query set."""

    params: Params
    recall_at_1: float
    recall_at_10: float
    ndcg_at_10: float | None  # against labelled relevant sets, when the data set has them
    mrr: float | None
    qps_batched: float  # all queries in one call
    qps_single: float  # one query per call, back to back
    p50_ms: float  # single-query latency
    p99_ms: float
    single_queries: int  # how many single-query calls the latency figures rest on


@dataclass
class PeerRun:
    name: str
    status: Literal["ok", "unavailable", "failed"]
    reason: str | None = None
    exact: bool = False
    build_params: Params = field(default_factory=dict)
    build_seconds: float | None = None
    memory_bytes: int | None = None
    bytes_per_vector: float | None = None
    memory_method: str | None = None
    sweep: list[Point] = field(default_factory=list)  # on the tuning queries
    best: Point | None = None  # the chosen setting, on the test queries
    reaches_target: bool = False  # some setting reached the recall target on the tuning queries

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def measure_point(peer: Peer, params: Params, queries: QuerySet, truth: GroundTruth, k: int, single_budget_s: float) -> Point:
    vectors = queries.vectors
    peer.search(vectors[:WARMUP], k, params)  # lazy loads and caches happen outside the clock
    started = time.perf_counter()
    found = peer.search(vectors, k, params)
    batched_s = time.perf_counter() - started

    latencies: list[float] = []
    deadline = time.perf_counter() + single_budget_s
    for i in range(len(vectors)):
        started = time.perf_counter()
        peer.search(vectors[i : i + 1], k, params)
        latencies.append(time.perf_counter() - started)
        if len(latencies) >= MIN_SINGLE and time.perf_counter() > deadline:
            break
    lat = latency_ms(np.array(latencies))
    labelled = queries.relevant is not None
    return Point(
        params=params,
        recall_at_1=recall_at_k(found, truth.ids, 1),
        recall_at_10=recall_at_k(found, truth.ids, min(10, k)),
        ndcg_at_10=ndcg_at_k(found, queries.relevant, 10) if labelled else None,  # type: ignore[arg-type]
        mrr=mrr(found, queries.relevant) if labelled else None,  # type: ignore[arg-type]
        qps_batched=len(vectors) / batched_s,
        qps_single=len(latencies) / float(np.sum(latencies)),
        p50_ms=lat["p50_ms"],
        p99_ms=lat["p99_ms"],
        single_queries=len(latencies),
    )


def interleaved_single(
    searches: dict[str, Callable[[np.ndarray], object]], queries: np.ndarray, budget_s: float, clock: Callable[[], float] = time.perf_counter
) -> dict[str, dict[str, float]]:
    """Single-query QPS and latency of several systems, taken in rounds so load on a shared machine hits all alike.

    ``clock``: wall time by default; ``time.thread_time`` gives the CPU a search spends on the calling thread (for
    searches that run there alone), which waiting for the scheduler on a busy machine does not inflate.

    Each round, every system still within its time budget answers the same ``ROUND_QUERIES`` queries one call
    each, in an order that rotates from round to round. A system drops out once it has spent ``budget_s`` and
    answered at least ``MIN_SINGLE`` queries; the measurement ends when all have, or the queries run out.
    """
    names = list(searches)
    for name in names:
        searches[name](queries[:1])  # lazy loads and caches happen outside the clock
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for turn, start in enumerate(range(0, len(queries), ROUND_QUERIES)):
        active = [n for n in names if len(latencies[n]) < MIN_SINGLE or sum(latencies[n]) < budget_s]
        if not active:
            break
        shift = turn % len(active)
        for name in active[shift:] + active[:shift]:
            search, spent = searches[name], latencies[name]
            for i in range(start, min(start + ROUND_QUERIES, len(queries))):
                started = clock()
                search(queries[i : i + 1])
                spent.append(clock() - started)
    return {
        name: {"qps_single": len(spent) / float(np.sum(spent)), **latency_ms(np.array(spent)), "single_queries": len(spent)}
        for name, spent in latencies.items()
    }


def interleaved_batched(searches: dict[str, Callable[[np.ndarray], object]], queries: np.ndarray, rounds: int) -> dict[str, float]:
    """Median seconds of each system's search of all ``queries`` in one call, over ``rounds`` rounds in which every
    system answers once, in an order that rotates, so load on a shared machine hits all alike (one call each
    ranged from 0.5 to 6.6 s for one system on a busy machine)."""
    names = list(searches)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(rounds):
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            searches[name](queries)
            seconds[name].append(time.perf_counter() - started)
    return {name: float(np.median(spent)) for name, spent in seconds.items()}


def choose(sweep: list[Point], target: float) -> tuple[Point, bool]:
    """The fastest (batched) setting at or above the recall target, else the most accurate one."""
    good = [p for p in sweep if p.recall_at_10 >= target]
    if good:
        return max(good, key=lambda p: p.qps_batched), True
    return max(sweep, key=lambda p: (p.recall_at_10, p.qps_batched)), False


def run_peer(
    peer_cls: type[Peer],
    dataset: Dataset,
    settings: BuildSettings,
    k: int,
    target: float,
    single_budget_s: float,
    step: Callable[[str], None] = lambda _: None,
) -> PeerRun:
    """Never raises for the peer's sake: a missing or failing peer comes back with its reason."""
    run = PeerRun(name=peer_cls.name, status="ok", exact=peer_cls.exact, memory_method=peer_cls.memory_method)
    with tempfile.TemporaryDirectory(prefix=f"bench-{peer_cls.name}-") as tmp:
        peer = peer_cls(settings, Path(tmp))
        try:
            step("checking")
            peer.check()
            step("building")
            started = time.perf_counter()
            peer.build(dataset.docs)
            run.build_seconds = time.perf_counter() - started
            run.build_params = peer.build_params()
            run.memory_bytes = peer.memory_bytes()
            run.bytes_per_vector = run.memory_bytes / len(dataset.docs)
            tune_truth, test_truth = dataset.truth(dataset.tune), dataset.truth(dataset.test)
            for params in peer.sweep():
                step(f"searching {params or 'exact'}")
                run.sweep.append(measure_point(peer, params, dataset.tune, tune_truth, k, single_budget_s))
            chosen, run.reaches_target = choose(run.sweep, target)
            step("test queries")
            run.best = measure_point(peer, chosen.params, dataset.test, test_truth, k, single_budget_s)
        except PeerUnavailable as exc:
            run.status, run.reason = "unavailable", str(exc)
        except Exception as exc:  # a peer's own bug or limit: record it and go on with the others
            last = traceback.extract_tb(exc.__traceback__)[-1]
            run.status, run.reason = "failed", f"{type(exc).__name__}: {exc} (at {Path(last.filename).name}:{last.lineno})"
        finally:
            try:
                peer.close()
            except Exception:  # closing what never opened
                pass
    return run
