"""What runs a sentence-transformers model after tokenisation: torch itself, or its ONNX export on ONNX Runtime or OpenVINO.

Every runtime takes the tokenizer's arrays and answers (token vectors (batch, sequence, dim), pooled
vectors (batch, dim)), both float32, so the encoder above treats them alike.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from encoders.errors import Unsupported
from encoders.file_lock import exclusive
from encoders.threads import process_cores

Features = dict[str, np.ndarray]
Outputs = tuple[np.ndarray, np.ndarray]

# Backend name -> the module it needs and the extra that installs it.
NEEDS: dict[str, tuple[str, str]] = {
    "onnx": ("onnxruntime", "onnx"),
    "onnx-int8": ("onnx", "onnx"),  # the quantizer reads the graph with the onnx package; onnxruntime runs it
    "openvino": ("openvino", "cpu"),
    "openvino-bf16": ("openvino", "cpu"),
}
CPU_BACKENDS = tuple(NEEDS)


def available(backend: str) -> bool:
    if backend == "torch":
        return True
    module, _ = NEEDS[backend]
    return importlib.util.find_spec(module) is not None and (backend != "onnx-int8" or importlib.util.find_spec("onnxruntime") is not None)


def require(backend: str) -> None:
    if not available(backend):
        raise Unsupported(
            f"encoder backend {backend!r} needs the {NEEDS[backend][1]!r} extra: pip install 'trove[{NEEDS[backend][1]}]'",
            code="encoder_backend_unavailable",
            details={"backend": backend},
        )


class Runtime(Protocol):
    name: str
    precision: str
    streams: int  # batches it runs at once

    def run_many(self, batches: Iterable[Features]) -> list[Outputs]:
        """Every batch the iterable yields, answered in order; the next one is drawn while up to ``streams`` run."""
        ...


class _OneAtATime:
    """A runtime that runs batches one after another, each on every thread of the budget."""

    streams = 1

    def run(self, features: Features) -> Outputs:
        raise NotImplementedError

    def run_many(self, batches: Iterable[Features]) -> list[Outputs]:
        return [self.run(f) for f in batches]


class TorchRuntime(_OneAtATime):
    def __init__(self, model: Any, device: Any):
        self.model, self.device = model, device
        self.name, self.precision = "torch", "float32"

    def run(self, features: Features) -> Outputs:
        import torch

        with torch.inference_mode():
            out = self.model({k: torch.from_numpy(v).to(self.device) for k, v in features.items()})
            return out["token_embeddings"].float().cpu().numpy(), out["sentence_embedding"].float().cpu().numpy()


class OnnxRuntime(_OneAtATime):
    def __init__(self, path: Path, threads: int, name: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.name, self.precision = name, "int8 (dynamic)" if name.endswith("int8") else "float32"

    def run(self, features: Features) -> Outputs:
        tokens, pooled = self._session.run(["token_embeddings", "sentence_embedding"], {k: v for k, v in features.items() if k in self._inputs})
        return tokens, pooled


# Input shapes (batch x tokens) whose compiled kernels and buffers OpenVINO's CPU plugin keeps, least recently
# used first out. Its default, 5000, holds about 2 MB per shape: a server answering texts of every length grew
# by gigabytes (tests/test_encoder_memory.py); 64 keeps the shapes a sorted batch plan reuses.
SHAPE_CACHE = 64


class OpenVinoRuntime:
    """OpenVINO on the CPU. ``bf16``: its default on CPUs with bfloat16 units (AVX512-BF16, AMX); else float32, exact.

    Two compiled forms of the one graph: a lone batch (a query, a small write) runs on every thread at once,
    for latency; several run as parallel streams of one thread each, which on 2 cores embedded WordNet
    glosses at 1.3-1.7x the rate of one stream on both threads (small batches leave threads idle).
    """

    def __init__(self, path: Path, threads: int, bf16: bool):
        import openvino as ov

        core = ov.Core()
        # OpenVINO's own cache of compiled graphs (keyed by graph, device, settings and its version), beside the
        # export: compiling both forms took 1.6 s of every 2.5 s load, each app start and each model load again.
        core.set_property({"CACHE_DIR": str(path.parent / "openvino-cache")})
        # OpenVINO pins a process's threads from the first core on, so two one-thread processes (Ray's actors) ran
        # on one core at half speed each (2 actors: 592 docs/s against 604 for one). Pinned only with every core.
        pinned = threads >= process_cores()
        shared = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "CPU_RUNTIME_CACHE_CAPACITY": SHAPE_CACHE, "ENABLE_CPU_PINNING": pinned}
        # OpenVINO writes a cache blob in place and maps blobs it reads: processes compiling into one fresh cache at
        # once read each other's half-written blobs (a bus error killed a test worker) or lost them mid-write.
        with exclusive(path.parent / ".openvino-cache.lock"):
            self._latency = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", **shared})
            if threads > 1:
                self._throughput = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": threads, "PERFORMANCE_HINT": "THROUGHPUT", **shared})
        self._request = self._latency.create_infer_request()
        self.streams = threads
        if threads > 1:
            self._queue = ov.AsyncInferQueue(self._throughput, threads)
        self._inputs = {name for port in self._latency.inputs for name in port.get_names()}
        self.name = "openvino-bf16" if bf16 else "openvino"
        hint = self._latency.get_property("INFERENCE_PRECISION_HINT")  # what the CPU plugin settled on
        self.precision = {"bf16": "bfloat16", "f32": "float32"}.get(hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint), str(hint))

    def _inputs_of(self, features: Features) -> Features:
        return {k: v for k, v in features.items() if k in self._inputs}

    def _run_alone(self, features: Features) -> Outputs:
        result = self._request.infer(self._inputs_of(features))
        return np.array(result["token_embeddings"]), np.array(result["sentence_embedding"])

    def run_many(self, batches: Iterable[Features]) -> list[Outputs]:
        # Callers hold the inference slot (encoders/threads.py), so the requests are never shared at once.
        # Copies: a request's output tensors are overwritten by its next inference.
        pending = iter(batches)
        first = next(pending, None)
        second = next(pending, None) if first is not None and self.streams > 1 else None
        if second is None:  # a lone batch (a query, a small write) runs on every thread
            return [] if first is None else [self._run_alone(f) for f in itertools.chain([first], pending)]
        results: dict[int, Outputs] = {}

        def done(request: Any, position: int) -> None:
            results[position] = (np.array(request.get_tensor("token_embeddings").data), np.array(request.get_tensor("sentence_embedding").data))

        self._queue.set_callback(done)
        # start_async returns at once while a stream is free and waits for one otherwise, so each next batch is
        # drawn (tokenised) while the streams compute, and a stream that finishes early takes the next at once.
        for position, features in enumerate(itertools.chain([first, second], pending)):
            self._queue.start_async(self._inputs_of(features), position)
        self._queue.wait_all()
        return [results[position] for position in range(len(results))]
