"""A sealed segment: rows written once to ``segments/<id>/`` with the index the collection config names.

```
segments/<id>/
  segment.json    what made it: dim, metric, index spec, compression generation, store file, model; its size
  rows.npy        the store row of each position (sorted)
  index.faiss     float segments: FAISS flat (memory-mapped when loaded) or HNSW
  calibration.json  HNSW segments, once re-measured on the collection's queries: the graph report that replaces segment.json's
  *.f32 *.bin ... compressed segments: the multi-stage index's stage files (index/compression/multistage.py)
```

The files are built in a temporary folder, fsynced and renamed into place (index/storage/atomic.py), then
loaded back from their final place, so what is served is what a restart will load. A segment's deletion
bitmap is not stored: the store knows which rows are live, and start-up derives it.
"""

from __future__ import annotations

import math
import shutil
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.backends.faiss_index import (
    FALLBACK_EF_SEARCH,
    FaissMetric,
    IndexSpec,
    VectorIndex,
    faiss_metric_code,
    new_cpu_index,
)
from index.backends.flat_file import write_flat_index
from index.backends.hnsw_graph import GraphReport, build_hnsw, recalibrate
from index.backends.ivf_lists import ListsReport, build_ivf
from index.compression.multistage import MultiStageIndex
from index.compression.state import FittedCompression
from index.segments.view import Part, Ranked
from index.storage import atomic

META = "segment.json"
ROWS = "rows.npy"
FAISS_FILE = "index.faiss"
CALIBRATION = "calibration.json"  # an HNSW segment's graph report re-measured on recent queries (the rest is written once)
# Rows added to a FAISS index between progress reports (and cancellation checks) while a segment is built.
BUILD_CHUNK = 10_000

Progress = Callable[[int], None]  # rows indexed so far; may raise (a cancelled job)


@dataclass(frozen=True)
class VectorSource:
    """The vectors of a segment to build, read a block at a time: a merge reads them from its input segments,
    so flat and compressed segments are written without the whole set in memory (graphs and lists need it)."""

    count: int
    read: Callable[[int, int], np.ndarray]  # positions [start, stop) as float32 rows

    @staticmethod
    def of(vectors: np.ndarray) -> VectorSource:
        return VectorSource(len(vectors), lambda start, stop: vectors[start:stop])

    def blocks(self, progress: Progress) -> Iterator[tuple[int, np.ndarray]]:
        """(start, vectors) blocks of BUILD_CHUNK rows; ``progress`` hears each block's end once it is used."""
        for start in range(0, self.count, BUILD_CHUNK):
            stop = min(start + BUILD_CHUNK, self.count)
            yield start, self.read(start, stop)
            progress(stop)

    def all(self) -> np.ndarray:
        return self.read(0, self.count)


class StaleSegment(Exception):
    """A segment on disk that the collection's current config did not make (or that cannot be read)."""


