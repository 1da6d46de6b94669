"""What callers hand a collection and what it answers: points to write, queries, hits, write acknowledgements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from index.query.filters import Filter
from index.query.fusion import Fusion, Ranked
from index.storage.store import PointId


@dataclass(frozen=True)
class PointInput:
    id: Any
    text: str | None = None
    vector: Sequence[float] | None = None
    payload: dict[str, Any] | None = None
    vectors: Sequence[Sequence[float]] | None = None  # token vectors (multi-vector collections)


@dataclass(frozen=True)
class Query:
    text: str | None = None
    vector: Sequence[float] | None = None
    k: int = 10
    filter: Filter | None = None
    min_score: float | None = None
    with_payload: bool = True
    with_vector: bool = False
    exact: bool = False
    oversample: float | None = None
    min_relevance: float | Literal["default"] | None = None  # "default": the fitted operating point
    vectors: Sequence[Sequence[float]] | None = None  # token vectors (multi-vector collections)
    fde_only: bool = False  # multi-vector: rank by FDE similarity, skip the Chamfer rerank
    with_relevance_details: bool = False  # answer the query's own relevance map and where it cuts
    mode: Literal["dense", "keyword", "hybrid"] = "dense"  # keyword: BM25 over the text index; hybrid: both, fused
    fusion: Fusion | None = None  # hybrid only; Fusion() when None
    rows_only: bool = False  # hybrid's dense side: each Hit's id is its store row, and nothing is read from the store

    with_relevance: bool = False  # answer each hit's calibrated relevance (min_relevance and details imply it)

    @property
    def uses_relevance(self) -> bool:
        return self.with_relevance or self.min_relevance is not None or self.with_relevance_details


@dataclass(frozen=True)
class Hit:
    id: PointId
    score: float
    payload: dict[str, Any] | None = None
    vector: list[float] | None = None
    relevance: float | None = None
    fde_score: float | None = None  # multi-vector: the FDE inner product that shortlisted the point
    vectors: list[list[float]] | None = None  # multi-vector: the stored token vectors
    sources: dict[str, Ranked] | None = None  # keyword and hybrid: rank and score in each list the hit came from


class Hits(list[Hit]):
    """One query's hits, and (when asked) its relevance details: the parameters of its own map and where it cuts."""

    relevance_details: dict[str, Any] | None = None


@dataclass(frozen=True)
class WriteAck:
    operation_id: int
    count: int
