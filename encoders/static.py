"""Static (model2vec) encoders: a token embedding table, mean-pooled. Fast, no transformer pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from encoders.base import Encoder, ModelInfo, l2_normalize
from encoders.batching import BatchPolicy


class StaticEncoder(Encoder):
    # A lookup and a mean: no padding to waste, so the budget only bounds a batch's memory and a query's wait.
    policy = BatchPolicy(token_budget=1 << 18, max_batch=4096)

    def __init__(self, name: str, folder: Path, source: str):
        from model2vec import StaticModel

        self._model = StaticModel.from_pretrained(str(folder))
        self.info = ModelInfo(
            name=name,
            dim=int(self._model.dim),
            kinds=("dense", "multivector"),
            source=source,
            family="model2vec",
            backend={"backend": "model2vec", "precision": "float32", "forced": False, "min_cosine": 1.0, "reports": []},
        )

    def token_lengths(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._model.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def _pooled(self, batches: Iterator[list[str]]) -> list[np.ndarray]:
        return [np.asarray(self._model.encode(texts, batch_size=len(texts)), dtype=np.float32) for texts in batches]

    def _tokens(self, batches: Iterator[list[str]]) -> list[list[np.ndarray]]:
        return [[l2_normalize(np.asarray(t, dtype=np.float32)) for t in self._model.encode_as_sequence(texts)] for texts in batches]
