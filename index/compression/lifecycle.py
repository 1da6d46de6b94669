"""A collection's compression over its life: configured, fitted into a new generation as a job, served, reported.

The fit samples stored vectors, fits the pipeline (index/compression/spec.py), rewrites every segment with it
through the engine's rebuild, measures recall on held queries (index/compression/fit_report.py) and swaps,
all while queries use the current segments. A sharded collection fits one pipeline itself and installs it on
each shard through ``install`` (index/shards/compression.py).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from encoders.transforms.base import Pipeline
from encoders.transforms.common import DEFAULT_MAX_SAMPLES
from encoders.transforms.lvq import Int8Quantizer
from index.backends.calibration import MIN_QUERIES
from index.compression import fit_report
from index.compression import state as compressed_state
from index.compression.multistage import MultiStageIndex
from index.compression.spec import CompressionSpec
from index.compression.state import FittedCompression
from index.config import CollectionConfig
from index.ingest.points import PointInputs
from index.segments.engine import SegmentEngine
from index.segments.sealed import SealedSegment, SegmentFactory
from index.segments.view import View

log = logging.getLogger(__name__)

Progress = Callable[[float, int, int], None]
# A compression fit measures recall@10 on at most this many query samples (beside held stored vectors).
HELD_QUERIES = 200
RECENT_QUERIES = "the collection's recent queries"


class CompressionHost(Protocol):
    root: Path
    config: CollectionConfig
    engine: SegmentEngine
    write_lock: threading.Lock
    inputs: PointInputs

    @property
    def index_dim(self) -> int: ...

    def segment_factory(self, config: CollectionConfig, fitted: FittedCompression | None) -> SegmentFactory: ...


def load_fitted(root: Path, config: CollectionConfig) -> FittedCompression | None:
    """The fitted compression to serve: only when it was fitted for the configured one (else search stays exact)."""
    fitted = compressed_state.current(root)
    if fitted is not None and fitted.spec != config.compression:
        log.warning("%s: fitted compression %s differs from the configured one; serving exact float search", config.name, fitted.folder.name)
        return None
    return fitted


class Compression:
    def __init__(self, host: CompressionHost, fitted: FittedCompression | None):
        self.host = host
        self.fitted = fitted

    @property
    def unfitted(self) -> bool:
        return self.host.config.compression is not None and self.fitted is None

    def query_vectors(self, queries: Sequence[str | Sequence[float]]) -> np.ndarray:
        """Query samples for LeanVec-OOD, in the vectors the compressed stages are searched with."""
        return self.host.inputs.sample_query_vectors(queries)

    def pending_queries(self) -> np.ndarray | None:
        """Query samples given with the config and not yet used by a fit."""
        return compressed_state.load_queries(compressed_state.root(self.host.root))

    def configure(self, spec: CompressionSpec, queries: np.ndarray | None) -> None:
        """Configure compression without fitting it (a new collection): searches stay exact until a fit."""
        host = self.host
        compressed_state.save_queries(compressed_state.root(host.root), queries)
        with host.write_lock:
            host.config = replace(host.config, compression=spec)
            host.config.save(host.root / "collection.json")

    def fit(self, spec: CompressionSpec, queries: np.ndarray | None, progress: Progress, seed: int = 0) -> dict[str, Any]:
        """Fit ``spec`` on a sample of the stored vectors, index every row into a new generation, measure recall, swap.

        Queries keep using the current index until the swap; a failure or cancel leaves everything as it was.
        """
        started = time.perf_counter()
        spec.check_for(self.host.config, 0 if queries is None else len(queries), self.host.index_dim)
        view = self.host.engine.view()
        live = view.live_rows()
        spec.check_points(len(live))
        rng = np.random.default_rng(seed)
        sample = view.vectors(np.sort(rng.choice(live, min(len(live), DEFAULT_MAX_SAMPLES), replace=False)))[1]
        progress(0.0, 0, len(live))
        # Learned binary codes choose their epochs by query samples; without given ones, by the recent queries.
        learning, source = queries, fit_report.GIVEN_QUERIES
        recent = self.host.engine.recent_queries.sample()
        if queries is None and fit_report.query_learners(spec) and len(recent) >= MIN_QUERIES:
            learning, source = recent, RECENT_QUERIES
        pipeline, rerank, held_queries = fit_pipeline(spec, sample, learning, seed, rng, source)
        used = {"seed": seed, "points": len(live), "sample": len(sample), "queries": 0 if queries is None else len(queries)}
        return self.install(spec, pipeline, rerank, queries, held_queries, used, progress, started, rng)

    def install(
        self, spec: CompressionSpec, pipeline: Pipeline, rerank: Int8Quantizer | None, queries: np.ndarray | None, held_queries: tuple[np.ndarray | None, str],
        used: dict[str, Any], progress: Progress, started: float, rng: np.random.Generator, before_swap: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Index every row with a fitted pipeline into a new generation, choose its search depth and measure its
        recall on held queries (stored vectors kept out of the searched set, and ``held_queries``, else the recent
        queries), swap. ``before_swap`` runs once all is built and measured, and may raise to leave everything as
        it was (a sharded collection swaps its shards together, index/shards/compression.py)."""
        host = self.host
        held_rows = fit_report.pick_held_rows(host.engine.view().live_rows(), rng)
        recent = host.engine.recent_queries.sample()
        probe, probe_source = held_queries
        if probe is None and len(recent) >= MIN_QUERIES:
            probe, probe_source = recent, RECENT_QUERIES
        probe = None if probe is None else probe[rng.permutation(len(probe))[:HELD_QUERIES]]
        folder = compressed_state.new_generation(host.root)
        config = replace(host.config, compression=spec)
        fitted = FittedCompression(folder, spec, pipeline, rerank, report={})
        model = host.config.serving_model
        fitted.report = {"fitted_at": time.time(), "model": {"name": model.name, "dim": model.dim, "version": model.version}, **used}

        def measure(built: list[SealedSegment]) -> None:
            view = View(tuple(s.part() for s in built), host.engine.factory.metric, host.config.dim)
            searched, held = fit_report.held_sets(view, held_rows, probe, probe_source)
            fitted.report |= fit_report.measure(view, searched, held, spec).report(spec, held)
            fitted.report["fit_seconds"] = time.perf_counter() - started
            if before_swap is not None:
                before_swap()

        def commit() -> None:  # under the write lock, just before the new segments replace the old ones
            fitted.save_state()
            compressed_state.commit(host.root, folder)
            config.save(host.root / "collection.json")
            host.config, self.fitted = config, fitted

        try:
            fitted.save_transforms()
            compressed_state.save_queries(folder, queries)
            # Every segment, the appendable one included, is rewritten with the fitted pipeline.
            host.engine.rebuild(
                "all", progress=lambda f, done, total: progress(0.95 * f, done, total), factory=host.segment_factory(config, fitted), verify=measure, on_commit=commit
            )
        except BaseException:
            if self.fitted is None or self.fitted.folder != folder:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        compressed_state.save_queries(compressed_state.root(host.root), None)
        progress(1.0, used["points"], used["points"])
        return {**fitted.report, "generation": folder.name}

    def stages(self) -> list[dict[str, Any]]:
        """What each stored vector costs, stage by stage (the float vectors until a fit)."""
        if self.fitted is None:
            return [{"name": "float32", "bytes_per_vector": 4 * self.host.config.dim}]
        stages: list[dict[str, Any]] = self.fitted.report["stages"]
        return stages

    def info(self) -> dict[str, Any] | None:
        spec = self.host.config.compression
        if spec is None:
            return None
        fitted = self.fitted
        info: dict[str, Any] = {**spec.to_json(), "state": "fitted" if fitted else "unfitted"}
        if fitted is None:
            pending = self.pending_queries()
            return info | {"search": "exact float (until a fit: PUT .../compression, or a build)", "queries": 0 if pending is None else len(pending)}
        report = fitted.report
        extra = {k: report[k] for k in ("fitted_at", "points", "sample", "queries", "held_queries", "held_from", "search", "model", "seed") if k in report}
        compressed = [p.searcher.index for p in self.host.engine.view().parts if isinstance(p.searcher, SealedSegment) and isinstance(p.searcher.index, MultiStageIndex)]
        storage = {
            "ram_bytes": sum(i.memory_bytes() for i in compressed),
            "disk_bytes": sum(i.disk_bytes() for i in compressed),
            "device": "gpu" if any(i.on_gpu for i in compressed) else "cpu",
        }
        return info | {"search": "multistage", "generation": fitted.folder.name, **extra, **storage}


def fit_pipeline(
    spec: CompressionSpec, sample: np.ndarray, queries: np.ndarray | None, seed: int, rng: np.random.Generator, source: str = fit_report.GIVEN_QUERIES
) -> tuple[Pipeline, Int8Quantizer | None, tuple[np.ndarray | None, str]]:
    """The pipeline and rerank quantizer fitted on ``sample`` (and the queries kept for learning), and the queries
    held out to measure it (``source``: where the queries came from)."""
    learned, held_queries = fit_report.split_queries(spec, queries, rng, source)
    pipeline = Pipeline(spec.transforms(seed)).fit(sample, learned)
    rerank = Int8Quantizer(seed=seed).fit(sample) if spec.rerank.with_ == "int8" else None
    return pipeline, rerank, held_queries
