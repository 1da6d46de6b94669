"""POST /v1/collections/{c}/relevance: fit a relevance calibrator as a background job; GET shows the fitted one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from index.relevance.fit import check_fit, read_examples
from service.deps import CatalogDep, JobsDep, ReadAccess, SettingsDep, WriteAccess
from service.jobs import JobContext
from service.schemas import JobAccepted, RelevanceRequest

router = APIRouter(prefix="/v1/collections/{name}/relevance", tags=["relevance"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, dependencies=WriteAccess)
def fit_relevance(name: str, body: RelevanceRequest, catalog: CatalogDep, jobs: JobsDep, settings: SettingsDep) -> JobAccepted:
    collection = catalog.get(name)
    inline = body.inline_examples()
    options = body.options()
    # A file is read now, so a missing or malformed one is a 400 here; labelled-query files are small next to the fit itself.
    if inline is not None:
        examples = inline
    elif body.refit:
        examples = read_examples(collection.relevance.stored_examples_path())
    else:
        assert body.path is not None  # inline_examples() checked that exactly one source is given
        examples = read_examples(settings.readable_source(body.path))
    check_fit(collection, examples, options)

    def work(context: JobContext) -> dict[str, Any]:
        return catalog.get(name).relevance.fit(examples, options, context.progress)

    return JobAccepted(job_id=jobs.submit("relevance", name, body.model_dump(exclude={"examples"}), work).id)


@router.get("", dependencies=ReadAccess)
def relevance_report(name: str, catalog: CatalogDep) -> dict[str, Any]:
    """The serving model's calibrator report, or null when none is fitted."""
    return {"relevance": catalog.get(name).relevance.report()}
