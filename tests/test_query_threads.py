"""A search of fewer queries than threads runs its FAISS and torch work with at most one thread per query, on the
calling thread only, and answers as it would with more threads. Real FAISS indexes and torch kernels."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import torch

from index.backends.binary_index import BinaryIndex
from index.backends.query_threads import _torch_libraries, threads_per_query


def _counts() -> tuple[int, int | None]:
    torch_omp = _torch_libraries()[0]
    return faiss.omp_get_max_threads(), None if torch_omp is None else torch_omp.omp_get_max_threads()


def test_one_query_runs_on_one_thread_and_the_setting_comes_back() -> None:
    before = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(2)
    torch.set_num_threads(2)
    try:
        outside = _counts()
        assert outside[0] == 2 and outside[1] in (None, 2)
        seen: list[tuple[int, int | None]] = []

        def other_thread() -> None:
            worker = threading.Thread(target=lambda: seen.append(_counts()))
            worker.start()
            worker.join()

        other_thread()
        with threads_per_query(1):
            inside = _counts()
            other_thread()  # another thread keeps the count it has without the block
        assert inside[0] == 1 and inside[1] in (None, 1)
        assert seen[0] == seen[1]
        assert _counts() == outside
        with threads_per_query(8):  # as many queries as threads, or more: nothing changes
            assert _counts() == outside
    finally:
        faiss.omp_set_num_threads(before[0])
        torch.set_num_threads(before[1])


def test_answers_do_not_depend_on_the_thread_count() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (5000, 48), dtype=np.uint8)
    index = BinaryIndex(384)
    index.add(0, codes)
    queries = rng.integers(0, 256, (3, 48), dtype=np.uint8)
    values = torch.from_numpy(rng.integers(-128, 128, (5000, 96), dtype=np.int8))
    query = torch.from_numpy(rng.integers(-127, 128, (1, 96), dtype=np.int8))
    together = index.search(queries, 50), torch._int_mm(query.expand(32, -1).contiguous(), values.T)[:1]
    with threads_per_query(1):
        alone = np.concatenate([index.search(q[None], 50) for q in queries]), torch._int_mm(query.expand(32, -1).contiguous(), values.T)[:1]
    np.testing.assert_array_equal(together[0], alone[0])
    assert torch.equal(together[1], alone[1])
