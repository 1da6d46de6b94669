"""Which runtime embeds for a sentence-transformers model: each candidate checked against torch on the probe set, the fastest that passes.

A float backend passes when every probe vector has cosine >= FLOAT_COSINE with torch's. int8 is measured
the same way and its figure reported; it becomes the default only if it clears the same bar. The checks and
the timings (interleaved rounds on the probe set, with this process's thread budget) are kept in
``validation-<n>threads.json`` beside the exports, with torch's probe vectors, and redone when the model, the probe
set, the thread budget or a runtime's version changes. Every load re-embeds the probe set with the chosen
backend and checks it against torch's vectors again, so a broken runtime is caught at load, not in results.

TROVE_ENCODER_BACKEND forces one: torch, onnx, onnx-int8, openvino, openvino-bf16 (or auto, the default).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders import export
from encoders.errors import InvalidInput
from encoders.probe import PROBE_TEXTS, PROBE_VERSION
from encoders.runtimes import CPU_BACKENDS, OnnxRuntime, OpenVinoRuntime, Runtime, TorchRuntime, available, require

log = logging.getLogger(__name__)
FLOAT_COSINE = 0.99
BACKENDS = ("torch", *CPU_BACKENDS)
VALIDATION = "validation-{threads}threads.json"  # one per thread budget: a server and its Ray actors (1 core each) differ
REFERENCE = "probe_reference.npy"
TIMING_ROUNDS = 3
SCHEME = 3  # how runtimes are built and timed; a change here re-measures every cached choice

Embed = Callable[[Runtime, list[str]], np.ndarray]  # the encoder's own path: tokenise, batch, run, pool


@dataclass(frozen=True)
class BackendReport:
    backend: str
    precision: str | None
    min_cosine: float | None  # against torch, over the probe set
    mean_cosine: float | None
    probe_docs_per_s: float | None
    passed: bool
    error: str | None = None


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    precision: str
    forced: bool
    min_cosine: float  # this load's check against torch's probe vectors
    reports: tuple[BackendReport, ...]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def forced_backend() -> str | None:
    name = os.environ.get("TROVE_ENCODER_BACKEND", "auto").strip().lower() or "auto"
    if name == "auto":
        return None
    if name not in BACKENDS:
        raise InvalidInput(f"TROVE_ENCODER_BACKEND={name!r}: expected auto or one of {', '.join(BACKENDS)}", code="unknown_encoder_backend")
    return name


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def _versions() -> dict[str, str | None]:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {p: version(p) for p in ("torch", "onnxruntime", "openvino", "onnx")}


@dataclass
class _Model:
    """What opening a runtime for one model needs."""

    st: Any  # the loaded SentenceTransformer
    device: Any
    out: Path  # its export folder
    source: str
    digest: str
    threads: int

    def open(self, backend: str) -> Runtime:
        if backend == "torch":
            return TorchRuntime(self.st, self.device)
        require(backend)
        onnx_path = export.ensure_float_onnx(self.st, self.out, self.source, self.digest)
        if backend == "onnx":
            return OnnxRuntime(onnx_path, self.threads, backend)
        if backend == "onnx-int8":
            return OnnxRuntime(export.ensure_int8_onnx(self.out, self.digest), self.threads, backend)
        return OpenVinoRuntime(onnx_path, self.threads, bf16=backend == "openvino-bf16")


def open_backend(st: Any, device: Any, folder: Path, name: str, source: str, threads: int, backend: str) -> Runtime:
    """One named backend for a loaded model, exporting what it needs (benchmarks compare them through this)."""
    digest = export.model_digest(folder)
    return _Model(st, device, export.export_dir(folder, name, digest), source, digest, threads).open(backend)


def _measure(model: _Model, torch_runtime: Runtime, candidates: list[str], embed: Embed, reference: np.ndarray) -> list[BackendReport]:
    """torch first, then each candidate: precision, cosine against ``reference`` and probe rate, timed in interleaved rounds."""
    texts = list(PROBE_TEXTS)
    opened: dict[str, Runtime] = {"torch": torch_runtime}
    errors: dict[str, str] = {}
    for backend in candidates:
        try:
            opened[backend] = model.open(backend)
            embed(opened[backend], texts)  # warm-up: first runs allocate and compile
        except Exception as exc:  # noqa: BLE001  # an export or a runtime that fails here is reported and left out, never fatal
            log.warning("encoder backend %s unavailable for %s: %s", backend, model.source, exc)
            errors[backend] = f"{type(exc).__name__}: {exc}"
    best: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(TIMING_ROUNDS):  # interleaved, so a busy moment of the machine hits every backend alike
        for backend, runtime in opened.items():
            started = time.perf_counter()
            vectors[backend] = embed(runtime, texts)
            best[backend] = max(best.get(backend, 0.0), len(texts) / (time.perf_counter() - started))
    reports = []
    for backend in ["torch", *candidates]:
        if backend in errors:
            reports.append(BackendReport(backend, None, None, None, None, False, errors[backend]))
            continue
        cos = cosines(vectors[backend], reference)
        reports.append(
            BackendReport(backend, opened[backend].precision, float(cos.min()), float(cos.mean()), best[backend], bool(cos.min() >= FLOAT_COSINE))
        )
    return reports


def _fresh_record(out: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    path = out / VALIDATION.format(threads=key["threads"])
    if not path.exists() or not (out / REFERENCE).exists():
        return None
    record = json.loads(path.read_text())
    return record if record.get("key") == key else None


def torch_only(st: Any, device: Any, forced: bool) -> tuple[Runtime, BackendChoice]:
    """torch, with nothing measured or exported: on a GPU, without CPU runtimes, or to check a folder before it is installed."""
    return TorchRuntime(st, device), BackendChoice("torch", f"float32 ({device})", forced, 1.0, (BackendReport("torch", "float32", 1.0, 1.0, None, True),))


def choose(st: Any, device: Any, folder: Path, name: str, source: str, threads: int, embed: Embed) -> tuple[Runtime, BackendChoice]:
    """The runtime to embed with, and the record of why (shown by GET /v1/models)."""
    forced = forced_backend()
    if forced and forced != "torch":
        require(forced)
    torch_runtime = TorchRuntime(st, device)
    on_cpu = str(device) == "cpu"
    candidates = [b for b in CPU_BACKENDS if available(b)] if on_cpu else []
    if forced and forced not in candidates and forced != "torch":
        candidates.append(forced)  # forced onto a GPU host's CPU: allowed, and measured
    if not candidates:  # a GPU, or no CPU runtime installed: torch it is, nothing to compare
        return torch_only(st, device, forced == "torch")

    digest = export.model_digest(folder)
    model = _Model(st, device, export.export_dir(folder, name, digest), source, digest, threads)
    key = {"scheme": SCHEME, "model_digest": digest, "probe": PROBE_VERSION, "threads": threads, "versions": _versions(), "candidates": sorted(candidates), "threshold": FLOAT_COSINE}
    record = _fresh_record(model.out, key)
    if record is None:
        reference = embed(torch_runtime, list(PROBE_TEXTS))
        reports = _measure(model, torch_runtime, candidates, embed, reference)
        np.save(model.out / f"{REFERENCE}.tmp-{os.getpid()}.npy", reference)
        os.replace(model.out / f"{REFERENCE}.tmp-{os.getpid()}.npy", model.out / REFERENCE)
        export.write_json(model.out / VALIDATION.format(threads=threads), {"key": key, "measured_at": time.time(), "reports": [asdict(r) for r in reports]})
    else:
        reference = np.load(model.out / REFERENCE)
        reports = [BackendReport(**r) for r in record["reports"]]

    by_name = {r.backend: r for r in reports}
    if forced:
        backend = forced
        if by_name[backend].error:
            raise InvalidInput(f"TROVE_ENCODER_BACKEND={backend}: the backend failed to load: {by_name[backend].error}", code="encoder_backend_failed")
    else:
        backend = max((r for r in reports if r.passed), key=lambda r: r.probe_docs_per_s or 0.0).backend
    if backend == "torch":  # the reference itself
        return torch_runtime, BackendChoice("torch", "float32", forced is not None, 1.0, tuple(reports))
    runtime = model.open(backend)
    check = float(cosines(embed(runtime, list(PROBE_TEXTS)), reference).min())
    is_float = backend != "onnx-int8"
    if is_float and check < FLOAT_COSINE:
        if forced:
            raise InvalidInput(
                f"TROVE_ENCODER_BACKEND={backend}: probe cosine against torch is {check:.4f}, below {FLOAT_COSINE}",
                code="encoder_backend_inaccurate",
                details={"min_cosine": check},
            )
        log.warning("encoder backend %s for %s fell to probe cosine %.4f at load; using torch", backend, name, check)
        runtime, backend, check = torch_runtime, "torch", 1.0
    return runtime, BackendChoice(backend, runtime.precision, forced is not None, check, tuple(reports))

