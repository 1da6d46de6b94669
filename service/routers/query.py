"""Nearest-neighbour queries, single and batched.

The request body is validated once (pydantic, by FastAPI); the answer is written straight to JSON bytes by
orjson from the index's hits, not built as response models and validated again. ``response_model`` stays for
the OpenAPI schema, which the bytes follow. A single query awaits the collection's coalescer from the event
loop, so it costs no threadpool hop of its own: the batch it joins runs on the coalescer's threads.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Response

from index.collection import Collection
from index.requests import Hit, Hits, Query
from index.shards.collection import FanOut, ShardedCollection
from service.deps import CatalogDep, ReadAccess
from service.schemas import (
    BatchQueryRequest,
    BatchQueryResponse,
    QueryRequest,
    QueryResponse,
)

router = APIRouter(prefix="/v1/collections/{name}", tags=["query"], dependencies=ReadAccess)


def _hit(h: Hit) -> dict[str, Any]:
    """One hit as the contract's HitOut, without the fields it does not carry (response_model_exclude_none)."""
    out: dict[str, Any] = {"id": h.id, "score": h.score}
    for key, value in (("relevance", h.relevance), ("fde_score", h.fde_score), ("payload", h.payload), ("vector", h.vector), ("vectors", h.vectors)):
        if value is not None:
            out[key] = value
    if h.sources is not None:
        out["sources"] = {name: {"rank": r.rank, "score": r.score} for name, r in h.sources.items()}
    return out


def _details(hits: list[Hit]) -> dict[str, Any] | None:
    return hits.relevance_details if isinstance(hits, Hits) else None


def _search(collection: Collection | ShardedCollection, queries: list[Query], allow_partial: bool) -> FanOut:
    """A sharded collection fans out (and may leave out shards that are down); one collection answers in full."""
    if isinstance(collection, ShardedCollection):
        return collection.search(queries, allow_partial)
    return FanOut(collection.query_batch(queries), [])


def _partial(found: FanOut, allowed: bool) -> dict[str, Any]:
    return {"partial": bool(found.unavailable), "unavailable_shards": found.unavailable} if allowed else {}


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@router.post("/query", response_model=QueryResponse, response_model_exclude_none=True)
async def query(name: str, body: QueryRequest, catalog: CatalogDep) -> Response:
    start = time.perf_counter()
    collection = catalog.get(name)
    # Concurrent single queries are answered together (index/query/coalescer.py), awaited here; a sharded
    # collection's share one fan-out.
    if isinstance(collection, ShardedCollection):
        found = await collection.search_async(body.to_query(), body.allow_partial)
    else:
        found = FanOut([await collection.query_async(body.to_query())], [])
    hits = found.results[0]
    out: dict[str, Any] = {"results": [_hit(h) for h in hits]}
    if (details := _details(hits)) is not None:
        out["relevance_details"] = details
    out["took_ms"] = (time.perf_counter() - start) * 1000
    return _json(out | _partial(found, body.allow_partial))


@router.post("/query/batch", response_model=BatchQueryResponse, response_model_exclude_none=True)
def query_batch(name: str, body: BatchQueryRequest, catalog: CatalogDep) -> Response:
    """Partial answers (a shard down) only when every query in the batch allows them."""
    start = time.perf_counter()
    allowed = all(q.allow_partial for q in body.queries)
    found = _search(catalog.get(name), [q.to_query() for q in body.queries], allowed)
    out: dict[str, Any] = {"results": [[_hit(h) for h in r] for r in found.results]}
    if any(q.with_relevance_details for q in body.queries):
        out["relevance_details"] = [_details(r) for r in found.results]
    out["took_ms"] = (time.perf_counter() - start) * 1000
    return _json(out | _partial(found, allowed))
