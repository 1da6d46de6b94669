"""Group commit for reads: concurrent single queries share one batched search.

A batched FAISS search costs little more than a single one (one matrix product instead of many
vector products, one embedding call for many texts), so when requests arrive together they should
be answered together. No timer: a query that arrives while the collection is idle runs at once; the
ones that arrive while a batch runs wait for it and then go together in the next batch, led by the
first of them. Under load, batches grow by themselves; alone, a query pays nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from encoders.errors import TroveError

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 256  # beyond this a batch only adds latency to its first members


@dataclass(eq=False)
class _Waiter(Generic[Item, Result]):
    item: Item
    ready: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # set when this waiter must run the next batch itself
    result: Result | None = None
    error: BaseException | None = None


class Coalescer(Generic[Item, Result]):
    def __init__(self, run_batch: Callable[[Sequence[Item]], list[Result]], max_batch: int = MAX_BATCH):
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Waiter[Item, Result]] = []
        self._busy = False

    def submit(self, item: Item) -> Result:
        waiter: _Waiter[Item, Result] = _Waiter(item)
        with self._lock:
            self._queue.append(waiter)
            if not self._busy:
                self._busy = waiter.leads = True
        if not waiter.leads:
            waiter.ready.wait()
        if waiter.leads:
            self._lead()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]  # set by whoever ran the batch

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        try:
            self._answer(batch)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.leads = True
                    successor.ready.set()
                else:
                    self._busy = False
            for waiter in batch:
                waiter.ready.set()

    def _answer(self, batch: list[_Waiter[Item, Result]]) -> None:
        try:
            results = self._run_batch([w.item for w in batch])
        except TroveError as error:
            if len(batch) == 1:
                batch[0].error = error
                return
            # One bad request must not fail the others that happened to share its batch.
            for waiter in batch:
                self._answer_alone(waiter)
            return
        except BaseException as error:
            for waiter in batch:
                waiter.error = error
            return
        for waiter, result in zip(batch, results, strict=True):
            waiter.result = result

    def _answer_alone(self, waiter: _Waiter[Item, Result]) -> None:
        try:
            waiter.result = self._run_batch([waiter.item])[0]
        except BaseException as error:
            waiter.error = error
