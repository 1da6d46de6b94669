"""Static (model2vec) encoders: a token embedding table, mean-pooled. Fast, no transformer pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encoders.base import Encoder, ModelInfo, l2_normalize


class StaticEncoder(Encoder):
    def __init__(self, name: str, folder: Path, source: str):
        from model2vec import StaticModel

        self._model = StaticModel.from_pretrained(str(folder))
        self.info = ModelInfo(
            name=name,
            dim=int(self._model.dim),
            kinds=("dense", "multivector"),
            source=source,
            family="model2vec",
        )

    def encode_docs(self, texts: list[str], batch_size: int = 1024) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        return l2_normalize(np.asarray(self._model.encode(texts, batch_size=batch_size), dtype=np.float32))

    def encode_tokens(self, texts: list[str], batch_size: int = 1024) -> list[np.ndarray]:
        return [l2_normalize(np.asarray(t, dtype=np.float32)) for t in self._model.encode_as_sequence(texts)]
