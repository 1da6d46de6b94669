"""Payload filters: a conjunction of key matches, compiled to a parameterised SQL clause."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from encoders.errors import InvalidInput

Scalar = str | int | float | bool

_KEY = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


@dataclass(frozen=True)
class Match:
    """The payload value at ``key`` (dots descend into objects) equals one of ``values``.

    A list in the payload matches when any of its elements does, as in Qdrant.
    """

    key: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Filter:
    must: tuple[Match, ...]

    def to_sql(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for match in self.must:
            if not _KEY.match(match.key):
                raise InvalidInput(
                    "filter keys are names of letters, digits, '_' or '-', joined by dots",
                    code="invalid_filter",
                    details={"key": match.key},
                )
            if not match.values:
                raise InvalidInput("a filter match needs at least one value", code="invalid_filter", details={"key": match.key})
            path = "$" + "".join(f'."{part}"' for part in match.key.split("."))
            marks = ",".join("?" * len(match.values))
            clauses.append(f"EXISTS (SELECT 1 FROM json_each(points.payload, ?) AS j WHERE j.value IN ({marks}))")
            params += [path, *match.values]
        return " AND ".join(clauses) or "1", params
