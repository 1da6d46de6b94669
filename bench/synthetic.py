"""The synthetic scale set: vectors drawn from a Gaussian fitted to real embeddings' mean and covariance.

Only the first two moments are real; neighbourhood structure is not. Every report labels these
vectors "synthetic" so nobody mistakes them for embeddings of text.
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
