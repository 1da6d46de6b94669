"""Multi-vector (ColBERT-style) collections: token vectors in, MUVERA FDEs in FAISS, exact Chamfer to rank.

A point's token vectors go to the store's side table in the same transaction as the point; its document
FDE is the row's vector, so segments, replay, deletes and filters work exactly as for dense collections. A query's FDE shortlists ``k * oversample`` candidates in FAISS, and exact Chamfer over
their stored token vectors ranks them (``fde_only`` skips that; ``exact`` scores every allowed point).

Relevance calibration sees a query as its mean token vector and its candidates' Chamfer scores divided by its
token count (mean MaxSim, in [-1, 1] under cosine), so one calibrator serves queries of every length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders.base import Encoder, l2_normalize
from encoders.errors import InvalidInput
from encoders.registry import ModelRegistry
from encoders.transforms.base import Pipeline
from encoders.transforms.chamfer import chamfer_scores
from encoders.transforms.muvera import MuveraFDE
from index.collection import Collection
from index.config import CollectionConfig, MuveraSpec
from index.ingest.points import PointInputs, ServingHost, Vectors, map_rows
from index.models.versions import Serving
from index.query.runner import QueryRunner
from index.relevance.calibrators import PROFILE_DEPTH, Calibrator, query_words
from index.relevance.fit import Example
from index.relevance.state import Profiles, Relevance, relevance_details
from index.requests import Hit, Hits, PointInput, Query
from index.segments.policy import EngineSettings
from index.storage.store import PointRecord, Store, StoredPoint
from index.token_codec import TokenCodec

# Candidates reranked per query are k times this unless params.oversample says otherwise.
DEFAULT_OVERSAMPLE = 10.0
# FDE dimensions FAISS holds at most: the same ceiling as a dense collection's dim.
MAX_FDE_DIM = 65536
# Points whose token vectors are read and scored at once by exact search and reranking.
SCORE_CHUNK = 2048
# Where d_proj is not given: the block size of a projected FDE (identity keeps the model's dimension).
DEFAULT_D_PROJ = 16

# One query's FDE search: (scores, rows), best first, rows -1 past the end.
Shortlist = tuple[np.ndarray, np.ndarray]
# MuveraFDE's parameter names -> the HTTP contract's (DESIGN.md section 3).
_HTTP_NAMES = {
    "num_simhash_projections": "k_sim",
    "final_projection_dimension": "final_dim",
    "projection_dimension": "d_proj",
    "num_repetitions": "r_reps",
    "projection_type": "projection",
    "fill_empty_partitions": "fill_empty",
    "query_fill_empty_partitions": "query_fill_empty",
}


def pooled_query(tokens: np.ndarray) -> np.ndarray:
    """(1, dim): a token set's unit-length mean, the query vector a relevance calibrator sees."""
    return l2_normalize(tokens.mean(axis=0, keepdims=True).astype(np.float32))


def resolve_spec(spec: MuveraSpec, dim: int) -> MuveraSpec:
    """The spec with d_proj filled in, checked by building its transform (clear 400s for bad settings)."""
    if spec.d_proj is None:
        spec = replace(spec, d_proj=dim if spec.projection == "identity" else min(DEFAULT_D_PROJ, dim))
    if isinstance(spec.max_tokens, bool) or not isinstance(spec.max_tokens, int) or spec.max_tokens < 1:
        raise InvalidInput("muvera.max_tokens must be an integer >= 1", code="invalid_max_tokens", details={"max_tokens": spec.max_tokens})
    TokenCodec(spec.token_storage, dim)  # checks the storage kind
    try:
        fde = fde_transform(spec, dim)
    except InvalidInput as err:  # say it in the collection's terms: k_sim, not num_simhash_projections
        message = err.message
        for name, http in _HTTP_NAMES.items():
            message = message.replace(name, f"muvera.{http}")
        raise InvalidInput(message, code=err.code, details={_HTTP_NAMES.get(k, k): v for k, v in err.details.items()}) from None
    if fde.output_dim > MAX_FDE_DIM:
        raise InvalidInput(
            f"the FDE would have {fde.output_dim} dimensions, more than {MAX_FDE_DIM}: lower r_reps, k_sim or d_proj, or set final_dim",
            code="fde_too_large",
            details={"fde_dim": fde.output_dim, "max": MAX_FDE_DIM},
        )
    return spec


