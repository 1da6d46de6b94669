"""Hamming search over packed bit rows in a FAISS binary flat index, on the GPU when FAISS can use one.

Rows are store rows, as in index/faiss_backend.py. FAISS binary indexes take no ID selector, so a
filtered search is answered by the caller searching deeper and dropping disallowed rows.
"""

from __future__ import annotations

import faiss
import numpy as np

from index.faiss_backend import GPU_MAX_K, PlacedIndex, gpu_count


class BinaryFlat(PlacedIndex):
    def __init__(self, bits: int, cpu_index: faiss.IndexBinaryFlat | None = None):
        self.bits = bits
        super().__init__(cpu_index if cpu_index is not None else faiss.IndexBinaryFlat(bits), gpu_count() > 0, lambda resources, index: faiss.GpuIndexBinaryFlat(resources, index))
        self.max_k = GPU_MAX_K if self.on_gpu else None

    def add(self, first_row: int, bits: np.ndarray) -> None:
        self._append(first_row, np.ascontiguousarray(bits, dtype=np.uint8))

    def search(self, query_bits: np.ndarray, k: int) -> np.ndarray:
        """(m, k) rows nearest by Hamming distance, -1 past the end."""
        k = min(k, self.ntotal, self.max_k or k)
        if k == 0:
            return np.full((len(query_bits), 0), -1, np.int64)
        return self._guard.read(lambda: self._index.search(np.ascontiguousarray(query_bits), k)[1])

    def stored_bits(self) -> np.ndarray | None:
        """The stored sign bits as a zero-copy (ntotal, bits/8) view; None on the GPU (they live in device memory)."""
        if self.on_gpu:
            return None
        return faiss.rev_swig_ptr(self._index.xb.data(), self.ntotal * self.bits // 8).reshape(self.ntotal, self.bits // 8)

    def memory_bytes(self) -> int:
        return self.ntotal * self.bits // 8
