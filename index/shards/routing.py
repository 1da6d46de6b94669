"""Which shard holds a point: a stable hash of its id, the same in every process and every Python release."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from index.storage.store import PointId


def shard_of(point_id: PointId, shards: int) -> int:
    """The id's JSON (so 7 and "7" stay distinct, as in the store) hashed by BLAKE2b; Python's hash() is salted per process."""
    digest = hashlib.blake2b(json.dumps(point_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def split_by_shard(ids: Sequence[PointId], shards: int) -> dict[int, list[int]]:
    """Positions in ``ids`` grouped by their shard, each group in input order."""
    groups: dict[int, list[int]] = {}
    for position, point_id in enumerate(ids):
        groups.setdefault(shard_of(point_id, shards), []).append(position)
    return groups
