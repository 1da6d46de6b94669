"""The suite registry behind `trove bench <suite>`.

A suite is a module here exposing `SUITE = Suite(...)`; its command function's typer options are the
suite's options. Adding one (compression, muvera, upgrade, relevance) is a module plus a name below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

SUITE_MODULES = ("ann", "service", "relevance", "compression", "muvera", "upgrade", "engine", "hybrid", "encode", "shards", "filters")


@dataclass(frozen=True)
class Suite:
    name: str
    summary: str  # one line, shown by `trove bench --list`
    command: Callable[..., None]


def suites() -> dict[str, Suite]:
    found = (importlib.import_module(f"bench.suites.{module}").SUITE for module in SUITE_MODULES)
    return {suite.name: suite for suite in found}
