"""Matryoshka truncation: keep the first m dimensions and renormalise; and funnels over prefixes of one copy.

Models trained with Matryoshka representation learning pack the most information into leading
dimensions, so a prefix is a usable embedding on its own. ``Matryoshka`` makes a shorter copy (for
an index that stores only the prefix). ``MatryoshkaFunnel`` instead scores prefix *views* of the
full vectors (no copies): shortlist on the shortest prefix, rerank the survivors on longer ones.
Cosine on a prefix needs the prefix's norm, so the funnel keeps one float per row and stage.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from encoders.errors import InvalidInput
from encoders.transforms.base import Transform
from encoders.transforms.common import (
    as_matrix,
    blockwise_scores,
    map_blocks,
    provenance,
    rowwise_dot,
    to_numpy,
    to_torch,
)


def _unit(t: torch.Tensor) -> torch.Tensor:
    return t / torch.linalg.vector_norm(t, dim=-1, keepdim=True).clamp_min(1e-12)


class Matryoshka(Transform):
    """The first ``dim`` dimensions, renormalised to unit length (docs and queries alike)."""

    kind = "matryoshka"

    def __init__(self, dim: int, provenance: dict[str, Any] | None = None):
        if dim < 1:
            raise InvalidInput(f"matryoshka dim must be >= 1, got {dim}", code="invalid_transform")
        self.dim = dim
        self.provenance = provenance

    def fit(self, docs: np.ndarray, queries: np.ndarray | None = None) -> Matryoshka:
        """Nothing to learn; records the input width so later inputs are checked against it."""
        docs = as_matrix(docs, what="docs")
        self._check_width(docs.shape[1])
        self.provenance = provenance(docs, docs_used=0)
        return self

    def _check_width(self, width: int) -> None:
        if width < self.dim:
            raise InvalidInput(f"cannot keep {self.dim} of {width} dimensions", code="dimension_mismatch")

    def encode_docs(self, x: np.ndarray) -> np.ndarray:
        x = as_matrix(x, self.provenance["input_dim"] if self.provenance else None)
        self._check_width(x.shape[1])
        return map_blocks(x[:, : self.dim], self.dim, lambda b: to_numpy(_unit(to_torch(b))))

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "provenance": self.provenance}


class MatryoshkaFunnel:
    """Stages of increasing prefix length over the same stored vectors, the last one the full width.

    A searcher computes ``prefix_norms`` once per stored row, then either runs ``search`` or composes
    its own stages from ``score`` (all rows, or per-query candidate rows) and ``narrow``.
    """

    def __init__(self, stages: Sequence[int], full_dim: int):
        dims = [int(s) for s in stages]
        if not dims or dims[-1] != full_dim:
            dims.append(full_dim)
        if dims[0] < 1 or any(b <= a for a, b in itertools.pairwise(dims)) or dims[-1] > full_dim:
            raise InvalidInput(
                f"funnel stages must increase strictly within 1..{full_dim}, got {list(stages)}", code="invalid_funnel"
            )
        self.dims: tuple[int, ...] = tuple(dims)

    @property
    def full_dim(self) -> int:
        return self.dims[-1]

    def view(self, vectors: np.ndarray, stage: int) -> np.ndarray:
        """The stage's prefix of every row: a view sharing memory with ``vectors``."""
        return as_matrix(vectors, self.full_dim)[:, : self.dims[stage]]

    def prefix_norms(self, vectors: np.ndarray) -> np.ndarray:
        """(n, stages) float32: the L2 norm of each row's prefix at each stage."""
        ends = torch.tensor(self.dims) - 1

        def block(b: np.ndarray) -> np.ndarray:
            cumulative = torch.cumsum(to_torch(b).square(), dim=1)
            return to_numpy(cumulative[:, ends.to(cumulative.device)].sqrt())

        return map_blocks(as_matrix(vectors, self.full_dim), self.full_dim, block)

    def score(
        self, queries: np.ndarray, vectors: np.ndarray, norms: np.ndarray, stage: int, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Cosine between query and row prefixes at ``stage``: (m, n) for all rows, (m, k) for ``rows`` (m, k)."""
        dim = self.dims[stage]
        q = _unit(to_torch(as_matrix(queries, self.full_dim, "queries")[:, :dim]))

        def block(prepared: tuple[torch.Tensor, ...], stored: tuple[np.ndarray, ...]) -> torch.Tensor:
            prefix, prefix_norm = stored
            return rowwise_dot(prepared[0], to_torch(prefix)) / to_torch(prefix_norm).clamp_min(1e-12)

        return blockwise_scores((q,), (self.view(vectors, stage), norms[:, stage]), rows, block, dim)

    def narrow(
        self, queries: np.ndarray, vectors: np.ndarray, norms: np.ndarray, stage: int, keep: int, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``keep`` best rows per query at ``stage`` (among ``rows`` when given), best first: (rows, scores)."""
        scores = torch.from_numpy(self.score(queries, vectors, norms, stage, rows))
        top = torch.topk(scores, min(keep, scores.shape[1]), dim=1)
        picked = top.indices.numpy()
        return (picked if rows is None else np.take_along_axis(np.asarray(rows), picked, axis=1)), top.values.numpy()

    def keep_sizes(self, k: int, oversample: float) -> list[int]:
        """Candidates kept after each stage: k * oversample after the first, shrinking geometrically to k."""
        last = len(self.dims) - 1
        if last == 0:
            return [k]
        return [max(k, math.ceil(k * oversample ** ((last - i) / last))) for i in range(last)] + [k]

    def search(self, queries: np.ndarray, vectors: np.ndarray, norms: np.ndarray, k: int, oversample: float) -> tuple[np.ndarray, np.ndarray]:
        """Exact scan on the shortest prefix, then rerank through every longer stage: (rows, scores), (m, k)."""
        sizes = self.keep_sizes(k, oversample)
        rows, scores = self.narrow(queries, vectors, norms, 0, sizes[0])
        for stage, keep in enumerate(sizes[1:], start=1):
            rows, scores = self.narrow(queries, vectors, norms, stage, keep, rows)
        return rows, scores
