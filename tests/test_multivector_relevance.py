"""Relevance calibration on a multi-vector collection: fitted from labelled text queries on Chamfer rankings
(mean-MaxSim scores, mean token vectors), served through min_relevance and relevance details, over HTTP with
the real encoder."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.corpus import stdlib_labelled
from tests.test_builds import wait

MUVERA = {"k_sim": 3, "d_proj": 16, "r_reps": 10, "projection": "ams", "seed": 5}
TEXTS = ["Decode JSON documents", "Queue of tasks for worker threads", "Compute the square root"]


def test_fit_and_filter_on_chamfer_scores(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    docs, queries, relevant = stdlib_labelled()
    assert client.post("/v1/collections", json={"name": "mv", "multivector": True, "muvera": MUVERA}).status_code == 201
    assert client.put("/v1/collections/mv/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(docs)]}).status_code == 200
    missing = client.post("/v1/collections/mv/query", json={"text": TEXTS[0], "min_relevance": 0.5})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "no_calibrator"

    examples = [{"query": q, "relevant": r} for q, r in zip(queries, relevant, strict=True)]
    response = client.post("/v1/collections/mv/relevance", json={"examples": examples, "target_recall": 0.9})
    assert response.status_code == 202, response.text
    job = wait(client, response.json()["job_id"])
    assert job["state"] == "succeeded", job.get("error")
    report = job["result"]
    # A calibrator that ranks relevant candidates above the rest better than chance does (labels are real).
    positives = sum(len(r) for r in relevant) / (len(docs) * len(queries))
    assert positives < report["pr_auc"] <= 1
    assert client.get("/v1/collections/mv").json()["relevance"]["threshold"] == report["threshold"]

    for text in TEXTS:
        full = client.post("/v1/collections/mv/query", json={"text": text, "k": 20}).json()["results"]
        assert len(full) == 20 and all(0 <= h["relevance"] <= 1 for h in full)
        assert [h["score"] for h in full] == sorted((h["score"] for h in full), reverse=True)  # still the Chamfer ranking
        cut = client.post("/v1/collections/mv/query", json={"text": text, "k": 20, "min_relevance": report["threshold"]}).json()["results"]
        assert [h["id"] for h in cut] == [h["id"] for h in full][: len(cut)], "filtering keeps a prefix of the ranking"
        assert all(h["relevance"] >= report["threshold"] for h in cut)
        answer = client.post("/v1/collections/mv/query", json={"text": text, "k": 20, "min_relevance": "default", "with_relevance_details": True}).json()
        assert [h["id"] for h in answer["results"]] == [h["id"] for h in cut]
        assert answer["relevance_details"]["fitted_threshold"] == report["threshold"]
    fde_only = client.post("/v1/collections/mv/query", json={"text": TEXTS[0], "min_relevance": 0.5, "params": {"fde_only": True}})
    assert fde_only.status_code == 400 and fde_only.json()["error"]["code"] == "relevance_needs_rerank"

    before = client.post("/v1/collections/mv/query", json={"text": TEXTS[0], "k": 20, "min_relevance": report["threshold"]}).json()["results"]
    client.__exit__(None, None, None)
    again = make_client()  # the calibrator is saved with the collection and serves the same cut
    assert again.post("/v1/collections/mv/query", json={"text": TEXTS[0], "k": 20, "min_relevance": report["threshold"]}).json()["results"] == before
