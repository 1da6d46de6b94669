"""Nearest-neighbour queries, single and batched."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from index.collection import Hit, Hits
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


@router.post("/query", response_model=QueryResponse, response_model_exclude_none=True)
def query(name: str, body: QueryRequest, catalog: CatalogDep) -> QueryResponse:
    start = time.perf_counter()
    hits = catalog.get(name).query(body.to_query())
    return QueryResponse(results=_hits(hits), relevance_details=_details(hits), took_ms=(time.perf_counter() - start) * 1000)


@router.post("/query/batch", response_model=BatchQueryResponse, response_model_exclude_none=True)
def query_batch(name: str, body: BatchQueryRequest, catalog: CatalogDep) -> BatchQueryResponse:
    start = time.perf_counter()
    results = catalog.get(name).query_batch([q.to_query() for q in body.queries])
    details = [_details(r) for r in results] if any(q.with_relevance_details for q in body.queries) else None
    return BatchQueryResponse(results=[_hits(r) for r in results], relevance_details=details, took_ms=(time.perf_counter() - start) * 1000)
