"""FastAPI dependencies as Annotated aliases: settings, the catalog, access checks.

All are `async def`: they never block, and a sync dependency would cost a threadpool hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from encoders.errors import NotReady
from encoders.registry import ModelRegistry
from index.catalog import Catalog
from service.auth import check_access
from service.jobs import JobRunner
from service.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    if not catalog.ready.is_set():
        raise NotReady("the service is still replaying its collections; retry shortly", code="not_ready")
    return catalog


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_jobs(request: Request) -> JobRunner:
    jobs: JobRunner = request.app.state.jobs
    return jobs


async def require_read(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    check_access(request, settings, write=False)


async def require_write(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    check_access(request, settings, write=True)


SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]
ReadAccess = [Depends(require_read)]
WriteAccess = [Depends(require_write)]
