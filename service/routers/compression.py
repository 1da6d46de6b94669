"""PUT /v1/collections/{c}/compression: set a collection's compression and fit it as a background job; GET shows it."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, status

from index.collection import Collection
from index.compression.spec import CompressionSpec
from service.deps import CatalogDep, JobsDep, ReadAccess, WriteAccess
from service.jobs import JobContext
from service.schemas import CompressionConfig, JobAccepted

router = APIRouter(prefix="/v1/collections/{name}/compression", tags=["compression"])


def _checked_queries(collection: Collection, spec: CompressionSpec, samples: list[str | list[float]] | None) -> np.ndarray | None:
    """The spec checked for this collection, then its query samples embedded (or the ones kept from before)."""
    pending = None if samples else collection.compression.pending_queries()
    spec.check_for(collection.config, len(samples) if samples else 0 if pending is None else len(pending), collection.index_dim)
    return collection.compression.query_vectors(samples) if samples else pending


def configure_compression(collection: Collection, spec: CompressionSpec, samples: list[str | list[float]] | None) -> None:
    """A new collection's compression: checked now, fitted by the first build (or PUT .../compression) once it holds points."""
    collection.compression.configure(spec, _checked_queries(collection, spec, samples))


@router.put("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, dependencies=WriteAccess)
def fit_compression(name: str, body: CompressionConfig, catalog: CatalogDep, jobs: JobsDep) -> JobAccepted:
    """Fit the config on the stored vectors (sample of at most 100k) and rebuild the index on a copy; queries continue meanwhile."""
    collection = catalog.get(name)
    spec = body.to_spec()
    queries = _checked_queries(collection, spec, body.query_samples())
    spec.check_points(collection.count())

    def work(context: JobContext) -> dict[str, Any]:
        return catalog.get(name).compression.fit(spec, queries, context.progress)

    params = body.model_dump(by_alias=True, exclude_none=True, exclude={"leanvec": {"queries"}})
    return JobAccepted(job_id=jobs.submit("compression", name, params, work).id)


@router.get("", dependencies=ReadAccess)
def compression_info(name: str, catalog: CatalogDep) -> dict[str, Any]:
    """The configured compression, whether it is fitted, and its stages (bytes per vector, recall@10 at fit time)."""
    collection = catalog.get(name)
    return {"compression": collection.compression.info(), "stages": collection.info()["stages"]}
