"""Synthetic scale sets: vectors drawn from a Gaussian, or a Gaussian mixture, fitted to real embeddings.

The single Gaussian keeps only the first two moments (no neighbourhood structure); the mixture keeps the
clusters too. Every report labels these vectors "synthetic" so nobody mistakes them for embeddings of text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from encoders.base import l2_normalize

DRAW_CHUNK = 65_536  # rows per draw: bounds the float64 temporaries at ~200 MB for 384-d


@dataclass(frozen=True)
class Gaussian:
    mean: np.ndarray  # (d,) float64
    chol: np.ndarray  # (d, d) lower Cholesky factor of the covariance

    @classmethod
    def fit(cls, vectors: np.ndarray) -> Gaussian:
        x = np.asarray(vectors, dtype=np.float64)
        mean = x.mean(axis=0)
        cov = np.cov(x, rowvar=False)
        # A small ridge keeps the factorisation defined when the embeddings span less than d dimensions.
        ridge = 1e-6 * float(np.trace(cov)) / cov.shape[0]
        return cls(mean=mean, chol=np.linalg.cholesky(cov + ridge * np.eye(cov.shape[0])))

    def draw(self, n: int, seed: int) -> np.ndarray:
        """n L2-normalised float32 vectors; the same seed gives the same vectors on every machine."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.mean.shape[0]), dtype=np.float32)
        for start in range(0, n, DRAW_CHUNK):
            stop = min(start + DRAW_CHUNK, n)
            z = rng.standard_normal((stop - start, self.mean.shape[0]))
            out[start:stop] = self.mean + z @ self.chol.T
        return l2_normalize(out)


@dataclass(frozen=True)
class GaussianMixture:
    """Clusters of real embeddings: k-means centres and shares, and around each centre residuals drawn from one
    Gaussian fitted to the real residuals (their full covariance, so the directions real points vary in are
    kept), scaled to each cluster's spread. Drawn vectors keep the neighbourhood structure a single Gaussian
    loses, so ANN recall and binary codes behave as on real data."""

    centres: np.ndarray  # (c, d) float32
    scale: np.ndarray  # (c,) each cluster's residual spread, relative to all residuals'
    weights: np.ndarray  # (c,) cluster shares
    residual: Gaussian  # zero-mean residual model (full covariance)

    @classmethod
    def fit(cls, vectors: np.ndarray, clusters: int = 64, seed: int = 0) -> GaussianMixture:
        import faiss

        x = np.ascontiguousarray(vectors, dtype=np.float32)
        clusters = max(1, min(clusters, len(x) // 20))
        kmeans = faiss.Kmeans(x.shape[1], clusters, niter=20, seed=seed, verbose=False)
        kmeans.train(x)
        assign = kmeans.index.search(x, 1)[1][:, 0]
        residuals = x - kmeans.centroids[assign]
        spread = np.sqrt((residuals**2).sum(axis=1))
        overall = float(np.sqrt((spread**2).mean()))
        scale = np.array([np.sqrt((spread[assign == c] ** 2).mean()) / overall if (assign == c).any() else 1.0 for c in range(clusters)])
        weights = np.bincount(assign, minlength=clusters).astype(np.float64)
        residual = Gaussian.fit(residuals)
        return cls(centres=kmeans.centroids.astype(np.float32), scale=scale.astype(np.float32), weights=weights / weights.sum(), residual=Gaussian(np.zeros_like(residual.mean), residual.chol))

    def draw(self, n: int, seed: int) -> np.ndarray:
        """n L2-normalised float32 vectors; the same seed gives the same vectors on every machine."""
        rng = np.random.default_rng(seed)
        d = self.centres.shape[1]
        out = np.empty((n, d), dtype=np.float32)
        for start in range(0, n, DRAW_CHUNK):
            stop = min(start + DRAW_CHUNK, n)
            which = rng.choice(len(self.weights), size=stop - start, p=self.weights)
            noise = rng.standard_normal((stop - start, d)) @ self.residual.chol.T
            out[start:stop] = self.centres[which] + self.scale[which, None] * noise
        return l2_normalize(out)
