"""Compatibility maps between two embedding models' spaces, fitted on texts embedded by both.

A map goes from a *source* space to a *target* space, learned from paired rows (row i of both samples
embeds the same text). A model upgrade uses them two ways: new-model vectors mapped into the space an
index already holds (query side), or the stored vectors mapped into the new model's space (reprojection).

- ``Orthogonal``: Procrustes. Both sides are zero-padded to D = max(d_source, d_target) and one D x D
  rotation is fitted, so the map preserves every inner product in the source space. When the source has
  more dimensions, the first d_target axes of the rotated space align with the target and the remaining
  axes carry what the target lacks: a source vector rotated in full scores exactly as before against
  another rotated source vector, and through its first d_target coordinates against target vectors.
- ``Affine``: least squares with an offset, ridge-penalised when ``alpha`` > 0 (method "ridge").
- ``LowRank``: the ridge map restricted to its ``rank`` leading output directions (reduced-rank regression).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from encoders.errors import InvalidInput
from encoders.transforms.common import FittedTransform, as_matrix, map_blocks, to_numpy, to_torch


class CompatMap(FittedTransform):
    """A map from a source model's space to a target model's space; docs and queries map alike."""

    def __init__(
        self,
        source_model: str | None = None,
        target_model: str | None = None,
        seed: int = 0,
        provenance: dict[str, Any] | None = None,
    ):
        super().__init__(provenance)
        self.source_model = source_model
        self.target_model = target_model
        self.seed = seed

    def fit(self, docs: np.ndarray, queries: np.ndarray | None = None) -> CompatMap:
        raise InvalidInput(f"{self.kind} learns from paired samples of two models: use fit_pair(source, target)", code="invalid_transform")

    def fit_pair(self, source: np.ndarray, target: np.ndarray) -> CompatMap:
        """Learn the map from rows of ``source`` to the matching rows of ``target``."""
        source, target = as_matrix(source, what="source vectors"), as_matrix(target, what="target vectors")
        if len(source) != len(target):
            raise InvalidInput(f"paired samples differ in length: {len(source)} vs {len(target)}", code="invalid_shape")
        if len(source) < 2 or not (np.isfinite(source).all() and np.isfinite(target).all()):
            raise InvalidInput("a compatibility map needs at least two finite paired rows", code="empty_fitting_sample")
        self.tensors = self._solve(to_torch(np.ascontiguousarray(source)), to_torch(np.ascontiguousarray(target)))
        self.provenance = {"input_dim": int(source.shape[1]), "output_dim": int(target.shape[1]), "pairs": len(source)}
        return self

    def _solve(self, source: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @property
    def output_dim(self) -> int:
        self._require_fitted()
        assert self.provenance is not None
        return int(self.provenance["output_dim"])

    def encode_docs(self, x: np.ndarray) -> np.ndarray:
        x = as_matrix(x, self.input_dim)
        return map_blocks(x, max(self.input_dim, self.output_dim), lambda b: to_numpy(self._apply(to_torch(np.ascontiguousarray(b)))))

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"source_model": self.source_model, "target_model": self.target_model, "seed": self.seed, "provenance": self.provenance}


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


class Orthogonal(CompatMap):
    """Orthogonal Procrustes over zero-padded spaces: ``rotation`` is D x D with D = max(d_source, d_target)."""

    kind = "orthogonal"

    def expected_tensors(self) -> set[str]:
        return {"rotation"}

    def _solve(self, source: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        width = max(source.shape[1], target.shape[1])
        # min ||S R^T - T|| over orthogonal R: R = U V^T from the SVD of T^T S (the padded cross-covariance).
        u, _, vh = torch.linalg.svd(_pad(target, width).T.double() @ _pad(source, width).double())
        return {"rotation": (u @ vh).float()}

    def rotate(self, x: np.ndarray) -> np.ndarray:
        """Source vectors rotated in full (D coordinates): inner products among them are unchanged."""
        rotation = self.tensor("rotation")
        x = as_matrix(x, self.input_dim)
        return map_blocks(x, rotation.shape[0], lambda b: to_numpy(_pad(to_torch(np.ascontiguousarray(b)), rotation.shape[0]) @ rotation.T))

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        rotation = self.tensor("rotation")
        return (_pad(x, rotation.shape[0]) @ rotation.T)[:, : self.output_dim]


class Affine(CompatMap):
    """y = W x + b by least squares; ``alpha`` > 0 adds a ridge penalty, relative to the mean source variance."""

    kind = "affine"

    def __init__(self, alpha: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        if alpha < 0:
            raise InvalidInput(f"alpha must be >= 0, got {alpha}", code="invalid_transform")
        self.alpha = alpha

    def expected_tensors(self) -> set[str]:
        return {"weight", "bias"}

    def _solve(self, source: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        s, t = source.double(), target.double()
        s_mean, t_mean = s.mean(0), t.mean(0)
        sc, tc = s - s_mean, t - t_mean
        gram = sc.T @ sc
        # A tiny floor keeps the plain least-squares solve defined when the sample is rank-deficient.
        ridge = max(self.alpha, 1e-6) * gram.diagonal().mean()
        weight = torch.linalg.solve(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device), sc.T @ tc)  # (d_s, d_t)
        weight = self._restrict(weight, sc @ weight)
        return {"weight": weight.float(), "bias": (t_mean - s_mean @ weight).float()}

    def _restrict(self, weight: torch.Tensor, fitted: torch.Tensor) -> torch.Tensor:
        return weight

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.tensor("weight") + self.tensor("bias")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "alpha": self.alpha}


class LowRank(Affine):
    """Reduced-rank regression: the ridge map projected onto the ``rank`` leading directions of its outputs."""

    kind = "low_rank"

    def __init__(self, rank: int = 64, alpha: float = 0.01, **kwargs: Any):
        super().__init__(alpha=alpha, **kwargs)
        if rank < 1:
            raise InvalidInput(f"rank must be >= 1, got {rank}", code="invalid_transform")
        self.rank = rank

    def _restrict(self, weight: torch.Tensor, fitted: torch.Tensor) -> torch.Tensor:
        _, _, vh = torch.linalg.svd(fitted, full_matrices=False)
        top = vh[: self.rank].T  # (d_t, r): the leading output directions
        return weight @ top @ top.T

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rank": self.rank}


METHODS: dict[str, tuple[type[CompatMap], dict[str, Any]]] = {
    "orthogonal": (Orthogonal, {}),
    "affine": (Affine, {"alpha": 0.0}),
    "ridge": (Affine, {"alpha": 0.01}),
    "low_rank": (LowRank, {}),
}


def make_compat(method: str, source_model: str | None, target_model: str | None, seed: int = 0) -> CompatMap:
    """An unfitted map for an upgrade ``method``: orthogonal, affine, ridge or low_rank."""
    if method not in METHODS:
        raise InvalidInput(f"unknown upgrade method {method!r}; use one of {', '.join(METHODS)}", code="invalid_method", details={"method": method})
    cls, params = METHODS[method]
    return cls(source_model=source_model, target_model=target_model, seed=seed, **params)
