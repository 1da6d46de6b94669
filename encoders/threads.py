"""How many cores model inference uses, and the one slot that inference batches take in turn.

A server embeds for queries, writes and jobs at once. Each backend (torch, ONNX Runtime, OpenVINO) would
otherwise start its own pool of one thread per core for every caller, and three callers on N cores run
3N busy threads that slow each other down. Instead a caller's batches run under the process-wide inference
slot and use all of the budget's threads. The slot is handed over first come, first served, and a caller
holding it stops feeding batches as soon as another waits (encoders/batching.py): batches are bounded by a
token budget, so a query waits for the batches already running in a job, never for the job. FAISS
searches run one thread each (service settings: faiss_threads), beside this.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType


class InferenceSlot:
    """A lock taken in arrival order (tickets), that tells its holder whether anyone waits.

    A plain lock lets the thread that releases it take it straight back, so a job feeding batch after batch
    could starve a query; tickets hand the slot to the longest waiter."""

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._issued = 0  # tickets handed out
        self._serving = 0  # the ticket whose turn it is

    def __enter__(self) -> None:
        with self._turn:
            ticket = self._issued
            self._issued += 1
            self._turn.wait_for(lambda: self._serving == ticket)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        with self._turn:
            self._serving += 1
            self._turn.notify_all()

    def wanted(self) -> bool:
        """True while another caller waits for the slot (asked by its holder)."""
        with self._turn:
            return self._issued > self._serving + 1


INFERENCE_SLOT = InferenceSlot()


def inference_threads() -> int:
    """TROVE_ENCODER_THREADS, else OMP_NUM_THREADS (Ray sets it to an actor's num_cpus), else the cores this process may use."""
    for variable in ("TROVE_ENCODER_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return process_cores()


def process_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
