"""Fitting a relevance calibrator from labelled queries, and the report that compares it with the baselines.

Examples are ``{"query": text, "relevant": [ids]}``. Each query retrieves its top
candidates from the collection; retrieved relevant ids are positives, the rest
negatives. Queries are split (seeded) into train / validation / test: the
calibrator trains on train, early-stops and picks the global threshold (the
operating point: a recall or precision target, else the best F-beta of the
top-k lists) on validation, and every figure in the report is measured on test only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders.errors import InvalidInput
from index.relevance.calibrators import (
    CANDIDATE_FEATURES,
    DEFAULT_LOSS,
    PROFILE_DEPTH,
    Calibrator,
    Candidates,
    CosineAdapter,
    Platt,
    query_words,
)
from index.relevance.operating import (
    DEFAULT_BETA,
    OPERATING_K,
    REPORT_KS,
    cut_curve,
    list_report,
    pick,
    rule_name,
    top_k_curve,
)
from index.validation import (
    bad_row,
    check_point_id,
    check_text,
    checked,
    is_readable_file,
    jsonl_lines,
)

if TYPE_CHECKING:
    from index.relevance.state import RelevanceHost

Progress = Callable[[float, int, int], None]


@dataclass(frozen=True)
class Example:
    query: str
    relevant: tuple[Any, ...]


@dataclass(frozen=True)
class FitOptions:
    calibrator: str = "cosine_adapter"
    target_recall: float | None = None  # at most one target; with none, the threshold maximises F-beta
    target_precision: float | None = None
    beta: float = DEFAULT_BETA
    k: int = OPERATING_K  # targets and F-beta are measured on each validation query's top k
    features: tuple[str, ...] | None = None  # the cosine adapter's inputs (calibrators.FEATURES); None: the best of CANDIDATE_FEATURES on validation
    loss: str = DEFAULT_LOSS  # and its loss (calibrators.LOSSES)
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0

    @property
    def rule(self) -> str:
        return rule_name(self.target_recall, self.target_precision, self.beta)

    def new_calibrators(self) -> list[Calibrator]:
        """The calibrator to fit, or (an adapter with no features named) the candidates validation chooses among."""
        if self.calibrator not in Calibrator.registry:
            raise InvalidInput(f"unknown calibrator {self.calibrator!r}; one of {sorted(Calibrator.registry)}", code="unknown_calibrator")
        if self.calibrator == CosineAdapter.name:
            return [CosineAdapter(features=f, loss=self.loss, seed=self.seed) for f in ([self.features] if self.features else CANDIDATE_FEATURES)]
        return [Calibrator.registry[self.calibrator]()]


def read_examples(path: Path) -> list[Example]:
    """Labelled queries from JSONL rows {"query": text, "relevant": [ids]}, checked as the HTTP edge checks them.

    Reasons name the row (and byte), never the file's path or content.
    """
    if not is_readable_file(path):
        raise InvalidInput(f"cannot read the examples file {path.name[:100]!r}: no such file", code="source_unreadable")
    examples = []
    for row, data in jsonl_lines(path):
        if isinstance(data, InvalidInput):
            raise data
        if not isinstance(data, dict) or not isinstance(data.get("query"), str) or not isinstance(data.get("relevant"), list):
            raise bad_row(row, "expected an object with a text 'query' and a list 'relevant'")
        query = checked(row, "query", check_text, data["query"])
        # ids are compared with stored ones: one no point can have (a list, an object) is refused like a written one
        examples.append(Example(query=query, relevant=tuple(checked(row, "relevant", check_point_id, i) for i in data["relevant"])))
    return examples


def check_fit(collection: RelevanceHost, examples: Sequence[Example], options: FitOptions) -> None:
    """What a relevance fit would refuse, before anything is embedded: the route calls it before answering 202, the fit again."""
    collection.inputs.require_encoder("labelled queries", {})
    if collection.count() == 0:  # labelled queries would retrieve no candidates to learn from
        raise InvalidInput(
            f"collection {collection.config.name!r} holds no points for the labelled queries to retrieve", code="too_few_points", details={"points": 0, "needed": 1}
        )
    for i, example in enumerate(examples):
        if not example.query.strip():
            raise InvalidInput("a labelled query's text must not be empty", code="empty_text", details={"example": i})
    if options.target_recall is not None and options.target_precision is not None:
        raise InvalidInput("give at most one of target_recall and target_precision", code="invalid_relevance_request")
    options.new_calibrators()
    split_sizes(len(examples), options)


# ---- metrics over pooled (query, candidate) pairs --------------------------


def pr_auc(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels[mask], probs[mask])) if labels[mask].any() else 0.0


def precision_at_recall(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, recall: float = 0.95) -> float:
    from sklearn.metrics import precision_recall_curve

    if not labels[mask].any():
        return 0.0
    precision, achieved, _ = precision_recall_curve(labels[mask], probs[mask])
    return float(precision[achieved >= recall].max())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, bins: int = 10) -> float:
    p, y = probs[mask], labels[mask].astype(float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[which == b].mean() - y[which == b].mean()) * (which == b).mean() for b in range(bins) if (which == b).any()))


def threshold_for(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, options: FitOptions) -> float:
    """The global threshold the options' rule picks among the cuts of the validation queries' top k."""
    curve = cut_curve(probs, labels, mask, options.k)
    chosen = pick(curve, options.target_recall, options.target_precision, options.beta)
    return float(curve.thresholds[chosen]) if chosen >= 0 else 1.0


def decision_report(keep: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Precision and recall of keeping ``keep`` among the candidates, the share filtered, and how many queries end empty."""
    keep = keep & mask
    positives = labels & mask
    return {
        "precision": float((keep & positives).sum() / max(keep.sum(), 1)),
        "recall": float((keep & positives).sum() / max(positives.sum(), 1)),
        "filtered_fraction": float(1 - keep.sum() / max(mask.sum(), 1)),
        "empty_result_rate": float((~keep.any(axis=1)).mean()),
    }


