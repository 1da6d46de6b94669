"""Concurrent single queries share batches, get their own answers, and keep their own errors."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.errors import InvalidInput
from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec
from index.catalog import Catalog
from index.query.coalescer import LINGER_SHARE, BatchCost, Coalescer
from index.requests import PointInput, Query


class SquareBatches:
    """A batch function that squares numbers, refuses negatives, and records the batch sizes it saw."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> list[int]:
        with self.lock:
            self.sizes.append(len(items))
        if any(i < 0 for i in items):
            raise InvalidInput("negative", code="negative")
        time.sleep(0.01)  # long enough for the other threads to queue behind this batch
        return [i * i for i in items]


def test_concurrent_calls_share_batches_and_each_gets_its_own_answer() -> None:
    run = SquareBatches()
    coalescer: Coalescer[int, int] = Coalescer(run)
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(coalescer.submit, range(400)))
    assert answers == [i * i for i in range(400)]
    assert sum(run.sizes) == 400
    assert max(run.sizes) > 1, "threads that queued behind a running batch went together"


def test_a_lone_call_runs_at_once_in_a_batch_of_one() -> None:
    run = SquareBatches()
    assert Coalescer(run).submit(7) == 49
    assert run.sizes == [1]


def test_a_bad_item_fails_alone_and_its_batch_mates_are_answered() -> None:
    run = SquareBatches()
    coalescer: Coalescer[int, int] = Coalescer(run)
    items = [i if i % 10 else -i - 1 for i in range(200)]

    def call(item: int) -> int | str:
        try:
            return coalescer.submit(item)
        except InvalidInput as error:
            return error.code

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, items))
    assert answers == [i * i if i >= 0 else "negative" for i in items]


def test_a_member_that_trips_a_bug_is_retried_alone_and_never_fails_its_batch_mates() -> None:
    """Not only the service's own errors: any exception a batch raises sends its members through one by one."""

    class Buggy(SquareBatches):
        def __call__(self, items: Sequence[int]) -> list[int]:
            if 13 in items:
                raise ZeroDivisionError("a bug that only item 13 trips")
            return super().__call__(items)

    run = Buggy()
    coalescer: Coalescer[int, int] = Coalescer(run)

    def call(item: int) -> int | str:
        try:
            return coalescer.submit(item)
        except ZeroDivisionError:
            return "bug"

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, range(100)))
    assert answers == ["bug" if i == 13 else i * i for i in range(100)]
    assert max(coalescer.sizes()) > 1, "the failing item did share a batch"


def test_async_callers_share_batches_on_the_coalescers_threads() -> None:
    run = SquareBatches()
    coalescer: Coalescer[int, int] = Coalescer(run)
    callers: set[int] = set()

    def recording(items: Sequence[int]) -> list[int]:
        callers.add(threading.get_ident())
        return run(items)

    coalescer._run_batch = recording

    async def burst() -> list[int | str]:
        async def one(i: int) -> int | str:
            try:
                return await coalescer.submit_async(i)
            except InvalidInput as error:
                return error.code

        return list(await asyncio.gather(*(one(i) for i in range(-3, 300))))

    assert asyncio.run(burst()) == ["negative"] * 3 + [i * i for i in range(300)]
    assert threading.get_ident() not in callers, "batches never run on the event loop's thread"
    sizes = coalescer.sizes()
    assert sum(size * n for size, n in sizes.items()) == 303, "every query went in exactly one formed batch"
    assert max(sizes) > 1
    coalescer.close()


def test_several_batches_run_at_once_up_to_in_flight() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow(items: Sequence[int]) -> list[int]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(slow, max_batch=2, in_flight=3)
    with ThreadPoolExecutor(24) as pool:
        assert list(pool.map(coalescer.submit, range(48))) == list(range(48))
    assert peak == 3, "three runners took batches together, and never more"
    assert max(coalescer.sizes()) <= 2
    coalescer.close()


def test_batch_size_is_capped() -> None:
    run = SquareBatches()
    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=4)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(coalescer.submit, range(200)))
    assert max(run.sizes) <= 4


