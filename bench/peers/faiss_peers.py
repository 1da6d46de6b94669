"""Raw FAISS, the baseline every speed and memory figure is divided by: flat, HNSW, IVF-PQ, binary codes."""

from __future__ import annotations

import math

import numpy as np

from bench.peers.base import Params, Peer


def _faiss():  # type: ignore[no-untyped-def]
    import faiss

    return faiss


class _FaissPeer(Peer):
    package = "faiss-cpu"
    modules = ("faiss",)
    memory_method = "serialized FAISS index size"

    def memory_bytes(self) -> int:
        return int(_faiss().serialize_index(self.index).nbytes)


class FaissFlat(_FaissPeer):
    name = "faiss-flat"
    exact = True

    def build(self, vectors: np.ndarray) -> None:
        faiss = _faiss()
        faiss.omp_set_num_threads(self.settings.threads)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def build_params(self) -> Params:
        return {}

    def sweep(self) -> list[Params]:
        return [{}]

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        return self.index.search(queries, k)[1]


class FaissHNSW(_FaissPeer):
    name = "faiss-hnsw"

    def build(self, vectors: np.ndarray) -> None:
        faiss = _faiss()
        faiss.omp_set_num_threads(self.settings.threads)
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], self.settings.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.settings.ef_construction
        self.index.add(vectors)

    def sweep(self) -> list[Params]:
        return [{"ef_search": ef} for ef in self.settings.ef_search]

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        search_params = _faiss().SearchParametersHNSW()
        search_params.efSearch = max(int(params["ef_search"]), k)
        return self.index.search(queries, k, params=search_params)[1]


class FaissIVFPQ(_FaissPeer):
    """IVF with 2*sqrt(n) lists, product codes of 4 dimensions per byte; no re-ranking on full vectors."""

    name = "faiss-ivfpq"

    def build(self, vectors: np.ndarray) -> None:
        faiss = _faiss()
        faiss.omp_set_num_threads(self.settings.threads)
        n, dim = vectors.shape
        # FAISS wants about 39 training points per list; cap the lists so small slices still train.
        self.nlist = max(1, min(int(2 * math.sqrt(n)), n // 39))
        self.code_bytes = next(m for m in (dim // 4, dim // 2, dim) if m and dim % m == 0)
        quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFPQ(quantizer, dim, self.nlist, self.code_bytes, 8, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).permutation(n)[: max(64 * self.nlist, 10_000)]
        self.index.train(vectors[np.sort(sample)])
        self.index.add(vectors)

    def build_params(self) -> Params:
        return {"nlist": self.nlist, "pq_bytes": self.code_bytes, "pq_bits": 8}

    def sweep(self) -> list[Params]:
        probes = sorted({min(p, self.nlist) for p in (1, 2, 4, 8, 16, 32, 64, 128)})
        return [{"nprobe": p} for p in probes]

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        search_params = _faiss().SearchParametersIVF()
        search_params.nprobe = int(params["nprobe"])
        return self.index.search(queries, k, params=search_params)[1]


class FaissBinary(_FaissPeer):
    """Sign bits (d/8 bytes per vector) searched by Hamming distance; the top `candidates` are re-ordered
    by the float query against the +-1 codes (asymmetric scoring), so no float copy is kept."""

    name = "faiss-binary"
    memory_method = "serialized FAISS binary index size (codes only)"

    def build(self, vectors: np.ndarray) -> None:
        faiss = _faiss()
        faiss.omp_set_num_threads(self.settings.threads)
        self.dim = vectors.shape[1]
        # The re-scoring reads this copy of the codes; memory counts the codes once, as a deployment would.
        self._codes = np.packbits(vectors > 0, axis=1)
        self.index = faiss.IndexBinaryFlat(self.dim)
        self.index.add(self._codes)

    def build_params(self) -> Params:
        return {"bits": self.dim}

    def memory_bytes(self) -> int:
        return int(_faiss().serialize_index_binary(self.index).nbytes)

    def sweep(self) -> list[Params]:
        return [{"candidates": c} for c in (10, 40, 160, 640)]

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        depth = min(max(int(params["candidates"]), k), self.index.ntotal)
        candidates = self.index.search(np.packbits(queries > 0, axis=1), depth)[1]
        out = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), 64):  # bounds the unpacked (64, depth, d) block
            block = candidates[start : start + 64]
            signs = np.unpackbits(self._codes[block], axis=-1, count=self.dim).astype(np.float32) * 2 - 1
            scores = np.einsum("qcd,qd->qc", signs, queries[start : start + 64])
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            out[start : start + len(block)] = np.take_along_axis(block, order, axis=1)
        return out
