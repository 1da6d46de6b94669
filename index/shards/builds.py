"""A build over every shard of a collection at once, driven by run_build (index/ingest/builds.py) as one collection's is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from encoders.errors import Conflict
from index.models.versions import Serving
from index.shards.routing import split_by_shard
from index.storage.store import PointRecord

if TYPE_CHECKING:
    from index.requests import WriteAck
    from index.shards.collection import ShardedCollection


class ShardedBuild:
    """A build over every shard at once: run_build (index/ingest/builds.py) drives it as it drives one collection's.

    Each chunk is split by shard and staged and indexed on all of them in parallel; nothing is visible until
    ``commit``, which commits every shard's build. A shard failing there after others committed is reported
    as ShardWriteFailed (the build's rows are upserts: running it again is safe).
    """

    def __init__(self, collection: ShardedCollection, capacity: int, serving: Serving):
        if serving.version != collection.serving.version:
            raise Conflict("the serving model changed while this build was prepared; start it again", code="serving_changed")
        self.collection = collection
        self.tokens: dict[int, str] = collection.gather_all({s.index: s.call("begin_build", capacity) for s in collection.shards}, None)
        self.segments: list[int] = []  # shard of each segment built, for the job's report
        self.ids: list[Any] = []

    def add(self, records: Sequence[PointRecord], on_indexed: Callable[[int], None] = lambda n: None) -> None:
        groups = split_by_shard([r.id for r in records], self.collection.shard_count)
        shards = self.collection.shards
        self.collection.gather_all({s: shards[s].call("build_add", self.tokens[s], [records[j] for j in positions]) for s, positions in groups.items()}, None)
        self.segments += sorted(groups)
        self.ids += [r.id for r in records]
        on_indexed(len(records))

    def commit(self) -> WriteAck:
        shards = self.collection.shards
        groups = split_by_shard(self.ids, self.collection.shard_count)
        return self.collection._commit({s: shards[s].call("build_commit", token) for s, token in self.tokens.items()}, groups, self.ids)

    def abort(self) -> None:
        self.collection.gather({s: self.collection.shards[s].call("build_abort", token) for s, token in self.tokens.items()}, None)
