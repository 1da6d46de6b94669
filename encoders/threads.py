"""How many cores model inference uses, and the one slot that inference batches take in turn.

A server embeds for queries, writes and jobs at once. Each backend (torch, ONNX Runtime, OpenVINO) would
otherwise start its own pool of one thread per core for every caller, and three callers on N cores run
3N busy threads that slow each other down. Instead every batch takes the process-wide inference slot and
uses all of the budget's threads; batches are bounded by a token budget (encoders/batching.py), so a
query waits for at most one batch of a running job, never for the job. FAISS searches run one thread
each (service settings: faiss_threads), beside this.
"""

from __future__ import annotations

import os
import threading

INFERENCE_SLOT = threading.Lock()


def inference_threads() -> int:
    """TROVE_ENCODER_THREADS, else OMP_NUM_THREADS (Ray sets it to an actor's num_cpus), else the cores this process may use."""
    for variable in ("TROVE_ENCODER_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
