"""Quality and speed figures: recall against exact search, nDCG@10 and MRR against labelled relevant sets,
latency percentiles. Pure functions of arrays, so every suite scores alike."""

from __future__ import annotations

import numpy as np


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k that the system's top-k holds; -1 padding never matches."""
    hits = [np.intersect1d(f[:k][f[:k] >= 0], t[:k]).size for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / k


def ndcg_at_k(found: np.ndarray, relevant: list[np.ndarray], k: int = 10) -> float:
    """Binary-relevance nDCG@k: every relevant document counts 1, whatever its rank among the relevant."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for f, rel in zip(found, relevant, strict=True):
        gains = np.isin(f[:k], rel)
        ideal = discounts[: min(len(rel), k)].sum()
        scores.append(float((gains * discounts[: len(gains)]).sum() / ideal) if ideal else 0.0)
    return float(np.mean(scores))


def mrr(found: np.ndarray, relevant: list[np.ndarray]) -> float:
    """Mean reciprocal rank of the first relevant document in the returned list (0 when none is)."""
    ranks = []
    for f, rel in zip(found, relevant, strict=True):
        hit = np.flatnonzero(np.isin(f, rel))
        ranks.append(1.0 / (hit[0] + 1) if hit.size else 0.0)
    return float(np.mean(ranks))


def latency_ms(samples_s: np.ndarray) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}
