"""ONNX exports of a sentence-transformers folder, made once, offline, and kept beside the model with their provenance.

The graph holds the whole sentence-transformers pipeline after tokenisation (transformer, pooling, any
dense or normalise modules), so one file gives both the pooled vector and the token vectors. ONNX Runtime
runs it, and so does OpenVINO, which reads ONNX directly. Exports go in ``<model folder>/trove_backends/``
when that folder is writable, else under TROVE_ENCODER_CACHE (default ~/.cache/trove/encoders) in a folder
named by the model's content digest. Each file is written under a temporary name and renamed, so two
processes exporting at once, or one that dies midway, never leave half a file.

Why not sentence-transformers' own ``backend="onnx"/"openvino"``: it loads through optimum, and pip cannot
install optimum-onnx beside sentence-transformers 6 (optimum-onnx needs transformers<4.58, sentence-
transformers 6 needs >=5), while optimum-intel needs transformers<5.6 and would downgrade it. The runtimes
themselves (onnxruntime, openvino) have no such pins.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from encoders.file_lock import exclusive

EXPORT_FOLDER = "trove_backends"
OPSET = 17
PROVENANCE = "provenance.json"
FLOAT_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"


def model_digest(folder: Path) -> str:
    """sha256 over every file of the model folder (names and contents), exports excluded."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and EXPORT_FOLDER not in p.relative_to(folder).parts):
        digest.update(str(path.relative_to(folder)).encode() + b"\x00")
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def export_dir(folder: Path, name: str, digest: str) -> Path:
    if _writable(folder):
        out = folder / EXPORT_FOLDER
    else:
        root = Path(os.environ.get("TROVE_ENCODER_CACHE") or Path.home() / ".cache" / "trove" / "encoders")
        out = root / f"{Path(name).name}-{digest[:16]}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_provenance(out: Path) -> dict[str, Any]:
    path = out / PROVENANCE
    return json.loads(path.read_text()) if path.exists() else {}


def _record(out: Path, artifact: str, entry: dict[str, Any]) -> None:
    """Add one artifact's provenance, read-modify-write under a lock so a concurrent writer's entry is never lost."""
    with exclusive(out / f".{PROVENANCE}.lock"):
        provenance = read_provenance(out)
        provenance[artifact] = entry
        write_json(out / PROVENANCE, provenance)


def write_json(path: Path, value: Any) -> None:
    staging = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    staging.write_text(json.dumps(value, indent=2))
    os.replace(staging, path)


def _fresh(out: Path, artifact: str, digest: str) -> bool:
    entry = read_provenance(out).get(artifact)
    return bool(entry) and entry.get("model_digest") == digest and (out / artifact).exists()


def ensure_float_onnx(model: Any, out: Path, source: str, digest: str) -> Path:
    """``model``: a loaded SentenceTransformer on the CPU. The float32 export, made unless a fresh one is there."""
    path = out / FLOAT_FILE
    if _fresh(out, FLOAT_FILE, digest):
        return path
    import torch

    sample = model.preprocess(["a short text", "a somewhat longer text to give the sequence axis two sizes"])
    names = [k for k, v in sample.items() if isinstance(v, torch.Tensor)]

    class _Pipeline(torch.nn.Module):
        """The sentence-transformers modules after tokenisation, with positional tensors as ONNX wants."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.model(dict(zip(names, tensors, strict=True)))
            return features["token_embeddings"], features["sentence_embedding"]

    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"token_embeddings": {0: "batch", 1: "sequence"}, "sentence_embedding": {0: "batch"}}
    staging = out / f"{FLOAT_FILE}.tmp-{os.getpid()}"
    started = time.perf_counter()
    with torch.no_grad():
        # The TorchScript exporter: torch.export's (the default) needs onnxscript and gains nothing for a BERT graph.
        torch.onnx.export(
            _Pipeline().eval(),
            tuple(sample[n] for n in names),
            str(staging),
            input_names=names,
            output_names=["token_embeddings", "sentence_embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    os.replace(staging, path)
    _record(
        out,
        FLOAT_FILE,
        {
            "model_digest": digest,
            "source": source,
            "inputs": names,
            "exporter": f"torch.onnx (TorchScript) {torch.__version__}",
            "opset": OPSET,
            "seconds": round(time.perf_counter() - started, 2),
            "created_at": time.time(),
        },
    )
    return path


def ensure_int8_onnx(out: Path, digest: str) -> Path:
    """Dynamic int8 (weights per channel, activations at run time) of the float export's MatMuls.

    Per-channel MatMul-only keeps MiniLM's probe cosine near 0.98; per-tensor over every op gave 0.91.
    """
    path = out / INT8_FILE
    if _fresh(out, INT8_FILE, digest):
        return path
    # quantize_dynamic writes a shape-inferred copy of its input beside it under a fixed name
    # (model-inferred.onnx) and deletes it after: two processes quantizing at once removed each other's.
    with exclusive(out / f".{INT8_FILE}.lock"):
        if _fresh(out, INT8_FILE, digest):
            return path
        return _quantize(out, digest)


def _quantize(out: Path, digest: str) -> Path:
    path = out / INT8_FILE
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staging = out / f"{INT8_FILE}.tmp-{os.getpid()}"
    started = time.perf_counter()
    quantize_dynamic(str(out / FLOAT_FILE), str(staging), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
    os.replace(staging, path)
    _record(
        out,
        INT8_FILE,
        {
            "model_digest": digest,
            "from": FLOAT_FILE,
            "quantization": "onnxruntime quantize_dynamic: QInt8 weights per channel, MatMul only",
            "onnxruntime": onnxruntime.__version__,
            "seconds": round(time.perf_counter() - started, 2),
            "created_at": time.time(),
        },
    )
    return path

