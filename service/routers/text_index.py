"""PUT /v1/collections/{c}/text_index: add a full-text (BM25) index over the stored text as a job; GET shows it; DELETE drops it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from service.deps import CatalogDep, JobsDep, ReadAccess, WriteAccess
from service.jobs import JobContext
from service.schemas import JobAccepted, TextIndexConfig

router = APIRouter(prefix="/v1/collections/{name}/text_index", tags=["text index"])


@router.put("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, dependencies=WriteAccess)
def build_text_index(name: str, body: TextIndexConfig, catalog: CatalogDep, jobs: JobsDep) -> JobAccepted:
    """Index the text of the points stored so far (writes go on meanwhile, each indexing its own points);
    keyword and hybrid queries answer once the job has succeeded. An unfinished index of the same tokenizer is resumed."""
    spec = body.to_spec()
    catalog.get(name).indexes.check_text(spec)

    def work(context: JobContext) -> dict[str, Any]:
        return catalog.get(name).indexes.build_text(spec, context.progress)

    return JobAccepted(job_id=jobs.submit("text_index", name, spec.to_json(), work).id)


@router.get("", dependencies=ReadAccess)
def text_index_info(name: str, catalog: CatalogDep) -> dict[str, Any]:
    return {"text_index": catalog.get(name).indexes.text_info()}


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, dependencies=WriteAccess)
def drop_text_index(name: str, catalog: CatalogDep) -> Response:
    catalog.get(name).indexes.drop_text()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
