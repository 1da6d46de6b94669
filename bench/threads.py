"""One thread budget for a whole benchmark run, restored afterwards so callers (and tests) see no change."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def thread_budget(threads: int) -> Iterator[None]:
    """Torch (ground truth) and FAISS use `threads` inside the block, whatever they used before it."""
    import faiss
    import torch

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])
