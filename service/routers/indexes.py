"""POST /v1/collections/{c}/indexes: index a payload key as a job; GET lists the indexes; DELETE .../indexes/{key} drops one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from service.deps import CatalogDep, JobsDep, ReadAccess, WriteAccess
from service.jobs import JobContext
from service.schemas import (
    JobAccepted,
    PayloadIndexConfig,
    PayloadIndexInfo,
    PayloadIndexList,
)
from service.validation import FilterKey

router = APIRouter(prefix="/v1/collections/{name}/indexes", tags=["payload indexes"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, dependencies=WriteAccess)
def create_payload_index(name: str, body: PayloadIndexConfig, catalog: CatalogDep, jobs: JobsDep) -> JobAccepted:
    """Index a payload key over the points stored so far (writes go on meanwhile, each indexing its own points and
    refused if a value there is of another type); filters use the index once the job has succeeded."""
    spec = body.to_spec()
    catalog.get(name).indexes.check_payload(spec)

    def work(context: JobContext) -> dict[str, Any]:
        return catalog.get(name).indexes.build_payload(spec, context.progress)

    return JobAccepted(job_id=jobs.submit("payload_index", name, spec.to_json(), work).id)


@router.get("", response_model=PayloadIndexList, dependencies=ReadAccess)
def list_payload_indexes(name: str, catalog: CatalogDep) -> PayloadIndexList:
    return PayloadIndexList(indexes=[PayloadIndexInfo(**i) for i in catalog.get(name).indexes.payload_info(with_counts=True)])


@router.delete("/{key}", status_code=status.HTTP_204_NO_CONTENT, dependencies=WriteAccess)
def drop_payload_index(name: str, key: FilterKey, catalog: CatalogDep) -> Response:
    catalog.get(name).indexes.drop_payload(key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
