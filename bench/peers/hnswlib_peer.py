"""hnswlib: the reference HNSW implementation."""

from __future__ import annotations

import numpy as np

from bench.peers.base import Params, Peer


class Hnswlib(Peer):
    name = "hnswlib"
    package = "hnswlib"
    modules = ("hnswlib",)
    memory_method = "hnswlib's layout: level-0 links, vector, label per element, plus expected upper levels"

    def build(self, vectors: np.ndarray) -> None:
        import hnswlib

        self.n, self.dim = vectors.shape
        self.index = hnswlib.Index(space="ip", dim=self.dim)
        self.index.init_index(max_elements=self.n, M=self.settings.m, ef_construction=self.settings.ef_construction, random_seed=0)
        self.index.set_num_threads(self.settings.threads)
        self.index.add_items(vectors, np.arange(self.n))

    def sweep(self) -> list[Params]:
        return [{"ef_search": ef} for ef in self.settings.ef_search]

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        self.index.set_ef(max(int(params["ef_search"]), k))
        labels, _ = self.index.knn_query(queries, k=k, num_threads=self.settings.threads)
        return labels.astype(np.int64)

    def memory_bytes(self) -> int:
        m = self.settings.m
        level0 = 2 * m * 4 + 4 + self.dim * 4 + 8  # links + count, the vector, the label
        upper = (m * 4 + 4) / (m - 1)  # each element reaches 1/(M-1) upper levels on average
        return int(self.n * (level0 + upper))
