"""The `trove` command."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

# Torch and FAISS each bring their own OpenMP runtime. Under the default wait policy one runtime's idle workers
# spin on the cores the other's parallel region needs, so searches that alternate between the two (compressed
# multi-stage search) stall for milliseconds on a busy machine; passive workers sleep instead. Set before either
# library loads (both are imported lazily below); an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(help="Trove: vector retrieval service.", no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind (TROVE_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (TROVE_PORT).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Data directory (TROVE_DATA_DIR).")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run sharded collections' shards as actors on a local Ray (TROVE_RAY_SHARDS).")] = False,
) -> None:
    """Start the HTTP service."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    overrides = {k: v for k, v in {"host": host, "port": port, "data_dir": data_dir, "ray_shards": ray or None}.items() if v is not None}
    settings = Settings(**overrides)
    if not settings.auth_enabled and settings.host not in {"127.0.0.1", "localhost", "::1"}:
        typer.secho(
            "warning: no API keys configured; requests from other hosts than this one will get 401 (set TROVE_API_KEYS)",
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


def _format_of(path: Path) -> str:
    formats = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".npy": "npy"}
    if path.suffix not in formats:
        raise typer.BadParameter(f"cannot tell the format of {path.name}; pass --format jsonl|parquet|npy")
    return formats[path.suffix]


@app.command()
def build(
    collection: Annotated[str, typer.Argument(help="Collection to load into (it must exist).")],
    file: Annotated[Path, typer.Argument(help="JSONL, Parquet or .npy file.")],
    format: Annotated[Optional[str], typer.Option(help="jsonl | parquet | npy (default: from the file extension).")] = None,
    ids: Annotated[Optional[Path], typer.Option(help="For .npy: ids, one per row.")] = None,
    on_error: Annotated[str, typer.Option(help="fail | skip bad rows.")] = "fail",
    engine: Annotated[str, typer.Option(help="local | ray (embed on Ray).")] = "local",
    url: Annotated[Optional[str], typer.Option(help="A running server, e.g. http://127.0.0.1:8000.")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="TROVE_API_KEY", help="Key for --url.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Build directly in a data dir no server is using.")] = None,
) -> None:
    """Load a file into a collection, with a progress bar: through a server (--url) or directly (--data-dir)."""
    from service.build_cli import build_direct, build_via_server

    if (url is None) == (data_dir is None):
        raise typer.BadParameter("give exactly one of --url (a running server) or --data-dir (no server running on it)")
    source = {"path": str(file.resolve()), "format": format or _format_of(file), "ids_path": str(ids.resolve()) if ids else None}
    request = {"source": source, "on_error": on_error, "engine": engine}
    job = build_via_server(url, api_key, collection, request) if url else build_direct(data_dir, collection, request)  # type: ignore[arg-type]
    typer.echo(json.dumps(job, indent=2))
    if job["state"] != "succeeded":
        raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def bench(ctx: typer.Context) -> None:
    """Run a benchmark suite (`trove bench --list`); needs the bench extra."""
    from bench.cli import (
        app as bench_app,  # imported here so `serve` never loads benchmark code
    )

    bench_app(args=ctx.args, prog_name="trove bench")


if __name__ == "__main__":
    app()
