"""Relevance calibration: map a raw similarity to a probability of relevance, monotone per query.

Calibrators see, for each query, its vector, its length in words (0 for a query given as a vector) and
the raw scores of its top candidates (descending). What the query-dependent cosine adapter conditions
on is a choice of feature groups (FEATURES); every calibrator is monotone in the score for a fixed
query, so the ranking never changes and a ``min_relevance`` filter keeps a prefix of it.
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
GAP_RANKS = 10  # the gaps between neighbouring scores among the top GAP_RANKS + 1

# What the adapter may condition on: the query embedding, its score profile, the gaps between its top
# scores (where a list breaks), and its length and type (word, phrase, sentence, or a bare vector).
FEATURES = ("embedding", "profile", "gaps", "length")
# What it trains on: the pointwise log loss alone, or beside a ranking loss within each query.
LOSSES = ("pointwise", "pairwise", "listwise")
DEFAULT_FEATURES = ("embedding", "profile", "gaps", "length")
# A fit that names no features tries these and keeps the best on validation: on the whole of WordNet the embedding
# helped on both query sets (bench/results/relevance.md); with few labelled queries (820 sentences, the first 10k
# synsets) the score shape alone did better.
CANDIDATE_FEATURES = (DEFAULT_FEATURES, ("profile", "gaps", "length"))
DEFAULT_LOSS = "pointwise"
PAIR_DEPTH = 30  # pairwise pairs are drawn from the top PAIR_DEPTH of each query (the (n, K, K) pair tensor is costly)


def score_profile(scores: np.ndarray) -> np.ndarray:
    """(n, K) descending scores (NaN-padded) -> (n, len(PROFILE_RANKS)): the scores at those ranks (or the last one)."""
    out = np.zeros((len(scores), len(PROFILE_RANKS)), np.float32)
    for row, s in enumerate(scores):
        valid = s[~np.isnan(s)]
        for j, rank in enumerate(PROFILE_RANKS):
            out[row, j] = valid[min(rank, len(valid)) - 1] if len(valid) else 0.0
    return out


def rank_gaps(scores: np.ndarray) -> np.ndarray:
    """(n, K) descending scores -> (n, GAP_RANKS): score[r] - score[r + 1] for the top ranks, 0 past a list's end."""
    head = np.full((len(scores), GAP_RANKS + 1), np.nan, np.float32)
    width = min(GAP_RANKS + 1, scores.shape[1])
    head[:, :width] = scores[:, :width]
    return np.nan_to_num(head[:, :-1] - head[:, 1:], nan=0.0)


def query_words(texts: list[str | None]) -> np.ndarray:
    """Words per query text; 0 for a query given as a vector."""
    return np.array([len(t.split()) if t else 0 for t in texts], np.float32)


def length_features(words: np.ndarray) -> np.ndarray:
    """A query's length and type: log(1 + words), one word, a phrase (2-3 words), a sentence (4+), a bare vector."""
    return np.stack([np.log1p(words), words == 1, (words >= 2) & (words <= 3), words >= 4, words == 0], axis=1).astype(np.float32)


