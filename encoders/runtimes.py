"""What runs a sentence-transformers model after tokenisation: torch itself, or its ONNX export on ONNX Runtime or OpenVINO.

Every runtime takes the tokenizer's arrays and answers (token vectors (batch, sequence, dim), pooled
vectors (batch, dim)), both float32, so the encoder above treats them alike.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from encoders.errors import Unsupported

Features = dict[str, np.ndarray]
Outputs = tuple[np.ndarray, np.ndarray]

# Backend name -> the module it needs and the extra that installs it.
NEEDS: dict[str, tuple[str, str]] = {
    "onnx": ("onnxruntime", "onnx"),
    "onnx-int8": ("onnx", "onnx"),  # the quantizer reads the graph with the onnx package; onnxruntime runs it
    "openvino": ("openvino", "openvino"),
    "openvino-bf16": ("openvino", "openvino"),
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

    def run(self, features: Features) -> Outputs: ...


class TorchRuntime:
    def __init__(self, model: Any, device: Any):
        self.model, self.device = model, device
        self.name, self.precision = "torch", "float32"

    def run(self, features: Features) -> Outputs:
        import torch

        with torch.inference_mode():
            out = self.model({k: torch.from_numpy(v).to(self.device) for k, v in features.items()})
            return out["token_embeddings"].float().cpu().numpy(), out["sentence_embedding"].float().cpu().numpy()


class OnnxRuntime:
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


class OpenVinoRuntime:
    """OpenVINO on the CPU. ``bf16``: its default on CPUs with bfloat16 units (AVX512-BF16, AMX); else float32, exact."""

    def __init__(self, path: Path, threads: int, bf16: bool):
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
        self._model = ov.Core().compile_model(str(path), "CPU", config)
        self._request = self._model.create_infer_request()
        self._inputs = {name for port in self._model.inputs for name in port.get_names()}
        self._tokens, self._pooled = self._model.output("token_embeddings"), self._model.output("sentence_embedding")
        self.name = "openvino-bf16" if bf16 else "openvino"
        hint = self._model.get_property("INFERENCE_PRECISION_HINT")  # what the CPU plugin settled on
        self.precision = {"bf16": "bfloat16", "f32": "float32"}.get(hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint), str(hint))

    def run(self, features: Features) -> Outputs:
        # One request per model: callers hold the inference slot (encoders/threads.py), so it is never shared at once.
        result = self._request.infer({k: v for k, v in features.items() if k in self._inputs})
        # Copies: the request's output tensors are overwritten by its next inference.
        return np.array(result[self._tokens]), np.array(result[self._pooled])
