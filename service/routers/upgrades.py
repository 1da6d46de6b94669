"""Model upgrades: fit a compatibility map as a job, list them, promote, roll back, backfill and rebuild natively as jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from index.models import backfill, rebuild, upgrades
from service.deps import CatalogDep, JobsDep, ReadAccess, RegistryDep, WriteAccess
from service.jobs import JobContext
from service.schemas import (
    BackfillRequest,
    JobAccepted,
    PromoteRequest,
    UpgradeList,
    UpgradeRequest,
)

router = APIRouter(prefix="/v1/collections/{name}/upgrades", tags=["upgrades"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, dependencies=WriteAccess)
def start_upgrade(name: str, body: UpgradeRequest, catalog: CatalogDep, jobs: JobsDep, registry: RegistryDep) -> JobAccepted:
    options = body.options()
    upgrades.check_upgrade(catalog.get(name), options)
    encoder = registry.get(body.model)  # 404 now for an unknown model, not later in the job
    upgrades.check_encoder(catalog.get(name), encoder)

    def work(context: JobContext) -> dict[str, Any]:
        return upgrades.run_upgrade(catalog.get(name), encoder, options, context.job_id, context.progress)

    return JobAccepted(job_id=jobs.submit("upgrade", name, body.model_dump(exclude={"examples"}), work).id)


@router.get("", response_model=UpgradeList, dependencies=ReadAccess)
def list_upgrades(name: str, catalog: CatalogDep) -> UpgradeList:
    return UpgradeList(upgrades=upgrades.list_upgrades(catalog.get(name)))


@router.get("/{upgrade_id}", dependencies=ReadAccess)
def get_upgrade(name: str, upgrade_id: str, catalog: CatalogDep) -> dict[str, Any]:
    return upgrades.load_record(catalog.get(name), upgrade_id)


@router.post("/{upgrade_id}/promote", dependencies=WriteAccess, responses={202: {"model": JobAccepted}})
def promote(name: str, upgrade_id: str, catalog: CatalogDep, jobs: JobsDep, response: Response, body: PromoteRequest | None = None) -> Any:
    """query_side: switches at once and answers the upgrade record; reproject: 202 with the job that maps the stored vectors."""
    collection = catalog.get(name)
    force = body.force if body else False
    record = upgrades.load_record(collection, upgrade_id)
    if record["mode"] == "query_side" or record["version"] is not None:
        return upgrades.promote(collection, upgrade_id, force)
    upgrades.check_promotable(collection, record, force)

    def work(context: JobContext) -> dict[str, Any]:
        return upgrades.promote(catalog.get(name), upgrade_id, force, context.progress)

    response.status_code = status.HTTP_202_ACCEPTED
    return JobAccepted(job_id=jobs.submit("reproject", name, {"upgrade_id": upgrade_id, "force": force}, work).id)


@router.post("/{upgrade_id}/rollback", dependencies=WriteAccess)
def rollback(name: str, upgrade_id: str, catalog: CatalogDep) -> dict[str, Any]:
    return upgrades.rollback(catalog.get(name), upgrade_id)


@router.post("/{upgrade_id}/backfill", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, dependencies=WriteAccess)
def start_backfill(name: str, upgrade_id: str, catalog: CatalogDep, jobs: JobsDep, body: BackfillRequest | None = None) -> JobAccepted:
    """Re-encode the points older model versions embedded with this (serving) upgrade's model, as a job; 409 unless it serves."""
    rate = body.rate if body else None
    backfill.check_backfillable(catalog.get(name), upgrades.load_record(catalog.get(name), upgrade_id))

    def work(context: JobContext) -> dict[str, Any]:
        return backfill.run_backfill(catalog.get(name), upgrade_id, rate, context.progress)

    return JobAccepted(job_id=jobs.submit("backfill", name, {"upgrade_id": upgrade_id, "rate": rate}, work).id)


@router.post("/{upgrade_id}/rebuild", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, dependencies=WriteAccess)
def start_rebuild(name: str, upgrade_id: str, catalog: CatalogDep, jobs: JobsDep) -> JobAccepted:
    """Move the index into the serving (query_side) upgrade's own model space after a complete backfill, as a job; 409 before that."""
    rebuild.check_rebuildable(catalog.get(name), upgrades.load_record(catalog.get(name), upgrade_id))

    def work(context: JobContext) -> dict[str, Any]:
        return rebuild.run_rebuild(catalog.get(name), upgrade_id, context.progress)

    return JobAccepted(job_id=jobs.submit("rebuild", name, {"upgrade_id": upgrade_id}, work).id)
