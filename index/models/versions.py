"""What serves a collection's queries and new points: one model version, its encoder, and its map into the index.

The index holds vectors of one space (the first model's, or the model a reprojection moved it to). Each
model version records the chain of compatibility maps that takes its vectors into that space; text is
embedded by the serving version's encoder and sent through its chain. A ``Serving`` is immutable and
replaced whole on promote or rollback, so a query that has started keeps the one it began with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoders.base import Encoder
from encoders.registry import ModelRegistry
from encoders.transforms.base import Transform
from index.config import CollectionConfig


@dataclass(frozen=True)
class Serving:
    version: int
    encoder: Encoder | None
    chain: tuple[Transform, ...]  # serving model space -> index space, applied in order
    space: str  # which index space the chain ends in: the store file, which a reprojection replaces

    def to_index(self, vectors: np.ndarray) -> np.ndarray:
        """Model vectors in the index's space (not yet normalised)."""
        for stage in self.chain:
            vectors = stage.encode_queries(vectors)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def load_chain(root: Path, folders: tuple[str, ...]) -> tuple[Transform, ...]:
    return tuple(Transform.load(root / folder) for folder in folders)


def load_serving(root: Path, config: CollectionConfig, registry: ModelRegistry) -> Serving:
    model = config.serving_model
    return Serving(
        version=model.version,
        encoder=registry.get(model.name) if model.name else None,
        chain=load_chain(root, model.chain),
        space=config.store_file,
    )
