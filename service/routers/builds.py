"""POST /v1/collections/{c}/builds: load a file into a collection as a background job."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, status

from encoders.errors import InvalidInput
from index.builds import BuildOptions, run_build
from index.distributed import RayEmbedder
from index.sources import Source
from service.deps import CatalogDep, JobsDep, SettingsDep, WriteAccess
from service.jobs import JobContext
from service.schemas import BuildRequest, JobAccepted
from service.settings import Settings

router = APIRouter(prefix="/v1/collections/{name}/builds", tags=["builds"], dependencies=WriteAccess)


def _allowed(path: Path, settings: Settings) -> Path:
    resolved = path.expanduser().resolve()
    if settings.build_source_dirs and not any(resolved.is_relative_to(d.resolve()) for d in settings.build_source_dirs):
        raise InvalidInput(
            f"{path} is outside the folders builds may read (TROVE_BUILD_SOURCE_DIRS)",
            code="source_not_allowed",
            details={"path": str(path), "allowed": [str(d) for d in settings.build_source_dirs]},
        )
    return resolved


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted)
def start_build(name: str, body: BuildRequest, catalog: CatalogDep, jobs: JobsDep, settings: SettingsDep) -> JobAccepted:
    collection = catalog.get(name)
    source = Source(
        path=_allowed(Path(body.source.path), settings),
        format=body.source.format,
        ids_path=_allowed(Path(body.source.ids_path), settings) if body.source.ids_path else None,
    )
    model = collection.config.serving_model
    embed = (
        RayEmbedder(model=model.name, dim=model.dim, models_dir=settings.resolved_models_dir, address=settings.ray_address, actors=settings.ray_actors)
        if body.engine == "ray" and model.name
        else None
    )

    def work(context: JobContext) -> dict[str, object]:
        return run_build(catalog.get(name), source, BuildOptions(on_error=body.on_error), context.progress, embed)

    job = jobs.submit("build", name, body.model_dump(), work)
    return JobAccepted(job_id=job.id)
