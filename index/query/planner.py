"""Filtered search: which positions a filter allows in each segment of a view, and how to search them.

The filter runs in SQLite (index/query/filters.py: payload indexes where they answer, the stored JSON
elsewhere), once for the segments that lack a mask, and becomes a mask over each one's positions. A sealed
segment's rows never change, nor do the payloads of its rows (an overwrite is a new row), so its mask is kept
(``MaskCache``) and only ANDed with the segment's current liveness: writes need no invalidation, deletes are
in the liveness, and a merge or vacuum makes new segments with new ids. The appendable segment's mask is
computed per query (it holds at most the seal threshold of rows).

Then, by the share of points the filter allows:
- few in all (``BRUTE_FORCE_LIMIT``), or at most ``EXACT_SHARE`` of a graph (or IVF) segment: the segment is
  scanned exactly through FAISS with the mask as a selector (only allowed vectors are read), where a graph
  walk would wander far to find k allowed neighbours; compressed segments, which cannot, have the few
  allowed vectors gathered and scored instead;
- otherwise each segment's index is searched with the mask as its selector.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from index.backends.faiss_index import FaissMetric, exact_search
from index.query.filters import Filter
from index.segments.view import Ranked, View
from index.storage.store import Store

# Filters matching at most this many points are answered by brute force over exactly those points:
# always k results, and cheaper than walking a graph.
BRUTE_FORCE_LIMIT = 4096
# A graph or IVF segment of which a filter allows at most this share is scanned exactly.
EXACT_SHARE = 0.05
# Masks kept per collection (a byte per point of a sealed segment, per distinct filter).
CACHE_BYTES = 256 * 1024 * 1024


class MaskCache:
    """Least recently used masks of sealed segments, bounded in bytes; safe to share between threads."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = max_bytes
        self._masks: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, str]) -> np.ndarray | None:
        with self._lock:
            mask = self._masks.get(key)
            if mask is None:
                self.misses += 1
                return None
            self._masks.move_to_end(key)
            self.hits += 1
            return mask

    def put(self, key: tuple[str, str, str], mask: np.ndarray) -> None:
        if mask.nbytes > self.max_bytes:
            return
        mask.flags.writeable = False  # shared by every query that finds it
        with self._lock:
            if key in self._masks:
                return
            self._masks[key] = mask
            self._bytes += mask.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._masks.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._masks.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes


class FilterPlanner:
    """A collection's filtered searches over its store and the views of its segments."""

    def __init__(self, store: Store, cache: MaskCache | None = None):
        self.store = store
        self.cache = cache or MaskCache()

    def allowed(self, view: View, filter: Filter) -> list[np.ndarray]:
        """Per part of ``view``: a mask of its live positions that ``filter`` allows."""
        keys = [(str(self.store.path), part.segment_id, filter.cache_key()) for part in view.parts]
        matched = [self.cache.get(key) if part.kind == "sealed" else None for part, key in zip(view.parts, keys, strict=True)]
        missing = [i for i, mask in enumerate(matched) if mask is None and view.parts[i].size]
        if missing:
            # One SQL pass over the rows of every part that lacks a mask: the whole table unless only the
            # appendable segment (the newest rows) does.
            sql, params = filter.to_sql(self.store.ready_payload_indexes())
            sealed = any(view.parts[i].kind == "sealed" for i in missing)
            between = None if sealed else (min(int(view.parts[i].rows[0]) for i in missing), max(int(view.parts[i].rows[-1]) for i in missing))
            found = np.sort(self.store.rows_where(sql, params, between))
            for i in missing:
                part = view.parts[i]
                matched[i] = mask = part.holding(found)
                if part.kind == "sealed":
                    self.cache.put(keys[i], mask)
        return [np.zeros(part.size, bool) if mask is None else mask & part.live for part, mask in zip(view.parts, matched, strict=True)]

    def rows(self, view: View, filter: Filter) -> np.ndarray:
        """The live rows ``filter`` allows, sorted."""
        return view.rows_of(self.allowed(view, filter))

    def search(self, view: View, queries: np.ndarray, k: int, filter: Filter, metric: FaissMetric, ef_search: int | None, exact: bool) -> Ranked:
        """Top-k (raw scores, rows) of the allowed points, searched the cheapest way their shares allow."""
        masks = self.allowed(view, filter)
        counts = [int(np.count_nonzero(m)) for m in masks]
        few = sum(counts) <= BRUTE_FORCE_LIMIT
        if few and any(part.kind == "sealed" and not part.selective_scan for part in view.parts):
            # Compressed segments cannot scan only the allowed vectors: gather those and score them here.
            found, stored = view.vectors(view.rows_of(masks))
            return exact_search(stored, found, queries, k, metric)
        scan = [part.selective_scan and (few or count <= EXACT_SHARE * part.size) for part, count in zip(view.parts, counts, strict=True)]
        return view.search(queries, k, masks, ef_search, exact, scan)