@dataclass(frozen=True)
class SegmentFactory:
    """Builds and loads sealed segments as a collection's config asks; ``signature`` is what a segment must match."""

    dim: int
    metric: FaissMetric
    index: IndexSpec
    space: str  # the store file whose vectors the segment holds (a reprojection starts a new one)
    compression: FittedCompression | None
    model: dict[str, Any]  # provenance: the serving model's name, dim and version when the segment was built

    def signature(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "metric": self.metric,
            "index": asdict(self.index),
            "space": self.space,
            "compression": None if self.compression is None else self.compression.folder.name,
        }

    def build(
        self, root: Path, segment_id: str, rows: np.ndarray, vectors: VectorSource, progress: Progress, origin: str, queries: np.ndarray | None = None
    ) -> SealedSegment:
        """Write a segment of ``rows`` (sorted) with their ``vectors`` under ``root``, publish it, load it back.

        ``queries``: recent query vectors, which an HNSW segment's search depth is calibrated on beside held vectors."""
        tmp = atomic.new_temp_dir(root, segment_id)
        try:
            graph: GraphReport | None = None
            lists: ListsReport | None = None
            if self.compression is not None:
                staged = self.compression.open_index(tmp, self.dim, self.index)
                for start, block in vectors.blocks(progress):
                    staged.add(start, block)
                staged.close()
            else:
                graph, lists = self._write_float_index(tmp, vectors, progress, queries)
            np.save(tmp / ROWS, np.asarray(rows, np.int64))
            meta = {
                "id": segment_id,
                "points": len(rows),
                "origin": origin,
                "created_at": time.time(),
                "model": self.model,
                "graph": None if graph is None else graph.to_json(),
                "lists": None if lists is None else lists.to_json(),
                **self.signature(),
            }
            atomic.write_json(tmp / META, meta)
            final = root / segment_id
            shutil.rmtree(final, ignore_errors=True)  # a leftover that no manifest names
            atomic.publish_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.load(final)

    def _write_float_index(self, folder: Path, vectors: VectorSource, progress: Progress, queries: np.ndarray | None) -> tuple[GraphReport | None, ListsReport | None]:
        """An uncompressed segment's FAISS index: flat (streamed to its file), HNSW (ef measured) or IVF (nprobe measured)."""
        graph, lists = None, None
        if self.index.type == "flat":
            write_flat_index(folder / FAISS_FILE, self.dim, faiss_metric_code(self.metric), vectors.count, (block for _, block in vectors.blocks(progress)))
            return graph, lists
        if self.index.type == "ivf":
            cpu, lists = build_ivf(self.dim, faiss_metric_code(self.metric), self.index.nlist, vectors.all(), self.index.target_recall, progress, queries=queries)
        else:
            cpu = new_cpu_index(self.dim, self.metric, self.index)
            graph = build_hnsw(cpu, vectors.all(), self.index.insertion_order, self.index.target_recall, progress, queries=queries)
        faiss.write_index(cpu, str(folder / FAISS_FILE))
        return graph, lists

    def load(self, folder: Path) -> SealedSegment:
        try:
            meta = atomic.read_json(folder / META)
            # Index settings a segment was built under, with fields added since filled by their defaults.
            built = {**meta, "index": asdict(IndexSpec(**meta["index"]))} if isinstance(meta.get("index"), dict) else meta
            if {k: built.get(k) for k in self.signature()} != self.signature():
                raise StaleSegment(f"{folder.name} was built for {meta}, not {self.signature()}")
            # A compressed segment whose rerank copy is memory-mapped maps its row ids too: a query reads only its
            # answers' (and a filter's binary search's) entries, and in RAM they cost 8 bytes a point beside 48 bytes of
            # binary1 codes.
            mapped = self.compression is not None and self.compression.spec.rerank.storage == "mmap"
            rows = np.load(folder / ROWS, mmap_mode="r" if mapped else None)
            if (folder / CALIBRATION).exists():
                meta = {**meta, "graph": atomic.read_json(folder / CALIBRATION)}
            if self.compression is not None:
                index: VectorIndex | MultiStageIndex = self.compression.open_index(folder, self.dim, self.index, rows=len(rows))
            else:
                # Flat: memory-mapped (pages load on first use); HNSW: read whole (its graph is walked at random).
                flags = faiss.IO_FLAG_MMAP_IFC if self.index.type == "flat" else 0
                index = VectorIndex(self.dim, self.metric, self.index, cpu_index=faiss.read_index(str(folder / FAISS_FILE), flags))
        except StaleSegment:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise StaleSegment(f"{folder.name} cannot be read: {exc}") from exc
        if index.ntotal != len(rows) or meta["points"] != len(rows):
            raise StaleSegment(f"{folder.name} holds {index.ntotal} vectors for {len(rows)} rows")
        return SealedSegment(folder, meta, rows, index, self.metric)


