"""Trove itself, in process: a vectors-only collection through the Catalog (SQLite store + segments), so
the figures include the store, deletion bitmaps, segment merge and id mapping a real query pays for."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from bench.peers.base import Params, Peer

UPSERT_BATCH = 5000


class TroveFlat(Peer):
    name = "trove-flat"
    package = "trove (this repository)"
    modules = ("index.catalog",)
    memory_method = "collection info memory_bytes (segments: FAISS indexes, row maps, deletion bitmaps)"
    exact = True
    index_type: ClassVar[Literal["flat", "hnsw"]] = "flat"

    def build(self, vectors: np.ndarray) -> None:
        from encoders.registry import ModelRegistry
        from index.backends.faiss_index import IndexSpec
        from index.catalog import Catalog
        from index.requests import PointInput

        spec = IndexSpec(type=self.index_type, m=self.settings.m, ef_construction=self.settings.ef_construction)
        self.catalog = Catalog(self.workdir / "trove-data", ModelRegistry())
        self.catalog.load_all()
        self.collection = self.catalog.create("bench", model=None, dim=vectors.shape[1], metric="ip", index=spec)
        for start in range(0, len(vectors), UPSERT_BATCH):
            block = vectors[start : start + UPSERT_BATCH]
            self.collection.upsert([PointInput(id=start + i, vector=v) for i, v in enumerate(block)])
        self.collection.optimize(seal=True)  # measured settled: the rows sealed into indexed segments, as the optimizer leaves them

    def build_params(self) -> Params:
        return {}

    def sweep(self) -> list[Params]:
        return [{}]

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        from index.requests import Query

        oversample = float(params["ef_search"]) / k if "ef_search" in params else None
        hits = self.collection.query_batch(
            [Query(vector=q, k=k, with_payload=False, oversample=oversample) for q in queries]
        )
        out = np.full((len(queries), k), -1, dtype=np.int64)
        for row, answer in enumerate(hits):
            out[row, : len(answer)] = [int(hit.id) for hit in answer]
        return out

    def memory_bytes(self) -> int:
        return int(self.collection.info()["memory_bytes"])

    def close(self) -> None:
        self.catalog.close()


class TroveHNSW(TroveFlat):
    name = "trove-hnsw"
    exact = False
    index_type = "hnsw"

    def build_params(self) -> Params:
        return {"m": self.settings.m, "ef_construction": self.settings.ef_construction}

    def sweep(self) -> list[Params]:
        return [{"ef_search": ef} for ef in self.settings.ef_search]
