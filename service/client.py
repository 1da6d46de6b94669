"""Python clients for the v1 API (httpx), blocking (`TroveClient`) and asyncio (`AsyncTroveClient`).

Both send the same requests and return the same typed results: each endpoint is described once, as a `_Call`
(method, path, body, and how to read the answer), and each client only sends it. An error answer raises the
`TroveAPIError` subclass of its status, carrying the server's `code`, `message` and `details`. Answers 429
(overloaded) and 503 (not ready) are retried, up to ``retries`` times, after the server's `Retry-After`
(else an exponential backoff): both are refused before any work is done, so every request may be retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

T = TypeVar("T")
PointId = int | str
RETRY_STATUSES = frozenset({429, 503})
JOB_DONE = frozenset({"succeeded", "failed", "cancelled"})


# ---- errors ------------------------------------------------------------------


class TroveAPIError(Exception):
    """An error answer: its HTTP status and the server's error body."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any], retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details, self.retry_after = status, code, message, details, retry_after


class BadRequest(TroveAPIError):
    """400: the input policy refused the request (``code`` says which check)."""


class Unauthenticated(TroveAPIError):
    """401: no or unknown API key."""


class Forbidden(TroveAPIError):
    """403: a read-only key on a write."""


class NotFound(TroveAPIError):
    """404: no such collection, point, job or route."""


class Conflict(TroveAPIError):
    """409: it exists already, or the state forbids it now."""


class TooLarge(TroveAPIError):
    """413: the request body is over the server's limit."""


class ValidationFailed(TroveAPIError):
    """422: the body does not match the schema."""


class Overloaded(TroveAPIError):
    """429: too many requests in flight (retried before it is raised)."""


class NotReady(TroveAPIError):
    """503: still loading (retried before it is raised)."""


class ServerError(TroveAPIError):
    """500 and any other status."""


ERRORS: dict[int, type[TroveAPIError]] = {400: BadRequest, 401: Unauthenticated, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge, 422: ValidationFailed, 429: Overloaded, 503: NotReady}


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: not sent by Trove


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        code, message, details = str(error["code"]), str(error["message"]), dict(error.get("details") or {})
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", response.text, {}
    raise ERRORS.get(response.status_code, ServerError)(response.status_code, code, message, details, retry_after(response))


# ---- typed results -------------------------------------------------------------


