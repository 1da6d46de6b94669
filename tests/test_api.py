"""The v1 HTTP contract through the ASGI app: happy paths, every bad input, auth, metrics."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

VEC = [0.1, 0.2, 0.3, 0.4]


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return dict(body["error"])


@pytest.fixture
def text_collection(client: TestClient) -> str:
    assert client.post("/v1/collections", json={"name": "docs"}).status_code == 201
    points = [
        {"id": 1, "text": "The cat sat on the warm windowsill.", "payload": {"lang": "en", "tags": ["pets", "home"]}},
        {"id": "two", "text": "Central banks raised interest rates again.", "payload": {"lang": "en", "tags": ["finance"]}},
        {"id": 3, "text": "Le chat dort sur le canapé.", "payload": {"lang": "fr", "tags": ["pets"]}},
    ]
    ack = client.put("/v1/collections/docs/points", json={"points": points}).json()
    assert ack == {"status": "acknowledged", "count": 3, "operation_id": 1}
    return "docs"


@pytest.fixture
def vector_collection(client: TestClient) -> str:
    assert client.post("/v1/collections", json={"name": "vecs", "dim": 4, "metric": "ip"}).status_code == 201
    return "vecs"


def test_models_lists_the_bundled_encoder(client: TestClient) -> None:
    models = client.get("/v1/models").json()["models"]
    assert {"name": "minilm-l6", "dim": 384, "kind": "dense"}.items() <= models[0].items()


def test_collection_lifecycle(client: TestClient, text_collection: str) -> None:
    info = client.get("/v1/collections/docs").json()
    assert info["points"] == 3 and info["model"] == "minilm-l6" and info["dim"] == 384 and info["metric"] == "cosine"
    assert info["memory_bytes"] >= 3 * 384 * 4 and info["stages"][0]["bytes_per_vector"] == 1536
    assert [c["name"] for c in client.get("/v1/collections").json()["collections"]] == ["docs"]
    assert client.delete("/v1/collections/docs").status_code == 204
    _error(client.get("/v1/collections/docs"), 404, "collection_not_found")
    assert client.post("/v1/collections", json={"name": "docs"}).status_code == 201  # the name is free again
    assert client.get("/v1/collections/docs").json()["points"] == 0


def test_text_query_ranks_by_meaning_and_filters(client: TestClient, text_collection: str) -> None:
    body = client.post("/v1/collections/docs/query", json={"text": "a kitten napping", "k": 3}).json()
    assert [r["id"] for r in body["results"]][:1] == [1] and body["took_ms"] >= 0
    assert body["results"][0]["payload"] == {"lang": "en", "tags": ["pets", "home"]}
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)

    filtered = client.post(
        "/v1/collections/docs/query", json={"text": "a kitten napping", "filter": {"must": [{"key": "tags", "match": {"value": "pets"}}]}, "with_payload": False}
    ).json()["results"]
    assert [r["id"] for r in filtered] == [1, 3] and "payload" not in filtered[0]
    any_of = client.post(
        "/v1/collections/docs/query", json={"text": "money", "filter": {"must": [{"key": "lang", "match": {"any": ["fr", "xx"]}}]}}
    ).json()["results"]
    assert [r["id"] for r in any_of] == [3]
    above = client.post("/v1/collections/docs/query", json={"text": "a kitten napping", "min_score": scores[0] - 1e-6}).json()["results"]
    assert [r["id"] for r in above] == [1]


def test_batch_query_answers_each_query(client: TestClient, text_collection: str) -> None:
    queries = [{"text": "interest rates", "k": 1}, {"text": "a cat", "k": 2}, {"text": "chat", "k": 1, "filter": {"must": [{"key": "lang", "match": "fr"}]}}]
    results = client.post("/v1/collections/docs/query/batch", json={"queries": queries}).json()["results"]
    assert [[r["id"] for r in rs] for rs in results] == [["two"], [1, 3], [3]]


def test_points_get_upsert_replace_and_delete(client: TestClient, text_collection: str) -> None:
    point = client.get("/v1/collections/docs/points/1", params={"with_vector": True}).json()
    assert point["id"] == 1 and point["text"].startswith("The cat") and len(point["vector"]) == 384
    assert client.get("/v1/collections/docs/points/two").json()["payload"]["tags"] == ["finance"]
    client.put("/v1/collections/docs/points", json={"points": [{"id": 1, "text": "Stock markets fell.", "payload": {"v": 2}}]})
    assert client.get("/v1/collections/docs/points/1").json()["payload"] == {"v": 2}
    assert client.get("/v1/collections/docs").json()["points"] == 3
    ack = client.post("/v1/collections/docs/points/delete", json={"ids": [1, "missing"]}).json()
    assert ack["count"] == 1 and ack["operation_id"] == 3
    _error(client.get("/v1/collections/docs/points/1"), 404, "point_not_found")
    hits = client.post("/v1/collections/docs/query", json={"text": "stock markets", "k": 5}).json()["results"]
    assert 1 not in [h["id"] for h in hits]


def test_string_and_integer_ids_stay_distinct(client: TestClient, vector_collection: str) -> None:
    client.put("/v1/collections/vecs/points", json={"points": [{"id": 7, "vector": VEC, "payload": {"kind": "int"}}, {"id": "7", "vector": VEC, "payload": {"kind": "str"}}]})
    results = client.post("/v1/collections/vecs/query", json={"vector": VEC, "k": 5}).json()["results"]
    assert sorted((type(r["id"]).__name__, r["payload"]["kind"]) for r in results) == [("int", "int"), ("str", "str")]


BAD_WRITES: list[tuple[str, dict[str, Any], int, str]] = [
    ("wrong dimension", {"points": [{"id": 1, "vector": [1.0, 2.0]}]}, 400, "wrong_dimension"),
    ("infinite value", {"points": [{"id": 1, "vector": [1.0, 2.0, 3.0, 1e39]}]}, 400, "non_finite_vector"),
    ("text in a vectors-only collection", {"points": [{"id": 1, "text": "hello"}]}, 400, "text_not_supported"),
    ("empty text", {"points": [{"id": 1, "text": "   ", "vector": VEC}]}, 400, "empty_text"),
    ("no content", {"points": [{"id": 1}]}, 400, "missing_content"),
    ("duplicate ids", {"points": [{"id": 1, "vector": VEC}, {"id": 1, "vector": VEC}]}, 400, "duplicate_id"),
    ("empty batch", {"points": []}, 422, "validation_error"),
    ("float id", {"points": [{"id": 1.5, "vector": VEC}]}, 400, "invalid_id"),
    ("unknown field", {"points": [{"id": 1, "vector": VEC, "colour": "red"}]}, 422, "validation_error"),
    ("token vectors in a dense collection", {"points": [{"id": 1, "vectors": [VEC]}]}, 400, "vectors_not_supported"),
]


@pytest.mark.parametrize("body,status,code", [case[1:] for case in BAD_WRITES], ids=[case[0] for case in BAD_WRITES])
def test_bad_batches_are_rejected_whole(client: TestClient, vector_collection: str, body: dict[str, Any], status: int, code: str) -> None:
    # One good point goes first: a rejected batch must not write it.
    good = {"id": "good", "vector": VEC}
    body = {**body, "points": [good, *body["points"]]} if body["points"] else body
    _error(client.put("/v1/collections/vecs/points", json=body), status, code)
    assert client.get("/v1/collections/vecs").json()["points"] == 0
    _error(client.get("/v1/collections/vecs/points/good"), 404, "point_not_found")


def test_nan_in_raw_json_is_rejected(client: TestClient, vector_collection: str) -> None:
    response = client.put("/v1/collections/vecs/points", content=b'{"points": [{"id": 1, "vector": [NaN, 1, 2, 3]}]}', headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] in {"non_finite_vector", "invalid_json"}
    assert client.get("/v1/collections/vecs").json()["points"] == 0


BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any] | None, int, str]] = [
    ("unknown collection", "POST", "/v1/collections/nope/query", {"vector": VEC}, 404, "collection_not_found"),
    ("unknown model", "POST", "/v1/collections", {"name": "m", "model": "no-such-model"}, 404, "model_not_found"),
    ("duplicate collection", "POST", "/v1/collections", {"name": "vecs", "dim": 4}, 409, "collection_exists"),
    ("bad collection name", "POST", "/v1/collections", {"name": "../etc", "dim": 4}, 400, "invalid_name"),
    ("model and dim disagree", "POST", "/v1/collections", {"name": "m", "model": "minilm-l6", "dim": 12}, 400, "dimension_mismatch"),
    ("unknown metric", "POST", "/v1/collections", {"name": "m", "dim": 4, "metric": "hamming"}, 422, "validation_error"),
    ("query wrong dimension", "POST", "/v1/collections/vecs/query", {"vector": [1.0]}, 400, "wrong_dimension"),
    ("query text without model", "POST", "/v1/collections/vecs/query", {"text": "hi"}, 400, "text_not_supported"),
    ("query with nothing", "POST", "/v1/collections/vecs/query", {"k": 3}, 400, "invalid_query"),
    ("query with both", "POST", "/v1/collections/vecs/query", {"vector": VEC, "text": "x"}, 400, "invalid_query"),
    ("k out of range", "POST", "/v1/collections/vecs/query", {"vector": VEC, "k": 0}, 422, "validation_error"),
    ("bad filter key", "POST", "/v1/collections/vecs/query", {"vector": VEC, "filter": {"must": [{"key": "a'b", "match": 1}]}}, 400, "invalid_filter"),
    ("min_relevance without calibrator", "POST", "/v1/collections/vecs/query", {"vector": VEC, "min_relevance": 0.5}, 400, "no_calibrator"),
    ("unknown point", "GET", "/v1/collections/vecs/points/404", None, 404, "point_not_found"),
    ("drop unknown collection", "DELETE", "/v1/collections/nope", None, 404, "collection_not_found"),
    ("unknown route", "GET", "/v1/nothing-here", None, 404, "not_found"),
]


@pytest.mark.parametrize("method,path,body,status,code", [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests(client: TestClient, vector_collection: str, method: str, path: str, body: dict[str, Any] | None, status: int, code: str) -> None:
    _error(client.request(method, path, json=body), status, code)


def test_malformed_json_is_400(client: TestClient, vector_collection: str) -> None:
    _error(client.put("/v1/collections/vecs/points", content=b'{"points": [', headers={"content-type": "application/json"}), 400, "invalid_json")


def test_too_large_request_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_request_bytes=2000)
    client.post("/v1/collections", json={"name": "vecs", "dim": 4})
    points = [{"id": i, "vector": VEC} for i in range(100)]
    _error(client.put("/v1/collections/vecs/points", json={"points": points}), 413, "payload_too_large")

    def chunks() -> Any:  # no Content-Length: the limit is enforced while streaming
        yield b'{"points": ['
        for i in range(100):
            yield (b"," if i else b"") + f'{{"id": {i}, "vector": [0.1, 0.2, 0.3, 0.4]}}'.encode()
        yield b"]}"

    _error(client.put("/v1/collections/vecs/points", content=chunks(), headers={"content-type": "application/json"}), 413, "payload_too_large")
    assert client.get("/v1/collections/vecs").json()["points"] == 0


def test_the_app_sets_how_long_a_thread_may_hold_the_gil(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    """A build thread's Python work must not keep queries waiting 5 ms (Python's default) each time they need the GIL."""
    import sys

    before = sys.getswitchinterval()
    try:
        make_client(gil_switch_interval_ms=0.7)
        assert sys.getswitchinterval() == pytest.approx(0.0007)
        make_client(data_dir=tmp_path / "another")
        assert sys.getswitchinterval() == pytest.approx(0.0005)  # the default
    finally:
        sys.setswitchinterval(before)


def test_the_server_freezes_its_imported_heap_but_not_what_it_can_drop(tmp_path: Path) -> None:
    """Full collections scan every tracked object holding the GIL: with the imported heap in them one stalled
    queries 130 ms during a build. A server process freezes what exists before its app is made, and a
    collection its replay loads and a request then drops is still freed (frozen cyclic garbage never would be)."""
    script = f"""
