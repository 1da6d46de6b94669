"""Hamming search over packed bit rows in a FAISS binary index (flat, or HNSW), on the GPU when FAISS can use one.

Rows are a segment's positions, as in index/backends/faiss_index.py. FAISS binary indexes take no ID selector, so a
filtered search is answered by the caller searching deeper and dropping disallowed rows. FAISS has a GPU
binary flat index but no GPU binary HNSW: a graph stays on the CPU.
"""

from __future__ import annotations

import faiss
import numpy as np

from index.backends.faiss_index import GPU_MAX_K, PlacedIndex, gpu_count


class BinaryIndex(PlacedIndex):
    def __init__(self, bits: int, hnsw_m: int | None = None, ef_search: int | None = None):
        """``ef_search``: a graph walk's depth; None walks as deep as the candidates asked for."""
        self.bits = bits
        self.hnsw_m, self.ef_search = hnsw_m, ef_search
        if hnsw_m is not None:
            super().__init__(faiss.IndexBinaryHNSW(bits, hnsw_m), False, lambda resources, index: index)
        else:
            super().__init__(faiss.IndexBinaryFlat(bits), gpu_count() > 0, lambda resources, index: faiss.GpuIndexBinaryFlat(resources, index))
        self.max_k = GPU_MAX_K if self.on_gpu else None

    def add(self, first_row: int, bits: np.ndarray) -> None:
        self._append(first_row, np.ascontiguousarray(bits, dtype=np.uint8))

    def search(self, query_bits: np.ndarray, k: int) -> np.ndarray:
        """(m, k) rows nearest by Hamming distance, -1 past the end; an HNSW walk keeps ``k`` candidates, at least ``ef_search``."""
        k = min(k, self.ntotal, self.max_k or k)
        if k == 0:
            return np.full((len(query_bits), 0), -1, np.int64)
        queries = np.ascontiguousarray(query_bits)
        if self.hnsw_m is None:
            return self._guard.read(lambda: self._index.search(queries, k)[1])
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(k, self.ef_search or k)
        return self._guard.read(lambda: self._index.search(queries, k, params=params)[1])

    def stored_bits(self) -> np.ndarray | None:
        """The stored sign bits as a zero-copy (ntotal, bits/8) view; None on the GPU (they live in device memory).

        Safe to hand out: a sealed segment's index is complete before anyone searches it, and never grows.
        """
        if self.on_gpu:
            return None
        flat = faiss.downcast_IndexBinary(self._index.storage) if self.hnsw_m is not None else self._index
        return faiss.rev_swig_ptr(flat.xb.data(), self.ntotal * self.bits // 8).reshape(self.ntotal, self.bits // 8)

    def memory_bytes(self) -> int:
        links = self.ntotal * (2 * self.hnsw_m + self.hnsw_m // max(self.hnsw_m - 1, 1)) * 4 if self.hnsw_m is not None else 0
        return self.ntotal * self.bits // 8 + links
