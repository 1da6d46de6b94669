"""The quantizer interface: documents become fixed-size byte rows; queries stay float and are scored against them.

A quantizer is the last stage of a pipeline. ``encode_docs`` returns uint8 codes of shape
(n, ``code_size``), opaque to everything but the quantizer that made them: one blob per vector,
storable as-is (SQLite, a memory-mapped file). ``encode_queries`` passes float queries through
(scoring is asymmetric: the query is never quantised). ``score`` computes query-document inner
products straight from the codes, either against every stored row or against per-query candidate
rows, block by block so memory stays bounded; ``decode`` reconstructs float vectors (for tests,
rebuilds and rerank copies).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch

from encoders.errors import InvalidInput
from encoders.transforms.common import (
    FittedTransform,
    as_matrix,
    blockwise_scores,
    fitting_sample,
    map_blocks,
    provenance,
    to_numpy,
    to_torch,
)

# Scoring expands each code row to about this many float rows of the input width (unpacked codes plus
# products); block sizes are bounded with it.
_EXPANSION = 2

_BIT_SHIFTS = torch.arange(8, dtype=torch.uint8)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """(..., d) bool -> (..., ceil(d/8)) uint8, bit i of byte j holding dimension 8j + i.

    That is numpy's ``packbits(bitorder="little")`` and FAISS's own layout (``faiss.real_to_binary``),
    so the bytes go into a FAISS binary index as they are.
    """
    pad = -bits.shape[-1] % 8
    padded = torch.nn.functional.pad(bits.to(torch.uint8), (0, pad))
    grouped = padded.unflatten(-1, (-1, 8))
    return (grouped << _BIT_SHIFTS.to(bits.device)).sum(dim=-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: (..., bytes) uint8 -> (..., dim) uint8 of 0 and 1."""
    return ((packed.unsqueeze(-1) >> _BIT_SHIFTS.to(packed.device)) & 1).flatten(-2)[..., :dim]


def fp16_bytes(values: torch.Tensor) -> torch.Tensor:
    """(..., k) float -> (..., 2k) uint8: the float16 values' bytes, for per-vector constants stored in codes."""
    return values.to(torch.float16).contiguous().view(torch.uint8)


def fp16_from_bytes(raw: torch.Tensor) -> torch.Tensor:
    """Inverse of ``fp16_bytes``, as float32: (..., 2k) uint8 -> (..., k)."""
    return raw.contiguous().view(torch.float16).float()


class Quantizer(FittedTransform):
    """Subclasses learn their tensors in ``_fit`` and implement the four block kernels below."""

    def __init__(self, max_samples: int, seed: int, provenance: dict[str, Any] | None):
        if max_samples < 1:
            raise InvalidInput("max_samples must be >= 1", code="invalid_transform")
        super().__init__(provenance)
        self.max_samples, self.seed = max_samples, seed

    @property
    @abstractmethod
    def code_size(self) -> int:
        """Bytes per encoded document."""

    @abstractmethod
    def _fit(self, sample: torch.Tensor) -> dict[str, torch.Tensor]:
        """The fitted tensors (float32) from a float32 sample of documents."""

    @abstractmethod
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) float -> (n, code_size) uint8."""

    @abstractmethod
    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., code_size) uint8 -> (..., d) float."""

    @abstractmethod
    def _prepare(self, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-query tensors (leading dimension m) computed once per ``score`` call."""

    @abstractmethod
    def _score(self, prepared: tuple[torch.Tensor, ...], codes: torch.Tensor) -> torch.Tensor:
        """Inner products from codes (n, code_size) -> (m, n), or (m, k, code_size) -> (m, k); see ``rowwise_dot``."""

    def fit(self, docs: np.ndarray, queries: np.ndarray | None = None) -> Quantizer:
        """Learns from a sample of documents; queries are not needed (they are never quantised)."""
        docs = as_matrix(docs, what="docs")
        sample = fitting_sample(docs, self.max_samples, self.seed)
        self.tensors = {name: t.float().contiguous() for name, t in self._fit(to_torch(sample)).items()}
        self.provenance = provenance(docs, len(sample))
        return self

    def encode_docs(self, x: np.ndarray) -> np.ndarray:
        x = as_matrix(x, self.input_dim)
        return map_blocks(x, self.input_dim, lambda block: to_numpy(self._encode(to_torch(block))))

    def encode_queries(self, x: np.ndarray) -> np.ndarray:
        return as_matrix(x, self.input_dim, "queries").astype(np.float32, copy=False)

    def _codes(self, codes: np.ndarray) -> np.ndarray:
        codes = as_matrix(codes, self.code_size, "codes")
        if codes.dtype != np.uint8:
            raise InvalidInput(f"codes must be uint8, got {codes.dtype}", code="invalid_codes")
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, code_size) uint8 -> (n, d) float32 reconstructions."""
        return map_blocks(
            self._codes(codes), _EXPANSION * self.input_dim, lambda block: to_numpy(self._decode(to_torch(block, torch.uint8)))
        )

    def score(self, queries: np.ndarray, codes: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Approximate q·x for float queries (m, d) against codes: (m, n), or (m, k) for candidate ``rows`` (m, k)."""
        prepared = self._prepare(to_torch(self.encode_queries(queries)))

        def block(p: tuple[torch.Tensor, ...], stored: tuple[np.ndarray, ...]) -> torch.Tensor:
            return self._score(p, to_torch(stored[0], torch.uint8))

        return blockwise_scores(prepared, (self._codes(codes),), rows, block, _EXPANSION * self.input_dim)
