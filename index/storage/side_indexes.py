"""A collection's indexes beside its vectors, kept in its SQLite store: the full-text index and payload indexes.

Each is added as a job over the stored points while writes go on (every write indexes its own points from
the start), dropped on request, and reported in the collection's info.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from encoders.errors import Conflict, NotFound
from index.config import CollectionConfig
from index.storage.payload_index import PayloadIndexSpec
from index.storage.store import Store
from index.storage.text_index import TextIndexSpec

Progress = Callable[[float, int, int], None]


class StoreHost(Protocol):
    @property
    def config(self) -> CollectionConfig: ...

    @property
    def store(self) -> Store: ...


class SideIndexes:
    def __init__(self, host: StoreHost):
        self.host = host  # the store is read through the host: a reprojection replaces it

    @property
    def _name(self) -> str:
        return self.host.config.name

    # ---- the full-text index (index/storage/text_index.py) ----------------

    def check_text(self, spec: TextIndexSpec) -> None:
        """409 when an index exists that a fill of ``spec`` would not resume (a ready one, or another tokenizer)."""
        state = self.host.store.text_index
        if state is not None and (state.ready or state.spec != spec):
            raise Conflict(
                f"collection {self._name!r} already has a text index ({state.spec.tokenizer}, {'ready' if state.ready else 'unfinished'}); "
                f"DELETE /v1/collections/{self._name}/text_index first to change it",
                code="text_index_exists",
                details={"tokenizer": state.spec.tokenizer, "ready": state.ready},
            )

    def build_text(self, spec: TextIndexSpec, progress: Progress) -> dict[str, Any]:
        """Index the text of the stored points; a failure or cancel removes the unfinished index. A crash leaves
        it unfinished: this resumes it."""
        self.check_text(spec)
        store = self.host.store
        started = time.perf_counter()
        store.create_text_index(spec)
        try:
            indexed = store.fill_text_index(progress)
        except BaseException:
            store.drop_text_index()
            raise
        return {**spec.to_json(), "indexed": indexed, "points": store.count(), "seconds": time.perf_counter() - started}

    def drop_text(self) -> None:
        if not self.host.store.drop_text_index():
            raise NotFound(f"collection {self._name!r} has no text index", code="no_text_index")

    def text_info(self) -> dict[str, Any] | None:
        store = self.host.store
        state = store.text_index
        if state is None:
            return None
        return {**state.spec.to_json(), "state": "ready" if state.ready else "filling", "indexed": store.text_indexed_count()}

    # ---- payload indexes (index/storage/payload_index.py) ---------------------

    def check_payload(self, spec: PayloadIndexSpec) -> None:
        """409 when the key has an index that a fill of ``spec`` would not resume (a ready one, or another type)."""
        current = self.host.store.payload_indexes.get(spec.key)
        if current is not None and (current.ready or current.spec != spec):
            raise Conflict(
                f"collection {self._name!r} already has a payload index on {spec.key!r} ({current.spec.type}, {'ready' if current.ready else 'unfinished'}); "
                f"DELETE /v1/collections/{self._name}/indexes/{spec.key} first to change it",
                code="payload_index_exists",
                details={"key": spec.key, "type": current.spec.type, "ready": current.ready},
            )

    def build_payload(self, spec: PayloadIndexSpec, progress: Progress) -> dict[str, Any]:
        """Index ``spec.key`` over the stored points (each write also type-checks its own); a failure (a value of
        another type) or cancel removes the index, a crash leaves it unfinished: this resumes it."""
        self.check_payload(spec)
        store = self.host.store
        started = time.perf_counter()
        store.create_payload_index(spec)
        try:
            counts = store.fill_payload_index(spec.key, progress)
        except BaseException:
            store.drop_payload_index(spec.key)
            raise
        return {**spec.to_json(), **counts, "seconds": time.perf_counter() - started}

    def drop_payload(self, key: str) -> None:
        if not self.host.store.drop_payload_index(key):
            raise NotFound(f"collection {self._name!r} has no payload index on {key!r}", code="no_payload_index", details={"key": key})

    def payload_info(self, with_counts: bool = False) -> list[dict[str, Any]]:
        """Each index's key, type and state (``filling`` until its job has indexed the points stored before it)."""
        store = self.host.store
        return [
            {**index.spec.to_json(), "state": "ready" if index.ready else "filling", **(store.payload_index_stats(index) if with_counts else {})}
            for index in store.payload_indexes.values()
        ]