def autocut(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Weaviate-style autocut: keep each query's results up to the largest drop between neighbouring scores."""
    keep = np.zeros_like(mask)
    for row in range(len(scores)):
        valid = scores[row][mask[row]]
        cut = int(np.argmax(-np.diff(valid))) + 1 if len(valid) > 1 else len(valid)
        keep[row, :cut] = True
    return keep


def evaluate(
    name: str, relevance: Callable[[Candidates], np.ndarray], validation: Candidates, test: Candidates, options: FitOptions
) -> dict[str, Any]:
    threshold = threshold_for(relevance(validation), validation.labels, validation.mask, options)
    probs = relevance(test)
    return {
        "name": name,
        "threshold": threshold,
        "pr_auc": pr_auc(probs, test.labels, test.mask),
        "p_at_r95": precision_at_recall(probs, test.labels, test.mask),
        "ece": expected_calibration_error(np.clip(probs, 0, 1), test.labels, test.mask),
        **decision_report(np.nan_to_num(probs, nan=-np.inf) >= threshold, test.labels, test.mask),
        "lists": {str(k): list_report(probs, test.scores, test.labels, test.mask, threshold, k) for k in REPORT_KS},
    }


def top_k_baseline(validation: Candidates, test: Candidates, options: FitOptions) -> dict[str, Any]:
    """Keep the first j of every query, with j picked by the options' rule on the validation queries' top k."""
    depth = test.scores.shape[1]
    j = pick(top_k_curve(validation.labels, validation.mask, options.k), options.target_recall, options.target_precision, options.beta) + 1
    rank_score = -np.broadcast_to(np.arange(depth, dtype=float), test.scores.shape)
    return {
        "name": "top_k",
        "k": j,
        "pr_auc": pr_auc(rank_score, test.labels, test.mask),
        "p_at_r95": precision_at_recall(rank_score, test.labels, test.mask),
        **decision_report(np.broadcast_to(np.arange(depth), test.scores.shape) < j, test.labels, test.mask),
    }


def split_sizes(n: int, options: FitOptions) -> tuple[int, int]:
    """How many of ``n`` labelled queries are held for test and validation; each of the three parts needs one."""
    n_test, n_val = int(round(n * options.test_fraction)), int(round(n * options.validation_fraction))
    if min(n_test, n_val, n - n_test - n_val) < 1:
        raise InvalidInput(f"{n} labelled queries are too few to train, validate and test; give at least 10", code="too_few_examples", details={"given": n})
    return n_test, n_val


def split(n: int, options: FitOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_test, n_val = split_sizes(n, options)
    order = np.random.default_rng(options.seed).permutation(n)
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def fit_and_report(candidates: Candidates, options: FitOptions, progress: Progress) -> tuple[Calibrator, dict[str, Any]]:
    """Split the labelled queries (seeded), fit on train, pick the threshold on validation, report on test."""
    train, validation, test = (candidates.subset(rows) for rows in split(len(candidates.scores), options))
    if not (train.labels[train.mask].any() and validation.mask.any()):  # nothing to learn from, or to stop on
        raise InvalidInput(
            "the labelled queries retrieve no relevant candidate to train on, or none to validate on: give more, or ids the collection holds",
            code="no_relevant_candidates",
        )
    calibrator, report = fit_on_splits(train, validation, test, options)
    progress(1.0, len(candidates.scores), len(candidates.scores))
    return calibrator, report


def fit_on_splits(train: Candidates, validation: Candidates, test: Candidates, options: FitOptions) -> tuple[Calibrator, dict[str, Any]]:
    """Fit the options' calibrator (or each adapter candidate), keep the best on validation PR-AUC, and report it."""
    started = time.perf_counter()
    candidates = [c.fit(train, validation) for c in options.new_calibrators()]
    return report_on_splits(candidates, train, validation, test, options, time.perf_counter() - started)


def report_on_splits(
    candidates: Sequence[Calibrator], train: Candidates, validation: Candidates, test: Candidates, options: FitOptions, fit_seconds: float
) -> tuple[Calibrator, dict[str, Any]]:
    """Of fitted calibrators, the best on validation PR-AUC with its threshold (picked on validation) and the test report."""
    validation_pr_auc = [pr_auc(c.of(validation), validation.labels, validation.mask) for c in candidates]
    calibrator = candidates[int(np.argmax(validation_pr_auc))]

    chosen = evaluate(options.calibrator, calibrator.of, validation, test, options)
    calibrator.threshold = chosen["threshold"]
    baselines = {
        "raw_cosine": evaluate("raw_cosine", lambda data: data.scores, validation, test, options),
        "top_k": top_k_baseline(validation, test, options),
        "platt": evaluate("platt", Platt().fit(train, validation).of, validation, test, options),
        "autocut": {"name": "autocut", **decision_report(autocut(test.scores, test.mask), test.labels, test.mask)},
    }
    report = {
        "calibrator": options.calibrator,
        "threshold": chosen["threshold"],
        "pr_auc": chosen["pr_auc"],
        "p_at_r95": chosen["p_at_r95"],
        "filtered_fraction": chosen["filtered_fraction"],
        "precision": chosen["precision"],
        "recall": chosen["recall"],
        "empty_result_rate": chosen["empty_result_rate"],
        "ece": chosen["ece"],
        "operating_point": {"rule": options.rule, "k": options.k, "threshold": chosen["threshold"], "lists": chosen["lists"]},
        "baselines": baselines,
        "queries": {"train": len(train.scores), "validation": len(validation.scores), "test": len(test.scores)},
        "candidates_per_query": test.scores.shape[1],
        "fit_seconds": fit_seconds,
        "target": {"recall": options.target_recall, "precision": options.target_precision, "beta": options.beta, "k": options.k},
    }
    if isinstance(calibrator, CosineAdapter):
        report["adapter"] = {
            "features": list(calibrator.features),
            "loss": calibrator.loss,
            "epochs_trained": calibrator.epochs_trained,
            "chosen_from": [{"features": list(c.features), "loss": c.loss, "validation_pr_auc": auc} for c, auc in zip(candidates, validation_pr_auc, strict=True) if isinstance(c, CosineAdapter)],
        }
    return calibrator, report


def label_candidates(examples: Sequence[Example], ids: list[list[Any]], scores: list[list[float]], query_vectors: np.ndarray) -> Candidates:
    """Pad each query's candidates to PROFILE_DEPTH; a candidate is positive when its id is in the query's relevant set."""
    n = len(examples)
    padded = np.full((n, PROFILE_DEPTH), np.nan, np.float32)
    labels = np.zeros((n, PROFILE_DEPTH), bool)
    for row, (example, found, found_scores) in enumerate(zip(examples, ids, scores, strict=True)):
        relevant = set(example.relevant)
        padded[row, : len(found_scores)] = found_scores[:PROFILE_DEPTH]
        labels[row, : len(found)] = [i in relevant for i in found[:PROFILE_DEPTH]]
    return Candidates(query_vectors=query_vectors, scores=padded, labels=labels, words=query_words([e.query for e in examples]))
