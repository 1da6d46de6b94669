"""What a query searches: an immutable snapshot of every segment, with its rows and deletion bitmap.

A writer builds a new ``View`` after its SQLite commit and publishes it by one reference swap; a reader takes
the current one once and uses only it, so it never sees an index longer than its bitmap, nor memory a writer
may still move (appendable buffers are only written past every published length, or replaced).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from index.backends.faiss_index import FaissMetric

Ranked = tuple[np.ndarray, np.ndarray]  # (scores, rows) per query, best first, rows -1 past the end


class Searcher(Protocol):
    """A segment's search over its own positions 0..n-1 (``allowed`` masks positions; None: all of them)."""

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, ef_search: int | None, exact: bool) -> Ranked: ...

    def vectors(self, positions: np.ndarray) -> np.ndarray: ...

    def memory_bytes(self) -> int: ...


@dataclass(frozen=True)
class Part:
    """One segment as a view sees it: global ``rows`` by position, ``live`` by position, its searcher."""

    segment_id: str
    kind: str  # "appendable" | "sealed"
    rows: np.ndarray
    live: np.ndarray
    dead: int
    searcher: Searcher

    @property
    def size(self) -> int:
        return len(self.rows)

    def positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return positions_in(self.rows, rows)

    def memory_bytes(self) -> int:
        return self.searcher.memory_bytes() + self.rows.nbytes + self.live.nbytes


def positions_in(held_rows: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which of ``rows`` occur in the sorted ``held_rows``, their positions there)."""
    at = np.searchsorted(held_rows, rows)
    inside = at < len(held_rows)
    held = np.zeros(len(rows), bool)
    held[inside] = held_rows[at[inside]] == rows[inside]
    return held, at[held]


def merge_ranked(results: Sequence[Ranked], k: int, metric: FaissMetric, m: int) -> Ranked:
    """The exact top-k of several parts' top-k lists (each already in global rows)."""
    if not results:
        return np.full((m, k), -np.inf if metric == "ip" else np.inf, np.float32), np.full((m, k), -1, np.int64)
    scores = np.concatenate([s for s, _ in results], axis=1)
    rows = np.concatenate([r for _, r in results], axis=1)
    key = np.where(rows >= 0, -scores if metric == "ip" else scores, np.inf)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    out_scores = np.take_along_axis(scores, order, axis=1)
    out_rows = np.take_along_axis(rows, order, axis=1)
    if out_rows.shape[1] < k:  # fewer candidates than k in all parts together
        pad = k - out_rows.shape[1]
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf if metric == "ip" else np.inf)
        out_rows = np.pad(out_rows, ((0, 0), (0, pad)), constant_values=-1)
    return out_scores.astype(np.float32, copy=False), out_rows


@dataclass(frozen=True)
class View:
    parts: tuple[Part, ...]
    metric: FaissMetric
    dim: int

    @property
    def points(self) -> int:
        return sum(p.size - p.dead for p in self.parts)

    @property
    def dead(self) -> int:
        return sum(p.dead for p in self.parts)

    def memory_bytes(self) -> int:
        return sum(p.memory_bytes() for p in self.parts)

    def live_rows(self) -> np.ndarray:
        return np.sort(np.concatenate([p.rows[p.live] for p in self.parts] or [np.zeros(0, np.int64)]))

    def search(self, queries: np.ndarray, k: int, rows: np.ndarray | None = None, ef_search: int | None = None, exact: bool = False) -> Ranked:
        """Top-k over every part's live positions (and, with ``rows``, only those sorted global rows); merged exactly."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        found: list[Ranked] = []
        for part in self.parts:
            allowed: np.ndarray | None = part.live if part.dead else None
            if rows is not None:
                _, at = part.positions(rows)
                allowed = np.zeros(part.size, bool)
                allowed[at] = True
                allowed &= part.live
            if part.size == 0 or (allowed is not None and not allowed.any()):
                continue
            scores, positions = part.searcher.search(queries, k, allowed, ef_search, exact)
            found.append((scores, np.where(positions >= 0, part.rows[np.maximum(positions, 0)], -1)))
        return merge_ranked(found, k, self.metric, len(queries))

    def vectors(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the given sorted rows that are live here, their vectors), in row order."""
        out_rows, out_vectors = [], []
        for part in self.parts:
            held, at = part.positions(rows)
            keep = part.live[at]
            if keep.any():
                out_rows.append(rows[held][keep])
                out_vectors.append(part.searcher.vectors(at[keep]))
        if not out_rows:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        found, vectors = np.concatenate(out_rows), np.concatenate(out_vectors)
        order = np.argsort(found, kind="stable")
        return found[order], vectors[order]
