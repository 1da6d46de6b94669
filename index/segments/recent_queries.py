"""The last queries a collection answered, kept so that the next graph built can be calibrated on real queries.

Queries often lie apart from the documents (a short question against passages), where a graph needs a deeper
search than stored vectors suggest; a seal measures the depth on both and keeps the deeper (hnsw_graph.py).
Memory only: after a restart the first seals calibrate on held-out vectors alone until queries arrive.
"""

from __future__ import annotations

import threading

import numpy as np

# The calibrations' probes: per-query recall@10 spreads about 0.11 (WordNet 40k, lemma queries), so a mean over
# 1024 queries has a standard error near 0.0035 and the two-error margin aims about 0.007 above the target, inside
# the documented band [0.95, 0.97]; 256 queries put it near 0.014.
CAPACITY = 1024


class RecentQueries:
    """A ring of the last ``capacity`` query vectors (in the index's space)."""

    def __init__(self, dim: int, capacity: int = CAPACITY):
        self._ring = np.zeros((capacity, dim), np.float32)
        self._next = 0
        self._count = 0
        self.seen = 0  # queries added since the collection opened
        self._lock = threading.Lock()

    def add(self, vectors: np.ndarray) -> None:
        with self._lock:
            self.seen += len(vectors)
            vectors = vectors[-len(self._ring) :]
            at = (self._next + np.arange(len(vectors))) % len(self._ring)
            self._ring[at] = vectors
            self._next = int((self._next + len(vectors)) % len(self._ring))
            self._count = min(self._count + len(vectors), len(self._ring))

    @property
    def count(self) -> int:
        """Queries held now (at most the capacity)."""
        return self._count

    def sample(self) -> np.ndarray:
        with self._lock:
            return self._ring[: self._count].copy()

    def clear(self) -> None:
        """Forget the queries held (``seen`` keeps counting): what a fit learns from starts afresh."""
        with self._lock:
            self._next = self._count = 0
