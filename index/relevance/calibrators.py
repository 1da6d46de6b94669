"""Relevance calibration: map a raw similarity to a probability of relevance, monotone per query.

Calibrators see, for each query, its vector and the raw scores of its top
candidates (descending). The score profile (the scores at a few ranks from 1 to
100) is part of what the query-dependent cosine adapter conditions on; every
calibrator is monotone in the score for a fixed query, so the ranking never
changes and a ``min_relevance`` filter keeps a prefix of it.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from encoders.errors import InvalidInput

PROFILE_DEPTH = 100  # candidates a query's score profile is read from
PROFILE_RANKS = (1, 2, 3, 5, 10, 20, 50, 100)


def score_profile(scores: np.ndarray) -> np.ndarray:
    """(n, K) descending scores (NaN-padded) -> (n, len(PROFILE_RANKS)): the scores at those ranks (or the last one)."""
    out = np.zeros((len(scores), len(PROFILE_RANKS)), np.float32)
    for row, s in enumerate(scores):
        valid = s[~np.isnan(s)]
        for j, rank in enumerate(PROFILE_RANKS):
            out[row, j] = valid[min(rank, len(valid)) - 1] if len(valid) else 0.0
    return out


@dataclass
class Candidates:
    """Per query: its vector, its top candidates' raw scores (descending, NaN-padded) and relevance labels."""

    query_vectors: np.ndarray  # (n, d)
    scores: np.ndarray  # (n, K)
    labels: np.ndarray  # (n, K) bool

    def subset(self, rows: np.ndarray) -> Candidates:
        return Candidates(self.query_vectors[rows], self.scores[rows], self.labels[rows])

    @property
    def mask(self) -> np.ndarray:
        return ~np.isnan(self.scores)


