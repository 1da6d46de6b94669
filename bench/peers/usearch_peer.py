"""USearch: a single-file HNSW with its own SIMD kernels."""

from __future__ import annotations

import numpy as np

from bench.peers.base import Params, Peer


class USearch(Peer):
    name = "usearch"
    package = "usearch"
    modules = ("usearch.index",)
    memory_method = "usearch Index.memory_usage"

    def build(self, vectors: np.ndarray) -> None:
        from usearch.index import Index

        self.index = Index(
            ndim=vectors.shape[1],
            metric="ip",
            dtype="f32",
            connectivity=self.settings.m,
            expansion_add=self.settings.ef_construction,
        )
        self.index.add(np.arange(len(vectors)), vectors, threads=self.settings.threads)

    def sweep(self) -> list[Params]:
        return [{"ef_search": ef} for ef in self.settings.ef_search]

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        self.index.expansion_search = max(int(params["ef_search"]), k)
        matches = self.index.search(queries, k, threads=self.settings.threads)
        # One query gives a flat Matches holding only what was found; a batch gives padded rows plus counts.
        if len(queries) == 1:
            out = np.full((1, k), -1, dtype=np.int64)
            out[0, : len(matches.keys)] = matches.keys
            return out
        keys = np.asarray(matches.keys, dtype=np.int64)
        keys[np.arange(keys.shape[1])[None, :] >= np.asarray(matches.counts)[:, None]] = -1
        return keys

    def memory_bytes(self) -> int:
        return int(self.index.memory_usage)
