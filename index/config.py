"""A collection's durable configuration (collection.json): what made its vectors and how they are searched."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from index.backends.faiss_index import IndexSpec
from index.compression.spec import CompressionSpec
from index.storage import atomic

Metric = Literal["cosine", "ip", "l2"]
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelVersion:
    """One embedding model a collection has held; ``name`` is None for a vectors-only collection."""

    version: int
    name: str | None
    dim: int
    created_at: float = field(default_factory=time.time)
    # Compatibility maps (folders under the collection) taking this model's vectors into the index's space, in order.
    chain: tuple[str, ...] = ()
    # No map takes this version into the index's space any more (a native rebuild moved the index): it cannot serve.
    retired: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelVersion:
        return cls(**{**data, "chain": tuple(data.get("chain", ()))})


@dataclass(frozen=True)
class MuveraSpec:
    """A multi-vector collection's FDE settings (DESIGN.md section 3 names) and its per-point token limit."""

    k_sim: int = 3
    d_proj: int | None = 16
    r_reps: int = 20
    projection: Literal["identity", "ams", "dense"] = "ams"
    final_dim: int | None = None
    seed: int = 1
    max_tokens: int = 512
    fill_empty: bool = False  # filling a document's empty partitions with its nearest token (the paper's default) costs 2.5-4x the candidates on sentence queries (bench muvera)
    query_fill_empty: bool = False  # the same for queries (the reference leaves them empty)
    token_storage: str = "float32"  # how the token vectors the Chamfer rerank reads are stored (index/token_codec.py)


@dataclass(frozen=True)
class CollectionConfig:
    name: str
    dim: int
    metric: Metric
    index: IndexSpec
    models: tuple[ModelVersion, ...]
    serving_version: int = 1
    store_file: str = "store.sqlite"  # a reprojection writes a new store file and switches to it here
    created_at: float = field(default_factory=time.time)
    format_version: int = FORMAT_VERSION
    compression: CompressionSpec | None = None  # what is asked for; index/compression/state.py holds what is fitted
    multivector: bool = False
    muvera: MuveraSpec | None = None  # set exactly when multivector

    @property
    def serving_model(self) -> ModelVersion:
        return self.model(self.serving_version)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"compression": self.compression.to_json() if self.compression else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CollectionConfig:
        return cls(
            name=data["name"],
            dim=data["dim"],
            metric=data["metric"],
            index=IndexSpec(**data["index"]),
            models=tuple(ModelVersion.from_json(m) for m in data["models"]),
            serving_version=data["serving_version"],
            store_file=data.get("store_file", "store.sqlite"),
            created_at=data["created_at"],
            format_version=data["format_version"],
            compression=CompressionSpec.from_json(data["compression"]) if data.get("compression") else None,
            multivector=data.get("multivector", False),
            # Collections saved before fill_empty existed were built with filling (its default then).
            muvera=MuveraSpec(**{"fill_empty": True} | data["muvera"]) if data.get("muvera") else None,
        )

    def model(self, version: int) -> ModelVersion:
        return next(m for m in self.models if m.version == version)

    def save(self, path: Path) -> None:
        atomic.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> CollectionConfig:
        return cls.from_json(json.loads(path.read_text()))
