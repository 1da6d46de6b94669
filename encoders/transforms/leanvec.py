"""LeanVec: linear dimensionality reduction for inner-product search, in-distribution (ID) and query-aware (OOD).

After Tepper et al., "LeanVec: Search your vectors faster by making them fit" (Intel Labs, 2023).

Mean-centring. Documents are centred by their sample mean μ before projection; queries are not
(metric "ip"). Since q·x = q·μ + q·(x - μ) and q·μ is one number per query, equal for every document,
it never changes a ranking: centring spends no output dimension on the mean and leaves all d' for the
variance. The reduced inner product therefore approximates q·x - q·μ; ``query_offset`` returns q·μ for
callers that need absolute scores (score thresholds). With metric "l2" queries are centred too:
||q - x|| is translation-invariant, so the reduced distance approximates it directly.

LeanVec-ID: P = the top d' right singular vectors of the centred document sample (PCA via SVD);
docs -> P^T (x - μ), queries -> P^T q.

LeanVec-OOD: queries and documents get their own projections A and B (D x d'), chosen to minimise
the inner-product error over query and document samples,

    E (q^T x - (A^T q)^T (B^T x))^2 = tr((I - AB^T)^T K_Q (I - AB^T) K_X) = ||K_Q^½ (I - AB^T) K_X^½||_F^2,

with K_Q = E[q q^T] (raw queries) and K_X = Cov(x) (centred documents). The paper keeps A and B
orthonormal, relaxes that to the spectral-norm ball and runs Frank-Wolfe block coordinate descent.
We solve the unconstrained problem exactly instead: by Eckart-Young the best rank-d' K_Q^½ AB^T K_X^½
is U U^T K_Q^½ K_X^½ with U the top d' left singular vectors of K_Q^½ K_X^½, reached by
A = K_Q^-½ U and B = K_Q^½ U. Its feasible set contains the paper's, so its training loss is never
higher; it costs two symmetric eigendecompositions of D x D matrices instead of hundreds of
iterations; and it is deterministic. Measured against a Frank-Wolfe reference (the test suite keeps
one: block coordinate descent, exact line search, started from PCA) it reaches lower training and held-out
loss on Gaussian and MiniLM data, about 40x faster at D = 384. Documents come out decorrelated with
decreasing variance (and, unshrunk, queries whitened), so any prefix of the projection is itself
the optimum for a smaller d'.

With few queries K_Q is a noisy estimate and the exact optimum overfits it. K_Q is therefore shrunk
towards a multiple of the identity, (1 - s) K_Q + s tr(K_Q)/D I; s = 1 gives back PCA (ID). Unless
fixed by the caller, s is picked from a grid that includes 0 and 1 by the loss on a held-out fifth of
the query sample, then the projection is refitted on all queries; where the queries teach nothing the
documents do not, the search falls back to ID.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import torch

from encoders.errors import InvalidInput, Unsupported
from encoders.transforms.common import (
    DEFAULT_MAX_SAMPLES,
    FittedTransform,
    as_matrix,
    fitting_sample,
    map_blocks,
    provenance,
    to_numpy,
    to_torch,
)

Variant = Literal["id", "ood"]
Metric = Literal["ip", "l2"]

SHRINKAGE_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
VALIDATION_FRACTION = 0.2
# Below this a query second-moment estimate (and its held-out check) is noise.
MIN_QUERIES = 20


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Columns flipped so each one's largest-magnitude entry is positive: the same data gives the same signs."""
    pivot = vectors.gather(0, vectors.abs().argmax(dim=0, keepdim=True))
    return vectors * torch.where(pivot < 0, -1.0, 1.0).to(vectors.dtype)


def second_moment(v: torch.Tensor) -> torch.Tensor:
    """E[v v^T] over the rows of v (the covariance when v is centred)."""
    return v.mT @ v / len(v)


