"""At most one OpenMP thread per query for a search of few queries, in FAISS and in torch.

FAISS's scans and torch's kernels (oneDNN's integer matmul, its parallel loops) split a search between OpenMP
threads by queries, or by blocks of stored rows with a barrier per block: for one query the extra threads bring
little and, on a busy machine, each barrier waits for a thread the scheduler has not run yet. At load 11 on two
cores one query's LVQ-8 scan of 117k codes took 100-130 ms with two threads and 4-6 ms with one, FAISS's Hamming
scan of 117k binary codes 16-40 ms against 0.5 ms, and a 384-wide matmul of one query (MKL) up to 20 ms.

OpenMP's thread count is a per-thread setting, and MKL has a per-thread one, so this leaves concurrent searches (and
batches) as they are. torch and FAISS each load their own OpenMP runtime; both are set, torch's (and its MKL's)
where its wheel ships them (else only FAISS's).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import faiss


@cache
def _torch_libraries() -> tuple[ctypes.CDLL | None, ctypes.CDLL | None]:
    """(torch's OpenMP runtime, torch's library where it exports MKL's per-thread setting), each None when absent."""
    import torch

    lib = Path(torch.__file__).parent / "lib"
    openmp = ctypes.CDLL(str(lib / "libgomp.so.1")) if (lib / "libgomp.so.1").exists() else None
    mkl = ctypes.CDLL(str(lib / "libtorch_cpu.so")) if (lib / "libtorch_cpu.so").exists() else None
    return openmp, mkl if mkl is not None and hasattr(mkl, "MKL_Set_Num_Threads_Local") else None


@contextmanager
def threads_per_query(queries: int) -> Iterator[None]:
    """Within the block, this thread's FAISS and torch calls use at most ``queries`` threads (at least one)."""
    runtimes = [(faiss.omp_get_max_threads, faiss.omp_set_num_threads)]
    torch_omp, mkl = _torch_libraries()
    if torch_omp is not None:
        runtimes.append((torch_omp.omp_get_max_threads, torch_omp.omp_set_num_threads))
    before = [get() for get, _ in runtimes]
    for (_, set_threads), threads in zip(runtimes, before, strict=True):
        if queries < threads:
            set_threads(max(1, queries))
    # MKL (torch's matmuls) follows its own process-wide count, which torch.set_num_threads sets, unless this
    # thread has its own: set here, and 0 (back to the process-wide one) after.
    local = mkl is not None and queries < max(before)
    if local:
        mkl.MKL_Set_Num_Threads_Local(max(1, queries))
    try:
        yield
    finally:
        for (_, set_threads), threads in zip(runtimes, before, strict=True):
            set_threads(threads)
        if local:
            mkl.MKL_Set_Num_Threads_Local(0)
