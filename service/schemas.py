"""Pydantic models of the v1 HTTP contract (DESIGN.md section 3), and their mapping to index types."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StrictStr,
    Tag,
    model_validator,
)

from encoders.errors import InvalidInput
from index.backends.faiss_index import IndexSpec
from index.backends.hnsw_graph import InsertionOrder
from index.compression.spec import CompressionSpec
from index.config import MuveraSpec
from index.models.upgrades import UpgradeOptions
from index.query.filters import Condition, Filter, IsEmpty, IsNull, Match, Range
from index.query.fusion import Fusion
from index.relevance.calibrators import DEFAULT_LOSS, PROFILE_DEPTH
from index.relevance.fit import Example, FitOptions
from index.relevance.operating import DEFAULT_BETA, OPERATING_K
from index.requests import PointInput, Query
from index.shards.collection import MAX_SHARDS
from index.storage.payload_index import PayloadIndexSpec
from index.storage.text_index import DEFAULT_TOKENIZER, TextIndexSpec
from index.validation import MAX_LOOKUP_IDS, check_filter_size
from service.validation import (
    CollectionName,
    FilterKey,
    Integer,
    Label,
    Payload,
    PointIdIn,
    Scalar,
    Seed,
    Text,
    TextOrVector,
    Vector,
    pydantic_error,
)

PointIdT = StrictInt | StrictStr  # as answered; requests take PointIdIn


class Strict(BaseModel):
    """Request bodies: no unknown fields, no coercion (a string is never a number, nor a number a string), finite floats."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ---- collections -----------------------------------------------------------


class IndexConfig(Strict):
    type: Literal["flat", "hnsw", "ivf"] = Field("flat", description="flat: exact search; hnsw: graph ANN; ivf: inverted lists (k-means) per segment.")
    m: Integer = Field(32, ge=4, le=128, description="HNSW links per node.")
    ef_construction: Integer = Field(200, ge=8, le=4096)
    ef_search: Integer | None = Field(
        None,
        ge=1,
        le=32768,
        description="A fixed HNSW search depth for every segment. Unset (the default): each sealed segment searches at the depth measured when it was built to reach target_recall.",
    )
    target_recall: float = Field(0.95, ge=0.5, le=0.999, description="The recall@10 each HNSW or IVF segment's calibrated search depth (ef, nprobe) reaches on vectors held out while it was built.")
    insertion_order: InsertionOrder = Field("lid_desc", description="The order points enter each HNSW graph: by descending (the default) or ascending local intrinsic dimensionality, or as they arrived.")
    nlist: Integer | None = Field(None, ge=1, le=1_000_000, description="IVF lists per segment; unset: 4 sqrt(segment points).")
    nprobe: Integer | None = Field(None, ge=1, le=1_000_000, description="IVF lists each query probes; unset: per segment, the number measured at build to reach target_recall.")

    def to_spec(self) -> IndexSpec:
        return IndexSpec(**self.model_dump())


class MatryoshkaConfig(Strict):
    dim: Integer | None = Field(None, description="Keep the first dim dimensions (renormalised).")
    funnel: list[Integer] | None = Field(None, description="Shortlist on the first prefix length, rescore on each longer one, rerank on the full vector.")


class LeanVecConfig(Strict):
    dim: Integer = Field(description="Projected dimension (at most the input width).")
    variant: Literal["id", "ood"] = Field("id", description="id: PCA of the documents; ood: query-aware projections (needs queries).")
    queries: list[TextOrVector] | None = Field(None, description="Query samples (texts or vectors) for 'ood'; at least 20.")


class QuantizerConfig(Strict):
    kind: Literal["none", "int8", "lvq8", "lvq4", "lvq4x8", "binary"] = "none"
    bits: Integer | None = Field(None, description="binary only: bit planes per dimension, 1..4 (default 1); learned: binarization steps.")
    learned: bool = Field(False, description="binary only: learned recurrent binarization (BEBR) fitted on the stored vectors, instead of sign bits.")
    code_bits: Integer | None = Field(None, description="learned binary only: bits per step, a multiple of 8 up to 4 x the input width (default: the width).")
    scoring: Literal["symmetric", "asymmetric"] = Field(
        "symmetric", description="binary only: coarse stage by Hamming distance of the binarized query (then every plane rescored), or the float query against every code."
    )


