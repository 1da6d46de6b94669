"""A build streamed into sealed segments: each chunk is staged in the store and indexed off the write lock.

Rows are reserved up front, so a chunk's segment can be built before the rows are live. Nothing is visible
until ``commit``: one SQLite transaction makes every staged point live (replacing points with the same ids),
and the built segments are published with it. A failure or cancel before that changes nothing: the staged
rows are dropped, the segments' files removed, the reserved rows never used. Memory is bounded by a chunk.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from encoders.errors import InvalidInput
from index.models.versions import Serving
from index.segments.sealed import SealedSegment
from index.storage.store import PointRecord, stacked_vectors

if TYPE_CHECKING:
    from index.collection import Collection
    from index.requests import WriteAck


class StreamedBuild:
    def __init__(self, collection: Collection, capacity: int, serving: Serving):
        self.collection, self.capacity, self.serving = collection, capacity, serving
        self.id = uuid.uuid4().hex
        self.first_row = collection.store.reserve_rows(capacity)
        self.used = 0
        self.segments: list[SealedSegment] = []

    def add(self, records: Sequence[PointRecord], on_indexed: Callable[[int], None] = lambda n: None) -> None:
        """Stage and index one chunk (vectors final, ids unique across the build); ``on_indexed`` may raise."""
        if self.used + len(records) > self.capacity:
            raise InvalidInput(f"the build holds more rows than the {self.capacity} it counted", code="source_changed", details={"rows": self.capacity})
        rows = np.arange(self.first_row + self.used, self.first_row + self.used + len(records), dtype=np.int64)
        self.collection.store.stage(self.id, rows, records)
        vectors = stacked_vectors(records)
        self.segments.append(self.collection.engine.build_segment(rows, vectors, lambda f, done, total: on_indexed(done)))
        self.used += len(records)

    def commit(self) -> WriteAck:
        return self.collection.commit_build(self.id, self.segments, self.serving)

    def abort(self) -> None:
        self.collection.store.drop_staged(self.id)
        for segment in self.segments:
            segment.retire()
        self.segments = []
