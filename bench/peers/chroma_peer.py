"""Chroma: an embedded database with an HNSW index (hnswlib inside), persisted to a local folder."""

from __future__ import annotations

import numpy as np

from bench.peers.base import Params, Peer, folder_bytes, pad_ids


class Chroma(Peer):
    name = "chromadb"
    package = "chromadb"
    modules = ("chromadb",)
    memory_method = "on-disk size of the Chroma folder (HNSW segment + SQLite)"

    def build(self, vectors: np.ndarray) -> None:
        import chromadb
        from chromadb.config import Settings

        self.folder = self.workdir / "chroma"
        self.client = chromadb.PersistentClient(path=str(self.folder), settings=Settings(anonymized_telemetry=False))
        hnsw = {
            "space": "ip",
            "max_neighbors": self.settings.m,
            "ef_construction": self.settings.ef_construction,
            "ef_search": self.settings.ef_search[0],
            "num_threads": self.settings.threads,
        }
        self.collection = self.client.create_collection("bench", configuration={"hnsw": hnsw})
        batch = self.client.get_max_batch_size()
        for start in range(0, len(vectors), batch):
            block = vectors[start : start + batch]
            self.collection.add(ids=[str(start + i) for i in range(len(block))], embeddings=block)
        self.ef = self.settings.ef_search[0]

    def sweep(self) -> list[Params]:
        return [{"ef_search": ef} for ef in self.settings.ef_search]

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        ef = max(int(params["ef_search"]), k)
        if ef != self.ef:
            self._set_ef(ef)
        found = self.collection.query(query_embeddings=queries, n_results=k, include=[])
        return pad_ids([[int(i) for i in ids] for ids in found["ids"]], k)

    def _set_ef(self, ef: int) -> None:
        """Chroma stores ef_search in the collection's configuration but applies it only when the HNSW
        segment is loaded again: drop the cached segment and reopen the collection."""
        import chromadb
        from chromadb.config import Settings

        self.collection.modify(configuration={"hnsw": {"ef_search": ef}})
        self.client.clear_system_cache()
        self.client = chromadb.PersistentClient(path=str(self.folder), settings=Settings(anonymized_telemetry=False))
        self.collection = self.client.get_collection("bench")
        self.ef = ef

    def memory_bytes(self) -> int:
        return folder_bytes(self.folder)
