"""Multi-stage search over compressed codes: a coarse shortlist, optional rescoring, a rerank on a finer copy.

Stages, by the compression config (index/compression/spec.py):

- coarse: Hamming search of the binarized query against plane 1 of binary codes (sign or learned) in a FAISS
  binary index (``scoring`` "symmetric"), or a scan of every binary code scored against the float query
  ("asymmetric"); a FAISS flat
  index over the reduced float vectors (Matryoshka prefix / LeanVec, quantizer "none"); or a scan of
  LVQ / int8 codes scored straight from the code bytes (lvq8 and int8 by an integer matmul,
  index/compression/code_scan.py; lvq4 / lvq4x8 by the quantizer's asymmetric ``score``).
- rescoring: after a Hamming shortlist, binary codes (every bit plane) scored against the float query; or, for a Matryoshka
  funnel, cosine on each longer prefix.
- rerank: the float query against the full vectors (float32) or their int8 codes, in RAM or
  memory-mapped from disk.

The coarse stage keeps ``ef_search`` candidates (``k * oversample``; a graph walks that deep); each rescoring stage keeps a share of
them (the fit's ``SearchDepth``: chosen to reach the target recall, else halving at each), k after the rerank. ``exact`` scans the full float vectors instead. Rows are store rows,
so the segment's deletion bitmap and filters apply as they do to the float index.

Rows are a sealed segment's positions 0..n-1. On disk (the segment's folder): ``full.f32`` (always: exact
search, reconstruct, rebuilds), ``coarse.bin`` (codes or reduced vectors), ``rerank.i8`` (int8 rerank),
``norms.f32`` (funnel), ``planes.bin`` (binary bit planes 2..).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from encoders.transforms.base import Pipeline
from encoders.transforms.binary import BinaryQuantizer
from encoders.transforms.lvq import Int8Quantizer
from encoders.transforms.matryoshka import MatryoshkaFunnel
from encoders.transforms.quantizer import Quantizer
from index.backends.binary_index import BinaryIndex
from index.backends.faiss_index import IndexSpec, VectorIndex
from index.backends.query_threads import threads_per_query
from index.compression.code_scan import CodeScan
from index.compression.spec import CompressionSpec
from index.storage.rowfile import RowFile

SCAN_ROWS = 16_384  # stored rows per block of an exhaustive scan
QUERY_CHUNK = 256  # queries per block of a rerank gather: (256, candidates, d) floats
# Candidate floats (queries x candidates x dim) one block of a search's later stages gathers at most (2^24: 64 MiB);
# wide vectors such as multi-vector FDEs (10,240-d) take fewer queries and candidates per block.
GATHER_FLOATS = 1 << 24
# Candidates (queries x coarse depth) one coarse scan of the codes ranks at most (2^22: 48 MiB of scores and rows).
COARSE_CANDIDATES = 1 << 22
# A filtered Hamming search asks for this many times the candidates the allowed share implies.
FILTER_MARGIN = 2.0


# Threads a batch's rerank gather is shared among (as many as its search may use: _gathered_dot).
_GATHER_THREADS = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="trove-gather")

DEFAULT_OVERSAMPLE = 4.0  # the coarse depth, as a multiple of k, before a fit has chosen one


@dataclass(frozen=True)
class SearchDepth:
    """How deep each stage searches: the coarse stage ``k * oversample`` candidates, each rescoring stage
    ``shares[i]`` of those (empty: halving at each), never fewer than k."""

    oversample: float = DEFAULT_OVERSAMPLE
    shares: tuple[float, ...] = ()

    def keeps(self, k: int, coarse: int, rescoring: int) -> list[int]:
        """Candidates kept by the coarse stage and each of ``rescoring`` later stages."""
        shares = self.shares if len(self.shares) == rescoring else tuple(0.5 ** (i + 1) for i in range(rescoring))
        return [max(k, coarse)] + [max(k, math.ceil(coarse * share)) for share in shares]

    def to_json(self) -> dict[str, Any]:
        return {"oversample": self.oversample, "shares": list(self.shares)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchDepth:
        return cls(float(data["oversample"]), tuple(float(s) for s in data.get("shares", ())))


@dataclass(frozen=True)
class Stage:
    name: str
    bytes_per_vector: int
    storage: str  # "ram" or "mmap"


Ranked = tuple[np.ndarray, np.ndarray]  # (scores, rows), (m, c) each, best first, rows -1 past the end


def _top(scores: np.ndarray, rows: np.ndarray, keep: int) -> Ranked:
    """The ``keep`` best of each query's scored candidates, best first; missing candidates (-1) sink."""
    scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
    keep = min(keep, scores.shape[1])
    top = torch.topk(torch.from_numpy(scores), keep, dim=1)
    picked = top.indices.numpy()
    out_rows = np.take_along_axis(rows, picked, axis=1)
    out_scores = top.values.numpy()
    return out_scores, np.where(np.isfinite(out_scores), out_rows, -1)


