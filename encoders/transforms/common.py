"""What the compression transforms (matryoshka, leanvec, lvq, binary) share.

numpy at the edges, torch on ``torch_device()`` inside; input checks with stable error codes; seeded
fitting samples; the provenance every fitted artifact records; and block-wise scoring, so that scoring
a batch of queries against millions of stored rows never materialises more than one block in float.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from encoders.device import torch_device
from encoders.errors import InvalidInput
from encoders.transforms.base import Transform

# Float elements per scoring or encoding block: 2^22 float32 is 16 MiB, small on a shared host,
# large enough that per-block overhead is noise next to the matmul.
BLOCK_ELEMENTS = 1 << 22

# Fitting never looks at more rows than this (the "PCA via SVD on at most 100k vectors").
DEFAULT_MAX_SAMPLES = 100_000


def as_matrix(x: np.ndarray, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """``x`` as a 2-D array, checked against the expected width when one is known."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise InvalidInput(f"{what} must be a 2-D array, got shape {x.shape}", code="invalid_shape")
    if dim is not None and x.shape[1] != dim:
        raise InvalidInput(
            f"{what} have {x.shape[1]} dimensions, expected {dim}",
            code="dimension_mismatch",
            details={"expected": dim, "got": int(x.shape[1])},
        )
    return x


def to_torch(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor on the compute device; shares memory with ``x`` when no conversion is needed on CPU."""
    # Read-only inputs (memory-mapped codes) are copied: torch cannot wrap a non-writable buffer safely.
    source = torch.from_numpy(x) if x.flags.writeable else torch.tensor(x)
    return source.to(device=torch_device(), dtype=dtype)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def fitting_sample(x: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` rows of ``x``, drawn without replacement by ``seed`` (kept in their original order)."""
    if len(x) == 0:
        raise InvalidInput("cannot fit on zero vectors", code="empty_fitting_sample")
    if len(x) > limit:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), size=limit, replace=False))]
    if not np.isfinite(x).all():
        raise InvalidInput("fitting data holds NaN or infinite values", code="invalid_vectors")
    return x


def provenance(docs: np.ndarray, docs_used: int, queries: np.ndarray | None = None, queries_used: int = 0, **extra: Any) -> dict[str, Any]:
    """What a transform was fitted on, saved in its config so an artifact can be traced and re-made."""
    record: dict[str, Any] = {"input_dim": int(docs.shape[1]), "docs_seen": len(docs), "docs_used": int(docs_used)}
    if queries is not None:
        record |= {"queries_seen": len(queries), "queries_used": int(queries_used)}
    return record | extra


class FittedTransform(Transform):
    """A transform whose learned tensors live in ``self.tensors`` (its saved weights) on the compute device."""

    def __init__(self, provenance: dict[str, Any] | None):
        self.provenance = provenance
        self.tensors: dict[str, torch.Tensor] = {}

    @abstractmethod
    def expected_tensors(self) -> set[str]:
        """The names ``fit`` stores; ``load_state`` accepts exactly these."""

    def _require_fitted(self) -> None:
        if not self.tensors or self.provenance is None:
            raise InvalidInput(f"{self.kind} transform is not fitted: call fit() or load it", code="transform_not_fitted")

    def tensor(self, name: str) -> torch.Tensor:
        self._require_fitted()
        return self.tensors[name]

    @property
    def input_dim(self) -> int:
        self._require_fitted()
        assert self.provenance is not None
        return int(self.provenance["input_dim"])

    def state(self) -> dict[str, torch.Tensor]:
        self._require_fitted()
        return dict(self.tensors)

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != self.expected_tensors():
            raise InvalidInput(
                f"{self.kind} weights hold {sorted(state)}, expected {sorted(self.expected_tensors())}", code="invalid_transform"
            )
        self.tensors = {name: t.to(torch_device()) for name, t in state.items()}


def block_rows(width: int) -> int:
    """Rows per block when each row expands to ``width`` float elements."""
    return max(1, BLOCK_ELEMENTS // max(1, width))


def map_blocks(x: np.ndarray, width: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` applied to consecutive row blocks of ``x`` and the results stacked (same row count)."""
    step = block_rows(width)
    return np.concatenate([fn(x[i : i + step]) for i in range(0, len(x), step)]) if len(x) else fn(x)


def offset_dot(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(m, d) queries' inner products with one vector (d,) -> (m, 1), elementwise: as a matmul, a single query's
    product went through threaded BLAS, whose wake-ups took up to 20 ms on a busy machine for 384 multiplications."""
    return (q * v).sum(dim=1, keepdim=True)


def rowwise_dot(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Inner products of queries ``q`` (m, d) with rows ``c``.

    ``c`` is either shared by all queries, (n, d) -> (m, n), or one candidate list per query,
    (m, k, d) -> (m, k). One expression serves both: a full scan and a shortlist rerank then share
    every scoring formula, with per-row factors broadcasting as (n,) or (m, k).
    """
    return (q.unsqueeze(-2) @ c.mT).squeeze(-2)


ScoreBlock = Callable[[tuple[torch.Tensor, ...], tuple[np.ndarray, ...]], torch.Tensor]


def blockwise_scores(
    prepared: tuple[torch.Tensor, ...],
    stored: tuple[np.ndarray, ...],
    rows: np.ndarray | None,
    score_block: ScoreBlock,
    width: int,
) -> np.ndarray:
    """Scores of m queries against stored rows, one block at a time.

    ``prepared`` holds per-query tensors (leading dimension m); ``stored`` holds per-row arrays
    indexed alike (codes, norms, ...). With ``rows`` None every stored row is scored, (m, n); with
    ``rows`` (m, k) each query scores only its own candidates, (m, k). ``width`` is how many float
    elements one row expands to inside ``score_block``, which bounds the block size.
    """
    m = prepared[0].shape[0]
    n = len(stored[0])
    if rows is None:
        out = np.empty((m, n), dtype=np.float32)
        step = block_rows(width)
        for i in range(0, n, step):
            out[:, i : i + step] = to_numpy(score_block(prepared, tuple(a[i : i + step] for a in stored)))
        return out
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] != m:
        raise InvalidInput(f"rows must have shape ({m}, k), got {rows.shape}", code="invalid_shape")
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise InvalidInput(f"rows must lie in [0, {n})", code="invalid_rows")
    out = np.empty(rows.shape, dtype=np.float32)
    step = max(1, block_rows(width * max(1, rows.shape[1])))
    for i in range(0, m, step):
        chunk = rows[i : i + step]
        out[i : i + step] = to_numpy(score_block(tuple(p[i : i + step] for p in prepared), tuple(a[chunk] for a in stored)))
    return out
