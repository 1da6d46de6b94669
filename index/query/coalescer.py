"""Group commit for reads: concurrent single queries share one batched search.

A batched search costs little more than a single one (one matrix product instead of many vector products,
one embedding call for many texts), so queries that arrive together are answered together. No timer: a
query that arrives while the collection is idle runs at once; those that arrive while batches run queue,
and the next free runner takes them all (up to ``max_batch``) as one batch. Up to ``in_flight`` batches run
at once, so a slow batch (a filtered query, a long text) does not stall the ones queued behind it.

Two ways in: ``submit`` blocks the calling thread (in-process callers; an idle collection answers on that
thread itself), ``submit_async`` awaits from an event loop (the HTTP edge; batches run on the coalescer's
own threads, so a request costs no threadpool hop of its own). A batch that raises is answered again one
member at a time, so a bad query fails alone and never its batch mates.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 256  # beyond this a batch only adds latency to its first members
# Batches in flight per collection: one per two cores (a batch's search uses more than one), at most 8.
IN_FLIGHT = max(1, min(8, (os.cpu_count() or 1) // 2))


@dataclass(eq=False)
class _Waiter(Generic[Item, Result]):
    item: Item
    ready: threading.Event | None = None  # a blocked thread waits on this
    future: asyncio.Future[Result] | None = None  # or an event loop awaits this
    result: Result | None = None
    error: BaseException | None = None
    done: bool = False



def _deliver(batch: list[_Waiter[Item, Result]]) -> None:
    """Wake a batch's callers: blocked threads by their events, each event loop by one call for all its futures
    (one wake-up of the loop per batch, not per query)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Waiter[Item, Result]]] = {}
    for waiter in batch:
        waiter.done = True
        if waiter.future is not None:
            by_loop.setdefault(waiter.future.get_loop(), []).append(waiter)
        else:
            assert waiter.ready is not None
            waiter.ready.set()
    for loop, waiters in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, waiters)
        except RuntimeError:  # that event loop has closed: nobody awaits these any more, and the runner goes on
            continue


def _settle(waiters: list[_Waiter[Item, Result]]) -> None:
    for waiter in waiters:
        assert waiter.future is not None
        if waiter.future.done():  # the request was cancelled (its client went away)
            continue
        if waiter.error is not None:
            waiter.future.set_exception(waiter.error)
        else:
            waiter.future.set_result(waiter.result)  # type: ignore[arg-type]


class Coalescer(Generic[Item, Result]):
    def __init__(self, run_batch: Callable[[Sequence[Item]], list[Result]], max_batch: int = MAX_BATCH, in_flight: int = IN_FLIGHT):
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._lock = threading.Lock()
        self._queue: list[_Waiter[Item, Result]] = []
        self._running = 0  # runners taking batches now (at most in_flight)
        self._pool: ThreadPoolExecutor | None = None
        self.batch_sizes: Counter[int] = Counter()  # size -> batches formed, for /metrics

    def submit(self, item: Item) -> Result:
        waiter: _Waiter[Item, Result] = _Waiter(item, ready=threading.Event())
        if self._enqueue(waiter):
            self._drain(until=waiter)
        assert waiter.ready is not None
        waiter.ready.wait()
        return self._outcome(waiter)

    async def submit_async(self, item: Item) -> Result:
        waiter: _Waiter[Item, Result] = _Waiter(item, future=asyncio.get_running_loop().create_future())
        if self._enqueue(waiter):
            self._runners().submit(self._drain, None)
        assert waiter.future is not None
        return await waiter.future

    def sizes(self) -> dict[int, int]:
        with self._lock:
            return dict(self.batch_sizes)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _enqueue(self, waiter: _Waiter[Item, Result]) -> bool:
        """Queue the waiter; True when the caller must start a runner (a slot was free)."""
        with self._lock:
            self._queue.append(waiter)
            if self._running < self._in_flight:
                self._running += 1
                return True
        return False

    def _runners(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._in_flight, thread_name_prefix="trove-coalescer")
            return self._pool

    def _drain(self, until: _Waiter[Item, Result] | None) -> None:
        """Run batches while any are queued. A blocked caller (``until``) stops once its own query is answered
        and hands its runner slot to a pool thread if queries still wait."""
        while True:
            with self._lock:
                if not self._queue:
                    self._running -= 1
                    return
                if until is not None and until.done:
                    hand_over = True
                else:
                    hand_over = False
                    batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                    self.batch_sizes[len(batch)] += 1
            if hand_over:
                self._runners().submit(self._drain, None)
                return
            self._answer(batch)

    def _answer(self, batch: list[_Waiter[Item, Result]]) -> None:
        try:
            results = self._run_batch([w.item for w in batch])
            for waiter, result in zip(batch, results, strict=True):
                waiter.result = result
        except Exception as error:
            if len(batch) == 1:
                batch[0].error = error
            else:
                # One bad query (or one that trips a bug) must not fail the others that happened to share its batch.
                for waiter in batch:
                    self._answer_alone(waiter)
        except BaseException as error:  # an interrupt: every waiter hears of it, and the runner goes on
            for waiter in batch:
                waiter.error = error
        finally:
            _deliver(batch)

    def _answer_alone(self, waiter: _Waiter[Item, Result]) -> None:
        try:
            waiter.result = self._run_batch([waiter.item])[0]
        except Exception as error:
            waiter.error = error

    @staticmethod
    def _outcome(waiter: _Waiter[Item, Result]) -> Result:
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]  # set by whoever ran the batch
