"""Multi-vector queries on a sharded collection: the FDE shortlist merged across shards, then exact Chamfer.

A one-shard collection shortlists a query's top ``k * oversample`` points by FDE score and reranks them by
exact Chamfer (index/multivector.py). Here every shard shortlists to that same depth, the shortlists merge
to the collection's top ``k * oversample`` by FDE score (each of those is in its own shard's list), and each
shard scores by exact Chamfer only its part of the merged list; the k best Chamfer scores across shards are
the answer. So a sharded collection reranks the candidates one collection would, not more or fewer, and a
flat (exact FDE) index answers as one collection does. ``exact`` queries score every allowed point on every
shard; ``fde_only`` ones rank the merged shortlist by FDE score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders.errors import InvalidInput
from index.multivector import (
    DEFAULT_OVERSAMPLE,
    Shortlist,
    TokenInputs,
    TokenQueries,
    pooled_query,
)
from index.relevance.calibrators import PROFILE_DEPTH
from index.relevance.fit import Example
from index.relevance.state import Profiles
from index.requests import Hit, Query

if TYPE_CHECKING:
    from index.shards.collection import FanOut, ShardedCollection


def token_search(host: ShardedCollection, queries: Sequence[Query], allow_partial: bool) -> FanOut:
    from index.shards.collection import FanOut, merge

    assert isinstance(host.inputs, TokenInputs)
    calibrator = host.relevance.for_queries(queries)
    for i, q in enumerate(queries):
        if q.fde_only and q.uses_relevance:
            raise InvalidInput("relevance is calibrated on Chamfer scores: it does not apply with params.fde_only", code="relevance_needs_rerank", details={"query": i})
    # As on one multi-vector collection, a fitted calibrator reads every reranked query's profile (asked or not).
    calibrate = [calibrator is not None and not q.fde_only for q in queries]
    sets = host.inputs.query_token_sets(queries)
    fdes = host.inputs.fde.encode_queries(sets)
    # What the shards need of each query: no text (embedded here) nor token lists (sent as arrays); a calibrated
    # query reads its Chamfer ranking to PROFILE_DEPTH, as on one collection, and is cut after the merge.
    asked = [_for_shards(q, calibrate[i]) for i, q in enumerate(queries)]
    found, down = host.fan_out({s.index: s.call("token_shortlists", asked, fdes) for s in host.shards}, allow_partial)
    parts: dict[int, list[Shortlist | None]] = {s: [] for s in found}
    for i, q in enumerate(asked):
        for s, own in _split(q, [(s, lists[i]) for s, lists in found.items()]).items():
            parts[s].append(own)
    answered, later = host.fan_out({s: host.shards[s].call("token_answers", asked, sets, parts[s]) for s in found}, allow_partial)
    merged: list[list[Hit]] = [merge([hits[i] for hits in answered.values()], q.k) for i, q in enumerate(asked)]
    if calibrator is not None:
        merged = [
            TokenQueries.calibrated(q, hits, tokens, calibrator) if calibrate[i] else hits
            for i, (q, hits, tokens) in enumerate(zip(queries, merged, sets, strict=True))
        ]
    return FanOut(merged, sorted({*down, *later}))


def _for_shards(q: Query, calibrate: bool) -> Query:
    plain = replace(q, text=None, vectors=None, with_relevance=False, with_relevance_details=False, min_relevance=None)
    return replace(plain, k=max(q.k, PROFILE_DEPTH), min_score=None) if calibrate else plain


def _split(q: Query, lists: Sequence[tuple[int, Shortlist | None]]) -> dict[int, Shortlist | None]:
    """One query's merged shortlist (its collection-wide top ``depth`` by FDE score), cut back into each shard's part."""
    if q.exact:
        return {s: None for s, _ in lists}
    depth = q.k if q.fde_only else math.ceil(q.k * (q.oversample or DEFAULT_OVERSAMPLE))
    scores = np.concatenate([own[0][own[1] >= 0] for _, own in lists if own is not None] or [np.zeros(0, np.float32)])
    shard = np.concatenate([np.full(int((own[1] >= 0).sum()), s) for s, own in lists if own is not None] or [np.zeros(0, np.int64)])
    rows = np.concatenate([own[1][own[1] >= 0] for _, own in lists if own is not None] or [np.zeros(0, np.int64)])
    keep = np.argsort(-scores, kind="stable")[:depth]
    return {s: (scores[keep][shard[keep] == s], rows[keep][shard[keep] == s]) for s, _ in lists}


def token_profiles(host: ShardedCollection, examples: Sequence[Example], on_done: Any) -> Profiles:
    """A relevance fit's profiles on a multi-vector sharded collection: as TokenQueries.relevance_profiles, through the merge."""
    assert isinstance(host.inputs, TokenInputs)
    sets = host.inputs.query_token_sets([Query(text=e.query) for e in examples])
    ids: list[list[Any]] = []
    scores: list[list[float]] = []
    for start in range(0, len(sets), 64):
        chunk = sets[start : start + 64]
        for tokens, hits in zip(chunk, host.query_batch([Query(vectors=t.tolist(), k=PROFILE_DEPTH, with_payload=False) for t in chunk]), strict=True):
            ids.append([h.id for h in hits])
            scores.append([h.score / len(tokens) for h in hits])
        on_done(len(ids))
    return ids, scores, np.concatenate([pooled_query(t) for t in sets]) if sets else np.zeros((0, host.config.dim), np.float32)