def scan_topk(
    score_block: Callable[[int, int], np.ndarray | torch.Tensor], n: int, k: int, allowed: np.ndarray | None, m: int, block_rows: int = SCAN_ROWS
) -> Ranked:
    """Exhaustive top-k over rows 0..n-1, ``score_block(start, end)`` giving (m, end - start) scores (a fresh array
    this may overwrite), ``block_rows`` rows at a time.

    Selection is FAISS's heap of each query's k best (``float_minheap_array_t.addn``: a comparison per score with
    the k-th best so far, row ids by position; OpenMP over queries): torch's top-k of each block, merged, took 3-4x
    as long for one query over 1M scores and for 300 queries over 117k (ad hoc: 3.2 ms against 0.9, 0.79 s against 0.19)."""
    scores = np.empty((m, k), np.float32)
    rows = np.empty((m, k), np.int64)
    heap = faiss.float_minheap_array_t()
    heap.nh, heap.k, heap.val, heap.ids = m, k, faiss.swig_ptr(scores), faiss.swig_ptr(rows)
    heap.heapify()
    disallowed = None if allowed is None else torch.from_numpy(~allowed[:n])
    for start in range(0, n, block_rows):
        end = min(n, start + block_rows)
        block = torch.as_tensor(score_block(start, end), dtype=torch.float32).contiguous()
        if disallowed is not None:
            block.masked_fill_(disallowed[start:end], -torch.inf)  # below the heap's floor: never kept
        heap.addn(end - start, faiss.swig_ptr(block.numpy()), start, 0, m)
    heap.reorder()
    missing = rows < 0
    scores[missing] = -np.inf
    return scores, rows


