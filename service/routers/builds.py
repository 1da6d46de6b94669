"""POST /v1/collections/{c}/builds: load a file into a collection as a background job."""

from __future__ import annotations

from fastapi import APIRouter, status

from encoders.errors import InvalidInput, Unsupported
from index.ingest.builds import BuildOptions, check_build, run_build
from index.ingest.distributed import RayEmbedder
from index.ingest.sources import Source
from service.deps import CatalogDep, JobsDep, SettingsDep, WriteAccess
from service.jobs import JobContext
from service.schemas import BuildRequest, JobAccepted

router = APIRouter(prefix="/v1/collections/{name}/builds", tags=["builds"], dependencies=WriteAccess)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted)
def start_build(name: str, body: BuildRequest, catalog: CatalogDep, jobs: JobsDep, settings: SettingsDep) -> JobAccepted:
    collection = catalog.get(name)
    source = Source(
        path=settings.readable_source(body.source.path),
        format=body.source.format,
        ids_path=settings.readable_source(body.source.ids_path) if body.source.ids_path else None,
    )
    options = BuildOptions(on_error=body.on_error)
    model = collection.config.serving_model
    embed = (
        RayEmbedder(model=model.name, dim=model.dim, models_dir=settings.resolved_models_dir, address=settings.ray_address, actors=settings.ray_actors)
        if body.engine == "ray" and model.name
        else None
    )
    if embed is not None:
        if collection.config.multivector:
            raise Unsupported("engine 'ray' embeds pooled vectors; multi-vector builds encode token vectors in the server", code="ray_multivector_unsupported")
        embed.check_available()
    check_build(collection, source, options)

    def work(context: JobContext) -> dict[str, object]:
        collection = catalog.get(name)
        result = run_build(collection, source, options, context.progress, embed)
        if collection.compression.unfitted and collection.config.compression is not None:
            # The first build gives an unfitted compression config its data: fit it in the same job.
            spec, queries = collection.config.compression, collection.compression.pending_queries()
            try:
                result["compression"] = collection.compression.fit(spec, queries, context.progress)
            except InvalidInput as exc:  # the build stands; searches stay exact until there is enough to fit
                if exc.code != "too_few_points":
                    raise
                result["compression"] = {"state": "unfitted", "reason": exc.message}
        return result

    job = jobs.submit("build", name, body.model_dump(), work)
    return JobAccepted(job_id=job.id)
