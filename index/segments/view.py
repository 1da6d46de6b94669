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
from index.backends.hnsw_graph import surprising_count
from index.segments.side_by_side import search_parts

Ranked = tuple[np.ndarray, np.ndarray]  # (scores, rows) per query, best first, rows -1 past the end

FANOUT_MAX_QUERIES = 8  # up to this many queries, a view's parts may be searched side by side (side_by_side.py)


class Searcher(Protocol):
    """A segment's search over its own positions 0..n-1 (``allowed`` masks positions; None: all of them)."""

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, ef_search: int | None, exact: bool, share: float = 1.0) -> Ranked:
        """``share``: the part of all searched points this segment holds (a graph may search shallower for less)."""
        ...

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
    prices_share: bool = False  # its search depth follows its share of the searched points
    # An exact search of it reads only the allowed positions' vectors (FAISS flat, or the flat storage under a
    # graph or lists, with the mask as selector): cheaper than a walk when a filter allows few of them.
    selective_scan: bool = False

    @property
    def size(self) -> int:
        return len(self.rows)

    def positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return positions_in(self.rows, rows)

    def holding(self, rows: np.ndarray) -> np.ndarray:
        """A mask of the positions (live or dead) that hold one of the sorted global ``rows``."""
        mask = np.zeros(self.size, bool)
        mask[self.positions(rows)[1]] = True
        return mask

    def memory_bytes(self) -> int:
        rows = 0 if isinstance(self.rows, np.memmap) else self.rows.nbytes  # mapped row ids (compressed segments) stay in their file
        return self.searcher.memory_bytes() + rows + self.live.nbytes


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

    def masks(self, rows: np.ndarray) -> list[np.ndarray]:
        """Per part, its live positions that hold one of the sorted global ``rows``: a search's ``allowed``."""
        return [part.holding(rows) & part.live for part in self.parts]

    def rows_of(self, masks: Sequence[np.ndarray]) -> np.ndarray:
        """The sorted global rows that per-part ``masks`` select."""
        return np.sort(np.concatenate([part.rows[m] for part, m in zip(self.parts, masks, strict=True)] or [np.zeros(0, np.int64)]))

    def live_rows(self) -> np.ndarray:
        return np.sort(np.concatenate([p.rows[p.live] for p in self.parts] or [np.zeros(0, np.int64)]))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: Sequence[np.ndarray] | None = None,
        ef_search: int | None = None,
        exact: bool = False,
        scan: Sequence[bool] | None = None,
    ) -> Ranked:
        """Top-k over every part's live positions, merged exactly. ``allowed`` (a filter's, per part): masks of the
        live positions that may answer; ``scan`` (per part): search that part exactly, whatever its index."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is not None and (len(allowed) != len(self.parts) or any(np.ndim(m) != 1 or len(m) != p.size for m, p in zip(allowed, self.parts, strict=True))):
            raise ValueError("allowed holds one mask per part, of the part's size (View.masks makes them from rows)")
        searches: list[tuple[Part, np.ndarray | None, bool]] = []
        counts: list[int] = []  # the points each searched part may answer with
        for i, part in enumerate(self.parts):
            mask: np.ndarray | None = part.live if part.dead else None
            count = part.size - part.dead
            if allowed is not None:
                mask, count = allowed[i], int(allowed[i].sum())
            if count:
                searches.append((part, mask, exact or (scan is not None and scan[i])))
                counts.append(count)

        shares = [count / max(sum(counts), 1) for count in counts]

        def run(i: int, share: float) -> Ranked:
            part, mask, part_exact = searches[i]
            scores, positions = part.searcher.search(queries, k, mask, ef_search, part_exact, share)
            return scores, np.where(positions >= 0, part.rows[np.maximum(positions, 0)], -1)

        if len(queries) <= FANOUT_MAX_QUERIES:
            found = search_parts([lambda i=i: run(i, shares[i]) for i in range(len(searches))], [p.searcher for p, _, _ in searches], [e for _, _, e in searches])
        else:
            found = [run(i, share) for i, share in enumerate(shares)]
        merged = merge_ranked(found, k, self.metric, len(queries))
        if ef_search is None and not exact:
            # A segment that holds more of a result than its share priced in is searched again at full depth.
            again = [
                i for i, (part, _, part_exact) in enumerate(searches) if part.prices_share and not part_exact and shares[i] < 1 and self._surprised(part, merged[1], k, shares[i])
            ]
            for i in again:
                found[i] = run(i, 1.0)
            if again:
                merged = merge_ranked(found, k, self.metric, len(queries))
        return merged

    @staticmethod
    def _surprised(part: Part, rows: np.ndarray, k: int, share: float) -> bool:
        held, _ = part.positions(rows.ravel())
        return int(held.reshape(rows.shape).sum(axis=1).max()) > surprising_count(k, share)

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
