"""Batch builds into multi-vector collections: JSONL and Parquet rows with text or token vectors, the real
encoder, progress, all-or-nothing failures, and a kill -9 after the job succeeded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from encoders.registry import ModelRegistry
from encoders.transforms.chamfer import chamfer_scores
from index.ingest.builds import HEAD_ROWS
from tests.conftest import ServerProcess
from tests.test_builds import wait

MUVERA = {"k_sim": 3, "d_proj": 16, "r_reps": 10, "projection": "ams", "seed": 5, "max_tokens": 100}
N = 160
QUERIES = ["reading a file from disk", "a network socket connection", "date and time"]


@pytest.fixture(scope="module")
def doc_tokens(registry: ModelRegistry, sentences: list[str]) -> list[np.ndarray]:
    return registry.get("minilm-l6").encode_tokens(sentences[:N])


@pytest.fixture(scope="module")
def query_tokens(registry: ModelRegistry) -> list[np.ndarray]:
    return registry.get("minilm-l6").encode_tokens(QUERIES)


def _rows(sentences: list[str], tokens: list[np.ndarray]) -> list[dict[str, Any]]:
    """Even rows carry their token vectors, odd rows only their text (the build encodes those)."""
    return [
        {"id": i, "payload": {"n": i}, **({"vectors": tokens[i].tolist()} if i % 2 == 0 else {"text": sentences[i]})}
        for i in range(N)
    ]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _build(http: httpx.Client | TestClient, path: Path, fmt: str = "jsonl") -> httpx.Response:
    return http.post("/v1/collections/mv/builds", json={"source": {"path": str(path), "format": fmt}})


def _top10(http: httpx.Client | TestClient, tokens: np.ndarray) -> list[Any]:
    answer = http.post("/v1/collections/mv/query", json={"vectors": tokens.tolist(), "k": 10, "params": {"oversample": 20}})
    assert answer.status_code == 200, answer.text
    return [r["id"] for r in answer.json()["results"]]


def _exact_top10(query_tokens: list[np.ndarray], doc_tokens: list[np.ndarray]) -> list[list[int]]:
    return [[int(i) for i in np.argsort(-row, kind="stable")[:10]] for row in chamfer_scores(query_tokens, doc_tokens)]


def test_jsonl_build_of_texts_and_token_vectors_survives_kill_9(
    start_server: Callable[..., ServerProcess], tmp_path: Path, sentences: list[str], doc_tokens: list[np.ndarray], query_tokens: list[np.ndarray]
) -> None:
    source = _jsonl(tmp_path / "rows.jsonl", _rows(sentences, doc_tokens))
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=120) as http:
        assert http.post("/v1/collections", json={"name": "mv", "multivector": True, "muvera": MUVERA}).status_code == 201
        answer = _build(http, source)
        assert answer.status_code == 202, answer.text
        job = wait(http, answer.json()["job_id"])  # type: ignore[arg-type]
        assert job["state"] == "succeeded", job.get("error")
        assert job["progress"] == 1.0 and job["done"] == job["total"] == N
        assert job["result"]["points"] == N and job["result"]["texts_embedded"] == N // 2
        # Text rows were encoded to token vectors like an upsert does: the stored set is the encoder's.
        stored = http.get("/v1/collections/mv/points/1", params={"with_vector": True}).json()
        np.testing.assert_allclose(stored["vectors"], doc_tokens[1], atol=1e-5)
        before = [_top10(http, q) for q in query_tokens]
    assert before == _exact_top10(query_tokens, doc_tokens)
    server.kill9()  # the job had succeeded: its points and token vectors are acknowledged
    again = start_server()
    with httpx.Client(base_url=again.url, timeout=120) as http:
        assert http.get("/v1/collections/mv").json()["points"] == N
        assert [_top10(http, q) for q in query_tokens] == before


def test_parquet_build_of_token_vectors(client: TestClient, tmp_path: Path, sentences: list[str], doc_tokens: list[np.ndarray], query_tokens: list[np.ndarray]) -> None:
    assert client.post("/v1/collections", json={"name": "mv", "dim": 384, "metric": "ip", "multivector": True, "muvera": MUVERA}).status_code == 201
    table = pa.table({"id": [f"d{i}" for i in range(N)], "vectors": [t.tolist() for t in doc_tokens], "payload": [json.dumps({"n": i}) for i in range(N)]})
    pq.write_table(table, tmp_path / "rows.parquet")
    assert wait(client, _build(client, tmp_path / "rows.parquet", "parquet").json()["job_id"])["state"] == "succeeded"
    assert [[f"d{i}" for i in row] for row in _exact_top10(query_tokens, doc_tokens)] == [_top10(client, q) for q in query_tokens]
    hit = client.post("/v1/collections/mv/query", json={"vectors": doc_tokens[3].tolist(), "k": 1}).json()["results"][0]
    assert hit["id"] == "d3" and hit["payload"] == {"n": 3}


def test_a_bad_row_fails_the_build_and_writes_nothing(client: TestClient, tmp_path: Path, sentences: list[str], doc_tokens: list[np.ndarray]) -> None:
    assert client.post("/v1/collections", json={"name": "mv", "multivector": True, "muvera": MUVERA}).status_code == 201
    client.put("/v1/collections/mv/points", json={"points": [{"id": "kept", "vectors": doc_tokens[0].tolist()}]})
    rows = _rows(sentences, doc_tokens)
    # Within the first HEAD_ROWS rows: refused when the request comes, with the row's number and code.
    early = [*rows[:10], {"id": "bad", "vectors": [[0.1] * 384, [0.1] * 383]}]
    answer = _build(client, _jsonl(tmp_path / "early.jsonl", early))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "ragged_vectors" and answer.json()["error"]["details"]["row"] == 11
    # Past them: the job fails, after earlier chunks were staged and indexed, and none of it becomes visible.
    late = [*rows, {"id": "bad", "vectors": [[0.1] * 384] * 101}]
    assert len(late) > HEAD_ROWS
    job = wait(client, _build(client, _jsonl(tmp_path / "late.jsonl", late)).json()["job_id"])
    assert job["state"] == "failed" and job["error"]["code"] == "too_many_tokens", job
    info = client.get("/v1/collections/mv").json()
    assert info["points"] == 1
    assert client.get("/v1/collections/mv/points/0").status_code == 404
    hit = client.post("/v1/collections/mv/query", json={"vectors": doc_tokens[2].tolist(), "k": 5, "params": {"exact": True}}).json()["results"]
    assert [h["id"] for h in hit] == ["kept"]


def test_token_vectors_on_a_dense_collection_are_refused(client: TestClient, tmp_path: Path, doc_tokens: list[np.ndarray]) -> None:
    assert client.post("/v1/collections", json={"name": "mv", "dim": 384}).status_code == 201
    answer = _build(client, _jsonl(tmp_path / "rows.jsonl", [{"id": 1, "vectors": doc_tokens[0].tolist()}]))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "vectors_not_supported"