def fde_transform(spec: MuveraSpec, dim: int) -> MuveraFDE:
    """The MuveraFDE a spec describes, over ``dim``-d token vectors (HTTP names -> the transform's)."""
    return MuveraFDE(
        dimension=dim,
        num_repetitions=spec.r_reps,
        num_simhash_projections=spec.k_sim,
        projection_type=spec.projection,
        projection_dimension=spec.d_proj,
        final_projection_dimension=spec.final_dim,
        seed=spec.seed,
        fill_empty_partitions=spec.fill_empty,
        query_fill_empty_partitions=spec.query_fill_empty,
    )


class TokenInputs(PointInputs):
    """A multi-vector collection's inputs: token vectors (given, or encoded from text) where a dense one takes one vector."""

    def __init__(self, host: ServingHost, fde: MuveraFDE, max_tokens: int, codec: TokenCodec):
        super().__init__(host)
        self.fde = fde
        self.max_tokens = max_tokens
        self.codec = codec

    def check_point(self, point: PointInput, where: dict[str, Any]) -> np.ndarray | None:
        """A point's checked token vectors, or None when its text still needs encoding."""
        if point.vector is not None:
            raise InvalidInput(
                "points of a multi-vector collection carry 'vectors' (token vectors) or 'text', not one 'vector'",
                code="vector_not_supported",
                details=where,
            )
        if point.vectors is not None:
            return self.token_set(point.vectors, where)
        return super().check_point(point, where)

    def embed_texts(self, texts: list[str], serving: Serving, on_done: Callable[[int], None] | None = None) -> list[np.ndarray]:
        sets = self.require_encoder("points", {}, serving).encode_tokens(texts, on_done)
        for i, tokens in enumerate(sets):
            self._check_token_count(len(tokens), {"text": i})
        return self.into_index(sets, serving)

    def into_index(self, vectors: Vectors, serving: Serving) -> list[np.ndarray]:
        """Token sets of ``serving``'s model in the index's token space: after an upgrade, each token goes through the
        version's compatibility maps (fitted on pooled vectors: a linear map commutes with the mean) and is normalised
        as the metric wants. With no map, the encoder's unit tokens are kept as they are."""
        assert isinstance(vectors, list)
        return vectors if not serving.chain else [np.asarray(s) for s in map_rows(lambda t: self.to_index(t, serving), vectors)]

    def stored_vectors(self, store: Store, points: Sequence[StoredPoint]) -> list[np.ndarray]:
        tokens = store.tokens_by_rows([p.row for p in points], self.config.dim, self.codec.decode)
        return [tokens[p.row] for p in points]

    def model_vectors(self, encoder: Encoder, texts: list[str], queries: bool = False, on_done: Callable[[int], None] | None = None) -> list[np.ndarray]:
        return encoder.encode_tokens(texts, on_done)  # queries are token sets of the same kind (query_token_sets)

    def pooled(self, vectors: Vectors) -> np.ndarray:
        """Each token set's mean, normalised as the metric wants: the pairs a token map is fitted on."""
        assert isinstance(vectors, list)
        return self.normalise(np.stack([s.mean(axis=0) for s in vectors]).astype(np.float32)) if vectors else np.zeros((0, self.config.dim), np.float32)

    def records(self, points: Sequence[PointInput], vectors: list[np.ndarray]) -> list[PointRecord]:
        fdes = self.fde.encode_docs(vectors)  # one batched pass over every set
        return [
            PointRecord(id=p.id, vector=fde, text=p.text, payload=p.payload, tokens=self.codec.encode(tokens))
            for p, fde, tokens in zip(points, fdes, vectors, strict=True)
        ]

    def token_set(self, vectors: Sequence[Sequence[float]], where: dict[str, Any]) -> np.ndarray:
        """Validated (tokens, dim) float32 token vectors, each normalised under the cosine metric."""
        rows = list(vectors)
        if not rows:
            raise InvalidInput("'vectors' needs at least one token vector", code="empty_vector_set", details=where)
        lengths = {len(v) for v in rows}
        if len(lengths) > 1:
            raise InvalidInput("every token vector must have the same dimension", code="ragged_vectors", details={**where, "dims": sorted(lengths)})
        self._check_token_count(len(rows), where)
        with np.errstate(over="ignore"):  # values beyond float32 become inf and are rejected below
            tokens = np.asarray(rows, dtype=np.float32)
        if tokens.shape[1] != self.config.dim:
            raise InvalidInput(
                f"token vectors have dimension {tokens.shape[1]}, collection expects {self.config.dim}",
                code="wrong_dimension",
                details={**where, "expected": self.config.dim, "got": int(tokens.shape[1])},
            )
        if not np.isfinite(tokens).all():
            raise InvalidInput("token vectors contain NaN or infinite values", code="non_finite_vector", details=where)
        if self.config.metric == "cosine":
            if not np.any(tokens, axis=1).all():
                raise InvalidInput("a zero token vector has no direction, so no cosine", code="zero_vector", details=where)
            tokens = l2_normalize(tokens)
        return tokens

    def _check_token_count(self, count: int, where: dict[str, Any]) -> None:
        if count > self.max_tokens:
            raise InvalidInput(
                f"{count} token vectors, more than this collection's max_tokens {self.max_tokens}",
                code="too_many_tokens",
                details={**where, "tokens": count, "max": self.max_tokens},
            )

    def query_token_sets(self, queries: Sequence[Query]) -> list[np.ndarray]:
        """Validated token vectors per query, texts encoded in one batch."""
        sets: list[np.ndarray | None] = []
        for i, q in enumerate(queries):
            where = {"query": i}
            if q.vector is not None:
                raise InvalidInput("queries on a multi-vector collection give 'vectors' or 'text', not one 'vector'", code="vector_not_supported", details=where)
            if (q.text is None) == (q.vectors is None):
                raise InvalidInput("a query needs exactly one of 'text' or 'vectors'", code="invalid_query", details=where)
            if q.vectors is not None:
                sets.append(self.token_set(q.vectors, where))
                continue
            assert q.text is not None
            if not q.text.strip():
                raise InvalidInput("query text must not be empty", code="empty_text", details=where)
            self.require_encoder("queries", where)
            sets.append(None)
        texts = [i for i, s in enumerate(sets) if s is None]
        if texts:
            serving = self.host.serving
            encoded = self.require_encoder("queries", {}, serving).encode_tokens([str(queries[i].text) for i in texts])
            for i, tokens in zip(texts, self.into_index(encoded, serving), strict=True):
                self._check_token_count(len(tokens), {"query": i})
                sets[i] = tokens
        return [s for s in sets if s is not None]

    def sample_query_vectors(self, queries: Sequence[str | Sequence[float]]) -> np.ndarray:
        """Query samples for a compression fit (LeanVec-OOD) as query FDEs: what the compressed stages are searched with."""
        return self.fde.encode_queries(self.query_token_sets([Query(text=q) if isinstance(q, str) else Query(vector=q) for q in queries]))


