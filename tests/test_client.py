"""The Python clients, sync and async, against a real `trove serve`: typed results, errors as exceptions, retries."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from service.client import (
    AsyncTroveClient,
    BadRequest,
    Conflict,
    NotFound,
    NotReady,
    Overloaded,
    Point,
    QueryResult,
    ScoredPoint,
    TroveClient,
    WriteAck,
)
from tests.conftest import ServerProcess

DIM = 16


def _vectors(n: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, DIM)).astype(np.float32)


def test_sync_client_typed_results_and_errors(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    vectors = _vectors(50)
    with TroveClient(server.url) as trove:
        trove.create_collection("v", dim=DIM, metric="ip")
        ack = trove.upsert("v", [{"id": i, "vector": v.tolist(), "payload": {"i": i}} for i, v in enumerate(vectors)])
        assert isinstance(ack, WriteAck) and ack.count == 50 and ack.status == "acknowledged"
        found = trove.query("v", vector=vectors[7].tolist(), k=3)
        assert isinstance(found, QueryResult) and isinstance(found.results[0], ScoredPoint)
        exact = np.argsort(-(vectors @ vectors[7]), kind="stable")[:3]
        assert found.ids == exact.tolist() and found.results[0].payload == {"i": int(exact[0])}
        assert trove.query("v", vector=vectors[7].tolist(), k=3, with_payload=False).results[0].payload is None
        batch = trove.query_batch("v", [{"vector": vectors[i].tolist(), "k": 1} for i in (1, 2)])
        assert [[h.id for h in r] for r in batch.results] == [[int(np.argmax(vectors @ vectors[i]))] for i in (1, 2)]
        assert trove.get_point("v", 3, with_vector=True) == Point(id=3, text=None, payload={"i": 3}, model_version=1, vector=pytest.approx(vectors[3].tolist()))
        assert trove.lookup("v", [4, "nope"]).missing == ["nope"]

        with pytest.raises(NotFound) as missing:
            trove.get_point("v", 999)
        assert missing.value.status == 404 and missing.value.code == "point_not_found"
        with pytest.raises(BadRequest) as wrong:
            trove.query("v", vector=[1.0, 2.0], k=1)
        assert wrong.value.code == "wrong_dimension" and wrong.value.details["expected"] == DIM
        with pytest.raises(Conflict):
            trove.create_collection("v", dim=DIM)
        assert trove.delete("v", [3]).count == 1


def test_async_client_answers_as_the_sync_one(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    vectors = _vectors(40)

    async def run() -> tuple[list[QueryResult], QueryResult]:
        async with AsyncTroveClient(server.url) as trove:
            await trove.create_collection("a", dim=DIM, metric="ip")
            assert (await trove.upsert("a", [{"id": i, "vector": v.tolist()} for i, v in enumerate(vectors)])).count == 40
            together = await asyncio.gather(*(trove.query("a", vector=v.tolist(), k=5) for v in vectors[:20]))
            with pytest.raises(NotFound) as gone:
                await trove.collection("nope")
            assert gone.value.code == "collection_not_found"
            return list(together), await trove.query("a", vector=vectors[0].tolist(), k=5)

    together, alone = asyncio.run(run())
    with TroveClient(server.url) as trove:
        assert [r.ids for r in together] == [trove.query("a", vector=v.tolist(), k=5).ids for v in vectors[:20]]
    assert alone.results == together[0].results


def test_429_is_retried_after_the_servers_retry_after(start_server: Callable[..., ServerProcess]) -> None:
    """One request in flight at most: concurrent queries get 429 + Retry-After 1; the client waits and retries."""
    server = start_server(TROVE_MAX_CONCURRENT_REQUESTS="1")
    vectors = _vectors(30)
    with TroveClient(server.url) as trove:
        trove.create_collection("r", dim=DIM, metric="ip")
        trove.upsert("r", [{"id": i, "vector": v.tolist()} for i, v in enumerate(vectors)])

    async def burst(retries: int) -> tuple[list[QueryResult | BaseException], float]:
        async with AsyncTroveClient(server.url, retries=retries) as trove:
            started = time.monotonic()
            answers = await asyncio.gather(*(trove.query("r", vector=v.tolist(), k=1) for v in vectors[:12]), return_exceptions=True)
            return answers, time.monotonic() - started

    refused, _ = asyncio.run(burst(retries=0))
    assert any(isinstance(a, Overloaded) and a.status == 429 and a.retry_after == 1.0 for a in refused), "the limit refused some at once"
    answered, seconds = asyncio.run(burst(retries=20))
    assert [a.ids for a in answered if isinstance(a, QueryResult)] == [[i] for i in range(12)], answered
    assert seconds >= 1.0, "a refused query waited the Retry-After second before its retry"


def test_503_is_retried_then_raised_as_not_ready() -> None:
    """The retry policy on its own (the server's 503 comes from replay, too brief to aim at): a stand-in transport."""
    calls: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        body = {"error": {"code": "not_ready", "message": "loading", "details": {}}}
        return httpx.Response(503, json=body, headers={"Retry-After": "0.2"}) if len(calls) < 3 else httpx.Response(200, json={"models": []})

    trove = TroveClient("http://trove.test", retries=3)
    trove._http = httpx.Client(base_url="http://trove.test", transport=httpx.MockTransport(answer))
    assert trove.models() == []
    assert len(calls) == 3 and all(b - a >= 0.2 for a, b in itertools.pairwise(calls))
    calls.clear()
    trove.retries = 1
    with pytest.raises(NotReady) as raised:
        trove.models()
    assert raised.value.code == "not_ready" and raised.value.retry_after == 0.2 and len(calls) == 2