def _gathered_dot(queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Inner products of each query with its own candidate rows of ``vectors`` (RAM or memory-mapped).

    numpy's matmul: one BLAS matrix-vector product per query (torch's batched matmul of a single query's shortlist
    waited up to 12 ms for a second BLAS thread on a busy machine). A batch's blocks are shared among as many
    threads as its search may use (numpy's gather and matmul free the GIL): the gather is bound by memory latency,
    not bandwidth, so two threads halved it (300 queries x 522 random rows of 384 floats, 2 cores: 135 -> 57 ms).
    Each thread's blocks hold GATHER_FLOATS / threads floats, so the whole stays within GATHER_FLOATS."""
    out = np.empty(rows.shape, np.float32)
    safe = np.maximum(rows, 0)
    threads = max(1, min(torch.get_num_threads(), len(rows)))
    per_block = max(1, GATHER_FLOATS // (vectors.shape[1] * threads))  # candidate rows one block gathers
    columns = max(1, min(rows.shape[1], per_block))
    step = max(1, min(QUERY_CHUNK, per_block // columns))

    def gather(block: tuple[int, int]) -> None:
        start, first = block
        q = np.ascontiguousarray(queries[start : start + step], dtype=np.float32)
        gathered = np.ascontiguousarray(vectors[safe[start : start + step, first : first + columns]], dtype=np.float32)
        out[start : start + step, first : first + columns] = np.matmul(gathered, q[:, :, None])[:, :, 0]

    blocks = [(start, first) for start in range(0, len(rows), step) for first in range(0, rows.shape[1], columns)]
    if threads == 1 or len(blocks) == 1:
        for block in blocks:
            gather(block)
    else:
        list(_GATHER_THREADS.map(gather, blocks))
    return out


class MultiStageIndex:
    """Compressed search over store rows 0..ntotal-1 with the interface of ``VectorIndex`` (add, search, reconstruct, ...)."""

    def __init__(
        self,
        folder: Path,
        dim: int,
        spec: CompressionSpec,
        pipeline: Pipeline,
        rerank_int8: Int8Quantizer | None,
        index: IndexSpec,
        rows: int = 0,
        depth: SearchDepth | None = None,
    ):
        """``depth``: the fit's chosen depths; without one, the config's oversample (else DEFAULT_OVERSAMPLE), halving."""
        self.folder, self.dim, self.spec, self.pipeline = folder, dim, spec, pipeline
        self.depth = depth or SearchDepth(spec.rerank.oversample or DEFAULT_OVERSAMPLE)
        self.scoring = spec.quantizer.scoring  # binary codes' coarse ranking; the fit report measures the other one too
        ram = spec.rerank.storage == "ram"
        last = pipeline.stages[-1] if pipeline.stages else None
        self.quantizer = last if isinstance(last, Quantizer) else None
        self.reducer = Pipeline(pipeline.stages[:-1] if self.quantizer is not None else list(pipeline.stages))
        self.rerank_int8 = rerank_int8
        funnel = spec.matryoshka.funnel if spec.matryoshka is not None else ()
        self.funnel = MatryoshkaFunnel(funnel, dim) if funnel else None

        self._full = RowFile(folder / "full.f32", dim, np.float32, in_ram=ram and spec.rerank.with_ == "float", rows=rows)
        self._int8 = RowFile(folder / "rerank.i8", dim, np.uint8, in_ram=ram, rows=rows) if rerank_int8 is not None else None
        self._norms = RowFile(folder / "norms.f32", len(self.funnel.dims), np.float32, in_ram=True, rows=rows) if self.funnel else None
        q = self.quantizer
        reduced_dim = int(self.reducer.encode_queries(np.zeros((1, dim), np.float32)).shape[1])
        # The coarse stage's RAM: binary keeps plane 1 in FAISS and further planes here; lvq4 / lvq4x8 keep their codes
        # here, lvq8 and int8 as a CodeScan; reduced float vectors live in a FAISS flat index.
        # The file always holds whole codes (reload, fallback).
        width, dtype = (q.code_size, np.uint8) if q is not None else (reduced_dim, np.float32)
        scanned = CodeScan.supports(q)
        self._coarse = RowFile(folder / "coarse.bin", width, dtype, in_ram=q is not None and not isinstance(q, BinaryQuantizer) and not scanned, rows=rows)
        self._scan: CodeScan | None = None
        self._hamming: BinaryIndex | None = None
        self._flat: VectorIndex | None = None
        # A graph coarse stage walks as deep as the candidates it keeps (unless the config fixes its ef_search), so
        # the fit's chosen coarse depth is the walk's too, measured against the reranked answer (fit_report.py).
        self._walk_depth = index.type == "hnsw" and index.ef_search is None
        self._planes: RowFile | None = None  # binary bit planes 2.. (RAM only)
        if isinstance(q, BinaryQuantizer):
            self._hamming = BinaryIndex(8 * q.sign_bytes, index.m if index.type == "hnsw" else None, index.ef_search)
            if q.code_size > q.sign_bytes:
                self._planes = RowFile(folder / "planes.bin", q.code_size - q.sign_bytes, np.uint8, in_ram=True, rows=rows)
            if rows:
                self._hamming.add(0, q.sign_bits(self._coarse.view()))
        elif q is None:
            self._flat = VectorIndex(reduced_dim, "ip", index)
            if rows:
                self._flat.add(0, self._coarse.view())
        self._ntotal = rows
        if scanned and rows:
            self.code_scan()
        self.on_gpu = self._flat.on_gpu if self._flat is not None else bool(self._hamming and self._hamming.on_gpu)

    # ---- writes ----------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return self._ntotal

    def add(self, first_row: int, vectors: np.ndarray) -> None:
        """Encode rows with the fitted pipeline and append them to every stage (rows must come in order)."""
        if first_row != self._ntotal:
            raise RuntimeError(f"rows must be appended in order: index has {self._ntotal}, got {first_row}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        coarse = self.pipeline.encode_docs(vectors)
        self._coarse.write(first_row, coarse)
        self._scan = None  # laid out again from the file on the next search
        if self._hamming is not None:
            assert isinstance(self.quantizer, BinaryQuantizer)
            if self._planes is not None:
                self._planes.write(first_row, coarse[:, self.quantizer.sign_bytes :])
            self._hamming.add(first_row, self.quantizer.sign_bits(coarse))
        if self._flat is not None:
            self._flat.add(first_row, coarse)
        self._full.write(first_row, vectors)
        if self._int8 is not None:
            assert self.rerank_int8 is not None
            self._int8.write(first_row, self.rerank_int8.encode_docs(vectors))
        if self._norms is not None:
            assert self.funnel is not None
            self._norms.write(first_row, self.funnel.prefix_norms(vectors))
        self._ntotal = first_row + len(vectors)

    def _parts(self) -> list[RowFile]:
        return [p for p in (self._full, self._int8, self._norms, self._coarse, self._planes) if p is not None]

    def sync(self) -> None:
        """fsync every stage file (a sealed segment's files are written once, then published)."""
        for part in self._parts():
            part.sync()

    def close(self) -> None:
        for part in self._parts():
            part.close()

    # ---- reads -----------------------------------------------------------------------------

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return np.array(self._full.view()[rows], dtype=np.float32).reshape(len(rows), self.dim)

    def stages(self) -> list[Stage]:
        storage = self.spec.rerank.storage
        q = self.quantizer
        out: list[Stage] = []
        if isinstance(q, BinaryQuantizer):
            hamming = [Stage(f"{q.label} hamming", q.sign_bytes, "ram")] if self.scoring == "symmetric" else []
            out += [*hamming, Stage(f"{q.label} asymmetric", q.code_size, "ram")]
        elif q is not None:
            ram = CodeScan.row_bytes(q) if CodeScan.supports(q) else q.code_size  # type: ignore[arg-type]
            out.append(Stage(f"{self._reduction_name()}{self.spec.quantizer.kind}", ram, "ram"))
        else:
            out.append(Stage(f"{self._reduction_name()}float32", 4 * self._coarse.width, "ram"))
        if self.funnel is not None:
            out += [Stage(f"matryoshka{d} float32", 4 * d, storage) for d in self.funnel.dims[1:-1]]
        out.append(Stage("int8 rerank" if self._int8 is not None else "float32 rerank", self.dim if self._int8 is not None else 4 * self.dim, storage))
        return out

    def _reduction_name(self) -> str:
        parts = [f"{s.kind}{getattr(s, 'dim', '')}" + (f"-{s.variant}" if s.kind == "leanvec" else "") for s in self.reducer.stages]  # type: ignore[attr-defined]
        return "".join(p + " " for p in parts)

    def memory_bytes(self) -> int:
        coarse = (
            self._flat.memory_bytes()
            if self._flat is not None
            else (self._hamming.memory_bytes() if self._hamming is not None else 0) + self._coarse.ram_bytes() + self._scan_bytes()
        )
        parts = (self._full, self._int8, self._norms, self._planes)
        return coarse + sum(p.ram_bytes() for p in parts if p is not None)

    def _scan_bytes(self) -> int:
        q = self.quantizer
        return CodeScan.row_bytes(q) * self._ntotal if CodeScan.supports(q) else 0  # type: ignore[arg-type]

    def disk_bytes(self) -> int:
        return sum(p.rows * p.row_bytes for p in self._parts())

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, ef_search: int | None = None, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows); ``ef_search`` is how many candidates the coarse stage keeps (default k * oversample)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = self._ntotal
        if allowed is not None:
            allowed = allowed[:n]
        with threads_per_query(len(queries)):
            if exact or n == 0:
                full = self._full.view()[:n]
                return scan_topk(lambda s, e: queries @ np.asarray(full[s:e]).T, n, min(k, n), allowed, len(queries))
            return self.ranked_stages(queries, k, allowed, ef_search)[-1]

    def ranked_stages(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, ef_search: int | None = None) -> list[Ranked]:
        """Every stage's ranking of its survivors, coarse first; the last is the answer (k per query).

        The coarse stage scans the codes once for up to COARSE_CANDIDATES candidates' worth of queries: one matrix
        product per block of code rows for the whole batch. Split as finely as the later stages once were, a batch of
        300 WordNet queries 5,534 deep scanned the codes 43 times, 7 queries a time, in small-batch kernels. The funnel
        and rerank gathers bound their own blocks and share them among threads (``_gathered_dot``); only a Hamming
        shortlist's binary codes are gathered whole, so the later stages go in blocks whose codes hold about
        GATHER_FLOATS floats' worth of bytes. Split by the float width instead (27 queries a block for a funnel 1,613
        deep), each block's rerank gather ran on one thread: 300 WordNet queries, funnel 96->192, 297 ms -> 209 ms (ad hoc)."""
        n = self._ntotal
        k = min(k, n)
        keep = self.depth.keeps(k, ef_search or math.ceil(k * self.depth.oversample), self.rescoring_stages) + [k]
        coarse_step = max(1, COARSE_CANDIDATES // max(1, keep[0]))
        step = max(1, GATHER_FLOATS // (max(1, keep[0]) * self._gathered_width))
        blocks = []
        for first in range(0, len(queries), coarse_step):
            block = queries[first : first + coarse_step]
            reduced = self.reducer.encode_queries(block)
            scores, rows = self._coarse_search(reduced, keep[0], allowed)
            for start in range(0, len(block), step):
                part = slice(start, start + step)
                blocks.append(self._later_stages(block[part], reduced[part], (scores[part], rows[part]), keep))
        if len(blocks) == 1:
            return blocks[0]
        return [(np.concatenate([b[i][0] for b in blocks]), np.concatenate([b[i][1] for b in blocks])) for i in range(len(blocks[0]))]

    def _later_stages(self, queries: np.ndarray, reduced: np.ndarray, coarse: Ranked, keep: list[int]) -> list[Ranked]:
        """The coarse ranking of ``queries`` (``reduced``: as the codes see them) through rescoring and the rerank."""
        out = [coarse]
        stage = 1
        if self._hamming_rescored:
            assert isinstance(self.quantizer, BinaryQuantizer)
            rows = out[-1][1]
            codes = self._binary_codes(np.maximum(rows, 0))
            flat_rows = np.arange(rows.size).reshape(rows.shape)
            out.append(_top(self.quantizer.score(reduced, codes.reshape(-1, codes.shape[-1]), flat_rows), rows, keep[stage]))
            stage += 1
        carried = self._funnel_stages(queries, out, keep, stage) if self.funnel is not None else None
        rows = out[-1][1]
        full = self._full.view()
        if self._int8 is not None:
            assert self.rerank_int8 is not None
            scores = self.rerank_int8.score(queries, self._int8.view(), np.maximum(rows, 0))
        elif carried is not None:
            assert self.funnel is not None
            start = self.funnel.dims[-2]
            scores = carried + _gathered_dot(queries[:, start:], full[:, start:], rows)
        else:
            scores = _gathered_dot(queries, full, rows)
        out.append(_top(scores, rows, keep[-1]))
        return out

    def _funnel_stages(self, queries: np.ndarray, out: list[Ranked], keep: list[int], stage: int) -> np.ndarray:
        """A funnel's rescoring on each inner prefix, appended to ``out`` (its coarse ranking last in it): cosine at
        each prefix, the shortlist cut to ``keep[stage]``, ``keep[stage + 1]``, ... Returns the inner products of the
        last ranking's rows with the queries on the last inner prefix (the rerank adds the rest).

        A longer prefix's inner product is the shorter one's plus that of the dimensions between them, so each stage
        gathers only the dimensions no earlier stage read (the coarse cosines of unit prefixes, times both prefix
        norms, are the first prefix's inner products): 300 WordNet queries through 96 -> 192 -> 384, 1,613 and 640
        deep, gather 333 MB instead of 666 (later stages 103 -> 71 ms, ad hoc)."""
        assert self.funnel is not None and self._norms is not None
        dims, norms, full = self.funnel.dims, self._norms.view(), self._full.view()
        query_norms = self.funnel.prefix_norms(queries)

        def inner_products(ranked: Ranked, level: int) -> np.ndarray:
            scores, rows = ranked
            return scores * query_norms[:, level : level + 1] * norms[np.maximum(rows, 0), level]

        carried = inner_products(out[-1], 0)
        for level in range(1, len(dims) - 1):
            rows = out[-1][1]
            carried = carried + _gathered_dot(queries[:, dims[level - 1] : dims[level]], full[:, dims[level - 1] : dims[level]], rows)
            cosines = carried / np.maximum(query_norms[:, level : level + 1] * norms[np.maximum(rows, 0), level], 1e-12)
            out.append(_top(cosines, rows, keep[stage]))
            carried = inner_products(out[-1], level)
            stage += 1
        return carried

    @property
    def _gathered_width(self) -> int:
        """Floats' worth of bytes per coarse candidate that the later stages gather at once: a Hamming shortlist's
        whole binary codes (``_binary_codes``); the funnel and rerank gathers bound their own blocks (``_gathered_dot``)."""
        return -(-self.quantizer.code_size // 4) if self._hamming_rescored else 1  # type: ignore[union-attr]

    @property
    def rescoring_stages(self) -> int:
        """Stages between the coarse shortlist and the rerank: binary bit planes, each inner funnel prefix."""
        return (1 if self._hamming_rescored else 0) + (len(self.funnel.dims) - 2 if self.funnel else 0)

    @property
    def _hamming_rescored(self) -> bool:
        """Binary codes shortlisted by Hamming distance, then rescored against the float query."""
        return isinstance(self.quantizer, BinaryQuantizer) and self.scoring == "symmetric"

    def _binary_codes(self, rows: np.ndarray) -> np.ndarray:
        """Whole binary codes of candidate rows (m, c, code_size): plane 1 from FAISS's copy, the rest from RAM."""
        assert self._hamming is not None
        stored = self._hamming.stored_bits()
        if stored is None:  # on the GPU: read whole codes from the file
            return np.asarray(self._coarse.view()[rows])
        if self._planes is None:
            return stored[rows]
        return np.concatenate([stored[rows], self._planes.view()[rows]], axis=-1)

    def code_scan(self) -> CodeScan:
        """The one-byte codes laid out as searches scan them (lvq8, int8 coarse stages only), laid out on first use."""
        scan = self._scan
        if scan is None or len(scan) != self._ntotal:
            scan = self._scan = CodeScan.of(self.quantizer, np.asarray(self._coarse.view()[: self._ntotal]))  # type: ignore[arg-type]
        return scan

    def _coarse_search(self, reduced: np.ndarray, depth: int, allowed: np.ndarray | None) -> Ranked:
        m, n = len(reduced), self._ntotal
        if self._flat is not None:
            return self._flat.search(reduced, depth, allowed=allowed, ef_search=depth if self._walk_depth else None)
        assert self.quantizer is not None
        quantizer = self.quantizer
        if self._hamming is None:
            if CodeScan.supports(quantizer):
                scan = self.code_scan()
                prepared = scan.prepare(reduced)
                keys, rows = scan_topk(lambda s, e: scan.keys(prepared, s, e), n, depth, allowed, m, scan.block_rows(m))
                return scan.scores_of(prepared, keys), rows
            codes = self._coarse.view()
            return scan_topk(lambda s, e: quantizer.score(reduced, codes[s:e]), n, depth, allowed, m)
        assert isinstance(quantizer, BinaryQuantizer)
        if self.scoring == "asymmetric":
            return scan_topk(lambda s, e: quantizer.score(reduced, self._binary_codes(np.arange(s, e))), n, depth, allowed, m)
        query_bits = quantizer.query_bits(reduced)
        if allowed is None:
            rows = self._hamming.search(query_bits, depth)
            return np.zeros(rows.shape, np.float32), rows
        share = max(float(allowed.mean()), 1e-9)
        wanted = min(int(allowed.sum()), depth)
        rows = self._hamming.search(query_bits, min(n, math.ceil(FILTER_MARGIN * depth / share)))
        ok = (rows >= 0) & allowed[np.maximum(rows, 0)]
        if ok.sum(axis=1).min() >= wanted:
            order = np.argsort(~ok, axis=1, kind="stable")[:, :depth]  # allowed rows first, Hamming order kept
            picked = np.take_along_axis(rows, order, axis=1)
            return np.zeros(picked.shape, np.float32), np.where(np.take_along_axis(ok, order, axis=1), picked, -1)
        # Too few allowed rows near the query: score every allowed code against the float query instead.
        codes = self._coarse.view()
        return scan_topk(lambda s, e: quantizer.score(reduced, codes[s:e]), n, depth, allowed, m)

    def info(self) -> dict[str, Any]:
        return {"ram_bytes": self.memory_bytes(), "disk_bytes": self.disk_bytes(), "device": "gpu" if self.on_gpu else "cpu"}