class TokenQueries(QueryRunner):
    """A multi-vector collection's queries: each query's FDE shortlists candidates, exact Chamfer over their stored
    token vectors ranks them; relevance reads mean-MaxSim profiles."""

    host: MultiVectorCollection

    def __init__(self, host: MultiVectorCollection, fde: MuveraFDE, codec: TokenCodec):
        super().__init__(host)
        self.fde = fde
        self.codec = codec

    def dense_batch(self, queries: Sequence[Query]) -> list[list[Hit]]:
        calibrator = self.host.relevance.for_queries(queries)
        for i, q in enumerate(queries):
            if q.fde_only and q.uses_relevance:
                raise InvalidInput("relevance is calibrated on Chamfer scores: it does not apply with params.fde_only", code="relevance_needs_rerank", details={"query": i})
        sets = self.host.inputs.query_token_sets(queries)
        # A calibrated query reads its score profile: its Chamfer ranking to PROFILE_DEPTH at least.
        searched = [q if calibrator is None or q.fde_only else replace(q, k=max(q.k, PROFILE_DEPTH), min_score=None) for q in queries]
        found = self._shortlists(searched, self.fde.encode_queries(sets))
        return [
            self._answer(q, tokens, hits) if calibrator is None or q.fde_only else self.calibrated(q, self._answer(wide, tokens, hits), tokens, calibrator)
            for q, wide, tokens, hits in zip(queries, searched, sets, found, strict=True)
        ]

    @staticmethod
    def calibrated(q: Query, ranked: list[Hit], tokens: np.ndarray, calibrator: Calibrator) -> Hits:
        """Each hit of the Chamfer ranking (to PROFILE_DEPTH) with its calibrated relevance, then min_score, min_relevance and k.
        (Static: a sharded collection calibrates its merged ranking with it.)"""
        profile = TokenQueries._profile([h.score for h in ranked], tokens, max(q.k, PROFILE_DEPTH))
        vector, words = pooled_query(tokens), query_words([q.text])
        relevance = calibrator.relevance(profile, vector, words)[0]
        cut = calibrator.threshold if q.min_relevance == "default" else q.min_relevance
        hits = Hits(
            replace(h, relevance=float(relevance[j]))
            for j, h in enumerate(ranked)
            if (q.min_score is None or h.score >= q.min_score) and (cut is None or relevance[j] >= cut)
        )
        del hits[q.k :]
        if q.with_relevance_details:
            hits.relevance_details = relevance_details(calibrator, profile, vector, words, relevance, cut)
        return hits

    @staticmethod
    def _profile(scores: Sequence[float], tokens: np.ndarray, depth: int) -> np.ndarray:
        """(1, depth) mean-MaxSim scores (Chamfer / query tokens), NaN past the candidates found."""
        profile = np.full((1, depth), np.nan, np.float32)
        profile[0, : len(scores)] = np.asarray(scores[:depth], np.float32) / len(tokens)
        return profile

    def relevance_profiles(self, examples: Sequence[Example], on_done: Callable[[int], None]) -> Profiles:
        """As for dense collections, from token vectors: Chamfer rankings, mean-MaxSim scores, mean token vectors."""
        sets = self.host.inputs.query_token_sets([Query(text=e.query) for e in examples])
        profile = Query(k=PROFILE_DEPTH, with_payload=False)
        found = self._shortlists([profile] * len(sets), self.fde.encode_queries(sets))
        ids: list[list[Any]] = []
        scores: list[list[float]] = []
        for i, tokens in enumerate(sets):
            hits = self._answer(profile, tokens, found[i])
            ids.append([h.id for h in hits])
            scores.append([h.score / len(tokens) for h in hits])
            if (i + 1) % 64 == 0 or i + 1 == len(sets):
                on_done(i + 1)
        return ids, scores, np.concatenate([pooled_query(t) for t in sets]) if sets else np.zeros((0, self.config.dim), np.float32)

    def points_by_rows(self, rows: Sequence[int], with_vector: bool) -> dict[int, StoredPoint]:
        """As for dense collections, with the token vectors in place of the row's FDE."""
        points = self.store.by_rows(rows)
        tokens = self.store.tokens_by_rows(list(points), self.config.dim, self.codec.decode) if with_vector else {}
        return {row: replace(p, tokens=tokens.get(row)) for row, p in points.items()}

    def _shortlists(self, queries: Sequence[Query], fdes: np.ndarray) -> list[Shortlist | None]:
        """Each query's FDE candidates (None for ``exact``); unfiltered queries of one depth share one FAISS search."""
        out: list[Shortlist | None] = [None] * len(queries)
        groups: dict[int, list[int]] = {}
        for i, q in enumerate(queries):
            if q.exact:
                continue
            depth = q.k if q.fde_only else max(1, min(math.ceil(q.k * (q.oversample or DEFAULT_OVERSAMPLE)), self.engine.view().points))
            if q.filter is None:
                groups.setdefault(depth, []).append(i)
            else:
                scores, rows = self.search(fdes[i : i + 1], depth, replace(q, oversample=None))
                out[i] = (scores[0], rows[0])
        # A compressed index bounds its own rerank gathers (index/compression/multistage.py: GATHER_FLOATS).
        for depth, members in groups.items():
            # FAISS depth is the candidate count itself: HNSW searches with ef >= that count.
            scores, rows = self.search(fdes[members], depth, replace(queries[members[0]], oversample=None))
            for j, i in enumerate(members):
                out[i] = (scores[j], rows[j])
        return out

    def _answer(self, q: Query, tokens: np.ndarray, found: Shortlist | None) -> list[Hit]:
        """The query's hits from its shortlist: reranked by exact Chamfer, or in FDE order with ``fde_only``."""
        if found is None:  # exact: every allowed point
            rows = self._allowed_rows(q)
            fde_scores = None
        else:
            keep = found[1] >= 0
            rows, fde_scores = found[1][keep], found[0][keep]
            if q.fde_only:
                return self._ranked_hits(q, rows, fde_scores, fde_scores)
        scores = self.chamfer(tokens, rows)
        order = np.argsort(-scores, kind="stable")
        order = order[np.isfinite(scores[order])]  # rows deleted since the search have no tokens left
        return self._ranked_hits(q, rows[order], scores[order], None if fde_scores is None else fde_scores[order])

    def _allowed_rows(self, q: Query) -> np.ndarray:
        view = self.engine.view()
        return view.live_rows() if q.filter is None else self.host.filters.rows(view, q.filter)

    def chamfer(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact Chamfer of one query token set against the stored token vectors of ``rows``; -inf where none are stored."""
        out = np.full(len(rows), -np.inf, np.float32)
        for start in range(0, len(rows), SCORE_CHUNK):
            chunk = rows[start : start + SCORE_CHUNK]
            stored = self.store.tokens_by_rows(chunk.tolist(), self.config.dim, self.codec.decode)
            present = [j for j, row in enumerate(chunk) if int(row) in stored]
            if present:
                out[start + np.asarray(present)] = chamfer_scores([query], [stored[int(chunk[j])] for j in present])[0]
        return out

    def _ranked_hits(self, q: Query, rows: np.ndarray, scores: np.ndarray, fde_scores: np.ndarray | None) -> list[Hit]:
        """The first k rows, in the order given, that pass min_score, with their ids, payloads and scores."""
        keep = np.ones(len(rows), bool) if q.min_score is None else scores >= q.min_score
        chosen = np.flatnonzero(keep)[: q.k]
        if q.rows_only:
            return [Hit(id=int(rows[j]), score=float(scores[j])) for j in chosen]
        stored = self.store.by_rows(rows[chosen].tolist())
        tokens = self.store.tokens_by_rows(rows[chosen].tolist(), self.config.dim, self.codec.decode) if q.with_vector else {}
        return [
            Hit(
                id=point.id,
                score=float(scores[j]),
                payload=point.payload if q.with_payload else None,
                fde_score=None if fde_scores is None else float(fde_scores[j]),
                vectors=tokens[int(rows[j])].tolist() if int(rows[j]) in tokens else None,
            )
            for j in chosen
            if (point := stored.get(int(rows[j]))) is not None  # deleted between the search and this read
        ]


class MultiVectorCollection(Collection):
    inputs: TokenInputs
    queries: TokenQueries

    def __init__(self, root: Path, config: CollectionConfig, registry: ModelRegistry, engine: EngineSettings | None = None):
        assert config.multivector and config.muvera is not None
        self.spec = config.muvera
        self.codec = TokenCodec(self.spec.token_storage, config.dim)
        folder = root / "pipeline"
        if (folder / "pipeline.json").exists():
            (stage,) = Pipeline.load(folder).stages
            assert isinstance(stage, MuveraFDE), f"{folder} holds a {stage.kind} stage, not muvera"
            self.fde = stage
        else:  # a new collection: draw the matrices once and keep them with the collection
            self.fde = fde_transform(self.spec, config.dim)
            Pipeline([self.fde]).save(folder)
        super().__init__(root, config, registry, engine)

    def make_inputs(self) -> TokenInputs:
        return TokenInputs(self, self.fde, self.spec.max_tokens, self.codec)

    def make_relevance(self) -> Relevance:
        return Relevance(self, lambda examples, on_done: self.queries.relevance_profiles(examples, on_done))

    def make_queries(self) -> TokenQueries:
        return TokenQueries(self, self.fde, self.codec)

    def index_dim_for(self, config: CollectionConfig) -> int:
        return self.fde.output_dim

    # ---- reads -----------------------------------------------------------

    def get(self, point_id: Any, with_vector: bool = False) -> StoredPoint:
        point = super().get(point_id)
        if not with_vector:
            return point
        return replace(point, tokens=self.store.tokens_by_rows([point.row], self.config.dim, self.codec.decode).get(point.row))

    def scroll(self, offset: int | None, limit: int, with_vector: bool = False) -> tuple[list[StoredPoint], int | None]:
        points, next_offset = super().scroll(offset, limit)
        if with_vector:  # a point's vectors are its tokens (its FDE is derived)
            tokens = self.store.tokens_by_rows([p.row for p in points], self.config.dim, self.codec.decode)
            points = [replace(p, tokens=tokens.get(p.row)) for p in points]
        return points, next_offset

    # ---- reporting -------------------------------------------------------

    def info(self) -> dict[str, Any]:
        info = super().info()
        # The FDE stages (the compression fit's, or float32 FDEs), then the token vectors exact Chamfer reads.
        fde_stages = info["stages"] if self.compression.fitted else [{"name": "fde float32", "bytes_per_vector": 4 * self.fde.output_dim}]
        return {
            **info,
            "multivector": True,
            "muvera": {**asdict(self.spec), "fde_dim": self.fde.output_dim},
            "stages": [*fde_stages, {"name": f"tokens {self.codec.storage}", "bytes_per_vector": self.codec.bytes_per_token}],
        }
