"""The transform interface and the pipeline that chains transforms, saved like sentence-transformers' modules.json.

A transform folder holds ``config.json`` (its kind, parameters and provenance:
what it was fitted on, the seed) and, when fitted, ``weights.safetensors``.
A pipeline folder holds ``pipeline.json`` listing its stages in order, each in
its own ``<n>_<kind>/`` folder.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from encoders.errors import InvalidInput

CONFIG = "config.json"
WEIGHTS = "weights.safetensors"


class Transform(ABC):
    """Subclasses set ``kind``, keep their parameters in ``config()`` and their fitted tensors in ``state()``."""

    kind: ClassVar[str]
    registry: ClassVar[dict[str, type[Transform]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Transform.registry[cls.kind] = cls

    @abstractmethod
    def fit(self, docs: np.ndarray, queries: np.ndarray | None = None) -> Transform:
        """Learn from samples of document (and optionally query) vectors; returns self."""

    @abstractmethod
    def encode_docs(self, x: np.ndarray) -> np.ndarray: ...

    def encode_queries(self, x: np.ndarray) -> np.ndarray:
        return self.encode_docs(x)

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor arguments plus provenance; JSON-able."""

    def state(self) -> dict[str, torch.Tensor]:
        """Fitted tensors; empty for transforms with nothing to learn."""
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise InvalidInput(f"{self.kind} has no weights to load", code="invalid_transform")

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / CONFIG, json.dumps({"kind": self.kind, **self.config()}, indent=2).encode())
        state = {k: v.detach().cpu().contiguous() for k, v in self.state().items()}
        if state:
            save_file(state, str(folder / WEIGHTS))

    @classmethod
    def load(cls, folder: Path) -> Transform:
        config = json.loads((folder / CONFIG).read_text())
        kind = config.pop("kind")
        if kind not in Transform.registry:
            raise InvalidInput(f"unknown transform kind {kind!r} in {folder}", code="invalid_transform")
        transform = Transform.registry[kind](**config)
        if (folder / WEIGHTS).exists():
            transform.load_state(load_file(str(folder / WEIGHTS)))
        return transform


class Pipeline:
    """Transforms applied in order; documents and queries each take their own path through every stage."""

    def __init__(self, stages: list[Transform]):
        self.stages = stages

    def fit(self, docs: np.ndarray, queries: np.ndarray | None = None) -> Pipeline:
        for stage in self.stages:
            stage.fit(docs, queries)
            docs = stage.encode_docs(docs)
            queries = stage.encode_queries(queries) if queries is not None else None
        return self

    def encode_docs(self, x: np.ndarray) -> np.ndarray:
        for stage in self.stages:
            x = stage.encode_docs(x)
        return x

    def encode_queries(self, x: np.ndarray) -> np.ndarray:
        for stage in self.stages:
            x = stage.encode_queries(x)
        return x

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        names = [f"{i}_{stage.kind}" for i, stage in enumerate(self.stages)]
        for name, stage in zip(names, self.stages, strict=True):
            stage.save(folder / name)
        _atomic_write(folder / "pipeline.json", json.dumps([{"idx": i, "path": n} for i, n in enumerate(names)], indent=2).encode())

    @classmethod
    def load(cls, folder: Path) -> Pipeline:
        entries = json.loads((folder / "pipeline.json").read_text())
        return cls([Transform.load(folder / e["path"]) for e in sorted(entries, key=lambda e: e["idx"])])


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