class RerankConfig(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    oversample: float | None = Field(
        None,
        description="Candidates the coarse stage keeps, as a multiple of k (1..4000); params.oversample overrides it per query. Unset: the fit chooses it (and each rescoring stage's depth) to reach target_recall on held queries.",
    )
    target_recall: float = Field(0.95, description="The recall@10 (against exact search, on held queries not in the index) the fit's chosen depths reach; 0.5..0.999.")
    with_: Literal["float", "int8"] = Field("float", alias="with", description="The copy the final rerank scores.")
    storage: Literal["ram", "mmap"] = Field("mmap", description="That copy memory-mapped from disk (RAM holds only the coarse stage), or in RAM.")


class CompressionConfig(Strict):
    matryoshka: MatryoshkaConfig | None = None
    leanvec: LeanVecConfig | None = None
    quantizer: QuantizerConfig | None = None
    rerank: RerankConfig | None = None

    def to_spec(self) -> CompressionSpec:
        return CompressionSpec.from_json(self.model_dump(by_alias=True, exclude_none=True, exclude={"leanvec": {"queries"}}))

    def query_samples(self) -> list[str | list[float]] | None:
        return self.leanvec.queries if self.leanvec is not None else None


class MuveraConfig(Strict):
    """FDE settings of a multi-vector collection; checked by the server (400 with a code when out of range)."""

    k_sim: Integer = Field(3, description="SimHash bits per repetition: 2^k_sim partitions (< 31).")
    d_proj: Integer | None = Field(None, description="Block size per partition (<= the token dim). Default: 16, or the token dim with 'identity'.")
    r_reps: Integer = Field(20, description="Independent repetitions, concatenated.")
    projection: Literal["identity", "ams", "dense"] = Field("ams", description="Inner projection of each token to d_proj.")
    final_dim: Integer | None = Field(None, description="Optional Count-Sketch of the whole FDE down to this size.")
    seed: Seed = 1
    max_tokens: Integer = Field(512, description="Most token vectors one point or query may carry.")
    fill_empty: bool = Field(False, description="A document's empty partitions take the block of its nearest token (the paper's default; off: fewer candidates on sentence queries).")
    query_fill_empty: bool = Field(False, description="The same for queries (off in the paper and its reference code).")
    token_storage: Literal["float32", "float16", "int8"] = Field("float32", description="How stored token vectors (read by the exact Chamfer rerank) are kept: int8 has one scale per token.")

    def to_spec(self) -> MuveraSpec:
        return MuveraSpec(**self.model_dump())


class TextIndexConfig(Strict):
    tokenizer: Literal["porter", "unicode61", "ascii", "trigram"] = Field(
        DEFAULT_TOKENIZER,
        description="SQLite FTS5 tokenizer: porter (English stemming over unicode61), unicode61 (words, case and accents folded), ascii, trigram (substrings).",
    )

    def to_spec(self) -> TextIndexSpec:
        return TextIndexSpec(tokenizer=self.tokenizer)


class CreateCollection(Strict):
    name: CollectionName = Field(description="1-63 letters, digits, '_' or '-', starting with a letter or digit.")
    model: Label | None = Field(None, description="Embedding model (see GET /v1/models). Default: minilm-l6, unless only 'dim' is given.")
    dim: Integer | None = Field(None, ge=1, le=65536, description="Vector dimension; alone, it makes a vectors-only collection.")
    metric: Literal["cosine", "ip", "l2"] = "cosine"
    multivector: bool = Field(False, description="Token vectors per point (ColBERT-style), searched through MUVERA FDEs and ranked by exact Chamfer.")
    muvera: MuveraConfig | None = Field(None, description="FDE settings of a multi-vector collection.")
    index: IndexConfig = Field(default_factory=lambda: IndexConfig())
    compression: CompressionConfig | None = Field(None, description="Compressed multi-stage search; fitted on the stored vectors by a job.")
    text_index: TextIndexConfig | None = Field(None, description="A full-text (BM25) index of the stored text, for query modes 'keyword' and 'hybrid'.")
    shards: Integer = Field(
        1, ge=1, le=MAX_SHARDS, description="Shards the points are split over by a stable hash of their id (Ray actors in cluster mode); queries fan out to all."
    )


class ModelRef(BaseModel):
    version: int
    name: str | None
    dim: int
    serving: bool
    retired: bool = Field(False, description="A native rebuild moved the index out of reach of this version's vectors: it cannot serve again.")


class StageInfo(BaseModel):
    name: str
    bytes_per_vector: int
    recall_at_10: float | None = None


class SegmentInfo(BaseModel):
    id: str
    state: Literal["sealed", "sealing", "appendable"]
    index: str = Field(description="flat / hnsw / compressed for sealed segments; exact for appendable ones.")
    points: int = Field(description="Live points.")
    dead: int
    memory_bytes: int
    graph: dict[str, Any] | None = Field(
        None, description="HNSW segments: insertion order, LID distribution (mean, p10/p50/p90), the calibrated ef_search and the recall@10 it measured on held vectors."
    )
    lists: dict[str, Any] | None = Field(None, description="IVF segments: nlist, the calibrated nprobe and the recall@10 it measured on held vectors (and recent queries).")


class PayloadIndexConfig(Strict):
    key: FilterKey = Field(description="The payload key (dots descend into objects).")
    type: Literal["keyword", "integer", "float", "bool", "datetime"] = Field(
        description="keyword: strings (match, any); integer, float: numbers (match, any, range); bool; datetime: ISO-8601 strings (range)."
    )

    def to_spec(self) -> PayloadIndexSpec:
        return PayloadIndexSpec(key=self.key, type=self.type)


class PayloadIndexInfo(BaseModel):
    key: str
    type: str
    state: Literal["ready", "filling"] = Field(description="filling: its job is still indexing the points stored before it (queries do not use it yet).")
    values: int | None = Field(None, description="Values held (GET .../indexes only).")
    points: int | None = Field(None, description="Points holding at least one value (GET .../indexes only).")


class PayloadIndexList(BaseModel):
    indexes: list[PayloadIndexInfo]


class CollectionInfo(BaseModel):
    name: str
    model: str | None
    models: list[ModelRef]
    dim: int
    metric: str
    multivector: bool
    muvera: dict[str, Any] | None = Field(None, description="Multi-vector collections: the FDE settings and fde_dim.")
    index: dict[str, Any]
    compression: dict[str, Any] | None
    points: int
    memory_bytes: int
    stages: list[StageInfo]
    operation_id: int
    dead_rows: int = Field(description="Deleted or overwritten rows still held by segments until the optimizer vacuums or merges them.")
    segments: list[SegmentInfo] = Field(description="Sealed segments, then those being sealed, then the appendable one.")
    relevance: dict[str, Any] | None = Field(None, description="The fitted relevance calibrator of the serving model, if any.")
    text_index: dict[str, Any] | None = Field(None, description="The full-text index: tokenizer, state ('ready' or 'filling') and points indexed; null when none.")
    payload_indexes: list[PayloadIndexInfo] = Field(default_factory=list, description="Payload indexes: key, type and state ('ready' or 'filling').")
    created_at: float
    shards: list[dict[str, Any]] | None = Field(
        None, description="Sharded collections: per shard its state ('up' or 'unavailable'), points, memory_bytes, segments, node and pid."
    )
    placement: Literal["in_process", "ray"] | None = Field(None, description="Sharded collections: where the shards run.")


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class BackendCheck(BaseModel):
    backend: str
    precision: str | None
    min_cosine: float | None = Field(description="Lowest cosine with torch's vector over the probe set.")
    mean_cosine: float | None
    probe_docs_per_s: float | None = Field(description="Probe-set rate, measured interleaved with the other backends on this machine.")
    passed: bool = Field(description="min_cosine >= 0.99: eligible to be the default.")
    error: str | None = None


class ModelBackend(BaseModel):
    backend: str = Field(description="What embeds for this model: torch, onnx, onnx-int8, openvino, openvino-bf16 (or model2vec).")
    precision: str
    forced: bool = Field(description="Chosen by TROVE_ENCODER_BACKEND rather than as the fastest backend that passed.")
    min_cosine: float = Field(description="This load's check of the chosen backend against torch on the probe set.")
    reports: list[BackendCheck]


class ModelDescription(BaseModel):
    name: str
    dim: int
    kind: Literal["dense", "multivector"]
    kinds: list[str]
    family: str
    source: str
    max_tokens: int | None
    backend: ModelBackend | None = None


class ModelList(BaseModel):
    models: list[ModelDescription]


# ---- points ----------------------------------------------------------------


class Point(Strict):
    id: PointIdIn
    text: Text | None = None
    vector: Vector | None = None
    vectors: list[Vector] | None = Field(None, description="Token vectors, for multi-vector collections.")
    payload: Payload | None = None

    def to_input(self) -> PointInput:
        return PointInput(id=self.id, text=self.text, vector=self.vector, vectors=self.vectors, payload=self.payload)


class UpsertPoints(Strict):
    points: list[Point] = Field(min_length=1)


class DeletePoints(Strict):
    ids: list[PointIdIn] = Field(min_length=1)


class LookupPoints(Strict):
    ids: list[PointIdIn] = Field(min_length=1, max_length=MAX_LOOKUP_IDS)
    with_vector: bool = False


class ScrollPoints(Strict):
    offset: Integer | None = Field(None, ge=-1, le=2**63 - 1, description="The next_offset of the previous page; unset: the first page.")
    limit: Integer = Field(100, ge=1, le=MAX_LOOKUP_IDS)
    with_vector: bool = False


class PointPage(BaseModel):
    points: list[PointOut] = Field(description="Points in storage order (oldest first; an overwrite moves a point to the end).")
    next_offset: int | None = Field(description="Pass as offset for the next page; null on the last page.")


class WriteAck(BaseModel):
    status: Literal["acknowledged"] = "acknowledged"
    count: int
    operation_id: int


class PointOut(BaseModel):
    id: PointIdT
    text: str | None
    payload: dict[str, Any] | None
    vector: list[float] | None = None
    vectors: list[list[float]] | None = Field(None, description="Multi-vector collections, with_vector=true: the token vectors.")
    model_version: int


class PointList(BaseModel):
    points: list[PointOut] = Field(description="The points found, in the order their ids were asked for.")
    missing: list[PointIdT] = Field(description="The ids asked for that no point has.")


# ---- queries ---------------------------------------------------------------


class MatchValue(Strict):
    value: Scalar


class MatchAny(Strict):
    any: list[Scalar] = Field(min_length=1)


class RangeBounds(Strict):
    gt: Scalar | None = None
    gte: Scalar | None = None
    lt: Scalar | None = None
    lte: Scalar | None = None


class FieldCondition(Strict):
    """One condition on a payload key: exactly one of match, any, range, is_null, is_empty."""

    key: FilterKey
    match: MatchValue | MatchAny | Scalar | None = Field(None, description="{'value': v}, {'any': [v, ...]} or a bare value: some value of the key equals one.")
    any: list[Scalar] | None = Field(None, min_length=1, description="Some value of the key equals one of these (as match.any).")
    range: RangeBounds | None = Field(None, description="gt/gte/lt/lte: numbers, or ISO-8601 date-times (strings; no zone means UTC).")
    is_null: bool | None = Field(None, description="true: the key holds null itself; false: it does not.")
    is_empty: bool | None = Field(None, description="true: the key has no value (missing, null, [], only nulls); false: it has one.")

    @model_validator(mode="after")
    def _one(self) -> FieldCondition:
        given = [name for name in ("match", "any", "range", "is_null", "is_empty") if getattr(self, name) is not None]
        if len(given) != 1:
            raise pydantic_error(InvalidInput("a condition has a 'key' and exactly one of match, any, range, is_null, is_empty", code="invalid_filter"))
        return self

    def value_count(self) -> int:
        if isinstance(self.match, MatchAny):
            return len(self.match.any)
        if self.any is not None:
            return len(self.any)
        if self.range is not None:
            return len(self.range.model_dump(exclude_none=True))
        return 1 if self.match is not None else 0

    def to_condition(self) -> Condition:
        if isinstance(self.match, MatchValue):
            return Match(self.key, (self.match.value,))
        if isinstance(self.match, MatchAny):
            return Match(self.key, tuple(self.match.any))
        if self.match is not None:
            return Match(self.key, (self.match,))
        if self.any is not None:
            return Match(self.key, tuple(self.any))
        if self.range is not None:
            return Range(self.key, **self.range.model_dump())
        test: Condition = IsNull(self.key) if self.is_null is not None else IsEmpty(self.key)
        return test if (self.is_null if self.is_null is not None else self.is_empty) else Filter(must_not=(test,))


def _clause_kind(value: Any) -> str | None:
    """A filter list item is a condition (it has a 'key') or a nested filter."""
    if isinstance(value, FieldCondition) or (isinstance(value, dict) and "key" in value):
        return "condition"
    return "filter" if isinstance(value, dict | FilterModel) else None


FilterClause = Annotated[
    Annotated[FieldCondition, Tag("condition")] | Annotated["FilterModel", Tag("filter")],
    Discriminator(_clause_kind, custom_error_type="invalid_filter", custom_error_message="filter items are conditions (with a 'key') or nested filters"),
]


class FilterModel(Strict):
    """Every must item holds, at least one should item does (when any are given), no must_not item does; items nest."""

    must: list[FilterClause] = Field(default_factory=list)
    should: list[FilterClause] = Field(default_factory=list)
    must_not: list[FilterClause] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bounded(self) -> FilterModel:
        try:
            check_filter_size(*self.size())
            self.to_filter()  # range bounds are numbers or date-times: refused here, with the request
        except InvalidInput as err:
            raise pydantic_error(err) from None
        return self

    def size(self) -> tuple[int, int]:
        conditions, values = 0, 0
        for item in (*self.must, *self.should, *self.must_not):
            inner = item.size() if isinstance(item, FilterModel) else (0, item.value_count())
            conditions, values = conditions + 1 + inner[0], values + inner[1]
        return conditions, values

    def _filter(self) -> Filter:
        def convert(items: list[FieldCondition | FilterModel]) -> tuple[Condition, ...]:
            return tuple(item._filter() if isinstance(item, FilterModel) else item.to_condition() for item in items)

        return Filter(must=convert(self.must), should=convert(self.should), must_not=convert(self.must_not))

    def to_filter(self) -> Filter | None:
        """None for a filter without conditions: it allows every point."""
        return self._filter() if (self.must or self.should or self.must_not) else None


class QueryParams(Strict):
    exact: bool = Field(False, description="Bypass approximate search and score every point.")
    oversample: float | None = Field(
        None, ge=1.0, le=1000.0, description="Search depth as a multiple of k (HNSW ef); multi-vector: FDE candidates reranked by Chamfer (default 10)."
    )
    fde_only: bool = Field(False, description="Multi-vector: rank by FDE similarity alone, without the Chamfer rerank.")


class FusionWeights(Strict):
    dense: float = Field(1.0, description=">= 0.")
    keyword: float = Field(1.0, description=">= 0.")


class FusionConfig(Strict):
    method: Literal["rrf", "dbsf"] = Field("rrf", description="rrf: sum of weight / (k + rank); dbsf: sum of weight * score normalised by its list's mean +- 3 std.")
    weights: FusionWeights | None = Field(None, description="Weight of each list (default 1 each); at least one above 0.")
    k: float | None = Field(None, description="rrf only: the rank constant (default 1), >= 0.")
    depth: Integer | None = Field(None, description="Candidates taken from each list (default max(k, 100)), 1..10000.")

    def to_fusion(self) -> Fusion:
        weights = self.weights.model_dump() if self.weights is not None else {"dense": 1.0, "keyword": 1.0}
        return Fusion(method=self.method, weights=weights, k=self.k, depth=self.depth)


class QueryRequest(Strict):
    text: Text | None = None
    vector: Vector | None = None
    vectors: list[Vector] | None = None
    k: Integer = Field(10, ge=1, le=1000)
    filter: FilterModel | None = None
    min_score: float | None = Field(None, description="Drop results scoring below this (for l2, scores are negated distances).")
    min_relevance: Annotated[float, Field(ge=0.0, le=1.0)] | Literal["default"] | None = Field(
        None, description="Drop results whose relevance is below this (0..1), or 'default': the fitted operating point. Needs a fitted relevance calibrator."
    )
    with_relevance: bool = Field(False, description="Answer each hit's calibrated 'relevance' (0..1); min_relevance and with_relevance_details imply it. Needs a fitted relevance calibrator.")
    with_relevance_details: bool = Field(False, description="Answer 'relevance_details': this query's own slope, offset and rank decay, and how many candidates pass the threshold.")
    with_payload: bool = True
    with_vector: bool = False
    params: QueryParams | None = None
    mode: Literal["dense", "keyword", "hybrid"] = Field(
        "dense", description="dense: vector search; keyword: BM25 over the text index; hybrid: both, fused (needs a text index). Hybrid embeds 'text' unless 'vector'/'vectors' is given too."
    )
    fusion: FusionConfig | None = Field(None, description="mode 'hybrid' only: how the dense and keyword lists are fused.")
    allow_partial: bool = Field(
        False, description="Sharded collections: answer from the shards that are up (with 'partial': true) instead of 503 shard_unavailable while one is down."
    )

    def to_query(self) -> Query:
        params = self.params or QueryParams()
        return Query(
            text=self.text,
            vector=self.vector,
            k=self.k,
            filter=self.filter.to_filter() if self.filter else None,
            min_score=self.min_score,
            with_payload=self.with_payload,
            with_vector=self.with_vector,
            exact=params.exact,
            oversample=params.oversample,
            min_relevance=self.min_relevance,
            with_relevance=self.with_relevance,
            with_relevance_details=self.with_relevance_details,
            vectors=self.vectors,
            fde_only=params.fde_only,
            mode=self.mode,
            fusion=self.fusion.to_fusion() if self.fusion is not None else None,
        )


class BatchQueryRequest(Strict):
    queries: list[QueryRequest] = Field(min_length=1, max_length=1024)


class SourceRank(BaseModel):
    rank: int = Field(description="Position in that list, from 1.")
    score: float = Field(description="That list's score: the dense similarity, or BM25 (higher is better).")


class HitOut(BaseModel):
    id: PointIdT
    score: float
    relevance: float | None = None
    fde_score: float | None = Field(None, description="Multi-vector: the FDE inner product that shortlisted the point (score is exact Chamfer).")
    payload: dict[str, Any] | None = None
    vector: list[float] | None = None
    vectors: list[list[float]] | None = None
    sources: dict[Literal["dense", "keyword"], SourceRank] | None = Field(
        None, description="Modes 'keyword' and 'hybrid': the lists the hit came from, with its rank and score in each ('score' is then BM25, or the fused score)."
    )


class QueryResponse(BaseModel):
    results: list[HitOut]
    partial: bool | None = Field(None, description="With allow_partial on a sharded collection: true when some shards did not answer.")
    unavailable_shards: list[int] | None = Field(None, description="The shards left out of a partial answer.")
    relevance_details: dict[str, Any] | None = Field(None, description="With 'with_relevance_details': why the list was cut where it was.")
    took_ms: float


class BatchQueryResponse(BaseModel):
    results: list[list[HitOut]]
    partial: bool | None = Field(None, description="As in a single query's answer, for the whole batch.")
    unavailable_shards: list[int] | None = None
    relevance_details: list[dict[str, Any] | None] | None = Field(None, description="Per query, as in a single query's answer (null where not asked).")
    took_ms: float


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---- builds and jobs -------------------------------------------------------


class BuildSourceModel(Strict):
    path: Label = Field(min_length=1, description="A file in the imports folder (<data_dir>/imports, or TROVE_BUILD_SOURCE_DIRS); a relative path is taken from there.")
    format: Literal["jsonl", "parquet", "npy"]
    ids_path: Label | None = Field(None, min_length=1, description="npy only: ids, one per row (.npy or text, one per line). Default: row numbers from 0.")


class BuildRequest(Strict):
    source: BuildSourceModel
    on_error: Literal["fail", "skip"] = Field("fail", description="fail: the first bad row fails the build; skip: bad rows are skipped and counted.")
    engine: Literal["local", "ray"] = Field("local", description="ray: embed on Ray (needs the 'distributed' extra).")


class JobAccepted(BaseModel):
    job_id: str


class JobOut(BaseModel):
    id: str
    kind: str
    collection: str | None
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float
    done: int
    total: int | None
    params: dict[str, Any]
    error: ErrorBody | None
    result: dict[str, Any] | None
    eta_seconds: float | None = Field(None, description="While running: seconds left at the rate the job has gone so far.")
    created_at: float
    started_at: float | None
    finished_at: float | None


class JobList(BaseModel):
    jobs: list[JobOut]


# ---- relevance -------------------------------------------------------------


class RelevanceExample(Strict):
    query: Text = Field(min_length=1)
    relevant: list[PointIdIn]


class RelevanceRequest(Strict):
    examples: list[RelevanceExample] | None = Field(None, description="Labelled queries; or give 'path', or 'refit'.")
    path: Label | None = Field(None, min_length=1, description="A JSONL file of {'query', 'relevant': [ids]} in the imports folder (as for builds).")
    calibrator: Literal["cosine_adapter", "platt", "isotonic", "identity"] = "cosine_adapter"
    target_recall: float | None = Field(None, gt=0, le=1, description="The highest threshold keeping this recall of the validation queries' top-k relevant items.")
    target_precision: float | None = Field(None, gt=0, le=1, description="Instead: the lowest threshold reaching this precision on their top k.")
    beta: float = Field(DEFAULT_BETA, gt=0, le=100, description="With no target: the threshold maximising F-beta of the validation queries' top k.")
    k: Integer = Field(OPERATING_K, ge=1, le=PROFILE_DEPTH, description="The list length targets and F-beta are measured on.")
    features: list[Literal["embedding", "profile", "gaps", "length"]] | None = Field(None, min_length=1, description="cosine_adapter inputs; default: the better on validation of all four and of the score shape alone (profile, gaps, length).")
    loss: Literal["pointwise", "pairwise", "listwise"] = Field(DEFAULT_LOSS, description="cosine_adapter training loss: pointwise, or beside a ranking loss within each query.")
    refit: bool = Field(False, description="Fit for the serving model version from the stored examples (its own, else those of the newest earlier version).")
    seed: Seed = 0

    def options(self) -> FitOptions:
        if self.target_recall is not None and self.target_precision is not None:
            raise InvalidInput("give at most one of target_recall and target_precision", code="invalid_relevance_request")
        return FitOptions(
            calibrator=self.calibrator,
            target_recall=self.target_recall,
            target_precision=self.target_precision,
            beta=self.beta,
            k=self.k,
            features=tuple(self.features) if self.features else None,
            loss=self.loss,
            seed=self.seed,
        )

    def inline_examples(self) -> list[Example] | None:
        if (self.examples is not None) + (self.path is not None) + self.refit != 1:
            raise InvalidInput("give exactly one of 'examples', 'path' or 'refit'", code="invalid_relevance_request")
        return [Example(e.query, tuple(e.relevant)) for e in self.examples] if self.examples is not None else None


# ---- model upgrades --------------------------------------------------------


class UpgradeRequest(Strict):
    model: Label = Field(description="The new model (see GET /v1/models).")
    sample: Integer = Field(5000, ge=50, le=1_000_000, description="Stored texts re-embedded with the new model; a fifth is held out for the report.")
    method: Literal["orthogonal", "affine", "ridge", "low_rank", "mlp", "auto"] = Field(
        "orthogonal", description="mlp: the ridge map plus a small residual MLP (torch, seeded, early stopping); auto: fit every method, keep the best on the held-out sample."
    )
    mode: Literal["query_side", "reproject"] = Field(
        "query_side", description="query_side: the index is untouched, new queries and points are mapped into it; reproject: promotion maps the stored vectors into the new model's space."
    )
    examples: list[RelevanceExample] | None = Field(None, description="Labelled queries: the report adds nDCG@10 and recall@10 and judges the criterion on nDCG.")
    seed: Seed = 0

    def options(self) -> UpgradeOptions:
        examples = tuple(Example(e.query, tuple(e.relevant)) for e in self.examples or ())
        return UpgradeOptions(model=self.model, sample=self.sample, method=self.method, mode=self.mode, examples=examples, seed=self.seed)


class PromoteRequest(Strict):
    force: bool = Field(False, description="Promote even when the compatibility criterion fails.")


class BackfillRequest(Strict):
    rate: float | None = Field(None, gt=0, le=1_000_000, description="Points re-encoded per second at most; omitted: as fast as the model encodes.")


class UpgradeList(BaseModel):
    upgrades: list[dict[str, Any]]