def _known(cls: type[T], data: dict[str, Any]) -> T:
    """A result dataclass from an answer, ignoring fields a newer server adds."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class SourceRank:
    rank: int
    score: float


@dataclass(frozen=True)
class ScoredPoint:
    id: PointId
    score: float
    relevance: float | None = None
    fde_score: float | None = None
    payload: dict[str, Any] | None = None
    vector: list[float] | None = None
    vectors: list[list[float]] | None = None
    sources: dict[str, SourceRank] | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> ScoredPoint:
        sources = data.get("sources")
        return _known(cls, {**data, "sources": None if sources is None else {name: SourceRank(**r) for name, r in sources.items()}})


@dataclass(frozen=True)
class QueryResult:
    results: list[ScoredPoint]
    took_ms: float
    relevance_details: dict[str, Any] | None = None

    @property
    def ids(self) -> list[PointId]:
        return [h.id for h in self.results]


@dataclass(frozen=True)
class BatchQueryResult:
    results: list[list[ScoredPoint]]
    took_ms: float
    relevance_details: list[dict[str, Any] | None] | None = None


@dataclass(frozen=True)
class WriteAck:
    count: int
    operation_id: int
    status: str = "acknowledged"


@dataclass(frozen=True)
class Point:
    id: PointId
    text: str | None
    payload: dict[str, Any] | None
    model_version: int
    vector: list[float] | None = None
    vectors: list[list[float]] | None = None


@dataclass(frozen=True)
class PointList:
    points: list[Point]
    missing: list[PointId] = field(default_factory=list)


def _query(data: dict[str, Any]) -> QueryResult:
    return QueryResult([ScoredPoint.of(h) for h in data["results"]], data["took_ms"], data.get("relevance_details"))


def _batch(data: dict[str, Any]) -> BatchQueryResult:
    return BatchQueryResult([[ScoredPoint.of(h) for h in r] for r in data["results"]], data["took_ms"], data.get("relevance_details"))


def _points(data: dict[str, Any]) -> PointList:
    return PointList([_known(Point, p) for p in data["points"]], data["missing"])


# ---- the endpoints, described once ----------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    read: Callable[[Any], T]
    json: Any = None
    params: dict[str, Any] | None = None


def _raw(data: Any) -> Any:
    return data


def _ack(data: dict[str, Any]) -> WriteAck:
    return _known(WriteAck, data)


class _Endpoints:
    """What each client method sends and how it reads the answer."""

    @staticmethod
    def models() -> _Call[list[dict[str, Any]]]:
        return _Call("GET", "/v1/models", lambda d: list(d["models"]))

    @staticmethod
    def create_collection(name: str, config: dict[str, Any]) -> _Call[dict[str, Any]]:
        return _Call("POST", "/v1/collections", dict, json={"name": name, **config})

    @staticmethod
    def collections() -> _Call[list[dict[str, Any]]]:
        return _Call("GET", "/v1/collections", lambda d: list(d["collections"]))

    @staticmethod
    def collection(name: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"/v1/collections/{name}", dict)

    @staticmethod
    def drop_collection(name: str) -> _Call[None]:
        return _Call("DELETE", f"/v1/collections/{name}", _raw)

    @staticmethod
    def upsert(collection: str, points: list[dict[str, Any]]) -> _Call[WriteAck]:
        return _Call("PUT", f"/v1/collections/{collection}/points", _ack, json={"points": points})

    @staticmethod
    def get_point(collection: str, point_id: PointId, with_vector: bool) -> _Call[Point]:
        path = f"/v1/collections/{collection}/points/{quote(str(point_id), safe='')}"
        return _Call("GET", path, lambda d: _known(Point, d), params={"with_vector": with_vector})

    @staticmethod
    def lookup(collection: str, ids: list[PointId], with_vector: bool) -> _Call[PointList]:
        return _Call("POST", f"/v1/collections/{collection}/points/lookup", _points, json={"ids": ids, "with_vector": with_vector})

    @staticmethod
    def delete(collection: str, ids: list[PointId]) -> _Call[WriteAck]:
        return _Call("POST", f"/v1/collections/{collection}/points/delete", _ack, json={"ids": ids})

    @staticmethod
    def query(collection: str, query: dict[str, Any]) -> _Call[QueryResult]:
        return _Call("POST", f"/v1/collections/{collection}/query", _query, json=query)

    @staticmethod
    def query_batch(collection: str, queries: list[dict[str, Any]]) -> _Call[BatchQueryResult]:
        return _Call("POST", f"/v1/collections/{collection}/query/batch", _batch, json={"queries": queries})

    @staticmethod
    def add_text_index(collection: str, tokenizer: str | None) -> _Call[str]:
        body = {} if tokenizer is None else {"tokenizer": tokenizer}
        return _Call("PUT", f"/v1/collections/{collection}/text_index", lambda d: str(d["job_id"]), json=body)

    @staticmethod
    def drop_text_index(collection: str) -> _Call[None]:
        return _Call("DELETE", f"/v1/collections/{collection}/text_index", _raw)

    @staticmethod
    def start_build(collection: str, request: dict[str, Any]) -> _Call[str]:
        return _Call("POST", f"/v1/collections/{collection}/builds", lambda d: str(d["job_id"]), json=request)

    @staticmethod
    def job(job_id: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"/v1/jobs/{job_id}", dict)

    @staticmethod
    def jobs(collection: str | None) -> _Call[list[dict[str, Any]]]:
        return _Call("GET", "/v1/jobs", lambda d: list(d["jobs"]), params={"collection": collection} if collection else None)

    @staticmethod
    def cancel_job(job_id: str) -> _Call[dict[str, Any]]:
        return _Call("DELETE", f"/v1/jobs/{job_id}", dict)


def _backoff(attempt: int, response: httpx.Response, max_wait_s: float) -> float:
    given = retry_after(response)
    return min(given if given is not None else 0.25 * 2**attempt, max_wait_s)


def _answer(call: _Call[T], response: httpx.Response) -> T:
    raise_for_error(response)
    return call.read(response.json() if response.content else None)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class TroveClient:
    """Blocking client. ``retries``: how often a 429 or 503 is retried; ``max_retry_wait_s`` caps each wait."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60.0, retries: int = 3, max_retry_wait_s: float = 30.0):
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout)
        self.retries, self.max_retry_wait_s = retries, max_retry_wait_s

    def __enter__(self) -> TroveClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        for attempt in range(self.retries + 1):
            response = self._http.request(call.method, call.path, json=call.json, params=call.params)
            if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                break
            time.sleep(_backoff(attempt, response, self.max_retry_wait_s))
        return _answer(call, response)

    def healthy(self) -> bool:
        return self._http.get("/healthz").status_code == 200

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200

    def models(self) -> list[dict[str, Any]]:
        return self._run(_Endpoints.models())

    def create_collection(self, name: str, **config: Any) -> dict[str, Any]:
        return self._run(_Endpoints.create_collection(name, config))

    def collections(self) -> list[dict[str, Any]]:
        return self._run(_Endpoints.collections())

    def collection(self, name: str) -> dict[str, Any]:
        return self._run(_Endpoints.collection(name))

    def drop_collection(self, name: str) -> None:
        self._run(_Endpoints.drop_collection(name))

    def upsert(self, collection: str, points: list[dict[str, Any]]) -> WriteAck:
        return self._run(_Endpoints.upsert(collection, points))

    def get_point(self, collection: str, point_id: PointId, with_vector: bool = False) -> Point:
        """By URL: for ids a URL cannot carry exactly ('/', '.', '..', digit strings beside an integer id) use lookup."""
        return self._run(_Endpoints.get_point(collection, point_id, with_vector))

    def lookup(self, collection: str, ids: list[PointId], with_vector: bool = False) -> PointList:
        """Points by id, any id; the ids no point has are in ``missing``."""
        return self._run(_Endpoints.lookup(collection, ids, with_vector))

    def delete(self, collection: str, ids: list[PointId]) -> WriteAck:
        return self._run(_Endpoints.delete(collection, ids))

    def query(self, collection: str, **query: Any) -> QueryResult:
        return self._run(_Endpoints.query(collection, query))

    def query_batch(self, collection: str, queries: list[dict[str, Any]]) -> BatchQueryResult:
        return self._run(_Endpoints.query_batch(collection, queries))

    def add_text_index(self, collection: str, tokenizer: str | None = None) -> str:
        """Start the job that indexes the stored text for keyword and hybrid queries; its id."""
        return self._run(_Endpoints.add_text_index(collection, tokenizer))

    def drop_text_index(self, collection: str) -> None:
        self._run(_Endpoints.drop_text_index(collection))

    def start_build(self, collection: str, request: dict[str, Any]) -> str:
        return self._run(_Endpoints.start_build(collection, request))

    def build(self, collection: str, path: str, format: str, **options: Any) -> str:
        return self.start_build(collection, {"source": {"path": path, "format": format}, **options})

    def job(self, job_id: str) -> dict[str, Any]:
        return self._run(_Endpoints.job(job_id))

    def jobs(self, collection: str | None = None) -> list[dict[str, Any]]:
        return self._run(_Endpoints.jobs(collection))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._run(_Endpoints.cancel_job(job_id))

    def wait_job(self, job_id: str, timeout: float = 600.0, poll_s: float = 0.2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["state"] not in JOB_DONE:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout}s")
            time.sleep(poll_s)
        return job


