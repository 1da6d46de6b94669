"""The faster of a few equivalent kernels, measured where it runs: per (width, batch-size bucket), on first use.

Which kernel wins depends on the batch size, the width and the machine (its vector units, its memory, how busy it
is), so it is measured rather than assumed: every candidate answers the first batch of a bucket once untimed,
then ``ROUNDS`` times, interleaved, and the fastest is kept for the bucket from then on. The untimed round takes the
first call's setup out of the measurement: oneDNN builds its integer matmul kernel for each new shape on first use
(ad hoc, 200 queries x 5,242 codes x 96: 6.9 ms on the first call, 0.3 on the next). Without it, one ad hoc run
had left a bucket of LVQ scans on the float kernel, the integer one measured at 24 ms against 2 (cause not
pinned down; a first-call cost in both rounds would read so). The candidates must give the same answer (up
to the last bit of a score); the chosen one's answer is returned, so a process answers the same way from its
first call on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

Answer = TypeVar("Answer")
ROUNDS = 2  # each kernel timed this many times, interleaved, on the first batch of a bucket


def bucket(queries: int) -> int:
    """Batch sizes measured together: 1, 2, 4, ... (the next power of two)."""
    return 1 << max(queries - 1, 0).bit_length()


class MeasuredChoice(Generic[Answer]):
    """Per (width, batch-size bucket): the kernel, by name, that answered the bucket's first batch fastest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chosen: dict[tuple[int, int], str] = {}
        self._timings: dict[tuple[int, int], dict[str, float]] = {}  # seconds per batch, as measured

    def choices(self) -> dict[tuple[int, int], str]:
        with self._lock:
            return dict(self._chosen)

    def timings_snapshot(self) -> dict[tuple[int, int], dict[str, float]]:
        with self._lock:
            return {key: dict(seconds) for key, seconds in self._timings.items()}

    def run(self, width: int, queries: int, kernels: dict[str, Callable[[], Answer]]) -> Answer:
        key = (width, bucket(queries))
        with self._lock:
            chosen = self._chosen.get(key)
        if chosen is not None:
            return kernels[chosen]()
        seconds = dict.fromkeys(kernels, float("inf"))
        answers = {name: kernel() for name, kernel in kernels.items()}  # untimed: each kernel's first-call setup
        for _ in range(ROUNDS):
            for name, kernel in kernels.items():
                started = time.perf_counter()
                answers[name] = kernel()
                seconds[name] = min(seconds[name], time.perf_counter() - started)
        with self._lock:
            chosen = self._chosen.setdefault(key, min(seconds, key=seconds.__getitem__))
            self._timings[key] = seconds
        return answers[chosen]