class SealedSegment:
    """Immutable rows and index; only the deletion bitmap changes, and a change replaces it (copy on write)."""

    def __init__(self, folder: Path, meta: dict[str, Any], rows: np.ndarray, index: VectorIndex | MultiStageIndex, metric: FaissMetric):
        self.id = folder.name
        self.folder, self.meta, self.rows, self.index, self.metric = folder, meta, rows, index, metric
        self.size = len(rows)
        self.live = np.ones(len(rows), bool)
        self.dead = 0
        self.graph = GraphReport.from_json(meta["graph"]) if meta.get("graph") else None
        self.lists = ListsReport.from_json(meta["lists"]) if meta.get("lists") else None
        # Searched at the depth calibrated for its share of the points, unless the config fixes one depth.
        self._calibrated = self.graph is not None and isinstance(index, VectorIndex) and index.spec.ef_search is None
        self._depths: dict[tuple[int, float], int | None] = {}
        self.depth_scale = 1.0  # on the calibrated depth, measured over the collection's merged answers (fanout_depth.py)

    def set_live(self, live: np.ndarray) -> None:
        self.live = live
        self.dead = int(len(live) - live.sum())

    def kill(self, positions: np.ndarray) -> None:
        live = self.live.copy()
        live[positions] = False
        self.set_live(live)

    def part(self) -> Part:
        selective = isinstance(self.index, VectorIndex)
        return Part(segment_id=self.id, kind="sealed", rows=self.rows, live=self.live, dead=self.dead, searcher=self, prices_share=self._calibrated, selective_scan=selective)

    # ---- Searcher ------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, ef_search: int | None, exact: bool, share: float = 1.0) -> Ranked:
        """``ef_search`` is the query's own depth; without one, the config's, else the depth calibrated at build
        for this segment's ``share`` of the searched points."""
        if ef_search is None and self._calibrated:
            ef_search = self._depth(k if allowed is None else _among(k, allowed, self.size), share)
        if self.lists is not None and isinstance(self.index, VectorIndex):
            ef_search = self.index.spec.nprobe or self.lists.nprobe  # lists probed; a query's own depth is an HNSW ef
        scores, positions = self.index.search(queries, k, allowed=allowed, ef_search=ef_search, exact=exact)
        if allowed is not None and isinstance(self.index, VectorIndex) and self.index.spec.type != "flat":
            wanted = min(k, int(allowed.sum()))
            if ((positions >= 0).sum(axis=1) < wanted).any():
                # The graph walk (or the probed lists) ran out of allowed neighbours: answer exactly rather than short
                # (FAISS flat over the segment's vectors with the mask as selector: no vectors copied out).
                return self.index.search(queries, k, allowed=allowed, exact=True)
        return scores, positions

    @property
    def calibrates(self) -> bool:
        """Whether its search depth is the calibrated one (an HNSW segment without a fixed ef_search)."""
        return self._calibrated

    def recalibrate(self, queries: np.ndarray) -> None:
        """Measure the search depth again on ``queries``, persist it beside the segment, serve it from now on."""
        assert self.graph is not None and isinstance(self.index, VectorIndex)
        graph = recalibrate(self.index.cpu_graph(), queries, self.graph)
        atomic.write_json(self.folder / CALIBRATION, graph.to_json())
        self.graph, self._depths = graph, {}

    def set_depth_scale(self, scale: float) -> None:
        """Search at ``scale`` times the calibrated depth (the fallback depth where the graph was too small to measure)."""
        self.depth_scale, self._depths = scale, {}

    def _depth(self, k: int, share: float) -> int:
        key = (k, round(share, 3))  # shares move with every write: a bounded memo of the binomial pricing
        depths = self._depths
        if key not in depths:
            if len(depths) > 4096:
                depths.clear()
            assert self.graph is not None
            depths[key] = max(k, math.ceil(self.depth_scale * (self.graph.depth(k, key[1]) or FALLBACK_EF_SEARCH)))
        return depths[key]

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        return self.index.reconstruct(np.asarray(positions, np.int64))

    def memory_bytes(self) -> int:
        return self.index.memory_bytes()

    def info(self) -> dict[str, Any]:
        kind = "compressed" if isinstance(self.index, MultiStageIndex) else self.meta["index"]["type"]
        info = {"id": self.id, "state": "sealed", "index": kind, "points": self.size - self.dead, "dead": self.dead, "memory_bytes": self.part().memory_bytes()}
        if self.graph is not None:
            info["graph"] = self.graph.to_json()
        if self._calibrated:
            info["depth_scale"] = self.depth_scale
        if self.lists is not None:
            info["lists"] = self.lists.to_json()
        return info

    def retire(self) -> None:
        """Remove the files once no view holds the segment any more (a restart ignores them: no manifest names them)."""
        weakref.finalize(self, _remove, self.folder, self.index)


def _among(k: int, allowed: np.ndarray, size: int) -> int:
    """The top a walk that may answer only with a share s of a graph's points is priced for: k / sqrt(s). Its k
    lie about as deep as an unmasked walk's top k / s, but a walk already scores every neighbour of the nodes it
    expands, far more than its depth, so the full k / s (twice the depth at s = 0.5) overpaid: recall@10 0.969
    where the unfiltered walk had 0.941, at 1.69x its p50 (bench/results/filters-k-over-s/). A mask of only deleted rows barely changes it."""
    count = int(np.count_nonzero(allowed[:size]))
    return k if count >= size else math.ceil(k * math.sqrt(size / max(count, 1)))


def _remove(folder: Path, index: VectorIndex | MultiStageIndex) -> None:
    if isinstance(index, MultiStageIndex):
        index.close()
    shutil.rmtree(folder, ignore_errors=True)
