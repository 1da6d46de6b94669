"""The `trove` command."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Trove: vector retrieval service.", no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind (TROVE_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (TROVE_PORT).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Data directory (TROVE_DATA_DIR).")] = None,
) -> None:
    """Start the HTTP service."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    overrides = {k: v for k, v in {"host": host, "port": port, "data_dir": data_dir}.items() if v is not None}
    settings = Settings(**overrides)
    if not settings.auth_enabled and settings.host not in {"127.0.0.1", "localhost", "::1"}:
        typer.secho(
            f"warning: no API keys configured; requests from other hosts than this one will get 401 (set TROVE_API_KEYS)",
            fg="yellow",
            err=True,
        )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


@app.command()
def models(data_dir: Annotated[Optional[Path], typer.Option(help="Data directory (TROVE_DATA_DIR).")] = None) -> None:
    """List the embedding models this installation can serve."""
    from encoders.registry import ModelRegistry
    from service.settings import Settings

    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
    registry = ModelRegistry(settings.resolved_models_dir)
    for name in registry.names():
        info = registry.info(name)
        typer.echo(json.dumps({"name": info.name, "dim": info.dim, "family": info.family, "source": info.source}))


if __name__ == "__main__":
    app()
