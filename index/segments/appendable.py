"""The appendable segment: new writes land here and are searched exactly until the optimizer seals it.

Buffers grow geometrically. A write fills slots past every published length, so readers of older views (which
slice to their own length) never see it; growing copies into a new buffer and leaves the old one to its
readers. Deletes copy the liveness array (bounded by the seal threshold) rather than flip bits in place.
"""

from __future__ import annotations

import numpy as np

from index.backends.faiss_index import FaissMetric, exact_search
from index.segments.view import Part, Ranked

INITIAL_CAPACITY = 1024


class ExactBlock:
    """Brute-force search over a fixed block of vectors (one published length of the appendable segment)."""

    def __init__(self, vectors: np.ndarray, metric: FaissMetric, reserved_bytes: int):
        self._vectors = vectors
        self._metric = metric
        self._reserved = reserved_bytes  # the whole buffer, grown ahead of use

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, ef_search: int | None, exact: bool, share: float = 1.0) -> Ranked:
        positions = np.arange(len(self._vectors), dtype=np.int64)
        return exact_search(self._vectors, positions, queries, k, self._metric, allowed)

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        return np.array(self._vectors[positions], dtype=np.float32)

    def memory_bytes(self) -> int:
        return self._reserved


class AppendableSegment:
    def __init__(self, segment_id: str, dim: int, metric: FaissMetric):
        self.id = segment_id
        self.dim, self.metric = dim, metric
        self.size = 0
        self.dead = 0
        self._vectors = np.zeros((0, dim), np.float32)
        self._rows = np.zeros(0, np.int64)
        self.live = np.zeros(0, bool)

    @property
    def rows(self) -> np.ndarray:
        """The store rows held so far, in position order (increasing)."""
        return self._rows[: self.size]

    @property
    def capacity(self) -> int:
        return len(self._rows)

    def append(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Append rows in increasing order (the store allocates them so); caller holds the write lock."""
        n = len(rows)
        if n and self.size and rows[0] <= self._rows[self.size - 1]:
            raise RuntimeError(f"rows must increase: segment ends at {self._rows[self.size - 1]}, got {rows[0]}")
        end = self.size + n
        if end > self.capacity:
            capacity = max(end, 2 * self.capacity, INITIAL_CAPACITY)
            self._vectors = _grown(self._vectors, self.size, capacity)
            self._rows = _grown(self._rows, self.size, capacity)
            self.live = _grown(self.live, self.size, capacity)
        self._vectors[self.size : end] = vectors
        self._rows[self.size : end] = rows
        self.live[self.size : end] = True
        self.size = end

    def kill(self, positions: np.ndarray) -> None:
        live = self.live.copy()
        live[positions] = False
        self.dead += int(self.live[positions].sum())
        self.live = live

    def part(self) -> Part:
        return Part(
            segment_id=self.id,
            kind="appendable",
            rows=self.rows,
            live=self.live[: self.size],
            dead=self.dead,
            searcher=ExactBlock(self._vectors[: self.size], self.metric, int(self._vectors.nbytes)),
        )


def _grown(array: np.ndarray, used: int, capacity: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), array.dtype)
    grown[:used] = array[:used]
    return grown
