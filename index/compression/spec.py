"""A collection's compression config (DESIGN.md section 3): what it asks for, whether that is valid, which transforms it means.

The config is stored in collection.json; the fitted transforms live under the collection's
``compression/`` folder (index/compression/state.py) and the search that uses them in index/compression/multistage.py.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from encoders.errors import InvalidInput
from encoders.transforms.base import Transform
from encoders.transforms.bebr import MAX_CODE_BITS_PER_DIM, LearnedBinaryQuantizer
from encoders.transforms.binary import MAX_BITS, BinaryQuantizer
from encoders.transforms.leanvec import MIN_QUERIES, LeanVec
from encoders.transforms.lvq import LVQ, LVQ_VARIANTS, Int8Quantizer
from encoders.transforms.matryoshka import Matryoshka

if TYPE_CHECKING:
    from index.config import CollectionConfig

QuantizerKind = Literal["none", "int8", "lvq8", "lvq4", "lvq4x8", "binary"]
RerankWith = Literal["float", "int8"]
Scoring = Literal["symmetric", "asymmetric"]
RerankStorage = Literal["ram", "mmap"]
MAX_OVERSAMPLE = 4000.0
DEFAULT_TARGET_RECALL = 0.95
# A fit needs at least this many stored points (and no fewer than a LeanVec projection's dim).
MIN_FIT_POINTS = 32


def _invalid(message: str, code: str, **details: Any) -> InvalidInput:
    return InvalidInput(message, code=code, details=details)


@dataclass(frozen=True)
class MatryoshkaSpec:
    """Either one prefix length (``dim``) or a funnel of prefix lengths, shortlisting on the first."""

    dim: int | None = None
    funnel: tuple[int, ...] = ()


@dataclass(frozen=True)
class LeanVecSpec:
    dim: int
    variant: Literal["id", "ood"] = "id"


@dataclass(frozen=True)
class QuantizerSpec:
    kind: QuantizerKind = "none"
    bits: int | None = None  # binary only: bit planes per dimension, 1..4 (default 1); learned: binarization steps
    learned: bool = False  # binary only: learned recurrent binarization (encoders/transforms/bebr.py) instead of sign bits
    code_bits: int | None = None  # learned only: bits per step, a multiple of 8 up to 4 x the input width (default: the width)
    # binary only: how the coarse stage ranks: Hamming distance of the binarized query to plane 1 (then every plane
    # rescored against the float query), or the float query against every code's reconstruction.
    scoring: Scoring = "symmetric"


@dataclass(frozen=True)
class RerankSpec:
    # Candidates the coarse stage keeps, as a multiple of k (params.oversample overrides per query). None: the fit
    # chooses it (and each rescoring stage's depth) as the smallest reaching ``target_recall`` on held queries.
    oversample: float | None = None
    target_recall: float = DEFAULT_TARGET_RECALL  # recall@10 the chosen depths reach (ignored with an explicit oversample)
    with_: RerankWith = "float"  # the copy the final stage scores: float32, or per-dimension int8
    storage: RerankStorage = "mmap"  # that copy memory-mapped from its file (RAM holds only the coarse stage), or in RAM


@dataclass(frozen=True)
class CompressionSpec:
    matryoshka: MatryoshkaSpec | None = None
    leanvec: LeanVecSpec | None = None
    quantizer: QuantizerSpec = field(default_factory=QuantizerSpec)
    rerank: RerankSpec = field(default_factory=RerankSpec)

    # ---- JSON (the HTTP shape: "with" is a Python keyword, so the field is with_) ----------

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rerank"]["with"] = data["rerank"].pop("with_")
        if self.matryoshka is not None:
            data["matryoshka"] = {"funnel": list(self.matryoshka.funnel)} if self.matryoshka.funnel else {"dim": self.matryoshka.dim}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompressionSpec:
        """Parse the HTTP/collection.json shape; unknown keys and wrong types are 400 ``invalid_compression``."""
        if not isinstance(data, dict) or set(data) - {"matryoshka", "leanvec", "quantizer", "rerank"}:
            raise _invalid("compression takes 'matryoshka', 'leanvec', 'quantizer' and 'rerank'", "invalid_compression")
        try:
            m, lv, qz, rr = (data.get(key) for key in ("matryoshka", "leanvec", "quantizer", "rerank"))
            rerank = dict(rr or {})
            if "with" in rerank:
                rerank["with_"] = rerank.pop("with")
            spec = cls(
                matryoshka=None if m is None else MatryoshkaSpec(dim=m.get("dim"), funnel=tuple(m.get("funnel") or ())),
                leanvec=None if lv is None else LeanVecSpec(**{k: v for k, v in lv.items() if k != "queries"}),
                quantizer=QuantizerSpec(**(qz or {})),
                rerank=RerankSpec(**rerank),
            )
        except (TypeError, AttributeError) as exc:
            raise _invalid(f"malformed compression config: {exc}", "invalid_compression") from None
        spec._check_types()
        return spec

    def _check_types(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        m, lv, qz, rr = self.matryoshka, self.leanvec, self.quantizer, self.rerank
        ok = (
            (m is None or ((m.dim is None or is_int(m.dim)) and all(is_int(s) for s in m.funnel)))
            and (lv is None or is_int(lv.dim))
            and (qz.bits is None or is_int(qz.bits))
            and isinstance(qz.learned, bool)
            and (qz.code_bits is None or is_int(qz.code_bits))
            and all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in (rr.oversample, rr.target_recall))
            and rr.target_recall is not None
        )
        if not ok:
            raise _invalid("compression dims and bits are integers, learned a boolean, oversample and target_recall numbers", "invalid_compression")

    # ---- validation ---------------------------------------------------------------------------

    def check_for(self, config: CollectionConfig, queries: int, dim: int | None = None) -> None:
        """400s for this spec on this collection (its dim, metric and index), with ``queries`` OOD query samples.

        ``dim`` is the width of the vectors the stages compress when it is not the model's: a multi-vector
        collection's FDEs.
        """
        self.validate(config.dim if dim is None else dim, config.metric, config.index.type, queries)

    def check_points(self, points: int) -> None:
        """A fit learns from the stored vectors: refuse one over too few (the request now, the job again when it runs)."""
        needed = max(MIN_FIT_POINTS, self.leanvec.dim if self.leanvec else 0)
        if points < needed:
            raise _invalid(f"compression is fitted on the stored vectors: {points} points, at least {needed} needed", "too_few_points", points=points, needed=needed)

    def validate(self, dim: int, metric: str, index_type: str, queries: int) -> None:
        """400s for configs that cannot work on this collection; ``queries`` is how many OOD query samples come with it."""
        m, lv, qz, rr = self.matryoshka, self.leanvec, self.quantizer, self.rerank
        if metric == "l2":
            raise _invalid("compression ranks by inner product: use metric 'cosine' or 'ip'", "compression_metric_unsupported", metric=metric)
        if index_type == "ivf":
            raise _invalid("compressed collections search their coarse stage by a flat scan or HNSW: give index type 'flat' or 'hnsw'", "compression_index_unsupported", index=index_type)
        if index_type == "hnsw" and qz.kind in ("int8", *LVQ_VARIANTS):
            raise _invalid(
                "an HNSW coarse stage is built over binary codes or reduced float vectors; int8 and LVQ codes are scanned: give index type 'flat'",
                "compression_index_unsupported",
                index=index_type,
                quantizer=qz.kind,
            )
        if m is None and lv is None and qz.kind == "none":
            raise _invalid("compression needs a matryoshka, leanvec or quantizer stage", "invalid_compression")
        width = dim
        if m is not None:
            if (m.dim is None) == (not m.funnel):
                raise _invalid("matryoshka takes either 'dim' or 'funnel'", "invalid_compression")
            if m.funnel:
                if any(b <= a for a, b in itertools.pairwise(m.funnel)) or m.funnel[0] < 1 or m.funnel[-1] >= dim:
                    raise _invalid(f"funnel stages must increase strictly and stay below the model dimension {dim}", "invalid_funnel", funnel=list(m.funnel))
                if lv is not None or qz.kind != "none":
                    raise _invalid("a matryoshka funnel searches float prefixes: it takes no leanvec or quantizer", "compression_conflict")
            else:
                assert m.dim is not None
                if not 1 <= m.dim <= dim:
                    raise _invalid(f"matryoshka dim must be in 1..{dim}", "compression_dim_too_large", dim=m.dim, model_dim=dim)
                width = m.dim
        if lv is not None:
            if lv.variant not in ("id", "ood"):
                raise _invalid("leanvec variant is 'id' or 'ood'", "invalid_compression", variant=lv.variant)
            if not 1 <= lv.dim <= width:
                raise _invalid(f"leanvec dim must be in 1..{width} (the input width)", "compression_dim_too_large", dim=lv.dim, input_dim=width)
            if lv.variant == "ood" and queries < MIN_QUERIES:
                raise _invalid(
                    f"leanvec 'ood' learns from query samples: give at least {MIN_QUERIES} in leanvec.queries", "queries_required", given=queries
                )
            width = lv.dim
        if qz.kind not in get_args(QuantizerKind):
            raise _invalid(f"quantizer kind must be one of {list(get_args(QuantizerKind))}", "invalid_quantizer", kind=qz.kind)
        if qz.bits is not None and (qz.kind != "binary" or not 1 <= qz.bits <= MAX_BITS):
            raise _invalid(f"'bits' applies to binary codes only, 1..{MAX_BITS}", "invalid_bits", bits=qz.bits, kind=qz.kind)
        if (qz.learned or qz.code_bits is not None or qz.scoring != "symmetric") and qz.kind != "binary":
            raise _invalid("'learned', 'code_bits' and 'scoring' apply to binary codes only", "invalid_quantizer", kind=qz.kind)
        if qz.scoring not in get_args(Scoring):
            raise _invalid(f"binary scoring is one of {list(get_args(Scoring))}", "invalid_quantizer", scoring=qz.scoring)
        if qz.code_bits is not None and (not qz.learned or qz.code_bits % 8 or not 8 <= qz.code_bits <= MAX_CODE_BITS_PER_DIM * width):
            raise _invalid(
                f"'code_bits' applies to learned binary codes only: a multiple of 8 in 8..{MAX_CODE_BITS_PER_DIM * width} (the input width {width} x {MAX_CODE_BITS_PER_DIM})",
                "invalid_bits",
                code_bits=qz.code_bits,
            )
        if rr.with_ not in get_args(RerankWith) or rr.storage not in get_args(RerankStorage):
            raise _invalid("rerank 'with' is float or int8, 'storage' ram or mmap", "invalid_rerank")
        if rr.oversample is not None and (not (1.0 <= rr.oversample <= MAX_OVERSAMPLE) or not math.isfinite(rr.oversample)):
            raise _invalid(f"rerank oversample must be in 1..{MAX_OVERSAMPLE:g}", "invalid_rerank", oversample=rr.oversample)
        if not 0.5 <= rr.target_recall <= 0.999:
            raise _invalid("rerank target_recall must be in 0.5..0.999", "invalid_rerank", target_recall=rr.target_recall)

    # ---- what it means ------------------------------------------------------------------------

    def transforms(self, seed: int = 0) -> list[Transform]:
        """The coarse stage's pipeline: prefix or projection, then the quantizer (unfitted)."""
        stages: list[Transform] = []
        if self.matryoshka is not None:
            stages.append(Matryoshka(self.matryoshka.funnel[0] if self.matryoshka.funnel else int(self.matryoshka.dim or 0)))
        if self.leanvec is not None:
            stages.append(LeanVec(self.leanvec.dim, self.leanvec.variant, seed=seed))
        kind = self.quantizer.kind
        if kind == "int8":
            stages.append(Int8Quantizer(seed=seed))
        elif kind in LVQ_VARIANTS:
            stages.append(LVQ.named(kind, seed=seed))
        elif kind == "binary" and self.quantizer.learned:
            stages.append(LearnedBinaryQuantizer(self.quantizer.bits or 1, self.quantizer.code_bits, seed=seed))
        elif kind == "binary":
            stages.append(BinaryQuantizer(self.quantizer.bits or 1, seed=seed))
        return stages
