"""What users send, made into what a collection stores and searches: checked points, embedded texts, query vectors.

Dense and sharded collections use PointInputs as it is; multi-vector collections subclass it (index/multivector.py).
It reads only the collection's config and serving model, so a promotion or reprojection is seen at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from encoders.base import Encoder, l2_normalize
from encoders.errors import InvalidInput
from index.config import CollectionConfig
from index.models.versions import Serving
from index.requests import PointInput, Query
from index.storage.store import PointId, PointRecord, Store, StoredPoint, validate_point_id


# What a model gives per point: one vector each ((n, dim) rows), or a multi-vector point's (tokens, dim) set each.
Vectors = np.ndarray | list[np.ndarray]


def map_rows(fn: Callable[[np.ndarray], np.ndarray], vectors: Vectors) -> Vectors:
    """``fn`` over rows of vectors; a token set is mapped token by token (every set in one call)."""
    if not isinstance(vectors, list):
        return fn(vectors)
    if not vectors:
        return []
    return list(np.split(fn(np.concatenate(vectors)), np.cumsum([len(s) for s in vectors])[:-1]))


class ServingHost(Protocol):
    """What the inputs read from their collection: its config and the model version serving now."""

    @property
    def config(self) -> CollectionConfig: ...

    @property
    def serving(self) -> Serving: ...


def reject_token_vectors(vectors: object, where: dict[str, Any]) -> None:
    if vectors is not None:
        raise InvalidInput("'vectors' (token vectors) need a multi-vector collection; give one 'vector'", code="vectors_not_supported", details=where)


class PointInputs:
    def __init__(self, host: ServingHost):
        self.host = host

    @property
    def config(self) -> CollectionConfig:
        return self.host.config

    def check_point(self, point: PointInput, where: dict[str, Any]) -> np.ndarray | None:
        """Validate one point: its final vector, or None when its text still needs embedding."""
        validate_point_id(point.id)
        if point.text is not None and not point.text.strip():
            raise InvalidInput("text must not be empty", code="empty_text", details=where)
        reject_token_vectors(point.vectors, where)
        if point.vector is not None:
            return self.check_vector(point.vector, where)
        if point.text is not None:
            self.require_encoder("points", where)
            return None
        raise InvalidInput("a point needs 'text' or 'vector'", code="missing_content", details=where)

    def prepare(self, points: Sequence[PointInput], serving: Serving, on_done: Callable[[int], None] | None = None) -> list[PointRecord]:
        """Validate every point, then embed the texts in one call of the encoding path (``on_done(n)``: n embedded). Any error rejects the whole batch."""
        if not points:
            raise InvalidInput("a batch needs at least one point", code="empty_batch")
        seen: set[PointId] = set()
        vectors: list[np.ndarray | None] = []
        for i, point in enumerate(points):
            where = {"index": i, "id": point.id}
            vectors.append(self.check_point(point, where))
            if point.id in seen:
                raise InvalidInput(f"id {point.id!r} appears twice in the batch", code="duplicate_id", details=where)
            seen.add(point.id)
        to_embed = [i for i, v in enumerate(vectors) if v is None]
        if to_embed:
            embedded = self.embed_texts([str(points[i].text) for i in to_embed], serving, on_done)
            for i, vector in zip(to_embed, embedded, strict=True):
                vectors[i] = vector
        return self.records(points, [v for v in vectors if v is not None])

    def embed_texts(self, texts: list[str], serving: Serving, on_done: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """What ``check_point`` returns for a point with a vector, made from the texts of those without (``on_done(n)``: n finished)."""
        return list(self.to_index(self.require_encoder("points", {}, serving).encode_docs(texts, on_done), serving))

    def records(self, points: Sequence[PointInput], vectors: list[np.ndarray]) -> list[PointRecord]:
        """The rows to write, from validated points and their checked or embedded vectors."""
        return [PointRecord(id=p.id, vector=v, text=p.text, payload=p.payload) for p, v in zip(points, vectors, strict=True)]

    def require_encoder(self, what: str, where: dict[str, Any], serving: Serving | None = None) -> Encoder:
        encoder = (serving or self.host.serving).encoder
        if encoder is None:
            raise InvalidInput(
                f"collection {self.config.name!r} has no model, so {what} need a 'vector'",
                code="text_not_supported",
                details=where,
            )
        return encoder

    def to_index(self, embedded: np.ndarray, serving: Serving) -> np.ndarray:
        """Vectors from ``serving``'s model, mapped into the index's space and normalised as the metric wants."""
        return self.normalise(serving.to_index(embedded))

    # ---- what a model upgrade samples and compares (index/models/upgrades.py); TokenInputs gives token sets ----

    def stored_vectors(self, store: Store, points: Sequence[StoredPoint]) -> Vectors:
        """The index-space vectors of stored points (read with their vectors)."""
        return np.stack([p.vector for p in points if p.vector is not None])

    def model_vectors(self, encoder: Encoder, texts: list[str], queries: bool = False, on_done: Callable[[int], None] | None = None) -> Vectors:
        """What ``encoder`` makes of texts for this collection, in its own space: as documents, or as queries."""
        return encoder.encode_queries(texts) if queries else encoder.encode_docs(texts, on_done)

    def into_index(self, vectors: Vectors, serving: Serving) -> Vectors:
        """``model_vectors`` of ``serving``'s model in the index's space."""
        assert isinstance(vectors, np.ndarray)
        return self.to_index(vectors, serving)

    def pooled(self, vectors: Vectors) -> np.ndarray:
        """One row per point, what compatibility maps are fitted on."""
        assert isinstance(vectors, np.ndarray)
        return vectors

    def check_vector(self, values: Sequence[float], where: dict[str, Any]) -> np.ndarray:
        with np.errstate(over="ignore"):  # values beyond float32 become inf and are rejected below
            vector = np.asarray(values, dtype=np.float32)
        if vector.shape != (self.config.dim,):
            raise InvalidInput(
                f"vector has dimension {vector.shape[0] if vector.ndim == 1 else vector.shape}, collection expects {self.config.dim}",
                code="wrong_dimension",
                details={**where, "expected": self.config.dim, "got": int(vector.size)},
            )
        if not np.isfinite(vector).all():
            raise InvalidInput("vector contains NaN or infinite values", code="non_finite_vector", details=where)
        if self.config.metric == "cosine" and not np.any(vector):
            raise InvalidInput("a zero vector has no direction, so no cosine", code="zero_vector", details=where)
        return self.normalise(vector)

    def normalise(self, vector: np.ndarray) -> np.ndarray:
        return l2_normalize(vector) if self.config.metric == "cosine" else vector.astype(np.float32, copy=False)

    def query_vectors(self, queries: Sequence[Query]) -> np.ndarray:
        """Validated, embedded and normalised query vectors in the index's space, one row per query."""
        serving = self.host.serving
        out = np.zeros((len(queries), self.config.dim), np.float32)
        texts: list[int] = []
        for i, q in enumerate(queries):
            where = {"query": i}
            reject_token_vectors(q.vectors, where)
            if (q.text is None) == (q.vector is None):
                raise InvalidInput("a query needs exactly one of 'text' or 'vector'", code="invalid_query", details=where)
            if q.text is not None:
                if not q.text.strip():
                    raise InvalidInput("query text must not be empty", code="empty_text", details=where)
                self.require_encoder("queries", where, serving)
                texts.append(i)
            else:
                assert q.vector is not None
                out[i] = self.check_vector(q.vector, where)
        if texts:
            embedded = self.require_encoder("queries", {}, serving).encode_queries([str(queries[i].text) for i in texts])
            out[texts] = self.to_index(embedded, serving)
        return out

    def sample_query_vectors(self, queries: Sequence[str | Sequence[float]]) -> np.ndarray:
        """Query samples for a compression fit (LeanVec-OOD): texts embedded as queries, vectors checked; one row each."""
        return self.query_vectors([Query(text=q) if isinstance(q, str) else Query(vector=q) for q in queries])
