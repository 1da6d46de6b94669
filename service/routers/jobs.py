"""GET/DELETE /v1/jobs: watch and cancel background work."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import JobsDep, ReadAccess, WriteAccess
from service.jobs import Job
from service.schemas import JobList, JobOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _out(job: Job) -> JobOut:
    return JobOut.model_validate(job.to_json())


@router.get("", response_model=JobList, dependencies=ReadAccess)
def list_jobs(jobs: JobsDep, collection: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JobList:
    return JobList(jobs=[_out(j) for j in jobs.list(collection=collection, limit=limit)])


@router.get("/{job_id}", response_model=JobOut, dependencies=ReadAccess)
def get_job(job_id: str, jobs: JobsDep) -> JobOut:
    return _out(jobs.get(job_id))


@router.delete("/{job_id}", response_model=JobOut, dependencies=WriteAccess)
def cancel_job(job_id: str, jobs: JobsDep) -> JobOut:
    """Ask a queued or running job to stop; it stops at its next checkpoint and changes nothing."""
    return _out(jobs.cancel(job_id))
