"""The `trove build` command's two paths, both ending in a job record shaped like GET /v1/jobs/{id}."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from encoders.errors import TroveError
from service.client import TroveAPIError, TroveClient


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def _failed(collection: str, request: dict[str, Any], code: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "build", "collection": collection, "params": request, "state": "failed", "error": {"code": code, "message": message, "details": details}, "result": None}


def build_via_server(url: str, api_key: str | None, collection: str, request: dict[str, Any]) -> dict[str, Any]:
    """Start the build job on the server and follow it until it finishes (Ctrl-C cancels it)."""
    with TroveClient(url, api_key=api_key) as trove, _bar() as bar:
        try:
            job_id = trove.start_build(collection, request)
        except TroveAPIError as err:  # refused with the request: no job was created
            return _failed(collection, request, err.code, err.message, err.details)
        task = bar.add_task(f"build {collection}", total=1.0)
        try:
            while True:
                job = trove.job(job_id)
                bar.update(task, completed=job["progress"], description=f"build {collection} ({job['state']}, {job['done']}/{job['total'] or '?'} rows)")
                if job["state"] in {"succeeded", "failed", "cancelled"}:
                    return job
                time.sleep(0.5)
        except KeyboardInterrupt:
            return trove.cancel_job(job_id)


def build_direct(data_dir: Path, collection: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run the same build in this process against a data dir that no server is using."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from encoders.registry import ModelRegistry
    from index.catalog import Catalog
    from index.ingest.builds import BuildOptions, run_build
    from index.ingest.distributed import RayEmbedder
    from index.ingest.sources import Source
    from service.settings import Settings

    settings = Settings(data_dir=data_dir)
    catalog = Catalog(data_dir, ModelRegistry(settings.resolved_models_dir))
    catalog.load_all()
    target = catalog.get(collection)
    spec = request["source"]
    model = target.config.serving_model
    embed = RayEmbedder(model=model.name, dim=model.dim, models_dir=settings.resolved_models_dir, address=settings.ray_address) if request["engine"] == "ray" and model.name else None
    started = time.time()
    job: dict[str, Any] = {"kind": "build", "collection": collection, "params": request, "error": None, "result": None}
    try:
        source = Source(Path(spec["path"]), spec["format"], Path(spec["ids_path"]) if spec["ids_path"] else None)
        with _bar() as bar:
            task = bar.add_task(f"build {collection}", total=1.0)

            def progress(fraction: float, done: int, total: int) -> None:
                bar.update(task, completed=fraction, description=f"build {collection} ({done}/{total} rows)")

            job["result"] = run_build(target, source, BuildOptions(on_error=request["on_error"]), progress, embed)
            job["state"] = "succeeded"
    except TroveError as err:
        job |= _failed(collection, request, err.code, err.message, err.details)
    finally:
        catalog.close()
    job["seconds"] = time.time() - started
    return job
