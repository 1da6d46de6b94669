"""A build chunk's vectors are stacked without holding the GIL for the whole chunk (index/storage/store.py):
one np.stack of 50,000 small rows held it for ~0.2 s, and every query of the server waited that long."""

from __future__ import annotations

import threading
import time

import numpy as np

from index.storage.store import STACK_ROWS, PointRecord, stacked_vectors


def _records(n: int, dim: int = 384) -> list[PointRecord]:
    rng = np.random.default_rng(0)
    return [PointRecord(id=i, vector=rng.standard_normal(dim).astype(np.float32)) for i in range(n)]


def test_stacked_vectors_equal_one_stack() -> None:
    for n in (1, STACK_ROWS, STACK_ROWS + 1, 3 * STACK_ROWS + 7):
        records = _records(n, 8)
        out = stacked_vectors(records)
        assert out.dtype == np.float32 and out.shape == (n, 8)
        np.testing.assert_array_equal(out, np.stack([r.vector for r in records]))


def _longest_wait_of_another_thread(work: object) -> tuple[float, float]:
    """(the longest gap between a ticking thread's ticks while ``work()`` runs, how long the work took)."""
    ticks: list[float] = []
    done = threading.Event()

    def tick() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0)

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.01)
    started = time.perf_counter()
    work()  # type: ignore[operator]
    took = time.perf_counter() - started
    done.set()
    ticker.join()
    during = [t for t in ticks if t >= started - 0.001]
    gaps = np.diff(during) if len(during) > 1 else np.array([took])
    return float(gaps.max()), took


def test_a_large_stack_lets_other_threads_run() -> None:
    records = _records(60_000)
    whole_gap, whole_took = _longest_wait_of_another_thread(lambda: np.stack([r.vector for r in records]))
    blocked_gap, blocked_took = _longest_wait_of_another_thread(lambda: stacked_vectors(records))
    assert whole_gap > 0.5 * whole_took  # one np.stack: the other thread waits through nearly all of it
    assert blocked_gap < 0.25 * blocked_took  # in blocks: it runs between them
