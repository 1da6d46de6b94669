"""Group commit for reads: concurrent single queries share one batched search.

A batched search costs little more than a single one (one matrix product instead of many vector products,
one embedding call for many texts), so queries that arrive together are answered together. A query that
arrives while the collection is idle runs at once; those that arrive while batches run queue, and the next
free runner takes them all (up to ``max_batch``) as one batch. Up to ``in_flight`` batches run at once, so a
slow batch (a filtered query, a long text) does not stall the ones queued behind it.

No fixed timer either: a runner lingers for more members only where the measured costs say it pays
(``BatchCost``): a batch's fixed part (a flat scan reads every row whatever the batch size) is large beside
what each member adds, and queries arrive faster than that fixed part. It waits at most LINGER_SHARE of the
fixed part and stops at the first quiet gap, so a lone client never waits and a loaded server forms batches
that spread the scan over many queries instead of running one after another.

Two ways in: ``submit`` blocks the calling thread (in-process callers; an idle collection answers on that
thread itself), ``submit_async`` awaits from an event loop (the HTTP edge; batches run on the coalescer's
own threads, so a request costs no threadpool hop of its own). A batch that raises is answered again one
member at a time, so a bad query fails alone and never its batch mates.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
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
# A forming batch waits for more members at most this share of a batch's fixed cost: the latency it may add
# is bounded by half of what each batch spares the queries that join it.
LINGER_SHARE = 0.5
# Weight of the newest batch (and arrival) in the running estimates: about the last 20 count.
FORGET = 0.05


@dataclass
class BatchCost:
    """What batches cost here, as measured: seconds = fixed + per_query x size, fitted by least squares with
    old batches fading (FORGET), and the mean gap between arrivals. Decides how long a forming batch lingers."""

    fixed: float = 0.0
    per_query: float = 0.0
    gap: float | None = None
    _last_arrival: float | None = None
    _sums: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)  # weight, size, seconds, size^2, size*seconds

    def arrived(self, now: float) -> None:
        if self._last_arrival is not None:
            gap = now - self._last_arrival
            self.gap = gap if self.gap is None else self.gap + FORGET * (gap - self.gap)
        self._last_arrival = now

    def ran(self, size: int, seconds: float) -> None:
        keep = 1 - FORGET
        w, x, y, xx, xy = (keep * v for v in self._sums)
        w, x, y, xx, xy = w + 1, x + size, y + seconds, xx + size * size, xy + size * seconds
        self._sums = (w, x, y, xx, xy)
        spread = w * xx - x * x
        if spread > 1e-9 * w * w:  # sizes have varied: the line is determined
            self.per_query = max(0.0, (w * xy - x * y) / spread)
            self.fixed = max(0.0, (y - self.per_query * x) / w)
        elif size == 1:  # only lone queries so far: all of it is fixed
            self.fixed = y / w

    def linger(self, queued: int) -> float:
        """Seconds a batch of ``queued`` may still wait for members: none unless queries arrive well within the
        window and another member still saves more than it adds (the fixed part is not yet spread thin)."""
        window = LINGER_SHARE * self.fixed
        if self.gap is None or self.gap >= window or queued * self.per_query >= self.fixed:
            return 0.0
        return window


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
        self._arrival = threading.Condition(self._lock)  # a lingering runner wakes on each arrival
        self._queue: list[_Waiter[Item, Result]] = []
        self.cost = BatchCost()
        self.lingered = 0.0  # seconds runners waited for more members, for /metrics
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

    def lingered_seconds(self) -> float:
        with self._lock:
            return self.lingered

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _enqueue(self, waiter: _Waiter[Item, Result]) -> bool:
        """Queue the waiter; True when the caller must start a runner (a slot was free)."""
        with self._lock:
            self._queue.append(waiter)
            self.cost.arrived(time.perf_counter())
            self._arrival.notify_all()
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
                if self._queue and not (until is not None and until.done):
                    self._gather()  # releases the lock while it waits: other runners may take the queue meanwhile
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

    def _gather(self) -> None:
        """With the lock held: wait while more members are worth waiting for, until the window closes or a
        quiet gap (twice the usual one) passes with no arrival."""
        window = self.cost.linger(len(self._queue))
        if window == 0.0 or len(self._queue) >= self._max_batch:
            return
        started = time.perf_counter()
        deadline = started + window
        try:
            while len(self._queue) < self._max_batch and self.cost.linger(len(self._queue)) > 0.0:
                left = deadline - time.perf_counter()
                queued = len(self._queue)
                assert self.cost.gap is not None  # linger() is positive only once a gap is known
                if left <= 0 or not self._arrival.wait_for(lambda: len(self._queue) > queued, timeout=min(left, 2 * self.cost.gap)):
                    return
        finally:
            self.lingered += time.perf_counter() - started

    def _answer(self, batch: list[_Waiter[Item, Result]]) -> None:
        started = time.perf_counter()
        try:
            results = self._run_batch([w.item for w in batch])
            with self._lock:
                self.cost.ran(len(batch), time.perf_counter() - started)
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
