"""Relevance calibration: monotone calibrators, save/load, the adapter on separable data, and the HTTP flow on real labelled text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encoders.errors import InvalidInput
from index.relevance.calibrators import (
    PROFILE_DEPTH,
    Calibrator,
    Candidates,
    CosineAdapter,
    Identity,
    Isotonic,
    Platt,
)
from index.relevance.fit import FitOptions, fit_and_report, pr_auc, report_on_splits
from index.relevance.operating import cut_curve, list_report, pick, top_k_curve
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


ADAPTER_VARIANTS = [
    CosineAdapter(),
    CosineAdapter(features=("embedding", "profile"), loss="pairwise"),
    CosineAdapter(features=("profile", "gaps", "length"), loss="listwise"),
]


@pytest.mark.parametrize(
    "calibrator", [Identity(), Platt(), Isotonic(), *ADAPTER_VARIANTS], ids=lambda c: c.name + "".join(f"-{f}" for f in getattr(c, "features", ())) + f"-{getattr(c, 'loss', '')}"
)
def test_calibrators_are_monotone_per_query_and_round_trip(calibrator: Calibrator, tmp_path: Path) -> None:
    data = synthetic_candidates(300, seed=1)
    train, validation = data.subset(np.arange(200)), data.subset(np.arange(200, 300))
    train.words = np.full(len(train.scores), 2, np.float32)  # two-word queries: the length features see a type
    calibrator.fit(train, validation)
    grid = np.tile(np.linspace(-0.2, 1.0, 50, dtype=np.float32), (len(validation.scores), 2))[:, :PROFILE_DEPTH]
    grid = -np.sort(-grid, axis=1)
    out = calibrator.relevance(grid, validation.query_vectors)
    assert np.all((out >= 0) & (out <= 1))
    assert np.all(np.diff(out, axis=1) <= 1e-6), "relevance must not rise as the score falls"
    calibrator.save(tmp_path / "c")
    again = Calibrator.load(tmp_path / "c")
    np.testing.assert_array_equal(again.relevance(validation.scores, validation.query_vectors), calibrator.relevance(validation.scores, validation.query_vectors))


def test_adapter_parameters_are_the_map_it_applies() -> None:
    data = synthetic_candidates(300, seed=4)
    adapter = CosineAdapter(seed=0).fit(data.subset(np.arange(200)), data.subset(np.arange(200, 300)))
    scores, vectors = data.scores[:5], data.query_vectors[:5]
    ranks = np.arange(1, scores.shape[1] + 1)
    for row, p in enumerate(adapter.parameters(scores, vectors)):
        assert p["slope"] > 0 and p["rank_decay"] >= 0
        expected = 1 / (1 + np.exp(-(p["slope"] * scores[row] + p["offset"] - p["rank_decay"] * np.log(ranks))))
        np.testing.assert_allclose(adapter.relevance(scores, vectors)[row], expected, rtol=1e-4, atol=1e-6)


def test_an_adapter_saved_before_feature_groups_loads_as_the_map_it_was(tmp_path: Path) -> None:
    data = synthetic_candidates(300, seed=6)
    old = CosineAdapter(features=("embedding", "profile"), centred=False).fit(data.subset(np.arange(200)), data.subset(np.arange(200, 300)))
    old.save(tmp_path / "c")
    record = json.loads((tmp_path / "c" / "calibrator.json").read_text())
    keys = ("name", "dim", "hidden", "seed", "epochs_trained", "score_mean", "score_std")
    (tmp_path / "c" / "calibrator.json").write_text(json.dumps({**{k: record[k] for k in keys}, "use_profile": True}))  # the earlier format
    loaded = Calibrator.load(tmp_path / "c")
    assert isinstance(loaded, CosineAdapter) and loaded.features == ("embedding", "profile") and loaded.threshold is None
    np.testing.assert_array_equal(loaded.of(data), old.of(data))


def test_bench_tables_compare_cuts_at_equal_length_and_equal_recall() -> None:
    from bench.suites.relevance import _tables

    data = synthetic_candidates(200, seed=5)
    knows = 0.5 * data.labels + 0.1 * data.scores  # monotone per query (labels are a prefix here) and right across queries
    tables = _tables(knows, data, {"mean_list_length": 3.0})
    assert [r["mean_list_length"] for r in tables["equal_length"]] == sorted(r["mean_list_length"] for r in tables["equal_length"])
    for row in tables["equal_length"]:
        assert row["cosine_adapter"] >= row["raw_cosine"] - 1e-9 and 0 <= row["top_k"] <= 1
    for row in tables["equal_recall"]:
        assert row["cosine_adapter"] <= row["raw_cosine"] and row["cosine_adapter"] <= row["top_k"]


def test_a_report_on_fitted_adapters_keeps_the_best_on_validation() -> None:
    data = synthetic_candidates(500, seed=7)
    train, validation, test = data.subset(np.arange(300)), data.subset(np.arange(300, 400)), data.subset(np.arange(400, 500))
    sees_query = CosineAdapter(features=("embedding", "profile"), seed=0).fit(train, validation)
    shape_only = CosineAdapter(features=("profile", "gaps"), loss="listwise", seed=0).fit(train, validation)
    calibrator, report = report_on_splits([shape_only, sees_query], train, validation, test, FitOptions(), fit_seconds=1.5)
    assert calibrator is sees_query  # the thresholds hang on the query vector, which the shape alone cannot see
    assert report["adapter"]["features"] == ["embedding", "profile"] and report["adapter"]["loss"] == "pointwise"
    assert [(c["features"], c["loss"]) for c in report["adapter"]["chosen_from"]] == [(["profile", "gaps"], "listwise"), (["embedding", "profile"], "pointwise")]
    assert report["threshold"] == calibrator.threshold and report["fit_seconds"] == 1.5


def test_bench_shape_probe_reads_a_cut_that_hangs_on_the_score_shape() -> None:
    from bench.suites.relevance import _shape_ceiling

    rng = np.random.default_rng(8)
    scores = -np.sort(-rng.uniform(0.2, 0.9, size=(600, PROFILE_DEPTH)), axis=1).astype(np.float32)
    scores[:, 1:] -= rng.uniform(0.0, 0.3, size=(600, 1)).astype(np.float32)  # a query's first hit stands out by a random gap
    labels = np.zeros_like(scores, bool)
    labels[:, 0] = scores[:, 0] - scores[:, 1] > 0.15  # relevant: a top hit that stands out, whatever its raw score
    data = Candidates(query_vectors=rng.normal(size=(600, 8)).astype(np.float32), scores=scores, labels=labels)
    probe = _shape_ceiling(data.subset(np.arange(400)), data.subset(np.arange(400, 500)), data.subset(np.arange(500, 600)), seed=0)
    raw = pr_auc(data.scores[500:], data.labels[500:], data.mask[500:])
    assert probe["test_pr_auc"] > 0.95 and probe["test_pr_auc"] > raw + 0.2, (probe, raw)


def test_adapter_refuses_unknown_features_and_losses() -> None:
    with pytest.raises(InvalidInput):
        CosineAdapter(features=("embedding", "colour"))
    with pytest.raises(InvalidInput):
        CosineAdapter(loss="hinge")


def test_cut_curve_pools_every_querys_top_k_and_rules_pick_on_it() -> None:
    values = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.2]])
    labels = np.array([[1, 0, 0], [0, 1, 1]], bool)
    mask = np.ones_like(labels)
    curve = cut_curve(values, labels, mask, k=2)  # pooled top-2 lists: 0.9 (rel), 0.8, 0.7 (rel), 0.5
    np.testing.assert_allclose(curve.lengths, [0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(curve.recall, [0.5, 0.5, 1.0, 1.0])  # the rank-3 relevant item is outside the top 2
    np.testing.assert_allclose(curve.precision, [1.0, 0.5, 2 / 3, 0.5])
    assert curve.recall_at_length(0.25) == pytest.approx(0.25) and curve.length_at_recall(1.0) == 1.5
    assert pick(curve, target_recall=1.0, target_precision=None, beta=1.0) == 2
    assert pick(curve, target_recall=None, target_precision=0.6, beta=1.0) == 2
    assert pick(curve, None, None, beta=1.0) == 2  # F1: 0.67, 0.5, 0.8, 0.67
    assert pick(curve, None, None, beta=0.3) == 0  # a precision-weighted F keeps only the sure one
    top = top_k_curve(labels, mask, k=2)
    np.testing.assert_allclose(top.lengths, [1.0, 2.0])
    np.testing.assert_allclose(top.recall, [0.5, 1.0])


def test_list_report_compares_with_a_raw_cut_of_the_same_mean_length() -> None:
    raw = np.array([[0.9, 0.85], [0.6, 0.5]])  # a query with high scores and nothing relevant, and one with a relevant top hit
    labels = np.array([[0, 0], [1, 0]], bool)
    probs = np.array([[0.2, 0.1], [0.9, 0.3]])
    lists = list_report(probs, raw, labels, np.ones_like(labels), threshold=0.5, k=2)
    assert lists["mean_list_length"] == 0.5 and lists["recall_kept"] == 1.0 and lists["empty_lists"] == 0.5
    assert lists["raw_cut"] == {"min_score": 0.9, "recall_kept": 0.0, "precision": 0.0}  # the same length by raw score keeps the wrong one
    assert lists["precision_gain"] == 1.0 and lists["top_k_same_length_recall"] == pytest.approx(0.5)


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
    lists = report["operating_point"]["lists"]["10"]
    assert lists["recall_kept"] >= 0.8  # the threshold was chosen for 0.9 recall of the validation queries' top 10


def _wait(client: TestClient, job_id: str) -> dict:  # type: ignore[type-arg]
    while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in {"queued", "running"}:
        time.sleep(0.1)
    return dict(job)


def test_fit_and_filter_over_http_on_real_labelled_text(client: TestClient) -> None:
    docs, queries, relevant = stdlib_labelled()
    client.post("/v1/collections", json={"name": "py"})
    client.put("/v1/collections/py/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(docs)]})

    for asked in ({"min_relevance": 0.5}, {"min_relevance": "default"}, {"with_relevance_details": True}):
        missing = client.post("/v1/collections/py/query", json={"text": "parse JSON", **asked})
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
        full = client.post("/v1/collections/py/query", json={"text": text, "k": 20, "with_relevance": True}).json()["results"]
        assert all(0 <= h["relevance"] <= 1 for h in full)
        plain = client.post("/v1/collections/py/query", json={"text": text, "k": 20}).json()["results"]
        assert [h["id"] for h in plain] == [h["id"] for h in full] and all("relevance" not in h for h in plain), "relevance only when asked"
        cut = client.post("/v1/collections/py/query", json={"text": text, "k": 20, "min_relevance": report["threshold"]}).json()["results"]
        assert [h["id"] for h in cut] == [h["id"] for h in full][: len(cut)], "filtering keeps a prefix of the ranking"
        assert all(h["relevance"] >= report["threshold"] for h in cut)

        answer = client.post("/v1/collections/py/query", json={"text": text, "k": 20, "min_relevance": "default", "with_relevance_details": True}).json()
        details = answer["relevance_details"]
        assert [h["id"] for h in answer["results"]] == [h["id"] for h in cut], "'default' is the fitted operating point"
        assert details["fitted_threshold"] == report["threshold"] and details["min_relevance"] == report["threshold"]
        assert details["slope"] > 0 and details["rank_decay"] >= 0 and details["query_words"] == len(text.split())
        assert len(answer["results"]) == min(20, details["passing"]) and details["candidates"] >= details["passing"]
        if answer["results"]:
            assert details["lowest_passing_score"] <= answer["results"][-1]["score"]

    lists = report["operating_point"]["lists"]
    assert set(lists) == {"10", "100"} and "recall 0.9" in report["operating_point"]["rule"]
    assert lists["10"]["mean_list_length"] <= lists["10"]["full_list_length"] and {"min_score", "recall_kept", "precision"} == set(lists["10"]["raw_cut"])
    batch = client.post("/v1/collections/py/query/batch", json={"queries": [{"text": "Decode JSON", "with_relevance_details": True}, {"text": "Decode JSON"}]}).json()
    assert batch["relevance_details"][0]["calibrator"] == "cosine_adapter" and batch["relevance_details"][1] is None
    plain = client.post("/v1/collections/py/query", json={"text": "Decode JSON"}).json()
    assert "relevance_details" not in plain


def test_relevance_request_needs_examples_or_path(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "py"})
    response = client.post("/v1/collections/py/relevance", json={"calibrator": "platt"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_relevance_request"


def test_relevance_request_takes_at_most_one_target(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "py"})
    both = {"examples": [{"query": "q", "relevant": [1]}], "target_recall": 0.9, "target_precision": 0.5}
    response = client.post("/v1/collections/py/relevance", json=both)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_relevance_request"
