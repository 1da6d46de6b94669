"""The encoder interface every model implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Kind = Literal["dense", "multivector"]


@dataclass(frozen=True)
class ModelInfo:
    """What a model is; saved with every collection so vectors can be traced to their maker."""

    name: str
    dim: int
    kinds: tuple[Kind, ...]
    source: str  # "bundled", a folder path, ...
    family: str  # "sentence-transformers" | "model2vec"
    max_tokens: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class Encoder(ABC):
    """Pooled, L2-normalised float32 vectors for documents and queries; token vectors for multi-vector use."""

    info: ModelInfo

    @abstractmethod
    def encode_docs(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32, rows of unit length."""

    def encode_queries(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Symmetric models embed queries like documents; asymmetric ones override this."""
        return self.encode_docs(texts, batch_size=batch_size)

    @abstractmethod
    def encode_tokens(self, texts: list[str], batch_size: int = 64) -> list[np.ndarray]:
        """One (tokens, dim) float32 array per text: special and padding tokens dropped, rows unit length."""
