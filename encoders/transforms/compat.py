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
- ``ResidualMLP``: the ridge map plus a small two-layer residual (Drift-Adapter's MLP adapter, BEBR's residual
  blocks), trained with torch from the ridge solution on a cosine loss, stopping early on a held fifth of the pairs.
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


class ResidualMLP(Affine):
    """y = W x + b + W2 gelu(W1 x + b1) + b2: the ridge map (W, b) and a residual that starts at zero.

    All weights are trained together with Adam on 1 - cos(y, target), over four fifths of the pairs in seeded
    mini-batches; after each epoch the held fifth is scored and the best epoch's weights are kept, stopping
    once ``patience`` epochs in a row bring no gain. Everything random (initial weights, the split, the batch
    order) comes from ``seed``, so a fit on the same pairs gives the same weights.
    """

    kind = "mlp"

    def __init__(
        self, hidden: int = 256, alpha: float = 0.01, epochs: int = 20, patience: int = 3, lr: float = 1e-3, batch: int = 256, base: str = "ridge", train_base: bool = True, **kwargs: Any
    ):
        super().__init__(alpha=alpha, **kwargs)
        if hidden < 1 or epochs < 1 or patience < 1 or batch < 1 or lr <= 0 or base not in ("ridge", "orthogonal"):
            raise InvalidInput("mlp needs hidden, epochs, patience, batch >= 1, lr > 0 and base ridge or orthogonal", code="invalid_transform")
        self.hidden, self.epochs, self.patience, self.lr, self.batch, self.base, self.train_base = hidden, epochs, patience, lr, batch, base, train_base
        self.training: dict[str, Any] = {}

    def expected_tensors(self) -> set[str]:
        return {"weight", "bias", "w1", "b1", "w2", "b2"}

    def _solve(self, source: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(source), generator=generator).to(source.device)
        held = max(1, len(source) // 5)
        val, train = order[:held], order[held:]
        d_in, d_out = source.shape[1], target.shape[1]
        if self.base == "orthogonal":
            rotation = Orthogonal()._solve(source[train], target[train])["rotation"]
            linear = {"weight": rotation.T[:d_in, :d_out].contiguous(), "bias": torch.zeros(d_out, device=source.device)}
        else:
            linear = super()._solve(source[train], target[train])
        init = torch.randn(d_in, self.hidden, generator=generator) * (2.0 / d_in) ** 0.5
        params = {
            "weight": linear["weight"].clone(),
            "bias": linear["bias"].clone(),
            "w1": init.to(source.device),
            "b1": torch.zeros(self.hidden, device=source.device),
            "w2": torch.zeros(self.hidden, d_out, device=source.device),
            "b2": torch.zeros(d_out, device=source.device),
        }
        trained = [v for k, v in params.items() if self.train_base or k not in ("weight", "bias")]
        for tensor in trained:
            tensor.requires_grad_(True)
        optimiser = torch.optim.Adam(trained, lr=self.lr)
        with torch.no_grad():
            best, best_epoch, epoch = float(self._loss(params, source[val], target[val])), 0, 0
        kept = {k: v.detach().clone() for k, v in params.items()}
        for epoch in range(1, self.epochs + 1):
            for batch in torch.randperm(len(train), generator=generator).to(source.device).split(self.batch):
                rows = train[batch]
                optimiser.zero_grad()
                self._loss(params, source[rows], target[rows]).backward()
                optimiser.step()
            with torch.no_grad():
                loss = float(self._loss(params, source[val], target[val]))
            if loss < best:
                best, best_epoch, kept = loss, epoch, {k: v.detach().clone() for k, v in params.items()}
            elif epoch - best_epoch >= self.patience:
                break
        self.training = {"epochs_run": epoch, "best_epoch": best_epoch, "held_pairs": held, "held_cosine_loss": best}
        return kept

    @staticmethod
    def _forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        residual = torch.nn.functional.gelu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
        return x @ params["weight"] + params["bias"] + residual

    def _loss(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1.0 - torch.nn.functional.cosine_similarity(self._forward(params, x), y, dim=1).mean()

    def fit_pair(self, source: np.ndarray, target: np.ndarray) -> CompatMap:
        super().fit_pair(source, target)
        assert self.provenance is not None
        self.provenance |= {"training": self.training}
        return self

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._forward(self.tensors, x)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "hidden": self.hidden, "epochs": self.epochs, "patience": self.patience, "lr": self.lr, "batch": self.batch, "base": self.base, "train_base": self.train_base}


METHODS: dict[str, tuple[type[CompatMap], dict[str, Any]]] = {
    "orthogonal": (Orthogonal, {}),
    "affine": (Affine, {"alpha": 0.0}),
    "ridge": (Affine, {"alpha": 0.01}),
    "low_rank": (LowRank, {}),
    "mlp": (ResidualMLP, {}),
}


def make_compat(method: str, source_model: str | None, target_model: str | None, seed: int = 0) -> CompatMap:
    """An unfitted map for an upgrade ``method``: orthogonal, affine, ridge, low_rank or mlp."""
    if method not in METHODS:
        raise InvalidInput(f"unknown upgrade method {method!r}; use one of {', '.join(METHODS)}", code="invalid_method", details={"method": method})
    cls, params = METHODS[method]
    return cls(source_model=source_model, target_model=target_model, seed=seed, **params)
