"""Nearest-neighbour queries, single and batched."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from index.collection import Collection, Hit, Hits, Query
from index.shards.collection import FanOut, ShardedCollection
from service.deps import CatalogDep, ReadAccess
from service.schemas import (
    BatchQueryRequest,
    BatchQueryResponse,
    HitOut,
    QueryRequest,
    QueryResponse,
    SourceRank,
)

router = APIRouter(prefix="/v1/collections/{name}", tags=["query"], dependencies=ReadAccess)


def _hits(hits: list[Hit]) -> list[HitOut]:
    return [
        HitOut(
            id=h.id, score=h.score, relevance=h.relevance, fde_score=h.fde_score, payload=h.payload, vector=h.vector, vectors=h.vectors,
            sources={name: SourceRank(rank=r.rank, score=r.score) for name, r in h.sources.items()} if h.sources is not None else None,
        )
        for h in hits
    ]


def _details(hits: list[Hit]) -> dict[str, Any] | None:
    return hits.relevance_details if isinstance(hits, Hits) else None


def _search(collection: Collection | ShardedCollection, queries: list[Query], allow_partial: bool) -> FanOut:
    """A sharded collection fans out (and may leave out shards that are down); one collection answers in full."""
    if isinstance(collection, ShardedCollection):
        return collection.search(queries, allow_partial)
    return FanOut(collection.query_batch(queries), [])


def _partial(found: FanOut, allowed: bool) -> dict[str, Any]:
    return {"partial": bool(found.unavailable), "unavailable_shards": found.unavailable} if allowed else {}


@router.post("/query", response_model=QueryResponse, response_model_exclude_none=True)
def query(name: str, body: QueryRequest, catalog: CatalogDep) -> QueryResponse:
    start = time.perf_counter()
    collection = catalog.get(name)
    if isinstance(collection, ShardedCollection):
        found = collection.search([body.to_query()], body.allow_partial)
    else:  # concurrent single queries are answered together (index/query/coalescer.py)
        found = FanOut([collection.query(body.to_query())], [])
    hits = found.results[0]
    return QueryResponse(results=_hits(hits), relevance_details=_details(hits), took_ms=(time.perf_counter() - start) * 1000, **_partial(found, body.allow_partial))


@router.post("/query/batch", response_model=BatchQueryResponse, response_model_exclude_none=True)
def query_batch(name: str, body: BatchQueryRequest, catalog: CatalogDep) -> BatchQueryResponse:
    """Partial answers (a shard down) only when every query in the batch allows them."""
    start = time.perf_counter()
    allowed = all(q.allow_partial for q in body.queries)
    found = _search(catalog.get(name), [q.to_query() for q in body.queries], allowed)
    details = [_details(r) for r in found.results] if any(q.with_relevance_details for q in body.queries) else None
    return BatchQueryResponse(
        results=[_hits(r) for r in found.results], relevance_details=details, took_ms=(time.perf_counter() - start) * 1000, **_partial(found, allowed)
    )
