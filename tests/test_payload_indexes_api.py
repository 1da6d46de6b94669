"""The payload index routes and the filter language over HTTP: jobs, listing, errors, and writes beside filtered
queries on a real `trove serve` process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from tests.conftest import ServerProcess

DIM = 8


def _vector(i: int) -> list[float]:
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float32).tolist()


def _put(http: httpx.Client | TestClient, points: list[dict[str, Any]], name: str = "c") -> httpx.Response:
    return http.put(f"/v1/collections/{name}/points", json={"points": points})


def _setup(http: httpx.Client | TestClient, n: int = 60) -> None:
    assert http.post("/v1/collections", json={"name": "c", "dim": DIM, "metric": "ip"}).status_code == 201
    points = [{"id": i, "vector": _vector(i), "payload": {"n": i % 6, "tag": ["x", "y", "z"][i % 3], "at": f"2024-05-{1 + i % 28:02d}T08:00:00Z"}} for i in range(n)]
    assert _put(http, points).status_code == 200


def _wait(http: httpx.Client | TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise TimeoutError(job_id)


def _ids(http: httpx.Client | TestClient, flt: dict[str, Any]) -> set[int]:
    answer = http.post("/v1/collections/c/query", json={"vector": _vector(0), "k": 100, "filter": flt})
    assert answer.status_code == 200, answer.text
    return {hit["id"] for hit in answer.json()["results"]}


def test_create_list_use_and_drop_an_index(client: TestClient) -> None:
    _setup(client)
    flt = {"must": [{"key": "n", "range": {"gte": 2, "lt": 4}}], "must_not": [{"key": "tag", "match": {"value": "y"}}]}
    unindexed = _ids(client, flt)
    assert unindexed == {i for i in range(60) if 2 <= i % 6 < 4 and i % 3 != 1}
    for key, kind in (("n", "integer"), ("tag", "keyword"), ("at", "datetime")):
        started = client.post("/v1/collections/c/indexes", json={"key": key, "type": kind})
        assert started.status_code == 202, started.text
        job = _wait(client, started.json()["job_id"])
        assert job["state"] == "succeeded" and job["kind"] == "payload_index" and job["progress"] == 1.0
        assert job["result"]["key"] == key and job["result"]["points"] == 60
    listed = client.get("/v1/collections/c/indexes").json()["indexes"]
    assert listed == [
        {"key": "n", "type": "integer", "state": "ready", "values": 60, "points": 60},
        {"key": "tag", "type": "keyword", "state": "ready", "values": 60, "points": 60},
        {"key": "at", "type": "datetime", "state": "ready", "values": 60, "points": 60},
    ]
    info = client.get("/v1/collections/c").json()
    assert [i["key"] for i in info["payload_indexes"]] == ["n", "tag", "at"]
    assert _ids(client, flt) == unindexed
    # Date-times compare as instants: 2024-05-03T08:00Z is 2024-05-03T10:00+02:00.
    when = {"must": [{"key": "at", "range": {"gte": "2024-05-03T10:00:00+02:00", "lte": "2024-05-04"}}]}
    assert _ids(client, when) == {i for i in range(60) if 1 + i % 28 == 3}
    nested = {"should": [{"key": "n", "any": [0]}, {"must": [{"key": "tag", "match": "z"}, {"key": "n", "is_empty": False}]}]}
    assert _ids(client, nested) == {i for i in range(60) if i % 6 == 0 or i % 3 == 2}
    assert client.delete("/v1/collections/c/indexes/n").status_code == 204
    gone = client.delete("/v1/collections/c/indexes/n")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "no_payload_index"
    assert _ids(client, flt) == unindexed


def test_index_requests_that_are_refused(client: TestClient) -> None:
    _setup(client)
    assert client.post("/v1/collections/c/indexes", json={"key": "n", "type": "integer"}).status_code == 202
    time.sleep(0.5)
    cases = [
        ({"key": "n", "type": "integer"}, 409, "payload_index_exists"),
        ({"key": "n", "type": "text"}, 422, "validation_error"),
        ({"key": "a..b", "type": "keyword"}, 400, "invalid_filter"),
        ({"key": "n"}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        answer = client.post("/v1/collections/c/indexes", json=body)
        assert answer.status_code == status and answer.json()["error"]["code"] == code, (body, answer.text)
    missing = client.post("/v1/collections/nope/indexes", json={"key": "n", "type": "integer"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "collection_not_found"


def test_a_wrong_typed_write_is_a_400_and_writes_nothing(client: TestClient) -> None:
    _setup(client, n=10)
    assert _wait(client, client.post("/v1/collections/c/indexes", json={"key": "n", "type": "integer"}).json()["job_id"])["state"] == "succeeded"
    refused = _put(client, [{"id": 100, "vector": _vector(100), "payload": {"n": 1}}, {"id": 101, "vector": _vector(101), "payload": {"n": "one"}}])
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "payload_type_mismatch" and error["details"] == {"id": 101, "key": "n", "type": "integer", "found": "text"}
    assert client.get("/v1/collections/c").json()["points"] == 10
    assert client.get("/v1/collections/c/points/100").status_code == 404


def test_an_index_job_over_wrong_typed_points_fails_naming_one(client: TestClient) -> None:
    _setup(client, n=10)
    assert _put(client, [{"id": 50, "vector": _vector(50), "payload": {"n": [1, "two"]}}]).status_code == 200
    job = _wait(client, client.post("/v1/collections/c/indexes", json={"key": "n", "type": "integer"}).json()["job_id"])
    assert job["state"] == "failed" and job["error"]["code"] == "payload_type_mismatch" and job["error"]["details"]["id"] == 50
    assert client.get("/v1/collections/c/indexes").json() == {"indexes": []}


def test_bad_filters_get_the_error_body(client: TestClient) -> None:
    _setup(client, n=5)
    cases = [
        ({"must": [{"key": "n", "range": {}}]}, 400, "invalid_filter"),
        ({"must": [{"key": "n", "range": {"gt": "tomorrow"}}]}, 400, "invalid_filter"),
        ({"must": [{"key": "n", "range": {"gt": 1, "lt": "2024-01-01"}}]}, 400, "invalid_filter"),
        ({"must": [{"key": "n", "match": 1, "is_null": True}]}, 400, "invalid_filter"),
        ({"must": [{"key": "n"}]}, 400, "invalid_filter"),
        ({"must": [7]}, 400, "invalid_filter"),
        ({"must": [{"key": "n", "match": 1, "extra": 1}]}, 422, "validation_error"),
        ({"should": [{"key": "n", "any": []}]}, 422, "validation_error"),
        ({"must": [{"key": "n", "any": list(range(1025))}]}, 400, "filter_too_large"),
        ({"must": [{"must": [{"key": "n", "match": i}]} for i in range(40)]}, 400, "filter_too_large"),
    ]
    for flt, status, code in cases:
        answer = client.post("/v1/collections/c/query", json={"vector": _vector(0), "filter": flt})
        assert answer.status_code == status, (flt, answer.text)
        body = answer.json()
        assert body["error"]["code"] == code and isinstance(body["error"]["message"], str), (flt, body)


def test_writes_and_index_jobs_beside_filtered_queries_never_fail(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(TROVE_SEAL_POINTS="200", TROVE_OPTIMIZER_INTERVAL_S="0.05")
    with httpx.Client(base_url=server.url, timeout=60) as http:
        _setup(http, n=400)
        stop = threading.Event()
        failures: list[str] = []
        answered: list[int] = []

        def query() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as mine:
                i = 0
                while not stop.is_set():
                    flt = {"must": [{"key": "n", "match": i % 6}], "should": [{"key": "tag", "any": ["x", "z"]}, {"key": "at", "range": {"lt": "2024-05-10"}}]}
                    answer = mine.post("/v1/collections/c/query", json={"vector": _vector(i), "k": 5, "filter": flt})
                    if answer.status_code != 200:
                        failures.append(answer.text)
                    elif any(h["payload"]["n"] != i % 6 for h in answer.json()["results"]):
                        failures.append(f"a hit outside the filter: {answer.text}")
                    else:
                        answered.append(len(answer.json()["results"]))
                    i += 1

        readers = [threading.Thread(target=query) for _ in range(2)]
        for reader in readers:
            reader.start()
        try:
            jobs = [http.post("/v1/collections/c/indexes", json={"key": key, "type": kind}).json()["job_id"] for key, kind in (("n", "integer"), ("tag", "keyword"))]
            for round_ in range(30):
                batch = [{"id": (round_ * 37 + j) % 600, "vector": _vector(round_ * 100 + j), "payload": {"n": j % 6, "tag": "xyz"[j % 3], "at": "2024-05-02"}} for j in range(20)]
                assert _put(http, batch).status_code == 200
                assert http.post("/v1/collections/c/points/delete", json={"ids": [round_ * 7 % 600]}).status_code == 200
            if_index = http.post("/v1/collections/c/indexes", json={"key": "at", "type": "datetime"}).json()["job_id"]
            states = [_wait(http, job)["state"] for job in [*jobs, if_index]]
        finally:
            stop.set()
            for reader in readers:
                reader.join()
        assert states == ["succeeded"] * 3
        assert not failures, failures[:3]
        assert len(answered) >= 20 and max(answered) == 5  # the readers ran throughout, and found points