class Calibrator(ABC):
    name: ClassVar[str]
    registry: ClassVar[dict[str, type[Calibrator]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Calibrator.registry[cls.name] = cls

    def fit(self, train: Candidates, validation: Candidates) -> Calibrator:
        return self

    @abstractmethod
    def relevance(self, scores: np.ndarray, query_vectors: np.ndarray) -> np.ndarray:
        """(n, K) raw scores -> (n, K) probabilities in [0, 1]; NaN scores stay NaN."""

    def config(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Calibrators with tensors override this."""

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "calibrator.json").write_text(json.dumps({"name": self.name, **self.config()}, indent=2))
        if self.state():
            save_file({k: v.contiguous() for k, v in self.state().items()}, str(folder / "calibrator.safetensors"))

    @staticmethod
    def load(folder: Path) -> Calibrator:
        config = json.loads((folder / "calibrator.json").read_text())
        calibrator = Calibrator.registry[config.pop("name")](**config)
        if (folder / "calibrator.safetensors").exists():
            calibrator.load_state(load_file(str(folder / "calibrator.safetensors")))
        return calibrator


class Identity(Calibrator):
    """The raw score, clipped to [0, 1]: the baseline a plain score threshold is."""

    name = "identity"

    def relevance(self, scores: np.ndarray, query_vectors: np.ndarray) -> np.ndarray:
        return np.clip(scores, 0.0, 1.0)


def _fit_logistic(features: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> tuple[float, float]:
    """Global sigmoid(a*s + b) with a > 0, by L-BFGS on the log loss."""
    log_a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_a, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(log_a.exp() * features + b, labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_a.detach().exp()), float(b.detach())


class Platt(Calibrator):
    """One global sigmoid for every query."""

    name = "platt"

    def __init__(self, a: float = 1.0, b: float = 0.0):
        self.a, self.b = a, b

    def fit(self, train: Candidates, validation: Candidates) -> Platt:
        mask = train.mask
        self.a, self.b = _fit_logistic(torch.tensor(train.scores[mask]), torch.tensor(train.labels[mask], dtype=torch.float32))
        return self

    def relevance(self, scores: np.ndarray, query_vectors: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * scores + self.b)))

    def config(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b}


class Isotonic(Calibrator):
    """A global non-decreasing step function of the score (pool-adjacent-violators)."""

    name = "isotonic"

    def __init__(self, x: list[float] | None = None, y: list[float] | None = None):
        self.x, self.y = x or [0.0, 1.0], y or [0.0, 1.0]

    def fit(self, train: Candidates, validation: Candidates) -> Isotonic:
        from sklearn.isotonic import IsotonicRegression

        mask = train.mask
        model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(train.scores[mask], train.labels[mask])
        self.x, self.y = model.X_thresholds_.tolist(), model.y_thresholds_.tolist()
        return self

    def relevance(self, scores: np.ndarray, query_vectors: np.ndarray) -> np.ndarray:
        out = np.interp(np.nan_to_num(scores, nan=-np.inf), self.x, self.y)
        return np.where(np.isnan(scores), np.nan, out)

    def config(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y}


class _AdapterNet(torch.nn.Module):
    """Query embedding (+ score profile) -> (a > 0, b, c >= 0) of sigmoid(a * score + b - c * log(rank)).

    Within a query the rank falls as the score rises, so the map stays monotone in the score. The rank
    term lets a query whose relevant documents sit deep in its list (a polysemous word) decay slowly
    and one with a single sense decay fast, which a slope on the score alone cannot express.
    """

    def __init__(self, dim: int, hidden: int, use_profile: bool):
        super().__init__()
        inputs = dim + (len(PROFILE_RANKS) if use_profile else 0)
        self.body = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 3))

    def forward(self, features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = self.body(features)
        slope = torch.nn.functional.softplus(out[:, :1]) + 1e-3
        decay = torch.nn.functional.softplus(out[:, 2:3])
        log_rank = torch.log(torch.arange(1, scores.shape[1] + 1, dtype=scores.dtype))[None]
        return slope * scores + out[:, 1:2] - decay * log_rank


class CosineAdapter(Calibrator):
    """Walmart's cosine adapter: a per-query monotone sigmoid whose slope and offset a small network predicts."""

    name = "cosine_adapter"

    def __init__(
        self,
        dim: int = 0,
        hidden: int = 64,
        use_profile: bool = True,
        seed: int = 0,
        epochs_trained: int = 0,
        score_mean: float = 0.0,
        score_std: float = 1.0,
    ):
        self.dim, self.hidden, self.use_profile, self.seed, self.epochs_trained = dim, hidden, use_profile, seed, epochs_trained
        # Raw cosines bunch in a narrow band; standardising them lets modest slopes separate them.
        self.score_mean, self.score_std = score_mean, score_std
        self.net: _AdapterNet | None = _AdapterNet(dim, hidden, use_profile) if dim else None

    def _features(self, scores: np.ndarray, query_vectors: np.ndarray) -> torch.Tensor:
        parts = [query_vectors.astype(np.float32)]
        if self.use_profile:
            parts.append((score_profile(scores) - self.score_mean) / self.score_std)
        return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))

    def _scores(self, scores: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((np.nan_to_num(scores) - self.score_mean) / self.score_std).astype(np.float32))

    def fit(self, train: Candidates, validation: Candidates, max_epochs: int = 2000, patience: int = 50) -> CosineAdapter:
        torch.manual_seed(self.seed)
        self.dim = train.query_vectors.shape[1]
        observed = train.scores[train.mask]
        self.score_mean, self.score_std = float(observed.mean()), float(observed.std() or 1.0)
        self.net = _AdapterNet(self.dim, self.hidden, self.use_profile)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-2, weight_decay=1e-4)
        tensors = {
            split: (
                self._features(c.scores, c.query_vectors),
                self._scores(c.scores),
                torch.from_numpy(c.labels.astype(np.float32)),
                torch.from_numpy(c.mask),
            )
            for split, c in (("train", train), ("validation", validation))
        }

        def loss_of(split: str) -> torch.Tensor:
            features, scores, labels, mask = tensors[split]
            logits = self.net(features, scores)  # type: ignore[misc]
            return torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], labels[mask])

        best, best_state, waited = math.inf, None, 0
        for epoch in range(max_epochs):
            self.net.train()
            optimizer.zero_grad()
            loss_of("train").backward()
            optimizer.step()
            self.net.eval()
            with torch.no_grad():
                validation_loss = float(loss_of("validation"))
            if validation_loss < best - 1e-5:  # early stopping on validation loss
                best, best_state, waited, self.epochs_trained = validation_loss, {k: v.clone() for k, v in self.net.state_dict().items()}, 0, epoch + 1
            else:
                waited += 1
                if waited >= patience:
                    break
        assert best_state is not None
        self.net.load_state_dict(best_state)
        return self

    @torch.no_grad()
    def relevance(self, scores: np.ndarray, query_vectors: np.ndarray) -> np.ndarray:
        if self.net is None:
            raise InvalidInput("the cosine adapter has not been fitted", code="calibrator_not_fitted")
        self.net.eval()
        logits = self.net(self._features(scores, query_vectors), self._scores(scores))
        return np.where(np.isnan(scores), np.nan, torch.sigmoid(logits).numpy())

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "hidden": self.hidden,
            "use_profile": self.use_profile,
            "seed": self.seed,
            "epochs_trained": self.epochs_trained,
            "score_mean": self.score_mean,
            "score_std": self.score_std,
        }

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.net.state_dict()) if self.net is not None else {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        assert self.net is not None
        self.net.load_state_dict(state)