@dataclass
class Candidates:
    """Per query: its vector, its top candidates' raw scores (descending, NaN-padded), relevance labels, and its words."""

    query_vectors: np.ndarray  # (n, d)
    scores: np.ndarray  # (n, K)
    labels: np.ndarray  # (n, K) bool
    words: np.ndarray | None = None  # (n,) words per query text (0: a vector query); None: unknown, taken as 0

    def subset(self, rows: np.ndarray) -> Candidates:
        return Candidates(self.query_vectors[rows], self.scores[rows], self.labels[rows], None if self.words is None else self.words[rows])

    @property
    def query_words(self) -> np.ndarray:
        return np.zeros(len(self.scores), np.float32) if self.words is None else self.words

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

    threshold: float | None = None  # the fitted operating point: the min_relevance a fit chose on validation

    def fit(self, train: Candidates, validation: Candidates) -> Calibrator:
        return self

    @abstractmethod
    def relevance(self, scores: np.ndarray, query_vectors: np.ndarray, words: np.ndarray | None = None) -> np.ndarray:
        """(n, K) raw scores -> (n, K) probabilities in [0, 1]; NaN scores stay NaN. ``words``: per query, as in Candidates."""

    def of(self, candidates: Candidates) -> np.ndarray:
        return self.relevance(candidates.scores, candidates.query_vectors, candidates.words)

    def parameters(self, scores: np.ndarray, query_vectors: np.ndarray, words: np.ndarray | None = None) -> list[dict[str, float]]:
        """Per query, the parameters of its own map from score to relevance (empty where the map has none)."""
        return [{} for _ in range(len(scores))]

    def config(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Calibrators with tensors override this."""

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        record = {"name": self.name, "threshold": self.threshold, **self.config()}
        (folder / "calibrator.json").write_text(json.dumps(record, indent=2))
        if self.state():
            save_file({k: v.contiguous() for k, v in self.state().items()}, str(folder / "calibrator.safetensors"))

    @staticmethod
    def load(folder: Path) -> Calibrator:
        config = json.loads((folder / "calibrator.json").read_text())
        name, threshold = config.pop("name"), config.pop("threshold", None)
        calibrator = Calibrator.registry[name](**config)
        calibrator.threshold = threshold
        if (folder / "calibrator.safetensors").exists():
            calibrator.load_state(load_file(str(folder / "calibrator.safetensors")))
        return calibrator


class Identity(Calibrator):
    """The raw score, clipped to [0, 1]: the baseline a plain score threshold is."""

    name = "identity"

    def relevance(self, scores: np.ndarray, query_vectors: np.ndarray, words: np.ndarray | None = None) -> np.ndarray:
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

    def relevance(self, scores: np.ndarray, query_vectors: np.ndarray, words: np.ndarray | None = None) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * scores + self.b)))

    def parameters(self, scores: np.ndarray, query_vectors: np.ndarray, words: np.ndarray | None = None) -> list[dict[str, float]]:
        return [{"slope": self.a, "offset": self.b, "rank_decay": 0.0} for _ in range(len(scores))]

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

    def relevance(self, scores: np.ndarray, query_vectors: np.ndarray, words: np.ndarray | None = None) -> np.ndarray:
        out = np.interp(np.nan_to_num(scores, nan=-np.inf), self.x, self.y)
        return np.where(np.isnan(scores), np.nan, out)

    def config(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y}


class _AdapterNet(torch.nn.Module):
    """Query features -> (a > 0, b, c >= 0) of sigmoid(a * score + b - c * log(rank)).

    Within a query the rank falls as the score rises, so the map stays monotone in the score. The rank
    term lets a query whose relevant documents sit deep in its list (a polysemous word) decay slowly
    and one with a single sense decay fast, which a slope on the score alone cannot express.
    """

    def __init__(self, inputs: int, hidden: int, centred: bool):
        super().__init__()
        self.centred = centred
        self.body = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 3))

    def maps(self, features: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per query (n, 1) each: slope, offset and rank decay on the standardised score.

        Centred, the network predicts where the query's sigmoid centres relative to its own top score, so
        a query-relative cut (keep what sits near the top) needs no product of slope and score learned;
        adapters saved before that predict the offset itself.
        """
        out = self.body(features)
        slope = torch.nn.functional.softplus(out[:, :1]) + 1e-3
        offset = -slope * (scores[:, :1] + out[:, 1:2]) if self.centred else out[:, 1:2]
        return slope, offset, torch.nn.functional.softplus(out[:, 2:3])

    def forward(self, features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        slope, offset, decay = self.maps(features, scores)
        log_rank = torch.log(torch.arange(1, scores.shape[1] + 1, dtype=scores.dtype))[None]
        return slope * scores + offset - decay * log_rank


def ranking_loss(loss: str, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The within-query ranking term: RankNet's pair loss over (relevant, irrelevant) pairs of the top
    PAIR_DEPTH, or ListNet's top-one cross entropy of the query's softmax against its relevant set."""
    if loss == "pairwise":
        top, y, m = logits[:, :PAIR_DEPTH], labels[:, :PAIR_DEPTH] > 0.5, mask[:, :PAIR_DEPTH]
        pairs = (y & m)[:, :, None] & (~y & m)[:, None, :]
        if not pairs.any():
            return logits.new_zeros(())
        return torch.nn.functional.softplus(top[:, None, :] - top[:, :, None])[pairs].mean()
    positives = labels * mask
    has = positives.sum(1) > 0
    if not has.any():
        return logits.new_zeros(())
    target = positives[has] / positives[has].sum(1, keepdim=True)
    log_p = torch.log_softmax(logits[has].masked_fill(~mask[has], -1e9), dim=1)
    return -(target * log_p).sum(1).mean()


class CosineAdapter(Calibrator):
    """Walmart's cosine adapter: a per-query monotone sigmoid whose slope, offset and rank decay a small network predicts."""

    name = "cosine_adapter"

    def __init__(
        self,
        dim: int = 0,
        hidden: int = 64,
        features: tuple[str, ...] | list[str] = DEFAULT_FEATURES,
        loss: str = DEFAULT_LOSS,
        loss_weight: float = 1.0,
        seed: int = 0,
        epochs_trained: int = 0,
        score_mean: float = 0.0,
        score_std: float = 1.0,
        centred: bool = True,
        use_profile: bool | None = None,  # adapters saved before feature groups: the embedding, the profile if set, an uncentred offset
    ):
        if use_profile is not None:
            features, centred = ("embedding", "profile") if use_profile else ("embedding",), False
        unknown = set(features) - set(FEATURES)
        if unknown or not features:
            raise InvalidInput(f"adapter features must be a non-empty subset of {list(FEATURES)}", code="invalid_adapter", details={"features": list(features)})
        if loss not in LOSSES:
            raise InvalidInput(f"unknown adapter loss {loss!r}; one of {list(LOSSES)}", code="invalid_adapter")
        self.dim, self.hidden, self.seed, self.epochs_trained = dim, hidden, seed, epochs_trained
        self.features, self.loss, self.loss_weight = tuple(f for f in FEATURES if f in features), loss, loss_weight
        # Raw cosines bunch in a narrow band; standardising them lets modest slopes separate them.
        self.score_mean, self.score_std = score_mean, score_std
        self.centred = centred
        self.net: _AdapterNet | None = _AdapterNet(self._inputs(), hidden, centred) if dim else None

    def _inputs(self) -> int:
        sizes = {"embedding": self.dim, "profile": len(PROFILE_RANKS), "gaps": GAP_RANKS, "length": 5}
        return sum(sizes[f] for f in self.features)

    def _features(self, scores: np.ndarray, query_vectors: np.ndarray, words: np.ndarray | None) -> torch.Tensor:
        parts = []
        if "embedding" in self.features:
            parts.append(query_vectors.astype(np.float32))
        if "profile" in self.features:
            parts.append((score_profile(scores) - self.score_mean) / self.score_std)
        if "gaps" in self.features:
            parts.append(rank_gaps(scores) / self.score_std)
        if "length" in self.features:
            parts.append(length_features(np.zeros(len(scores), np.float32) if words is None else words))
        return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))

    def _scores(self, scores: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((np.nan_to_num(scores) - self.score_mean) / self.score_std).astype(np.float32))

    def fit(self, train: Candidates, validation: Candidates, max_epochs: int = 1000, patience: int = 40) -> CosineAdapter:
        """Full-batch AdamW on the pointwise log loss (plus the ranking term), early-stopped on the validation log loss:
        a global threshold needs probabilities that mean the same across queries, which the log loss scores."""
        torch.manual_seed(self.seed)
        self.dim = train.query_vectors.shape[1]
        observed = train.scores[train.mask]
        self.score_mean, self.score_std = float(observed.mean()), float(observed.std() or 1.0)
        self.net = _AdapterNet(self._inputs(), self.hidden, self.centred)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-2, weight_decay=1e-4)
        tensors = {
            split: (
                self._features(c.scores, c.query_vectors, c.words),
                self._scores(c.scores),
                torch.from_numpy(c.labels.astype(np.float32)),
                torch.from_numpy(c.mask),
            )
            for split, c in (("train", train), ("validation", validation))
        }

        def pointwise(split: str) -> tuple[torch.Tensor, torch.Tensor]:
            features, scores, labels, mask = tensors[split]
            logits = self.net(features, scores)  # type: ignore[misc]
            return torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], labels[mask]), logits

        best, best_state, waited = math.inf, None, 0
        for epoch in range(max_epochs):
            self.net.train()
            optimizer.zero_grad()
            loss, logits = pointwise("train")
            if self.loss != "pointwise":
                loss = loss + self.loss_weight * ranking_loss(self.loss, logits, tensors["train"][2], tensors["train"][3])
            loss.backward()
            optimizer.step()
            self.net.eval()
            with torch.no_grad():
                validation_loss = float(pointwise("validation")[0])
            if validation_loss < best - 1e-5:  # early stopping on validation loss
                best, best_state, waited, self.epochs_trained = validation_loss, {k: v.clone() for k, v in self.net.state_dict().items()}, 0, epoch + 1
            else:
                waited += 1
                if waited >= patience:
                    break
        assert best_state is not None
        self.net.load_state_dict(best_state)
        return self

    def _net(self) -> _AdapterNet:
        if self.net is None:
            raise InvalidInput("the cosine adapter has not been fitted", code="calibrator_not_fitted")
        self.net.eval()
        return self.net

    @torch.no_grad()
    def relevance(self, scores: np.ndarray, query_vectors: np.ndarray, words: np.ndarray | None = None) -> np.ndarray:
        logits = self._net()(self._features(scores, query_vectors, words), self._scores(scores))
        return np.where(np.isnan(scores), np.nan, torch.sigmoid(logits).numpy())

    @torch.no_grad()
    def parameters(self, scores: np.ndarray, query_vectors: np.ndarray, words: np.ndarray | None = None) -> list[dict[str, float]]:
        """The query's map on the raw score: relevance = sigmoid(slope * score + offset - rank_decay * ln(rank))."""
        slope, offset, decay = (t[:, 0].numpy() for t in self._net().maps(self._features(scores, query_vectors, words), self._scores(scores)))
        raw_slope = slope / self.score_std
        raw_offset = offset - slope * self.score_mean / self.score_std
        return [{"slope": float(a), "offset": float(b), "rank_decay": float(c)} for a, b, c in zip(raw_slope, raw_offset, decay, strict=True)]

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "hidden": self.hidden,
            "features": list(self.features),
            "loss": self.loss,
            "loss_weight": self.loss_weight,
            "seed": self.seed,
            "epochs_trained": self.epochs_trained,
            "score_mean": self.score_mean,
            "score_std": self.score_std,
            "centred": self.centred,
        }

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.net.state_dict()) if self.net is not None else {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        assert self.net is not None
        self.net.load_state_dict(state)
