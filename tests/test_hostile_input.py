"""Hostile input through the real app (bundled encoder, FAISS, SQLite): every route's bad inputs are 4xx
with a specific code and change nothing; what is acknowledged reads back exactly; jobs name the bad row or
byte without quoting the file; files and models come only from their folders."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from encoders.errors import InvalidInput
from index.storage.store import PointRecord, Store
from index.validation import (
    MAX_FILTER_CONDITIONS,
    MAX_FILTER_VALUES,
    MAX_ID_CHARS,
    MAX_LOOKUP_IDS,
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    MAX_TEXT_CHARS,
    path_point_id,
)
from tests.test_builds import wait

VEC = [0.1, 0.2, 0.3, 0.4]
SURROGATE = "\ud800"
JOB_ID = "0" * 32
SECRET = "TOPSECRET-7f3a"  # planted in files and paths: no answer may repeat it


def raw(body: Any) -> bytes:
    """JSON as a hostile client may send it: lone surrogates as \\u escapes, NaN and Infinity as bare words."""
    return json.dumps(body, allow_nan=True).encode()


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def state(client: TestClient) -> dict[str, Any]:
    collections = {c["name"]: (c["points"], c["operation_id"]) for c in client.get("/v1/collections").json()["collections"]}
    return {"collections": collections, "jobs": len(client.get("/v1/jobs").json()["jobs"])}


@pytest.fixture
def hostile(client: TestClient) -> TestClient:
    assert client.post("/v1/collections", json={"name": "docs"}).status_code == 201
    assert client.post("/v1/collections", json={"name": "vecs", "dim": 4, "metric": "ip"}).status_code == 201
    client.put("/v1/collections/docs/points", json={"points": [{"id": 1, "text": "a note on cats"}, {"id": "two", "text": "a note on taxes"}]})
    client.put("/v1/collections/vecs/points", json={"points": [{"id": 1, "vector": VEC, "payload": {"k": "v"}}]})
    return client


def _point(**fields: Any) -> dict[str, Any]:
    return {"points": [{"id": "ok", "vector": VEC}, {"id": 9, "vector": VEC, **fields}]}


def _query(**fields: Any) -> dict[str, Any]:
    return {"vector": VEC, **fields}


def _must(n: int, values: int = 1) -> dict[str, Any]:
    return {"must": [{"key": f"k{i}", "match": {"any": list(range(values))}} for i in range(n)]}


PUT, POST, GET, DELETE = "PUT", "POST", "GET", "DELETE"
POINTS, QUERY = "/v1/collections/vecs/points", "/v1/collections/vecs/query"
# (bad-input class, method, path, body (None: no body; bytes: sent as is), status, code)
BAD_INPUT: list[tuple[str, str, str, Any, int, str]] = [
    # Unicode: lone surrogates (could never be encoded to UTF-8, so never read back) and NUL, in every kind of string
    ("surrogate in id", PUT, POINTS, _point(id=SURROGATE), 400, "invalid_id"),
    ("surrogate in text", PUT, POINTS, _point(text="hi " + SURROGATE), 400, "invalid_unicode"),
    ("surrogate in payload value", PUT, POINTS, _point(payload={"k": SURROGATE}), 400, "invalid_unicode"),
    ("surrogate in payload key", PUT, POINTS, _point(payload={SURROGATE: 1}), 400, "invalid_unicode"),
    ("surrogate in collection name", POST, "/v1/collections", {"name": "a" + SURROGATE, "dim": 4}, 400, "invalid_name"),
    ("surrogate in model", POST, "/v1/collections", {"name": "m", "model": SURROGATE}, 400, "invalid_unicode"),
    ("surrogate in query text", POST, "/v1/collections/docs/query", {"text": SURROGATE}, 400, "invalid_unicode"),
    ("surrogate in batch query", POST, "/v1/collections/docs/query/batch", {"queries": [{"text": "fine"}, {"text": SURROGATE}]}, 400, "invalid_unicode"),
    ("surrogate in filter value", POST, QUERY, _query(filter={"must": [{"key": "k", "match": SURROGATE}]}), 400, "invalid_unicode"),
    ("surrogate in delete ids", POST, f"{POINTS}/delete", {"ids": [1, SURROGATE]}, 400, "invalid_id"),
    ("surrogate in lookup ids", POST, f"{POINTS}/lookup", {"ids": [SURROGATE]}, 400, "invalid_id"),
    ("surrogate in build path", POST, "/v1/collections/docs/builds", {"source": {"path": SURROGATE, "format": "jsonl"}}, 400, "invalid_unicode"),
    ("surrogate in relevance query", POST, "/v1/collections/docs/relevance", {"examples": [{"query": SURROGATE, "relevant": [1]}]}, 400, "invalid_unicode"),
    ("surrogate in compression samples", PUT, "/v1/collections/docs/compression", {"leanvec": {"dim": 8, "variant": "ood", "queries": [SURROGATE]}}, 400, "invalid_unicode"),
    ("surrogate in upgrade model", POST, "/v1/collections/docs/upgrades", {"model": SURROGATE}, 400, "invalid_unicode"),
    ("NUL in text", PUT, POINTS, _point(text="a\x00b"), 400, "nul_character"),
    ("NUL in payload", PUT, POINTS, _point(payload={"k": "a\x00b"}), 400, "nul_character"),
    ("NUL in id", PUT, POINTS, _point(id="a\x00b"), 400, "invalid_id"),
    ("NUL in build path", POST, "/v1/collections/docs/builds", {"source": {"path": "imports/a\x00.jsonl", "format": "jsonl"}}, 400, "nul_character"),
    ("NUL in relevance path", POST, "/v1/collections/docs/relevance", {"path": "a\x00b"}, 400, "nul_character"),
    ("NUL in point path", GET, f"{POINTS}/a%00b", None, 400, "invalid_id"),
    ("NUL in collection path", DELETE, "/v1/collections/a%00", None, 400, "invalid_name"),
    ("NUL in upgrade path", GET, "/v1/collections/docs/upgrades/%00", None, 400, "invalid_id"),
    # Sizes
    ("id too long", PUT, POINTS, _point(id="x" * (MAX_ID_CHARS + 1)), 400, "invalid_id"),
    ("text too long", PUT, POINTS, _point(text="x" * (MAX_TEXT_CHARS + 1)), 400, "string_too_long"),
    ("payload too deep", PUT, POINTS, _point(payload=nested(MAX_PAYLOAD_DEPTH + 1)), 400, "payload_too_deep"),
    ("payload too big", PUT, POINTS, _point(payload={"k": "x" * MAX_PAYLOAD_BYTES}), 400, "payload_too_big"),
    ("payload key too long", PUT, POINTS, _point(payload={"k" * 300: 1}), 400, "string_too_long"),
    ("too many filter conditions", POST, QUERY, _query(filter=_must(MAX_FILTER_CONDITIONS + 1)), 400, "filter_too_large"),
    ("too many filter values", POST, QUERY, _query(filter=_must(2, MAX_FILTER_VALUES // 2 + 1)), 400, "filter_too_large"),
    ("too many lookup ids", POST, f"{POINTS}/lookup", {"ids": list(range(MAX_LOOKUP_IDS + 1))}, 422, "validation_error"),
    ("scroll page too large", POST, f"{POINTS}/scroll", {"limit": MAX_LOOKUP_IDS + 1}, 422, "validation_error"),
    ("scroll offset not a number", POST, f"{POINTS}/scroll", {"offset": "next"}, 400, "invalid_number"),
    ("JSON too deep to parse", PUT, POINTS, b'{"points": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "invalid_json"),
    # Numbers: finite, float32-representable in vectors, 64-bit integers, never a string or a boolean
    ("NaN in payload", PUT, POINTS, _point(payload={"k": float("nan")}), 400, "non_finite_number"),
    ("Infinity in payload", PUT, POINTS, _point(payload={"k": [float("inf")]}), 400, "non_finite_number"),
    ("NaN in vector", PUT, POINTS, _point(vector=[float("nan"), 1.0, 1.0, 1.0]), 400, "non_finite_vector"),
    ("float32 overflow in vector", PUT, POINTS, _point(vector=[1e39, 1.0, 1.0, 1.0]), 400, "non_finite_vector"),
    ("integer beyond float64 in vector", PUT, POINTS, _point(vector=[10**400, 1, 1, 1]), 400, "invalid_number"),
    ("denormal in vector", PUT, POINTS, _point(vector=[1e-40, 1.0, 1.0, 1.0]), 400, "subnormal_vector"),
    ("flushed-to-zero in vector", PUT, POINTS, _point(vector=[1e-50, 1.0, 1.0, 1.0]), 400, "subnormal_vector"),
    ("string as number in vector", PUT, POINTS, _point(vector=["0.1", 0.2, 0.3, 0.4]), 400, "invalid_number"),
    ("boolean as number in vector", PUT, POINTS, _point(vector=[True, 0.2, 0.3, 0.4]), 400, "invalid_number"),
    ("overflow in token vectors", PUT, POINTS, _point(vector=None, vectors=[[1e39, 1.0, 1.0, 1.0]]), 400, "non_finite_vector"),
    ("overflow in query vector", POST, QUERY, {"vector": [3.5e38, 1.0, 1.0, 1.0]}, 400, "non_finite_vector"),
    ("denormal in compression sample", PUT, "/v1/collections/vecs/compression", {"leanvec": {"dim": 2, "variant": "ood", "queries": [[1e-45, 1.0, 1.0, 1.0]]}}, 400, "subnormal_vector"),
    ("NaN as min_score", POST, QUERY, _query(min_score=float("nan")), 400, "non_finite_number"),
    ("NaN as rerank oversample", PUT, "/v1/collections/vecs/compression", {"quantizer": {"kind": "int8"}, "rerank": {"oversample": float("nan")}}, 400, "non_finite_number"),
    ("Infinity as backfill rate", POST, f"/v1/collections/docs/upgrades/{JOB_ID}/backfill", {"rate": float("inf")}, 400, "non_finite_number"),
    ("integer id beyond 64 bits", PUT, POINTS, _point(id=2**63), 400, "invalid_id"),
    ("integer payload beyond 64 bits", PUT, POINTS, _point(payload={"k": -(2**63) - 1}), 400, "number_out_of_range"),
    ("integer filter value beyond 64 bits", POST, QUERY, _query(filter={"must": [{"key": "k", "match": 2**64}]}), 400, "number_out_of_range"),
    ("integer relevance id beyond 64 bits", POST, "/v1/collections/docs/relevance", {"examples": [{"query": "q", "relevant": [2**64]}]}, 400, "invalid_id"),
    ("integer query parameter beyond 64 bits", GET, "/v1/jobs?limit=21124421602356563542016", None, 422, "validation_error"),
    ("negative seed", POST, "/v1/collections/docs/upgrades", {"model": "minilm-l6", "seed": -1}, 422, "validation_error"),
    ("string as number in k", POST, QUERY, _query(k="10"), 400, "invalid_number"),
    ("string as number in min_score", POST, QUERY, _query(min_score="0.5"), 400, "invalid_number"),
    ("boolean as number in dim", POST, "/v1/collections", {"name": "b", "dim": True}, 400, "invalid_number"),
    ("boolean id", PUT, POINTS, _point(id=True), 400, "invalid_id"),
    ("float id", POST, f"{POINTS}/delete", {"ids": [1.5]}, 400, "invalid_id"),
    ("object as filter value", POST, QUERY, _query(filter={"must": [{"key": "k", "match": {"any": [{}]}}]}), 400, "invalid_filter"),
    # Names and ids by full-match patterns
    ("collection name with trailing newline", POST, "/v1/collections", {"name": "notes\n", "dim": 4}, 400, "invalid_name"),
    ("collection name with a path", POST, "/v1/collections", {"name": "../etc", "dim": 4}, 400, "invalid_name"),
    ("collection path with trailing newline", GET, "/v1/collections/vecs%0A", None, 400, "invalid_name"),
    ("collection path with a space", GET, "/v1/collections/v%20s/relevance", None, 400, "invalid_name"),
    ("collection path too long", GET, f"/v1/collections/{'c' * 64}/compression", None, 400, "invalid_name"),
    ("collection path with a dot", GET, "/v1/collections/.hidden/upgrades", None, 400, "invalid_name"),
    ("collection path too long, text index", PUT, f"/v1/collections/{'c' * 64}/text_index", {}, 400, "invalid_name"),
    ("collection path with a space, text index", GET, "/v1/collections/v%20s/text_index", None, 400, "invalid_name"),
    ("collection path with a dot, text index", DELETE, "/v1/collections/.hidden/text_index", None, 400, "invalid_name"),
    ("NaN as fusion weight", POST, QUERY, _query(text="x", mode="hybrid", fusion={"weights": {"dense": float("nan")}}), 400, "non_finite_number"),
    ("string as number in fusion depth", POST, QUERY, _query(text="x", mode="hybrid", fusion={"depth": "5"}), 400, "invalid_number"),
    ("filter key with a quote", POST, QUERY, _query(filter={"must": [{"key": "a'b", "match": 1}]}), 400, "invalid_filter"),
    ("NaN as a range bound", POST, QUERY, _query(filter={"must": [{"key": "k", "range": {"gt": float("nan")}}]}), 400, "non_finite_number"),
    ("unparsable date-time range bound", POST, QUERY, _query(filter={"should": [{"key": "k", "range": {"gt": "soon"}}]}), 400, "invalid_filter"),
    ("payload index key with a quote", POST, "/v1/collections/vecs/indexes", {"key": "a'b", "type": "keyword"}, 400, "invalid_filter"),
    ("collection path with a dot, payload indexes", GET, "/v1/collections/.hidden/indexes", None, 400, "invalid_name"),
    ("payload index key with a space, in the path", DELETE, "/v1/collections/vecs/indexes/a%20b", None, 400, "invalid_filter"),
    ("malformed job id", GET, "/v1/jobs/%2E%2E", None, 400, "invalid_id"),
    ("malformed job id on cancel", DELETE, "/v1/jobs/not-a-job", None, 400, "invalid_id"),
    ("malformed upgrade id on promote", POST, "/v1/collections/docs/upgrades/%2E%2E/promote", None, 400, "invalid_id"),
    ("malformed upgrade id on rollback", POST, "/v1/collections/docs/upgrades/x/rollback", None, 400, "invalid_id"),
    ("malformed upgrade id on rebuild", POST, "/v1/collections/docs/upgrades/%2E%2E/rebuild", None, 400, "invalid_id"),
    # Bodies that are not JSON
    ("truncated JSON", PUT, POINTS, b'{"points": [', 400, "invalid_json"),
    ("invalid UTF-8 body", PUT, POINTS, b'{"points": [{"id": "\xff\xfe", "vector": [1, 1, 1, 1]}]}', 400, "invalid_json"),
    # Files and models only from their folders, saying nothing of what is elsewhere
    ("build source outside the imports folder", POST, "/v1/collections/docs/builds", {"source": {"path": f"/etc/{SECRET}", "format": "jsonl"}}, 400, "source_not_allowed"),
    ("build source escaping by ..", POST, "/v1/collections/docs/builds", {"source": {"path": f"../../{SECRET}.jsonl", "format": "jsonl"}}, 400, "source_not_allowed"),
    ("build ids file outside", POST, "/v1/collections/vecs/builds", {"source": {"path": "m.npy", "format": "npy", "ids_path": f"/etc/{SECRET}"}}, 400, "source_not_allowed"),
    ("relevance file outside", POST, "/v1/collections/docs/relevance", {"path": f"/etc/{SECRET}"}, 400, "source_not_allowed"),
    ("model path outside the models folder", POST, "/v1/collections", {"name": "m", "model": f"/usr/{SECRET}"}, 400, "model_not_allowed"),
    ("model name escaping by ..", POST, "/v1/collections", {"name": "m", "model": f"../../{SECRET}"}, 400, "model_not_allowed"),
]


@pytest.mark.parametrize("method,path,body,status,code", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_a_4xx_with_its_code_and_changes_nothing(hostile: TestClient, method: str, path: str, body: Any, status: int, code: str) -> None:
    before = state(hostile)
    content = body if isinstance(body, bytes) or body is None else raw(body)
    response = hostile.request(method, path, content=content, headers={"content-type": "application/json"} if content is not None else {})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and isinstance(error["details"], dict), error
    assert SECRET not in response.text and "/etc" not in response.text  # neither the path nor where it points
    assert state(hostile) == before


def test_the_table_covers_every_route_that_takes_input(hostile: TestClient) -> None:
    sent = {(method, path.split("?")[0]) for _, method, path, *_ in BAD_INPUT}
    for template, operations in hostile.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            if operation.get("parameters") or "requestBody" in operation:  # routes without input (/healthz, GET /v1/models) cannot get bad input
                assert any(m == method.upper() and _matches(template, path) for m, path in sent), (method, template)


def _matches(template: str, path: str) -> bool:
    parts, given = template.split("/"), path.split("/")
    return len(parts) == len(given) and all(t.startswith("{") or t == g for t, g in zip(parts, given, strict=True))


def test_a_point_every_write_accepts_is_readable_by_lookup_and_get(hostile: TestClient) -> None:
    ids: list[int | str] = [7, "7", "007", "a/b", ".", "..", " spaced ", "emoji \U0001f600", "-0", 2**63 - 1, -(2**63), "x" * MAX_ID_CHARS]
    points = [{"id": i, "vector": VEC, "payload": {"n": n}} for n, i in enumerate(ids)]
    assert hostile.put(POINTS, json={"points": points}).status_code == 200
    found = hostile.post(f"{POINTS}/lookup", json={"ids": [*ids, "missing"]}).json()
    assert [(p["id"], p["payload"]["n"]) for p in found["points"]] == [(i, n) for n, i in enumerate(ids)] and found["missing"] == ["missing"]
    for n, point_id in enumerate(ids):
        if _url_addressable(point_id, ids):
            got = hostile.get(f"{POINTS}/{quote(str(point_id), safe='')}")
            assert got.status_code == 200 and got.json()["id"] == point_id and got.json()["payload"] == {"n": n}, point_id


def _url_addressable(point_id: int | str, ids: list[int | str]) -> bool:
    """What the README says GET .../points/{id} reaches: not ids with '/', nor '.' or '..', nor a string an integer id shadows."""
    if isinstance(point_id, int):
        return True
    return "/" not in point_id and point_id not in {".", ".."} and path_point_id(point_id) not in ids


@pytest.mark.parametrize(
    "record",
    [
        PointRecord(id="a", vector=np.ones(4, np.float32), payload={"k": SURROGATE}),
        PointRecord(id="a", vector=np.ones(4, np.float32), payload={"k": float("nan")}),
        PointRecord(id="a", vector=np.ones(4, np.float32), payload=nested(MAX_PAYLOAD_DEPTH + 1)),
        PointRecord(id="a", vector=np.ones(4, np.float32), text="x\x00"),
        PointRecord(id=SURROGATE, vector=np.ones(4, np.float32)),
    ],
    ids=["surrogate", "NaN", "too deep", "NUL", "surrogate id"],
)
def test_the_store_refuses_what_could_not_be_read_back(tmp_path: Path, record: PointRecord) -> None:
    """Defence in depth, below the edge: both of the store's write paths (a write, a build's staged chunk)."""
    store = Store(tmp_path / "store.sqlite", 4)
    with pytest.raises(InvalidInput):
        store.upsert([record], model_version=1)
    with pytest.raises(InvalidInput):
        store.stage("build", np.array([store.reserve_rows(1)]), [record])
    assert store.count() == 0 and store.last_seq == 0


# ---- write and read back, byte for byte ---------------------------------------------------------

# Full Unicode, lone surrogates (Hypothesis leaves them out unless asked) and a few characters that break naive code.
HOSTILE_CHARS = st.one_of(st.characters(), st.characters(categories=["Cs"]), st.sampled_from(["\x00", "\n", "\u2028", "\ufeff", "\U0010ffff"]))
STRINGS = st.text(HOSTILE_CHARS, max_size=40)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, 2**53 + 1, 2**63 - 1, -(2**63)]),
)
JSON = st.recursive(st.none() | st.booleans() | NUMBERS | STRINGS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STRINGS, inner, max_size=4), max_leaves=12)
DEEP = st.builds(lambda depth, leaf: _wrap(leaf, depth), st.integers(min_value=1, max_value=MAX_PAYLOAD_DEPTH + 3), JSON)
IDS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.text(HOSTILE_CHARS, min_size=1, max_size=40),
    st.text(min_size=MAX_ID_CHARS - 1, max_size=MAX_ID_CHARS + 1),
)
POINT = st.fixed_dictionaries(
    {"id": IDS, "text": st.text(HOSTILE_CHARS, min_size=1, max_size=40)},
    optional={"payload": st.one_of(st.dictionaries(STRINGS, JSON, max_size=5), DEEP)},
)


def _wrap(leaf: Any, depth: int) -> dict[str, Any]:
    value = leaf
    for level in range(depth):
        value = {f"l{level}": value}
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, allow_nan=True)


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(points=st.lists(POINT, min_size=1, max_size=3))
def test_a_write_is_refused_whole_or_reads_back_byte_for_byte(hostile: TestClient, points: list[dict[str, Any]]) -> None:
    before = state(hostile)["collections"]["docs"]
    response = hostile.put("/v1/collections/docs/points", content=raw({"points": points}), headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        event(f"refused: {response.json()['error']['code']}")
        assert state(hostile)["collections"]["docs"] == before
        return
    event("acknowledged")
    assert response.status_code == 200
    sent = {_canonical(p["id"]): p for p in points}
    found = hostile.post("/v1/collections/docs/points/lookup", json={"ids": [p["id"] for p in points]}).json()
    assert found["missing"] == []
    for point in found["points"]:
        original = sent[_canonical(point["id"])]
        assert _canonical([point["id"], point["text"], point["payload"]]) == _canonical([original["id"], original["text"], original.get("payload")])
        if isinstance(point["id"], int):
            by_url = hostile.get(f"/v1/collections/docs/points/{point['id']}").json()
            assert _canonical(by_url["payload"]) == _canonical(original.get("payload"))
    hits = hostile.post("/v1/collections/docs/query", json={"text": "anything", "k": 10}).json()["results"]
    by_id = {_canonical(h["id"]): h for h in hits}
    for key, original in sent.items():
        assert _canonical(by_id[key].get("payload")) == _canonical(original.get("payload"))
    hostile.post("/v1/collections/docs/points/delete", json={"ids": [p["id"] for p in points]})  # the next example starts from the fixture's points


# ---- jobs: a file that is not what it says fails with a code and the row or byte ----------------


def _refusal(client: TestClient, route: str, body: dict[str, Any]) -> dict[str, Any]:
    """The error a job request ends in: refused when it comes (what the file's first rows show), or its job failed."""
    answer = client.post(route, json=body)
    if answer.status_code == 400:
        return dict(answer.json()["error"])
    assert answer.status_code == 202, answer.text
    job = wait(client, answer.json()["job_id"])
    assert job["state"] == "failed", job
    return dict(job["error"])


def _jsonl(*rows: str) -> bytes:
    return "".join(r + "\n" for r in rows).encode()


GOOD_ROW = json.dumps({"id": 1, "text": "fine"})
ROW_2 = len(GOOD_ROW) + 1  # where the second line starts
OPENING = '{"id": 2, "text": "'
MANY = [json.dumps({"id": i, "text": f"row {i}"}) for i in range(150)]  # more than a request reads: the job finds what follows
BAD_FILES: list[tuple[str, str, bytes, str, dict[str, int]]] = [
    ("invalid UTF-8", "jsonl", _jsonl(GOOD_ROW, OPENING + SECRET).rstrip() + b'\xff"}\n', "invalid_utf8", {"row": 2, "byte": ROW_2 + len(OPENING + SECRET)}),
    ("bare NaN", "jsonl", _jsonl(GOOD_ROW, '{"id": 2, "vector": [NaN, 1]}'), "invalid_json", {"row": 2}),
    ("nested beyond the parser", "jsonl", _jsonl(GOOD_ROW, '{"id": 2, "payload": ' + "[" * 50_000 + "]" * 50_000 + "}"), "invalid_json", {"row": 2}),
    ("broken JSON", "jsonl", _jsonl(GOOD_ROW, OPENING + SECRET + '" oops}'), "invalid_json", {"row": 2, "byte": ROW_2 + len(OPENING + SECRET + '" ')}),
    ("lone surrogate", "jsonl", _jsonl(GOOD_ROW, '{"id": 2, "text": "\\ud800"}'), "invalid_unicode", {"row": 2}),
    ("payload too deep", "jsonl", _jsonl(GOOD_ROW, json.dumps({"id": 2, "text": "t", "payload": nested(40)})), "payload_too_deep", {"row": 2}),
    ("float32 overflow", "jsonl", _jsonl(json.dumps({"id": 1, "vector": [1e39] * 384})), "non_finite_vector", {"row": 1}),
    ("unknown field", "jsonl", _jsonl(GOOD_ROW, json.dumps({"id": 2, "text": "t", SECRET: 1})), "bad_row", {"row": 2}),
    ("id beyond 64 bits", "jsonl", _jsonl(GOOD_ROW, json.dumps({"id": 2**64, "text": "t"})), "invalid_id", {"row": 2}),
    ("bad row past the first rows", "jsonl", _jsonl(*MANY, '{"id": 150, "text": "' + SECRET + '\\udc00"}'), "invalid_unicode", {"row": 151}),
    ("binary declared JSONL", "jsonl", bytes(range(255, -1, -1)) * 4, "invalid_utf8", {"row": 1, "byte": 0}),
    ("JSONL declared Parquet", "parquet", _jsonl(GOOD_ROW, json.dumps({"id": 2, "text": SECRET})), "invalid_parquet", {}),
    ("text declared npy", "npy", SECRET.encode() * 10, "invalid_npy", {}),
]


@pytest.mark.parametrize("fmt,content,code,where", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_fails_its_build_with_a_code_and_the_row_or_byte(hostile: TestClient, tmp_path: Path, fmt: str, content: bytes, code: str, where: dict[str, int]) -> None:
    path = tmp_path / f"source.{fmt}"
    path.write_bytes(content)
    before = state(hostile)["collections"]
    error = _refusal(hostile, "/v1/collections/docs/builds", {"source": {"path": str(path), "format": fmt}})
    assert error["code"] == code and {k: error["details"].get(k) for k in where} == where, error
    assert SECRET not in json.dumps(error) and str(tmp_path) not in json.dumps(error)
    assert state(hostile)["collections"] == before


@pytest.mark.parametrize(
    "matrix,code,row",
    [(np.array([["a", "b"]]), "invalid_npy", None), (np.ones((3, 4, 1)), "invalid_npy", None), (np.array([[1.0, 1, 1, 1], [1, 1, np.inf, 1]]), "non_finite_vector", 2), (np.array([[1.0, 1, 1, 1], [1e-42, 1, 1, 1]]), "subnormal_vector", 2)],
    ids=["strings", "3-d", "infinity", "denormal"],
)
def test_npy_contents_are_checked_like_any_vector(hostile: TestClient, tmp_path: Path, matrix: np.ndarray, code: str, row: int | None) -> None:
    np.save(tmp_path / "m.npy", matrix)
    error = _refusal(hostile, "/v1/collections/vecs/builds", {"source": {"path": str(tmp_path / "m.npy"), "format": "npy"}})
    assert error["code"] == code and error["details"].get("row") == row, error


def test_a_bad_relevance_file_names_its_row(hostile: TestClient, tmp_path: Path) -> None:
    path = tmp_path / "examples.jsonl"
    path.write_text(json.dumps({"query": "cats", "relevant": [1]}) + "\n" + json.dumps({"query": 5, "relevant": [SECRET]}) + "\n")
    error = _refusal(hostile, "/v1/collections/docs/relevance", {"path": str(path)})
    assert error["code"] == "bad_row" and error["details"]["row"] == 2 and SECRET not in json.dumps(error), error


# ---- safe defaults: the imports folder ----------------------------------------------------------


def test_jobs_read_only_the_imports_folder_by_default(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(build_source_dirs=[])
    client.post("/v1/collections", json={"name": "docs"})
    imports = tmp_path / "data" / "imports"
    (imports / "rows.jsonl").write_text(_jsonl(GOOD_ROW).decode())
    outside = tmp_path / "outside.jsonl"
    outside.write_text(_jsonl(GOOD_ROW).decode())
    (imports / "link.jsonl").symlink_to(outside)
    job = wait(client, client.post("/v1/collections/docs/builds", json={"source": {"path": "rows.jsonl", "format": "jsonl"}}).json()["job_id"])
    assert job["state"] == "succeeded" and client.get("/v1/collections/docs").json()["points"] == 1
    for path in [str(outside), "link.jsonl", "../outside.jsonl", str(imports / ".." / "outside.jsonl")]:
        for route, body in [("builds", {"source": {"path": path, "format": "jsonl"}}), ("relevance", {"path": path})]:
            response = client.post(f"/v1/collections/docs/{route}", json=body)
            assert response.status_code == 400 and response.json()["error"]["code"] == "source_not_allowed", (route, path)
            assert response.json()["error"]["details"] == {} and "outside" not in response.text
