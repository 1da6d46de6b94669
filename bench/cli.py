"""`trove bench`: one sub-command per registered suite (bench/suites), plus `--list`."""

from __future__ import annotations

from typing import Annotated

import typer

from bench.suites import suites

app = typer.Typer(help="Benchmarks: results go to bench/results/<suite>.json, .md and PNG plots.", invoke_without_command=True)


@app.callback()
def main(
    ctx: typer.Context,
    list_suites: Annotated[bool, typer.Option("--list", help="List the suites and exit.")] = False,
) -> None:
    if list_suites:
        for suite in suites().values():
            typer.echo(f"{suite.name:12} {suite.summary}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


for _suite in suites().values():
    app.command(name=_suite.name, help=_suite.command.__doc__)(_suite.command)
