"""Multi-vector collections over HTTP: MUVERA FDE candidates, exact Chamfer rerank, bad input, restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encoders.transforms.chamfer import chamfer_scores
from service.client import TroveClient
from tests.conftest import ServerProcess

N_DOCS = 200
MUVERA = {"k_sim": 3, "d_proj": 16, "r_reps": 10, "projection": "ams", "seed": 5, "max_tokens": 100}
QUERIES = ["reading a file from disk", "parse command line arguments", "a network socket connection", "random numbers", "date and time"]



def _error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


def _create(client: TestClient, name: str = "mv", **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/collections", json={"name": name, "multivector": True, "muvera": MUVERA, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _points(tokens: list[np.ndarray], sentences: list[str]) -> list[dict[str, Any]]:
    return [{"id": i, "vectors": t.tolist(), "payload": {"even": i % 2 == 0}, "text": s} for i, (t, s) in enumerate(zip(tokens, sentences, strict=False))]


def _ids(client: TestClient, body: dict[str, Any], name: str = "mv") -> list[Any]:
    response = client.post(f"/v1/collections/{name}/query", json=body)
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def test_fde_with_rerank_matches_exact_chamfer(client: TestClient, doc_tokens: list[np.ndarray], query_tokens: list[np.ndarray], sentences: list[str]) -> None:
    info = _create(client)
    assert info["multivector"] and info["muvera"]["fde_dim"] == 10 * 8 * 16 and info["dim"] == 384
    assert client.put("/v1/collections/mv/points", json={"points": _points(doc_tokens, sentences)}).json()["count"] == N_DOCS
    exact = chamfer_scores(query_tokens, doc_tokens)
    agree_fde_only = 0
    for q, tokens in enumerate(query_tokens):
        truth = [int(i) for i in np.argsort(-exact[q], kind="stable")[:10]]
        body = {"vectors": tokens.tolist(), "k": 10}
        # Oversample 20 reranks every document: FDE + rerank must be the exact Chamfer top-10, scores included.
        response = client.post("/v1/collections/mv/query", json={**body, "params": {"oversample": 20}}).json()["results"]
        assert [r["id"] for r in response] == truth
        np.testing.assert_allclose([r["score"] for r in response], exact[q, truth], rtol=1e-5)
        assert all(isinstance(r["fde_score"], float) for r in response)
        assert _ids(client, {**body, "params": {"exact": True}}) == truth
        fde_only = client.post("/v1/collections/mv/query", json={**body, "params": {"fde_only": True}}).json()["results"]
        assert [r["score"] for r in fde_only] == [r["fde_score"] for r in fde_only]
        agree_fde_only += len(set(r["id"] for r in fde_only) & set(truth))
    # FDE alone is an approximation: it finds most, not all, of the exact top-10 (a test that could fail both ways).
    assert 0.4 * 10 * len(QUERIES) < agree_fde_only < 10 * len(QUERIES)
    # Text queries are encoded to token vectors like the documents.
    assert _ids(client, {"text": QUERIES[0], "k": 10, "params": {"oversample": 20}}) == [int(i) for i in np.argsort(-exact[0], kind="stable")[:10]]


def test_graceful_restart_loads_the_sealed_fde_segments(make_client: Callable[..., TestClient], doc_tokens: list[np.ndarray], query_tokens: list[np.ndarray], sentences: list[str]) -> None:
    engine = {"seal_points": 20, "max_segment_points": 20, "optimizer_interval_s": 0.05}
    client = make_client(**engine)
    _create(client)
    client.put("/v1/collections/mv/points", json={"points": _points(doc_tokens[:50], sentences)})
    body = {"vectors": query_tokens[2].tolist(), "k": 10, "params": {"fde_only": True}}
    deadline = time.monotonic() + 60
    while len(sealed := [s["id"] for s in client.get("/v1/collections/mv").json()["segments"] if s["state"] == "sealed"]) < 3:
        assert time.monotonic() < deadline, "the optimizer did not seal the appendable segment"
        time.sleep(0.05)
    before = client.post("/v1/collections/mv/query", json=body).json()["results"]
    client.__exit__(None, None, None)
    again = make_client(**engine)
    info = again.get("/v1/collections/mv").json()
    assert [s["id"] for s in info["segments"] if s["state"] == "sealed"] == sealed and info["points"] == 50
    assert again.post("/v1/collections/mv/query", json=body).json()["results"] == before


def test_filters_deletes_and_stored_vectors(client: TestClient, doc_tokens: list[np.ndarray], query_tokens: list[np.ndarray], sentences: list[str]) -> None:
    _create(client, index={"type": "hnsw", "m": 16})
    client.put("/v1/collections/mv/points", json={"points": _points(doc_tokens[:60], sentences)})
    exact = chamfer_scores(query_tokens[:1], doc_tokens[:60])[0]
    even = [int(i) for i in np.argsort(-exact, kind="stable") if i % 2 == 0][:5]
    query = {"vectors": query_tokens[0].tolist(), "k": 5, "filter": {"must": [{"key": "even", "match": True}]}}
    assert _ids(client, {**query, "params": {"oversample": 20}}) == even
    assert _ids(client, {**query, "params": {"exact": True}}) == even
    assert client.post("/v1/collections/mv/points/delete", json={"ids": even[:2]}).json()["count"] == 2
    assert _ids(client, {**query, "params": {"oversample": 20}})[:3] == even[2:]
    point = client.get("/v1/collections/mv/points/1", params={"with_vector": True}).json()
    np.testing.assert_allclose(point["vectors"], doc_tokens[1], atol=1e-6)
    assert point["vector"] is None and point["text"] == sentences[1]
    hit = client.post("/v1/collections/mv/query", json={"vectors": doc_tokens[1].tolist(), "k": 1, "with_vector": True}).json()["results"][0]
    assert hit["id"] == 1 and len(hit["vectors"]) == len(doc_tokens[1])
    assert client.get("/v1/collections/mv").json()["points"] == 58


BAD_POINTS: list[tuple[str, dict[str, Any], str]] = [
    ("empty vector set", {"id": 9, "vectors": []}, "empty_vector_set"),
    ("ragged dimensions", {"id": 9, "vectors": [[0.1] * 384, [0.1] * 383]}, "ragged_vectors"),
    ("wrong dimension", {"id": 9, "vectors": [[0.1] * 4]}, "wrong_dimension"),
    ("too many tokens", {"id": 9, "vectors": [[0.1] * 384] * 101}, "too_many_tokens"),
    ("one vector", {"id": 9, "vector": [0.1] * 384}, "vector_not_supported"),
    ("non-finite", {"id": 9, "vectors": [[1e39] * 384]}, "non_finite_vector"),
    ("zero token", {"id": 9, "vectors": [[0.0] * 384]}, "zero_vector"),
    ("nothing", {"id": 9}, "missing_content"),
]


@pytest.mark.parametrize("point,code", [c[1:] for c in BAD_POINTS], ids=[c[0] for c in BAD_POINTS])
def test_bad_points_are_rejected_and_nothing_is_written(client: TestClient, point: dict[str, Any], code: str) -> None:
    _create(client)
    good = {"id": "good", "vectors": [[0.1] * 384, [0.2] * 384]}
    _error(client.put("/v1/collections/mv/points", json={"points": [good, point]}), 400, code)
    assert client.get("/v1/collections/mv").json()["points"] == 0
    _error(client.get("/v1/collections/mv/points/good"), 404, "point_not_found")


def test_bad_queries_and_configs(client: TestClient) -> None:
    _create(client)
    token = [0.1] * 384
    _error(client.post("/v1/collections/mv/query", json={"vector": token}), 400, "vector_not_supported")
    _error(client.post("/v1/collections/mv/query", json={"vectors": []}), 400, "empty_vector_set")
    _error(client.post("/v1/collections/mv/query", json={"vectors": [token] * 101}), 400, "too_many_tokens")
    _error(client.post("/v1/collections/mv/query", json={"vectors": [token], "text": "x"}), 400, "invalid_query")
    assert client.post("/v1/collections", json={"name": "dense", "dim": 4}).status_code == 201
    _error(client.put("/v1/collections/dense/points", json={"points": [{"id": 1, "vectors": [[0.1] * 4]}]}), 400, "vectors_not_supported")
    _error(client.post("/v1/collections/dense/query", json={"vectors": [[0.1] * 4]}), 400, "vectors_not_supported")
    bad_configs = [
        ({"muvera": {"k_sim": 31}}, "invalid_num_simhash_projections"),
        ({"muvera": {"d_proj": 385}}, "invalid_projection_dimension"),
        ({"muvera": {"projection": "identity", "d_proj": 16}}, "invalid_projection_dimension"),
        ({"muvera": {"r_reps": 0}}, "invalid_num_repetitions"),
        ({"muvera": {"k_sim": 10, "d_proj": 64}}, "fde_too_large"),
        ({"muvera": {"max_tokens": 0}}, "invalid_max_tokens"),
        ({"metric": "l2"}, "invalid_metric"),
    ]
    for extra, code in bad_configs:
        _error(client.post("/v1/collections", json={"name": "bad", "multivector": True, **extra}), 400, code)
    _error(client.post("/v1/collections", json={"name": "bad", "dim": 4, "muvera": {}}), 400, "muvera_needs_multivector")
    assert client.post("/v1/collections", json={"name": "bad", "multivector": True, "muvera": {"k_sim": 2, "final_dim": 512}}).json()["muvera"]["fde_dim"] == 512


def test_kill_9_restart_replays_fde_rows_with_the_same_fde_parameters(
    start_server: Callable[..., ServerProcess], doc_tokens: list[np.ndarray], query_tokens: list[np.ndarray], sentences: list[str]
) -> None:
    query = {"vectors": query_tokens[1].tolist(), "k": 10}
    server = start_server()
    with TroveClient(server.url) as trove:
        trove.create_collection("mv", multivector=True, muvera=MUVERA)
        points = _points(doc_tokens, sentences)
        trove.upsert("mv", points[:100])
        trove.upsert("mv", points[100:])
        before = trove.query("mv", **query, params={"fde_only": True}).results
    server.kill9()  # nothing sealed yet: every FDE row and token set comes back from the store
    again = start_server()
    with TroveClient(again.url) as trove:
        info = trove.collection("mv")
        assert info["points"] == N_DOCS and info["segments"][-1]["points"] == N_DOCS and info["operation_id"] == 2
        assert trove.query("mv", **query, params={"fde_only": True}).results == before  # the same FDE matrices after reload
        got = trove.query("mv", **query, params={"oversample": 20}).ids
    exact = chamfer_scores(query_tokens[1:2], doc_tokens)[0]
    assert got == [int(i) for i in np.argsort(-exact, kind="stable")[:10]]
