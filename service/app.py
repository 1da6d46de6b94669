"""The FastAPI app factory: wires settings, the model registry, the catalog and the routers."""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from encoders.registry import ModelRegistry
from index.backends.faiss_index import set_search_threads
from index.catalog import Catalog
from service.errors import UnhandledErrorMiddleware, install_handlers
from service.jobs import JobRunner
from service.limits import LimitsMiddleware
from service.metrics import Metrics, MetricsMiddleware
from service.openapi import install_openapi
from service.optimizer import OptimizerLoop
from service.routers import (
    builds,
    collections,
    compression,
    console,
    health,
    indexes,
    jobs,
    models,
    points,
    query,
    relevance,
    text_index,
    upgrades,
)
from service.settings import Settings
from service.validation import check_path_parameters

log = logging.getLogger(__name__)


def freeze_start_up_heap() -> None:
    """Move what a server process holds before its app is made (modules, classes, settings) out of the garbage
    collector's reach; `trove serve` calls it once, before create_app. A full collection scans every tracked
    object holding the GIL: with the imported heap in it one took 130 ms (queries stalled) each time a build's
    chunks aged into the oldest generation. Nothing that can be dropped (a collection, a model) may be frozen:
    frozen objects that later become cyclic garbage are never freed, so collections and models stay tracked."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.build_source_dirs:
        (settings.data_dir / "imports").mkdir(exist_ok=True)  # where jobs read files from by default
    set_search_threads(settings.faiss_threads)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)  # process-wide: queries wait less for a busy build thread
    registry = ModelRegistry(settings.resolved_models_dir, confined=True)
    catalog = Catalog(settings.data_dir, registry, settings.engine, settings.shard_runtime)
    metrics = Metrics(catalog)
    job_runner = JobRunner(settings.data_dir / "jobs.sqlite", workers=settings.job_workers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Replay runs beside the server so /healthz answers at once and /readyz reports progress.
        loader = threading.Thread(target=catalog.load_all, name="trove-replay", daemon=True)
        loader.start()
        optimizer = OptimizerLoop(catalog, job_runner, settings.optimizer_interval_s)
        optimizer.start()
        try:
            yield
        finally:
            optimizer.stop()
            loader.join()
            job_runner.close()  # running jobs stop at their next checkpoint, committing nothing
            catalog.close()

    app = FastAPI(
        title="Trove",
        version="0.1.0",
        summary="Vector retrieval with compressed embeddings and model upgrades without backfill.",
        lifespan=lifespan,
        dependencies=[Depends(check_path_parameters)],  # every route's path parameters, by one policy
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.catalog = catalog
    app.state.metrics = metrics
    app.state.jobs = job_runner
    install_handlers(app)
    for router in (health.router, models.router, collections.router, points.router, query.router, builds.router, jobs.router, relevance.router, compression.router, upgrades.router, text_index.router, indexes.router):
        app.include_router(router)
    console.mount_console(app)
    install_openapi(app)
    app.add_middleware(UnhandledErrorMiddleware)  # innermost of ours, so metrics still count its 500s
    app.add_middleware(LimitsMiddleware, max_body_bytes=settings.max_request_bytes, max_in_flight=settings.max_concurrent_requests)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
