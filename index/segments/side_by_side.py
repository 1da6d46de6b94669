"""Searching a view's parts side by side, only when that is faster than searching them in turn.

FAISS parallelises a search over its queries, so a few queries leave cores idle: segments can then be searched
side by side (FAISS releases the GIL), as Qdrant searches its segments. But handing a search to a pool thread
costs tens of microseconds on an idle machine and milliseconds on a busy one, while a 10k-point HNSW segment
answers a query in about 0.09 ms: ten such segments handed out one by one took 1.9 ms (idle) to 7 ms (busy)
where searching them in turn takes 0.9 ms. So each part's search time is measured and smoothed, and parts go side
by side only when together they take longer than PARALLEL_MIN_S, and only while side-by-side runs measure
faster than the parts' summed times (every PROBE_EVERY-th eligible search tries again, for when the machine
quietens, and one stalled run counts at most MAX_SAMPLE). Side by side means one group per core, balanced by
measured time, the calling thread searching the heaviest group itself: one hand-off per other core, not one per part.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

PARALLEL_MIN_S = 0.0005  # below this the hand-offs cost about what the second core would save
SMOOTHING = 0.2  # weight of a new measurement in a running figure
PROBE_EVERY = 8  # a lost probe costs one slower search in eight; a hiccup must not switch side by side off for long
MAX_SAMPLE = 2.0  # one stalled run (a page fault, a busy moment) counts as at most twice the summed times
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
# (searcher, exact) -> smoothed seconds per search of a few queries; an entry goes with its segment.
_costs: weakref.WeakKeyDictionary[object, dict[bool, float]] = weakref.WeakKeyDictionary()


@dataclass
class _Gain:
    """Side-by-side wall time over the parts' summed times, smoothed (below 1: side by side pays)."""

    ratio: float = 0.5
    eligible: int = 0  # searches that qualified by cost, counted for the probes


_gain = _Gain()


def _fanout_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max((os.cpu_count() or 1) - 1, 1), thread_name_prefix="segment-search")
        return _pool


def cost_of(searcher: object, exact: bool) -> float:
    """The measured seconds one search of a few queries takes on ``searcher`` (0 until measured)."""
    return _costs.get(searcher, {}).get(exact, 0.0)


def _timed(task: Callable[[], T], searcher: object, exact: bool) -> T:
    started = time.perf_counter()
    out = task()
    seconds = time.perf_counter() - started
    costs = _costs.setdefault(searcher, {})
    previous = costs.get(exact)
    costs[exact] = seconds if previous is None else previous + SMOOTHING * (seconds - previous)
    return out


def search_parts(tasks: Sequence[Callable[[], T]], searchers: Sequence[object], exact: Sequence[bool]) -> list[T]:
    """Run each part's search (``tasks[i]`` on ``searchers[i]``), side by side when it pays; results in order."""
    timed = [lambda i=i: _timed(tasks[i], searchers[i], exact[i]) for i in range(len(tasks))]
    costs = [cost_of(s, e) for s, e in zip(searchers, exact, strict=True)]
    cores = os.cpu_count() or 1
    serial = sum(costs)
    if len(tasks) < 2 or cores < 2 or serial < PARALLEL_MIN_S:
        return [task() for task in timed]
    _gain.eligible += 1
    if _gain.ratio >= 1 and _gain.eligible % PROBE_EVERY:
        return [task() for task in timed]
    started = time.perf_counter()
    groups: list[list[int]] = [[] for _ in range(min(cores, len(tasks)))]
    loads = [0.0] * len(groups)
    for i in sorted(range(len(tasks)), key=lambda i: -costs[i]):  # longest first, each to the lightest group
        lightest = loads.index(min(loads))
        groups[lightest].append(i)
        loads[lightest] += costs[i]
    heaviest = loads.index(max(loads))
    results: list[T | None] = [None] * len(tasks)

    def run(group: list[int]) -> None:
        for i in group:
            results[i] = timed[i]()

    handed = [_fanout_pool().submit(run, group) for g, group in enumerate(groups) if g != heaviest]
    run(groups[heaviest])
    for future in handed:
        future.result()
    _gain.ratio += SMOOTHING * (min((time.perf_counter() - started) / serial, MAX_SAMPLE) - _gain.ratio)
    return results  # type: ignore[return-value]
