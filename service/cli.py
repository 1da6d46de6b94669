"""The `trove` command."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from encoders.errors import TroveError

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

    from service.app import create_app, freeze_start_up_heap
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
    freeze_start_up_heap()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


models_app = typer.Typer(help="The embedding models this installation can serve: list, add, distill, remove.", no_args_is_help=True)
app.add_typer(models_app, name="models")
DataDir = Annotated[Optional[Path], typer.Option(help="Data directory (TROVE_DATA_DIR); models go to its models dir (TROVE_MODELS_DIR).")]


def _models_dir(data_dir: Path | None) -> tuple[Path, Path]:
    """(data dir, models dir) as the server started with the same environment resolves them."""
    from service.settings import Settings

    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
    return settings.data_dir, settings.resolved_models_dir


def _fail(error: TroveError) -> typer.Exit:
    """A Trove error as one line on stderr (its message names what is wrong) and exit status 2."""
    typer.secho(f"error ({error.code}): {error.message}", fg="red", err=True)
    return typer.Exit(2)


@models_app.command("list")
def models_list(data_dir: DataDir = None) -> None:
    """One JSON line per model: name, dim, family, max tokens, where it comes from."""
    from encoders.registry import ModelRegistry

    registry = ModelRegistry(_models_dir(data_dir)[1])
    for name in registry.names():
        info = registry.describe(name)
        typer.echo(json.dumps({"name": info.name, "dim": info.dim, "family": info.family, "max_tokens": info.max_tokens, "source": info.source}))


@models_app.command("add")
def models_add(
    path: Annotated[Path, typer.Argument(help="A sentence-transformers or model2vec folder.")],
    name: Annotated[Optional[str], typer.Option(help="Model name (default: the folder's name).")] = None,
    kind: Annotated[Optional[str], typer.Option(help="Refuse the folder unless it is this kind: sentence-transformers | model2vec.")] = None,
    replace: Annotated[bool, typer.Option(help="Replace an installed model of that name.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Check a model folder (it loads and embeds a test sentence) and install it; a running server lists it at once."""
    from encoders.install import install

    if kind not in (None, "sentence-transformers", "model2vec"):
        raise typer.BadParameter("--kind is sentence-transformers or model2vec")
    typer.echo(f"checking {path} ...", err=True)
    try:
        record = install(path, _models_dir(data_dir)[1], name, kind, replace)  # type: ignore[arg-type]
    except TroveError as e:
        raise _fail(e) from None
    typer.echo(json.dumps(record, indent=2))


@models_app.command("distill")
def models_distill(
    dim: Annotated[int, typer.Option(help="Dimension of the static model (PCA of MiniLM's token table).")] = 256,
    name: Annotated[Optional[str], typer.Option(help="Model name (default: minilm-l6-static<dim>).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Distill the bundled MiniLM into a model2vec static model, offline (minutes on 2 cores), and install it."""
    import shutil
    import tempfile

    from encoders.distill import PROVENANCE, distilled_minilm, distilled_name
    from encoders.errors import AlreadyExists
    from encoders.install import check_name, install

    models_dir = _models_dir(data_dir)[1]
    target = name or distilled_name(dim)
    try:
        check_name(target)
        if (models_dir / target).exists():
            raise AlreadyExists(f"a model named {target!r} is already installed in {models_dir}; remove it first", code="model_exists")
        models_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".distill-", dir=models_dir))  # dot-prefixed: never listed as a model
        try:
            typer.echo(f"distilling minilm-l6 to {dim}-d (a few minutes) ...", err=True)
            folder = distilled_minilm(work, dim)
            record = install(folder, models_dir, target, "model2vec", origin={"how": "trove models distill", **json.loads((folder / PROVENANCE).read_text())})
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except TroveError as e:
        raise _fail(e) from None
    typer.echo(json.dumps(record, indent=2))


@models_app.command("remove")
def models_remove(
    name: Annotated[str, typer.Argument(help="An installed model's name.")],
    force: Annotated[bool, typer.Option(help="Remove it even though collections in the data dir use it.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Remove an installed model; refused while a collection in the data dir uses it (they could not load again)."""
    from encoders.errors import Conflict
    from encoders.install import remove
    from index.catalog import collections_using

    data, models_dir = _models_dir(data_dir)
    try:
        users = collections_using(data, name)
        if users and not force:
            raise Conflict(f"collections {', '.join(users)} use model {name!r}; drop them first, or pass --force", code="model_in_use", details={"collections": users})
        remove(models_dir, name)
    except TroveError as e:
        raise _fail(e) from None
    typer.echo(json.dumps({"removed": name}))


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