def inner_product_loss(k_q: torch.Tensor, k_x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """tr((I - AB^T)^T K_Q (I - AB^T) K_X): the mean squared inner-product error the projections make."""
    e = torch.eye(k_q.shape[0], dtype=k_q.dtype, device=k_q.device) - a @ b.mT
    return float(((k_q @ e) * (e @ k_x)).sum())


def ood_projections(
    q_eig: tuple[torch.Tensor, torch.Tensor], k_x: torch.Tensor, dim: int, shrinkage: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B), the exact minimisers of the inner-product loss for the shrunk K_Q (see the module docstring).

    ``q_eig`` is K_Q's eigendecomposition: shrinking towards the identity keeps its eigenvectors, so
    one decomposition serves every candidate shrinkage. U comes from the symmetric
    K_Q^½ K_X K_Q^½ = (K_Q^½ K_X^½)(K_Q^½ K_X^½)^T, which spares K_X^½.
    """
    w, v = q_eig
    w = ((1 - shrinkage) * w + shrinkage * w.mean()).clamp_min(0)
    keep = w > w.max() * len(w) * torch.finfo(w.dtype).eps
    root = w.sqrt()
    inv_root = torch.where(keep, 1 / torch.where(keep, root, 1), 0)  # pseudo-inverse on K_Q's null space
    q_root, q_inv_root = (v * root) @ v.mT, (v * inv_root) @ v.mT
    u = _fix_signs(torch.linalg.eigh(q_root @ k_x @ q_root).eigenvectors[:, -dim:].flip(1))
    return q_inv_root @ u, q_root @ u


class LeanVec(FittedTransform):
    """Projects docs to ``dim`` dimensions with B, queries with A (A = B = P for "id")."""

    kind = "leanvec"

    def __init__(
        self,
        dim: int,
        variant: Variant = "id",
        metric: Metric = "ip",
        shrinkage: float | None = None,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        seed: int = 0,
        provenance: dict[str, Any] | None = None,
    ):
        if variant not in get_args(Variant) or metric not in get_args(Metric):
            raise InvalidInput(f"unknown leanvec variant {variant!r} or metric {metric!r}", code="invalid_transform")
        if variant == "ood" and metric == "l2":
            raise Unsupported("LeanVec-OOD approximates inner products; use variant 'id' for l2", code="unsupported_transform")
        if dim < 1 or max_samples < 1 or (shrinkage is not None and not 0 <= shrinkage <= 1):
            raise InvalidInput("leanvec needs dim >= 1, max_samples >= 1 and shrinkage in [0, 1]", code="invalid_transform")
        super().__init__(provenance)
        self.dim, self.variant, self.metric = dim, variant, metric
        self.shrinkage, self.max_samples, self.seed = shrinkage, max_samples, seed

    def expected_tensors(self) -> set[str]:
        # ID queries share the document projection.
        return {"mean", "doc_projection"} | ({"query_projection"} if self.variant == "ood" else set())

    def fit(self, docs: np.ndarray, queries: np.ndarray | None = None) -> LeanVec:
        docs = as_matrix(docs, what="docs")
        if self.dim > docs.shape[1]:
            raise InvalidInput(f"cannot reduce {docs.shape[1]} dimensions to {self.dim}", code="dimension_mismatch")
        sample = fitting_sample(docs, self.max_samples, self.seed)
        x = to_torch(sample, torch.float64)  # float64 for the decompositions; the state is stored in float32
        mean = x.mean(dim=0)
        centred = x - mean
        if self.variant == "id":
            tensors = {"doc_projection": _fix_signs(torch.linalg.svd(centred, full_matrices=False).Vh[: self.dim].mT)}
            record = provenance(docs, len(sample))
        else:
            if queries is None or len(queries) < MIN_QUERIES:
                raise InvalidInput(f"LeanVec-OOD needs at least {MIN_QUERIES} query vectors to fit", code="queries_required")
            queries = as_matrix(queries, docs.shape[1], "queries")
            q_sample = fitting_sample(queries, self.max_samples, self.seed + 1)
            a, b, shrinkage = self._fit_ood(to_torch(q_sample, torch.float64), centred)
            tensors = {"doc_projection": b, "query_projection": a}
            record = provenance(docs, len(sample), queries, len(q_sample), shrinkage_used=shrinkage)
        self.tensors = {name: t.float().contiguous() for name, t in ({"mean": mean} | tensors).items()}
        self.provenance = record
        return self

    def _fit_ood(self, q: torch.Tensor, centred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        k_x = second_moment(centred)
        shrinkage = self.shrinkage
        if shrinkage is None:
            order = torch.from_numpy(np.random.default_rng(self.seed).permutation(len(q))).to(q.device)
            held = max(1, round(VALIDATION_FRACTION * len(q)))
            k_held, fit_eig = second_moment(q[order[:held]]), torch.linalg.eigh(second_moment(q[order[held:]]))
            losses = [inner_product_loss(k_held, k_x, *ood_projections(fit_eig, k_x, self.dim, s)) for s in SHRINKAGE_GRID]
            shrinkage = SHRINKAGE_GRID[int(np.argmin(losses))]
        a, b = ood_projections(torch.linalg.eigh(second_moment(q)), k_x, self.dim, shrinkage)
        return a, b, shrinkage

    def _project(self, x: np.ndarray, shift: torch.Tensor | None, projection: torch.Tensor) -> np.ndarray:
        def block(rows: np.ndarray) -> np.ndarray:
            t = to_torch(rows)
            return to_numpy((t if shift is None else t - shift) @ projection)

        x = as_matrix(x, self.input_dim)
        return map_blocks(x, x.shape[1], block)

    def encode_docs(self, x: np.ndarray) -> np.ndarray:
        return self._project(x, self.tensor("mean"), self.tensor("doc_projection"))

    def encode_queries(self, x: np.ndarray) -> np.ndarray:
        projection = self.tensor("query_projection" if self.variant == "ood" else "doc_projection")
        return self._project(x, self.tensor("mean") if self.metric == "l2" else None, projection)

    def query_offset(self, queries: np.ndarray) -> np.ndarray:
        """q·μ per query: add it to a reduced inner product to approximate q·x (metric "ip" only)."""
        if self.metric != "ip":
            raise Unsupported("query_offset applies to inner products only", code="unsupported_transform")
        return self._project(queries, None, self.tensor("mean")[:, None])[:, 0]

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "variant": self.variant,
            "metric": self.metric,
            "shrinkage": self.shrinkage,
            "max_samples": self.max_samples,
            "seed": self.seed,
            "provenance": self.provenance,
        }
