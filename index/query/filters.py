"""Payload filters: conditions on payload keys combined with must / should / must_not, compiled to SQL.

A key's values: dots descend into objects; a scalar there is one value, a list's scalar elements are its
values (a list matches when any element does, as in Qdrant); an object, a nested list or null is not a value.
Types never mix: a string matches strings, a number numbers (``2`` and ``2.0`` are equal), a boolean booleans.

- ``Match``: some value equals one of ``values``.
- ``Range``: some value lies within every given bound; numbers, or ISO-8601 date-times (strings as bounds:
  values are then the strings that parse as date-times, compared as instants; no zone means UTC).
- ``IsNull``: the key holds ``null`` itself. ``IsEmpty``: the key has no value (missing, null, ``[]``, only nulls).
- ``Filter``: every ``must`` holds, at least one ``should`` (when there are any), no ``must_not``; nests.

``to_sql`` gives one clause over ``points``: a condition on a key with a ready payload index
(index/storage/payload_index.py) that can answer it reads that index's table, anything else the stored JSON.
Both give the same rows: an index holds every value its key has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from encoders.errors import InvalidInput
from index.storage.payload_index import (
    ELEMENT,
    INSTANT_FUNCTION,
    PayloadIndex,
    instant,
    json_path,
)
from index.validation import check_filter_key

Scalar = str | int | float | bool
Bound = int | float | str

_TEXT = "j.type = 'text'"
_NUMBER = "j.type IN ('integer', 'real')"
_BOOL = "j.type IN ('true', 'false')"


def _invalid(message: str, **details: Any) -> InvalidInput:
    return InvalidInput(message, code="invalid_filter", details=details)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_values(test: str) -> str:
    """Some value of a key (json_each of its path, the caller's next parameter) passes ``test``."""
    return f"EXISTS (SELECT 1 FROM json_each(points.payload, ?) AS j WHERE {ELEMENT} AND {test})"


def _indexed(index: PayloadIndex, test: str) -> str:
    return f"points.row IN (SELECT row FROM {index.table} WHERE {test})"


@dataclass(frozen=True)
class Match:
    """Some value at ``key`` equals one of ``values``."""

    key: str
    values: tuple[Scalar, ...]

    def __post_init__(self) -> None:
        check_filter_key(self.key)
        if not self.values:
            raise _invalid("a filter match needs at least one value", key=self.key)

    def to_sql(self, indexes: Mapping[str, PayloadIndex], params: list[Any]) -> str:
        strings = [v for v in self.values if isinstance(v, str)]
        numbers = [v for v in self.values if _is_number(v)]
        bools = [int(v) for v in self.values if isinstance(v, bool)]
        index = indexes.get(self.key)
        fits = {"keyword": strings, "integer": numbers, "float": numbers, "bool": bools}
        if index is not None and len(fits.get(index.spec.type, ())) == len(self.values):
            params += [int(v) if isinstance(v, bool) else v for v in self.values]
            return _indexed(index, f"value IN ({','.join('?' * len(self.values))})")
        tests: list[str] = []
        params.append(json_path(self.key))
        for kind, group in ((_TEXT, strings), (_NUMBER, numbers), (_BOOL, bools)):
            if group:
                tests.append(f"({kind} AND j.value IN ({','.join('?' * len(group))}))")
                params += group
        return _json_values("(" + " OR ".join(tests) + ")")

    def value_count(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Range:
    """Some value at ``key`` within every given bound: numbers, or date-times when the bounds are strings."""

    key: str
    gt: Bound | None = None
    gte: Bound | None = None
    lt: Bound | None = None
    lte: Bound | None = None

    def __post_init__(self) -> None:
        check_filter_key(self.key)
        bounds = self.bounds()
        if not bounds:
            raise _invalid("a range needs at least one of gt, gte, lt, lte", key=self.key)
        if all(isinstance(v, str) for _, v in bounds):
            for name, value in bounds:
                if instant(value) is None:
                    raise _invalid(f"range bound {name} {value!r} is not an ISO-8601 date or date-time (e.g. 2024-05-01T12:00:00Z)", key=self.key, bound=name)
        elif not all(_is_number(v) for _, v in bounds):
            raise _invalid("range bounds are all numbers, or all ISO-8601 date-time strings", key=self.key)

    def bounds(self) -> list[tuple[str, Bound]]:
        return [(name, value) for name, value in (("gt", self.gt), ("gte", self.gte), ("lt", self.lt), ("lte", self.lte)) if value is not None]

    @property
    def on_datetimes(self) -> bool:
        return isinstance(self.bounds()[0][1], str)

    def to_sql(self, indexes: Mapping[str, PayloadIndex], params: list[Any]) -> str:
        operators = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        values = [instant(v) if self.on_datetimes else v for _, v in self.bounds()]
        index = indexes.get(self.key)
        if index is not None and index.spec.type in (("datetime",) if self.on_datetimes else ("integer", "float")):
            params += values
            return _indexed(index, " AND ".join(f"value {operators[name]} ?" for name, _ in self.bounds()))
        subject = f"{INSTANT_FUNCTION}(j.value)" if self.on_datetimes else "j.value"
        params += [json_path(self.key), *values]
        kind = _TEXT if self.on_datetimes else _NUMBER
        return _json_values(" AND ".join([kind, *(f"{subject} {operators[name]} ?" for name, _ in self.bounds())]))

    def value_count(self) -> int:
        return len(self.bounds())


@dataclass(frozen=True)
class IsNull:
    """The key holds null itself (not a list of nulls, not a missing key)."""

    key: str

    def __post_init__(self) -> None:
        check_filter_key(self.key)

    def to_sql(self, indexes: Mapping[str, PayloadIndex], params: list[Any]) -> str:
        params.append(json_path(self.key))
        return "(json_type(points.payload, ?) IS 'null')"

    def value_count(self) -> int:
        return 0


@dataclass(frozen=True)
class IsEmpty:
    """The key has no value: missing, null, an empty list, or a list of nulls."""

    key: str

    def __post_init__(self) -> None:
        check_filter_key(self.key)

    def to_sql(self, indexes: Mapping[str, PayloadIndex], params: list[Any]) -> str:
        index = indexes.get(self.key)
        if index is not None:
            return f"NOT EXISTS (SELECT 1 FROM {index.table} AS t WHERE t.row = points.row)"
        path = json_path(self.key)
        params += [path, path, path, path]
        return (
            "(json_type(points.payload, ?) IS NULL OR json_type(points.payload, ?) IS 'null' OR (json_type(points.payload, ?) IS 'array' "
            "AND NOT EXISTS (SELECT 1 FROM json_each(points.payload, ?) AS j WHERE j.type != 'null')))"
        )

    def value_count(self) -> int:
        return 0


Condition = Union[Match, Range, IsNull, IsEmpty, "Filter"]


@dataclass(frozen=True)
class Filter:
    """Every ``must`` condition holds, at least one ``should`` does (when any are given), no ``must_not`` does."""

    must: tuple[Condition, ...] = ()
    should: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()

    def to_sql(self, indexes: Mapping[str, PayloadIndex] | None = None, params: list[Any] | None = None) -> tuple[str, list[Any]]:
        """A clause over ``points`` (always 0 or 1, never NULL, so negation is exact) and its parameters."""
        indexes = indexes or {}
        params = [] if params is None else params
        clauses = [self._child(c, indexes, params) for c in self.must]
        if self.should:
            clauses.append("(" + " OR ".join(self._child(c, indexes, params) for c in self.should) + ")")
        clauses += [f"NOT {self._child(c, indexes, params)}" for c in self.must_not]
        return ("(" + " AND ".join(clauses) + ")") if clauses else "1", params

    @staticmethod
    def _child(condition: Condition, indexes: Mapping[str, PayloadIndex], params: list[Any]) -> str:
        if isinstance(condition, Filter):
            return condition.to_sql(indexes, params)[0]
        return condition.to_sql(indexes, params)

    def conditions(self) -> tuple[Condition, ...]:
        return (*self.must, *self.should, *self.must_not)

    def size(self) -> tuple[int, int]:
        """(conditions, values) in all, nested filters included: what the filter limits bound."""
        conditions, values = 0, 0
        for c in self.conditions():
            inner = c.size() if isinstance(c, Filter) else (0, c.value_count())
            conditions, values = conditions + 1 + inner[0], values + inner[1]
        return conditions, values

    def cache_key(self) -> str:
        """Equal for equal filters and only those: repr keeps True, 1 and 1.0 apart (== would not)."""
        return repr(self)
