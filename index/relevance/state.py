"""A collection's relevance calibrator: one per serving model version, fitted as a job, served to queries, reported.

Dense, multi-vector and sharded collections share it. It needs the collection's folder and config, a check
that it can embed labelled queries, and how the collection retrieves their candidates (``profiles``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from encoders.errors import InvalidInput, NotFound
from index.config import CollectionConfig
from index.ingest.points import PointInputs
from index.relevance.calibrators import PROFILE_DEPTH, Calibrator
from index.relevance.fit import (
    Example,
    FitOptions,
    check_fit,
    fit_and_report,
    label_candidates,
)
from index.requests import Hit, Query
from index.storage import atomic

Progress = Callable[[float, int, int], None]
# Each labelled query's top PROFILE_DEPTH ids and scores, and the query vectors: what a calibrator learns from.
Profiles = tuple[list[list[Any]], list[list[float]], np.ndarray]
ProfilesFn = Callable[[Sequence[Example], Callable[[int], None]], Profiles]


class RelevanceHost(Protocol):
    root: Path
    inputs: PointInputs

    @property
    def config(self) -> CollectionConfig: ...

    def count(self) -> int: ...

    def query_batch(self, queries: Sequence[Query]) -> list[list[Hit]]: ...


def dense_profiles(host: RelevanceHost, examples: Sequence[Example], on_done: Callable[[int], None]) -> Profiles:
    """Each labelled query's top PROFILE_DEPTH ids and scores by the collection's own dense search, and its vector."""
    vectors = host.inputs.query_vectors([Query(text=e.query, k=PROFILE_DEPTH, with_payload=False) for e in examples])
    ids: list[list[Any]] = []
    scores: list[list[float]] = []
    for start in range(0, len(examples), 64):
        chunk = [Query(vector=v, k=PROFILE_DEPTH, with_payload=False) for v in vectors[start : start + 64]]
        for hits in host.query_batch(chunk):
            ids.append([h.id for h in hits])
            scores.append([h.score for h in hits])
        on_done(len(ids))
    return ids, scores, vectors


def relevance_details(calibrator: Calibrator, scores: np.ndarray, vector: np.ndarray, words: np.ndarray, relevance: np.ndarray, cut: float | None) -> dict[str, Any]:
    """Why one query's list was cut where it was: its own map (slope, offset, rank decay on the raw score), the
    threshold applied (else the fitted one), and how many of its candidates pass it, down to which score."""
    threshold = cut if cut is not None else calibrator.threshold
    found = ~np.isnan(scores[0])
    passing = found & (relevance >= threshold) if threshold is not None else found
    return {
        "calibrator": calibrator.name,
        **calibrator.parameters(scores, vector, words)[0],
        "query_words": int(words[0]),
        "min_relevance": cut,
        "fitted_threshold": calibrator.threshold,
        "candidates": int(found.sum()),
        "passing": int(passing.sum()),
        "lowest_passing_score": float(scores[0][passing].min()) if passing.any() else None,
    }


class Relevance:
    def __init__(self, host: RelevanceHost, profiles: ProfilesFn | None = None):
        self.host = host
        self.profiles: ProfilesFn = profiles or (lambda examples, on_done: dense_profiles(host, examples, on_done))
        self.calibrator: Calibrator | None = self.load()

    @property
    def folder(self) -> Path:
        return self.host.root / "relevance" / f"v{self.host.config.serving_version}"

    def load(self) -> Calibrator | None:
        """The serving version's calibrator from disk (None when it has none)."""
        folder = self.folder
        if not (folder / "calibrator.json").exists():
            return None
        calibrator = Calibrator.load(folder)
        if calibrator.threshold is None and (folder / "report.json").exists():  # saved before calibrators kept their operating point
            calibrator.threshold = json.loads((folder / "report.json").read_text())["threshold"]
        return calibrator

    def reload(self) -> None:
        """After the serving version changed: serve that version's calibrator, or none."""
        self.calibrator = self.load()

    def for_queries(self, queries: Sequence[Query]) -> Calibrator | None:
        """The calibrator these queries are answered with; a 400 when one asks for relevance and there is none."""
        calibrator = self.calibrator
        if calibrator is None and any(q.uses_relevance for q in queries):
            name = self.host.config.name
            raise InvalidInput(
                f"with_relevance, min_relevance and with_relevance_details need a relevance calibrator, and collection {name!r} has none for its serving model; fit one with POST /v1/collections/{name}/relevance",
                code="no_calibrator",
            )
        return calibrator

    def check(self, examples: Sequence[Example], options: FitOptions) -> None:
        check_fit(self.host, examples, options)

    def fit(self, examples: Sequence[Example], options: FitOptions, progress: Progress) -> dict[str, Any]:
        """Retrieve candidates for labelled queries, fit a calibrator, save it with its report and examples, serve it."""
        self.check(examples, options)
        ids, scores, vectors = self.profiles(examples, lambda done: progress(0.5 * done / len(examples), done, len(examples)))
        calibrator, report = fit_and_report(label_candidates(examples, ids, scores, vectors), options, progress)
        report["model_version"] = self.host.config.serving_version
        folder = self.folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = atomic.new_temp_dir(folder.parent, folder.name)
        calibrator.save(staging)
        (staging / "report.json").write_text(json.dumps(report, indent=2))
        (staging / "examples.jsonl").write_text("".join(json.dumps({"query": e.query, "relevant": list(e.relevant)}) + "\n" for e in examples))
        shutil.rmtree(folder, ignore_errors=True)
        atomic.publish_dir(staging, folder)  # fsynced whole: a crash leaves the old calibrator or none, never half of one
        self.calibrator = calibrator
        return report

    def report(self) -> dict[str, Any] | None:
        """The fit report of the serving model's calibrator (None when there is none)."""
        report_path = self.folder / "report.json"
        return json.loads(report_path.read_text()) if self.calibrator is not None and report_path.exists() else None

    def info(self) -> dict[str, Any] | None:
        """The serving version's calibrator; else the newest one of an earlier version, marked stale (it calibrates another model's scores)."""
        report = self.report()
        if report is not None:
            return {**{k: report[k] for k in ("calibrator", "threshold", "model_version", "pr_auc")}, "stale": False}
        older = self._older_folder()
        if older is None:
            return None
        stale = json.loads((older / "report.json").read_text())
        config = self.host.config
        return {
            **{k: stale[k] for k in ("calibrator", "threshold", "model_version", "pr_auc")},
            "stale": True,
            "message": f"fitted for model version {stale['model_version']}, not the serving version {config.serving_version}; "
            f"refit from its stored examples with POST /v1/collections/{config.name}/relevance {{\"refit\": true}}",
        }

    def _older_folder(self) -> Path | None:
        """The relevance folder of the newest non-serving version that has a fitted report and its examples."""
        config = self.host.config
        found = [
            (m.version, folder)
            for m in config.models
            if m.version != config.serving_version
            and (folder := self.host.root / "relevance" / f"v{m.version}").joinpath("report.json").exists()
            and folder.joinpath("examples.jsonl").exists()
        ]
        return max(found)[1] if found else None

    def stored_examples_path(self) -> Path:
        """The labelled examples a refit uses: the serving version's own, else those of the newest earlier version."""
        own = self.folder / "examples.jsonl"
        folder = own.parent if own.exists() else self._older_folder()
        if folder is None:
            raise NotFound(f"collection {self.host.config.name!r} has no stored relevance examples to refit from", code="no_stored_examples")
        return folder / "examples.jsonl"