@given(
    st.floats(0.0, 0.05),
    st.floats(0.0, 0.005),
    st.lists(st.integers(1, 256), min_size=2, max_size=60).filter(lambda sizes: len(set(sizes)) > 1),
)
@settings(max_examples=200, deadline=None)
def test_batch_cost_recovers_the_fixed_and_per_query_parts(fixed: float, per_query: float, sizes: list[int]) -> None:
    cost = BatchCost()
    for size in sizes:
        cost.ran(size, fixed + per_query * size)
    assert cost.fixed == pytest.approx(fixed, abs=1e-6) and cost.per_query == pytest.approx(per_query, abs=1e-7)


def test_linger_only_where_arrivals_come_faster_than_the_fixed_cost_and_members_still_pay() -> None:
    cost = BatchCost()
    for size in (1, 2, 8, 32):
        cost.ran(size, 0.02 + 0.0005 * size)  # a flat scan: 20 ms whatever the size, 0.5 ms a member
    for t in (0.0, 0.001, 0.002):
        cost.arrived(t)
    assert cost.linger(4) == pytest.approx(LINGER_SHARE * 0.02)
    assert cost.linger(40) == 0.0, "40 members already spread the 20 ms thinner than each adds"
    slow = BatchCost()
    slow.ran(1, 0.02)
    slow.ran(2, 0.021)
    for t in (0.0, 0.5, 1.0):
        slow.arrived(t)
    assert slow.linger(1) == 0.0, "a query every 0.5 s would wait for nobody"


def closed_loop_batch_sizes(share: float, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """16 clients, each sending its next query when the last is answered, against batches that cost 20 ms
    plus 0.5 ms a member; the sizes of the batches formed."""
    monkeypatch.setattr("index.query.coalescer.LINGER_SHARE", share)
    sizes: list[int] = []

    def scan(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.02 + 0.0005 * len(items))
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(scan, in_flight=1)

    def client(first: int) -> None:
        for i in range(first, first + 12):
            assert coalescer.submit(i) == i

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(client, range(0, 16 * 12, 12)))
    coalescer.close()
    return sizes[4:]  # once the costs are measured


def test_a_loaded_coalescer_lingers_into_fuller_batches_and_a_lone_client_never_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without lingering, closed-loop clients split into alternating small batches: each batch runs while the
    previous one's clients are still coming back. Waiting a fraction of the fixed cost gathers them."""
    eager, lingering = closed_loop_batch_sizes(0.0, monkeypatch), closed_loop_batch_sizes(LINGER_SHARE, monkeypatch)
    assert np.mean(lingering) > 1.3 * np.mean(eager), (np.mean(lingering), np.mean(eager))
    assert len(lingering) < len(eager)

    lone: Coalescer[int, int] = Coalescer(lambda items: (time.sleep(0.02), list(items))[1])
    assert [lone.submit(i) for i in range(10)] == list(range(10))
    assert lone.lingered_seconds() == 0.0, "one query after another: nobody to wait for"


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_concurrent_collection_queries_equal_one_at_a_time(tmp_path: Path, registry: ModelRegistry, sentence_vectors: np.ndarray, index: str) -> None:
    catalog = Catalog(tmp_path, registry)
    catalog.load_all()
    collection = catalog.create("c", model=None, dim=sentence_vectors.shape[1], metric="cosine", index=IndexSpec(index))  # type: ignore[arg-type]
    docs, queries = sentence_vectors[100:], sentence_vectors[:100]
    collection.upsert([PointInput(id=i, vector=v.tolist(), payload={"odd": i % 2}) for i, v in enumerate(docs)])
    # Mixed settings in one burst: different k, exact or not, some filtered.
    burst = [Query(vector=q.tolist(), k=5 + i % 7, exact=i % 3 == 0, with_payload=i % 2 == 0) for i, q in enumerate(queries)]
    alone = [collection.query_batch([q])[0] for q in burst]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(collection.query, burst))
    for a, b in zip(alone, together, strict=True):
        assert [h.id for h in a] == [h.id for h in b]
        assert [h.payload for h in a] == [h.payload for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5, atol=1e-6)
    catalog.close()