class AsyncTroveClient:
    """The asyncio client: the same methods as `TroveClient`, awaited."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60.0, retries: int = 3, max_retry_wait_s: float = 30.0):
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout)
        self.retries, self.max_retry_wait_s = retries, max_retry_wait_s

    async def __aenter__(self) -> AsyncTroveClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        for attempt in range(self.retries + 1):
            response = await self._http.request(call.method, call.path, json=call.json, params=call.params)
            if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                break
            await asyncio.sleep(_backoff(attempt, response, self.max_retry_wait_s))
        return _answer(call, response)

    async def healthy(self) -> bool:
        return (await self._http.get("/healthz")).status_code == 200

    async def ready(self) -> bool:
        return (await self._http.get("/readyz")).status_code == 200

    async def models(self) -> list[dict[str, Any]]:
        return await self._run(_Endpoints.models())

    async def create_collection(self, name: str, **config: Any) -> dict[str, Any]:
        return await self._run(_Endpoints.create_collection(name, config))

    async def collections(self) -> list[dict[str, Any]]:
        return await self._run(_Endpoints.collections())

    async def collection(self, name: str) -> dict[str, Any]:
        return await self._run(_Endpoints.collection(name))

    async def drop_collection(self, name: str) -> None:
        await self._run(_Endpoints.drop_collection(name))

    async def upsert(self, collection: str, points: list[dict[str, Any]]) -> WriteAck:
        return await self._run(_Endpoints.upsert(collection, points))

    async def get_point(self, collection: str, point_id: PointId, with_vector: bool = False) -> Point:
        return await self._run(_Endpoints.get_point(collection, point_id, with_vector))

    async def lookup(self, collection: str, ids: list[PointId], with_vector: bool = False) -> PointList:
        return await self._run(_Endpoints.lookup(collection, ids, with_vector))

    async def delete(self, collection: str, ids: list[PointId]) -> WriteAck:
        return await self._run(_Endpoints.delete(collection, ids))

    async def query(self, collection: str, **query: Any) -> QueryResult:
        return await self._run(_Endpoints.query(collection, query))

    async def query_batch(self, collection: str, queries: list[dict[str, Any]]) -> BatchQueryResult:
        return await self._run(_Endpoints.query_batch(collection, queries))

    async def add_text_index(self, collection: str, tokenizer: str | None = None) -> str:
        return await self._run(_Endpoints.add_text_index(collection, tokenizer))

    async def drop_text_index(self, collection: str) -> None:
        await self._run(_Endpoints.drop_text_index(collection))

    async def start_build(self, collection: str, request: dict[str, Any]) -> str:
        return await self._run(_Endpoints.start_build(collection, request))

    async def build(self, collection: str, path: str, format: str, **options: Any) -> str:
        return await self.start_build(collection, {"source": {"path": path, "format": format}, **options})

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._run(_Endpoints.job(job_id))

    async def jobs(self, collection: str | None = None) -> list[dict[str, Any]]:
        return await self._run(_Endpoints.jobs(collection))

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        return await self._run(_Endpoints.cancel_job(job_id))

    async def wait_job(self, job_id: str, timeout: float = 600.0, poll_s: float = 0.2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (job := await self.job(job_id))["state"] not in JOB_DONE:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout}s")
            await asyncio.sleep(poll_s)
        return job
