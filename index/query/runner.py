"""How a collection answers a batch of queries: dense ones share FAISS calls over one view of the segments,
keyword ones ask the store's text index, hybrid ones both, fused (index/query/fusion.py).

Multi-vector collections subclass it (index/multivector.py): their dense side is an FDE shortlist reranked by
exact Chamfer. It reads the collection's parts through its host, so a reprojection's swap is seen at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from encoders.errors import InvalidInput, NotReady
from index.backends.faiss_index import FaissMetric
from index.config import CollectionConfig
from index.ingest.points import PointInputs
from index.query.fusion import Fusion, Ranked, fuse
from index.query.planner import FilterPlanner
from index.relevance.calibrators import PROFILE_DEPTH, query_words
from index.relevance.state import Relevance, relevance_details
from index.requests import Hit, Hits, Query
from index.segments.engine import SegmentEngine
from index.storage.store import Store, StoredPoint


class QueryHost(Protocol):
    inputs: PointInputs
    relevance: Relevance
    engine: SegmentEngine
    filters: FilterPlanner

    @property
    def config(self) -> CollectionConfig: ...

    @property
    def store(self) -> Store: ...


class QueryRunner:
    def __init__(self, host: QueryHost):
        self.host = host

    @property
    def config(self) -> CollectionConfig:
        return self.host.config

    @property
    def store(self) -> Store:
        return self.host.store

    @property
    def engine(self) -> SegmentEngine:
        return self.host.engine

    def batch(self, queries: Sequence[Query]) -> list[list[Hit]]:
        """Dense queries share FAISS calls; keyword ones ask the text index, hybrid ones both, then fuse."""
        for i, q in enumerate(queries):
            self.check_mode(q, {"query": i})
        results: list[list[Hit]] = [[] for _ in queries]
        dense = [i for i, q in enumerate(queries) if q.mode != "keyword"]
        # Hybrid queries fetch their dense candidates beside the plain dense queries, in the same batch.
        asked = [queries[i] if queries[i].mode == "dense" else self.dense_candidates(queries[i]) for i in dense]
        try:
            found = dict(zip(dense, self.dense_batch(asked) if asked else [], strict=True))
        except InvalidInput as err:  # name the query by its place in the whole batch, keyword queries included
            if isinstance(err.details.get("query"), int):
                err.details["query"] = dense[err.details["query"]]
            raise
        for i, q in enumerate(queries):
            if q.mode == "dense":
                results[i] = found[i]
                continue
            fusion = q.fusion or Fusion()
            where, params = q.filter.to_sql(self.store.ready_payload_indexes()) if q.filter is not None else (None, [])
            keyword = self.store.keyword_search(str(q.text), q.k if q.mode == "keyword" else fusion.depth_for(q.k), where, params)
            if q.mode == "keyword":
                ranked = [(row, score, {"keyword": Ranked(n + 1, score)}) for n, (row, score) in enumerate(keyword)]
            else:
                # min_score keeps a prefix of the fused ranking, so the first k of it are all that can be chosen
                ranked = fuse({"dense": [(int(h.id), h.score) for h in found[i]], "keyword": keyword}, fusion, q.k)
            results[i] = self.fused_hits(q, ranked)
        return results

    def check_mode(self, q: Query, where: dict[str, Any]) -> None:
        """Keyword and hybrid queries need a ready text index and a text; 400s (503 while it fills) before any search."""
        if q.fusion is not None and q.mode != "hybrid":
            raise InvalidInput("'fusion' applies to mode 'hybrid' only", code="fusion_needs_hybrid", details=where)
        if q.mode == "dense":
            return
        state = self.store.text_index
        if state is None:
            raise InvalidInput(
                f"mode {q.mode!r} needs a text index, and collection {self.config.name!r} has none; add one with PUT /v1/collections/{self.config.name}/text_index",
                code="no_text_index",
                details=where,
            )
        if not state.ready:
            raise NotReady(
                f"the text index of collection {self.config.name!r} is still being filled (or its fill was interrupted: PUT .../text_index again)",
                code="text_index_building",
                details=where,
            )
        if q.text is None or not q.text.strip():
            raise InvalidInput(f"mode {q.mode!r} needs a non-empty 'text' for its keyword search", code="keyword_needs_text", details=where)
        if q.mode == "keyword" and (q.vector is not None or q.vectors is not None):
            raise InvalidInput("mode 'keyword' searches the text only; give no 'vector' or 'vectors'", code="invalid_query", details=where)
        if q.uses_relevance:
            raise InvalidInput(
                "min_relevance and with_relevance_details calibrate dense scores; they apply to mode 'dense' only", code="relevance_needs_dense", details=where
            )
        if q.fusion is not None:
            q.fusion.check(where)

    def dense_candidates(self, q: Query) -> Query:
        """A hybrid query's dense side: its vector(s) if given, else its text embedded; rows and scores only."""
        given = q.vector is not None or q.vectors is not None
        return replace(q, mode="dense", fusion=None, text=None if given else q.text, k=(q.fusion or Fusion()).depth_for(q.k), min_score=None, rows_only=True)

    def fused_hits(self, q: Query, ranked: list[tuple[int, float, dict[str, Ranked]]]) -> list[Hit]:
        """The first k ranked rows that pass min_score, with their stored ids and payloads (and vectors)."""
        chosen = [entry for entry in ranked if q.min_score is None or entry[1] >= q.min_score][: q.k]
        stored = self.points_by_rows([row for row, _, _ in chosen], q.with_vector)
        return [
            Hit(
                id=point.id,
                score=score,
                payload=point.payload if q.with_payload else None,
                vector=point.vector.tolist() if point.vector is not None else None,
                vectors=point.tokens.tolist() if point.tokens is not None else None,
                sources=sources,
            )
            for row, score, sources in chosen
            if (point := stored.get(row)) is not None  # deleted between the search and this read
        ]

    def points_by_rows(self, rows: Sequence[int], with_vector: bool) -> dict[int, StoredPoint]:
        return self.store.by_rows(rows, with_vector)

    def dense_batch(self, queries: Sequence[Query]) -> list[list[Hit]]:
        calibrator = self.host.relevance.for_queries(queries)
        vectors = self.host.inputs.query_vectors(queries)
        results: list[list[Hit]] = [[] for _ in queries]

        def depth(q: Query) -> int:
            # Relevance reads the query's score profile, which needs the top PROFILE_DEPTH scores; only asked for.
            return max(q.k, PROFILE_DEPTH) if calibrator is not None and q.uses_relevance else q.k

        def answer(members: list[int], scores: np.ndarray, rows: np.ndarray) -> None:
            """The hits of queries that shared one search; relevance in one calibrator call for those that ask."""
            user = self.user_scores(scores, rows)
            asking = [j for j, i in enumerate(members) if queries[i].uses_relevance]
            relevance = None
            if asking and calibrator is not None:
                words = query_words([queries[members[j]].text for j in asking])
                relevance = dict(zip(asking, calibrator.relevance(user[asking], vectors[members][asking], words), strict=True))
            for j, i in enumerate(members):
                q = queries[i]
                if relevance is None or j not in relevance:
                    results[i] = Hits(self.hits(q, user[j], rows[j], None, None))
                    continue
                assert calibrator is not None
                cut = calibrator.threshold if q.min_relevance == "default" else q.min_relevance
                hits = Hits(self.hits(q, user[j], rows[j], relevance[j], cut))
                if q.with_relevance_details:
                    hits.relevance_details = relevance_details(calibrator, user[j : j + 1], vectors[i : i + 1], query_words([q.text]), relevance[j], cut)
                results[i] = hits

        # Unfiltered queries with the same search settings share one FAISS call; the depth is one of
        # those settings, so an approximate answer never depends on which queries shared its batch.
        groups: dict[tuple[int, bool, float | None], list[int]] = {}
        for i, q in enumerate(queries):
            if q.filter is None:
                groups.setdefault((depth(q), q.exact, q.oversample), []).append(i)
            else:
                answer([i], *self.search(vectors[i : i + 1], depth(q), q))
        for (k, _, _), members in groups.items():
            answer(members, *self.search(vectors[members], k, queries[members[0]]))
        return results

    def search(self, vectors: np.ndarray, k: int, q: Query) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (raw scores, rows) over one view of the segments, filtered by ``q.filter``."""
        view = self.engine.view()
        self.engine.recent_queries.add(vectors)
        ef = math.ceil(k * q.oversample) if q.oversample else None
        if q.filter is None:
            return view.search(vectors, k, None, ef, q.exact)
        return self.host.filters.search(view, vectors, k, q.filter, self.faiss_metric, ef, q.exact)

    def hits(self, q: Query, scores: np.ndarray, rows: np.ndarray, relevance: np.ndarray | None, min_relevance: float | None) -> list[Hit]:
        """The first k found rows that pass min_score and min_relevance, with their stored ids and payloads."""
        keep = rows >= 0
        if q.min_score is not None:
            keep &= scores >= q.min_score
        if min_relevance is not None and relevance is not None:
            keep &= relevance >= min_relevance
        chosen = np.flatnonzero(keep)[: q.k]
        if not len(chosen):
            return []
        if q.rows_only:
            return [Hit(id=int(rows[j]), score=float(scores[j])) for j in chosen]
        stored = self.store.by_rows(rows[chosen].tolist(), with_vector=q.with_vector, with_text=False, with_payload=q.with_payload)
        return [
            Hit(
                id=point.id,
                score=float(scores[j]),
                payload=point.payload if q.with_payload else None,
                vector=point.vector.tolist() if q.with_vector and point.vector is not None else None,
                relevance=float(relevance[j]) if relevance is not None else None,
            )
            for j in chosen
            if (point := stored.get(int(rows[j]))) is not None  # deleted between the search and this read
        ]

    def user_scores(self, raw: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Higher is closer for every metric (l2 reports the negated Euclidean distance); NaN where nothing was found."""
        scores = -np.sqrt(np.maximum(raw, 0.0)) if self.config.metric == "l2" else raw.astype(np.float32)
        return np.where(rows >= 0, scores, np.nan)

    @property
    def faiss_metric(self) -> FaissMetric:
        return "l2" if self.config.metric == "l2" else "ip"