import gc, weakref
from fastapi.testclient import TestClient
from service.app import create_app, freeze_start_up_heap
from service.settings import Settings
before = gc.get_freeze_count()
freeze_start_up_heap()  # as `trove serve` does
frozen = gc.get_freeze_count()
settings = Settings(data_dir={str(tmp_path / "data")!r})
with TestClient(create_app(settings)) as client:
    assert client.post("/v1/collections", json={{"name": "c", "dim": 4}}).status_code == 201
with TestClient(create_app(settings)) as client:  # a restart in the same process: replay loads "c"
    while client.get("/readyz").status_code != 200:
        pass
    ref = weakref.ref(client.app.state.catalog.get("c"))
    assert client.delete("/v1/collections/c").status_code == 204
gc.collect()
print(before, frozen, ref() is None)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    before, frozen, freed = done.stdout.split()
    assert int(before) == 0 and int(frozen) > 10_000
    assert freed == "True"


def test_api_keys_read_only_and_missing(make_client: Callable[..., TestClient]) -> None:
    client = make_client(client_host="10.0.0.8", api_keys=["rw-key"], read_only_api_keys=["ro-key"])
    _error(client.get("/v1/collections"), 401, "unauthenticated")
    _error(client.get("/v1/collections", headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key")
    rw = {"Authorization": "Bearer rw-key"}
    ro = {"api-key": "ro-key"}
    assert client.post("/v1/collections", json={"name": "v", "dim": 4}, headers=rw).status_code == 201
    assert client.put("/v1/collections/v/points", json={"points": [{"id": 1, "vector": VEC}]}, headers=rw).status_code == 200
    assert client.post("/v1/collections/v/query", json={"vector": VEC}, headers=ro).status_code == 200
    _error(client.put("/v1/collections/v/points", json={"points": [{"id": 2, "vector": VEC}]}, headers=ro), 403, "read_only_key")
    _error(client.delete("/v1/collections/v", headers=ro), 403, "read_only_key")
    assert client.get("/healthz").status_code == 200


def test_without_keys_only_localhost_is_served(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    remote = make_client(client_host="192.0.2.10", data_dir=tmp_path / "remote")
    _error(remote.get("/v1/collections"), 401, "unauthenticated")
    local = make_client(client_host="127.0.0.1", data_dir=tmp_path / "local")
    assert local.get("/v1/collections").status_code == 200


def test_metrics_count_requests_by_route_and_points(client: TestClient, vector_collection: str) -> None:
    client.put("/v1/collections/vecs/points", json={"points": [{"id": i, "vector": VEC} for i in range(5)]})
    client.post("/v1/collections/vecs/query", json={"vector": VEC})
    text = client.get("/metrics").text
    assert 'trove_requests_total{method="POST",route="/v1/collections/{name}/query",status="200"} 1.0' in text
    assert 'trove_collection_points{collection="vecs"} 5.0' in text
    assert "trove_request_duration_seconds_bucket" in text


def test_openapi_documents_the_v1_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/v1/models", "/v1/collections", "/v1/collections/{name}", "/v1/collections/{name}/points", "/v1/collections/{name}/query", "/v1/collections/{name}/query/batch"]:
        assert path in paths


def test_scroll_pages_through_every_point_whatever_its_id(client: TestClient) -> None:
    assert client.post("/v1/collections", json={"name": "s", "dim": 4, "metric": "ip"}).status_code == 201
    ids: list[Any] = [*range(7), "doc-a", "7", "x/y"]
    client.put("/v1/collections/s/points", json={"points": [{"id": i, "vector": VEC, "payload": {"n": n}} for n, i in enumerate(ids)]})
    client.post("/v1/collections/s/points/delete", json={"ids": [3]})
    client.put("/v1/collections/s/points", json={"points": [{"id": 0, "vector": VEC}]})  # an overwrite moves 0 to the end
    seen: list[Any] = []
    offset = None
    while True:
        page = client.post("/v1/collections/s/points/scroll", json={"limit": 3, **({"offset": offset} if offset is not None else {})}).json()
        assert len(page["points"]) <= 3 and all(p["vector"] is None for p in page["points"])
        seen += [p["id"] for p in page["points"]]
        offset = page["next_offset"]
        if offset is None:
            break
    assert seen == [1, 2, 4, 5, 6, "doc-a", "7", "x/y", 0]
    with_vectors = client.post("/v1/collections/s/points/scroll", json={"limit": 100, "with_vector": True}).json()
    assert with_vectors["next_offset"] is None and len(with_vectors["points"]) == 9 and with_vectors["points"][0]["vector"] is not None
    _error(client.post("/v1/collections/s/points/scroll", json={"limit": 0}), 422, "validation_error")
    _error(client.post("/v1/collections/s/points/scroll", json={"offset": "a"}), 400, "invalid_number")
