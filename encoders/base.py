"""The encoder interface every model implements, and the one encoding path all of them share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from encoders.batching import BatchPolicy, OnDone, run_batches

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
    backend: dict[str, Any] | None = None  # the runtime chosen and its checks against torch (encoders/backend_choice.py)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class Encoder(ABC):
    """Pooled, L2-normalised float32 vectors for documents and queries; token vectors for multi-vector use.

    Every caller (writes, queries, builds, upgrades, backfills, Ray actors) comes through ``encode_docs``,
    ``encode_queries`` or ``encode_tokens``, which sort by token length, batch by the policy's token budget
    and answer in the caller's order (encoders/batching.py). ``on_done(n)`` reports progress as texts finish.
    """

    info: ModelInfo
    policy: BatchPolicy = BatchPolicy()

    @abstractmethod
    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens each text becomes, as the model will see it (special tokens in, truncation applied)."""

    def _inputs(self, texts: list[str]) -> tuple[Sequence[Any], list[int]]:
        """What the model's batches are drawn from, one item per text, and each one's token length. Here the texts
        themselves, for a model that tokenises inside its batch call; a model that needs the token ids anyway
        to plan the batches hands them on instead, so that no text is tokenised twice."""
        return texts, self.token_lengths(texts)

    @property
    def streams(self) -> int:
        """Batches the model runs at once (parallel streams of its runtime)."""
        return 1

    @abstractmethod
    def _pooled(self, batches: Iterator[list[Any]]) -> list[np.ndarray]:
        """Every batch of ``_inputs`` items drawn, answered in order (``streams`` at once): a (len(batch), dim) float32 array for each."""

    @abstractmethod
    def _tokens(self, batches: Iterator[list[Any]]) -> list[list[np.ndarray]]:
        """Every batch drawn, answered in order: for each text a (tokens, dim) float32 array, special and padding tokens dropped, rows unit length."""

    def encode_docs(self, texts: list[str], on_done: OnDone | None = None, policy: BatchPolicy | None = None) -> np.ndarray:
        """(n, dim) float32, rows of unit length."""
        if not texts:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        rows = run_batches(*self._inputs(texts), policy or self.policy, self._pooled, on_done, self.streams)
        return l2_normalize(np.stack(rows))

    def encode_queries(self, texts: list[str], on_done: OnDone | None = None) -> np.ndarray:
        """Symmetric models embed queries like documents; asymmetric ones override this."""
        return self.encode_docs(texts, on_done)

    def encode_tokens(self, texts: list[str], on_done: OnDone | None = None) -> list[np.ndarray]:
        if not texts:
            return []
        return run_batches(*self._inputs(texts), self.policy, self._tokens, on_done, self.streams)
