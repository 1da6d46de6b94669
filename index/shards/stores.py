"""A read-only view over every shard's store, for collection-wide jobs written against one store (model upgrades).

Rows are composite: the shard in the high bits, the shard's own store row below (as scroll cursors are), so a
row names one point across the collection. Anything else a job asks of a store is not available across shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from index.shards.routing import shard_of
from index.storage.store import PointId, StoredPoint

if TYPE_CHECKING:
    from index.shards.collection import ShardedCollection

ROW_SHIFT = 40


def composite(shard: int, row: int) -> int:
    return (shard << ROW_SHIFT) + row


class ShardedStore:
    def __init__(self, collection: ShardedCollection):
        self._collection = collection

    def rows_where(self, sql: str, params: Sequence[Any]) -> np.ndarray:
        shards = self._collection.shards
        found = self._collection.gather_all({s.index: s.call("rows_where", sql, list(params)) for s in shards}, None)
        return np.concatenate([np.asarray(found[s], np.int64) + composite(s, 0) for s in sorted(found)]) if found else np.zeros(0, np.int64)

    def by_rows(self, rows: Sequence[int], with_vector: bool = False) -> dict[int, StoredPoint]:
        groups: dict[int, list[int]] = {}
        for row in rows:
            groups.setdefault(int(row) >> ROW_SHIFT, []).append(int(row) & ((1 << ROW_SHIFT) - 1))
        shards = self._collection.shards
        found = self._collection.gather_all({s: shards[s].call("by_rows", own, with_vector) for s, own in groups.items()}, None)
        return {composite(s, r): replace(p, row=composite(s, r)) for s, points in found.items() for r, p in points.items()}

    def __getattr__(self, name: str) -> Any:
        """Any other store call (a backfill's, say) is not available across shards: 400 sharded_unsupported."""
        if name.startswith("_"):
            raise AttributeError(name)
        from index.shards.collection import unsupported

        raise unsupported(self._collection.config.name, f"this store operation ({name})", {"operation": name})

    def get(self, point_id: PointId, with_vector: bool = False) -> StoredPoint | None:
        shard = shard_of(point_id, self._collection.shard_count)
        point: StoredPoint | None = self._collection._one(shard, "stored", point_id, with_vector)
        return None if point is None else replace(point, row=composite(shard, point.row))
