"""Relevance calibration: monotone calibrators, save/load, the adapter on separable data, and the HTTP flow on real labelled text."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from index.relevance.calibrators import (
    PROFILE_DEPTH,
    Calibrator,
    Candidates,
    CosineAdapter,
    Identity,
    Isotonic,
    Platt,
)
from index.relevance.fit import FitOptions, fit_and_report, pr_auc
from tests.corpus import stdlib_labelled


def synthetic_candidates(n_queries: int, seed: int) -> Candidates:
    """Relevance depends on the query: a candidate is relevant when its score beats a threshold the query vector sets.

    Raw scores cannot separate these (thresholds differ per query); a query-aware map can.
    """
    rng = np.random.default_rng(seed)
    dim = 16
    queries = rng.normal(size=(n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    thresholds = 0.55 + 0.25 * np.tanh(4 * queries[:, 0])
    scores = -np.sort(-rng.uniform(0.2, 0.9, size=(n_queries, PROFILE_DEPTH)), axis=1).astype(np.float32)
    return Candidates(query_vectors=queries, scores=scores, labels=scores > thresholds[:, None])


@pytest.mark.parametrize("calibrator", [Identity(), Platt(), Isotonic(), CosineAdapter()], ids=lambda c: c.name)
def test_calibrators_are_monotone_per_query_and_round_trip(calibrator: Calibrator, tmp_path: Path) -> None:
    data = synthetic_candidates(300, seed=1)
    train, validation = data.subset(np.arange(200)), data.subset(np.arange(200, 300))
    calibrator.fit(train, validation)
    grid = np.tile(np.linspace(-0.2, 1.0, 50, dtype=np.float32), (len(validation.scores), 2))[:, :PROFILE_DEPTH]
    grid = -np.sort(-grid, axis=1)
    out = calibrator.relevance(grid, validation.query_vectors)
    assert np.all((out >= 0) & (out <= 1))
    assert np.all(np.diff(out, axis=1) <= 1e-6), "relevance must not rise as the score falls"
    calibrator.save(tmp_path / "c")
    again = Calibrator.load(tmp_path / "c")
    np.testing.assert_array_equal(again.relevance(validation.scores, validation.query_vectors), calibrator.relevance(validation.scores, validation.query_vectors))


def test_adapter_separates_what_raw_scores_cannot() -> None:
    data = synthetic_candidates(900, seed=2)
    train, validation, test = data.subset(np.arange(600)), data.subset(np.arange(600, 750)), data.subset(np.arange(750, 900))
    adapter = CosineAdapter(seed=0).fit(train, validation)
    adapted = pr_auc(adapter.relevance(test.scores, test.query_vectors), test.labels, test.mask)
    raw = pr_auc(test.scores, test.labels, test.mask)
    assert adapted > 0.98 and adapted > raw + 0.05, (adapted, raw)


def test_report_compares_with_every_baseline() -> None:
    calibrator, report = fit_and_report(synthetic_candidates(500, seed=3), FitOptions(target_recall=0.9), lambda *_: None)
    assert isinstance(calibrator, CosineAdapter)
    assert set(report["baselines"]) == {"raw_cosine", "top_k", "platt", "autocut"}
    assert report["queries"] == {"train": 300, "validation": 100, "test": 100}
    assert report["pr_auc"] > report["baselines"]["raw_cosine"]["pr_auc"]
    assert 0 <= report["filtered_fraction"] <= 1 and 0 <= report["ece"] <= 1
    assert report["recall"] >= 0.8  # the threshold was chosen for 0.9 recall on validation


def _wait(client: TestClient, job_id: str) -> dict:  # type: ignore[type-arg]
    while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in {"queued", "running"}:
        time.sleep(0.1)
    return dict(job)


def test_fit_and_filter_over_http_on_real_labelled_text(client: TestClient) -> None:
    docs, queries, relevant = stdlib_labelled()
    client.post("/v1/collections", json={"name": "py"})
    client.put("/v1/collections/py/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(docs)]})

    missing = client.post("/v1/collections/py/query", json={"text": "parse JSON", "min_relevance": 0.5})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "no_calibrator"

    examples = [{"query": q, "relevant": r} for q, r in zip(queries, relevant, strict=True)]
    response = client.post("/v1/collections/py/relevance", json={"examples": examples, "target_recall": 0.9})
    assert response.status_code == 202
    job = _wait(client, response.json()["job_id"])
    assert job["state"] == "succeeded", job
    report = job["result"]
    assert report["calibrator"] == "cosine_adapter" and 0 < report["pr_auc"] <= 1
    assert {"raw_cosine", "top_k", "platt", "autocut"} <= set(report["baselines"])
    assert client.get("/v1/collections/py").json()["relevance"]["calibrator"] == "cosine_adapter"
    assert client.get("/v1/collections/py/relevance").json()["relevance"]["threshold"] == report["threshold"]

    for text in ["Decode JSON documents", "Queue of tasks for worker threads", "Compute the square root"]:
        full = client.post("/v1/collections/py/query", json={"text": text, "k": 20}).json()["results"]
        assert all(0 <= h["relevance"] <= 1 for h in full)
        cut = client.post("/v1/collections/py/query", json={"text": text, "k": 20, "min_relevance": report["threshold"]}).json()["results"]
        assert [h["id"] for h in cut] == [h["id"] for h in full][: len(cut)], "filtering keeps a prefix of the ranking"
        assert all(h["relevance"] >= report["threshold"] for h in cut)


def test_relevance_request_needs_examples_or_path(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "py"})
    response = client.post("/v1/collections/py/relevance", json={"calibrator": "platt"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_relevance_request"
