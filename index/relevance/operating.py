"""Operating points: where one global ``min_relevance`` cuts, and what that cut does to the lists users see.

A cut keeps, of each query's top k, the candidates whose value (relevance, or raw score for the
baseline) reaches one global threshold; every calibrator is monotone per query, so that is a prefix.
Pooling every query's top k and keeping the N highest values traces all such cuts at once: the
mean list length is N / queries, the recall kept is the share of the top-k lists' relevant items kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# The default operating point maximises F8 on validation. On the whole of WordNet (bench/results/relevance.md) it is the
# smallest of the betas tried whose validation top-10 lemma lists kept >= 0.9 of their relevant items (F6 kept 0.89);
# on usage-example sentences, where one query in eleven has its definition in the top 10, F8 keeps 0.70 and F10 0.9,
# but F10 leaves lemma lists at 8 of 10. Shorter lists: pass a smaller beta; a recall promise: target_recall.
DEFAULT_BETA = 8.0
OPERATING_K = 10  # the list length (the query default k) an operating point is chosen and first reported for
REPORT_KS = (10, 100)


@dataclass(frozen=True)
class Curve:
    """Cuts of the pooled top-k lists, loosest last: mean list length, recall kept, precision, and the threshold of each."""

    lengths: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    thresholds: np.ndarray

    def recall_at_length(self, length: float) -> float:
        return float(np.interp(length, np.concatenate([[0.0], self.lengths]), np.concatenate([[0.0], self.recall])))

    def length_at_recall(self, recall: float) -> float | None:
        reach = np.flatnonzero(self.recall >= recall - 1e-12)
        return float(self.lengths[reach[0]]) if len(reach) else None


def cut_curve(values: np.ndarray, labels: np.ndarray, mask: np.ndarray, k: int) -> Curve:
    """Every global-threshold cut of each query's top k by ``values`` (higher kept first)."""
    keep = mask[:, :k]
    flat_values, flat_labels = values[:, :k][keep], labels[:, :k][keep]
    order = np.argsort(-flat_values, kind="stable")
    kept_relevant = np.cumsum(flat_labels[order])
    kept = np.arange(1, len(order) + 1)
    return Curve(
        lengths=kept / max(len(values), 1),
        recall=kept_relevant / max(int(flat_labels.sum()), 1),
        precision=kept_relevant / kept,
        thresholds=flat_values[order],
    )


def top_k_curve(labels: np.ndarray, mask: np.ndarray, k: int) -> Curve:
    """Keeping the first j of every query, j = 1..k: the cut that ignores scores."""
    positives = (labels & mask)[:, :k]
    kept = np.cumsum(mask[:, :k].sum(axis=0))
    kept_relevant = np.cumsum(positives.sum(axis=0))
    return Curve(
        lengths=kept / max(len(labels), 1),
        recall=kept_relevant / max(int(positives.sum()), 1),
        precision=kept_relevant / np.maximum(kept, 1),
        thresholds=np.arange(1, k + 1, dtype=float),
    )


def rule_name(target_recall: float | None, target_precision: float | None, beta: float) -> str:
    if target_precision is not None:
        return f"the lowest threshold reaching precision {target_precision} on validation"
    if target_recall is not None:
        return f"the highest threshold keeping recall {target_recall} on validation"
    return f"the threshold maximising F{beta:g} on validation"


def pick(curve: Curve, target_recall: float | None, target_precision: float | None, beta: float) -> int:
    """The index of the cut a rule picks: a precision target, else a recall target, else the best F-beta."""
    if not len(curve.lengths):
        return -1
    if target_precision is not None:
        ok = np.flatnonzero(curve.precision >= target_precision)
        return int(ok[-1]) if len(ok) else 0
    if target_recall is not None:
        reach = np.flatnonzero(curve.recall >= target_recall)
        return int(reach[0]) if len(reach) else len(curve.lengths) - 1
    b2 = beta * beta
    f = (1 + b2) * curve.precision * curve.recall / np.maximum(b2 * curve.precision + curve.recall, 1e-12)
    return int(np.argmax(f))


def list_report(values: np.ndarray, raw_scores: np.ndarray, labels: np.ndarray, mask: np.ndarray, threshold: float, k: int) -> dict[str, Any]:
    """What a cut at ``threshold`` does to each query's top k, against a raw-score cut and top-j lists of the same mean length."""
    keep = (np.nan_to_num(values[:, :k], nan=-np.inf) >= threshold) & mask[:, :k]
    positives = (labels & mask)[:, :k]
    n_kept, n_relevant = int(keep.sum()), max(int(positives.sum()), 1)
    length = n_kept / max(len(values), 1)
    kept_relevant = int((keep & positives).sum())
    raw = cut_curve(raw_scores, labels, mask, k)
    raw_recall = raw.recall[n_kept - 1] if n_kept else 0.0
    raw_precision = raw.precision[n_kept - 1] if n_kept else 0.0
    recall, precision = kept_relevant / n_relevant, kept_relevant / max(n_kept, 1)
    return {
        "k": k,
        "mean_list_length": length,
        "full_list_length": float(mask[:, :k].sum() / max(len(values), 1)),
        "recall_kept": recall,
        "precision": precision,
        "empty_lists": float((~keep.any(axis=1)).mean()),
        "raw_cut": {"min_score": float(raw.thresholds[n_kept - 1]) if n_kept else None, "recall_kept": float(raw_recall), "precision": float(raw_precision)},
        "top_k_same_length_recall": top_k_curve(labels, mask, k).recall_at_length(length),
        "precision_gain": precision - float(raw_precision),
        "relevant_kept_vs_raw": recall / raw_recall if raw_recall else None,
    }
