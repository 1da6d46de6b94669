"""Payload indexes: for a declared key, a typed side table of (value, row) with a real SQLite index.

Each index is a STRICT, WITHOUT ROWID table ``payload_index_<id>`` keyed by (value, row), plus an index on
row; ``payload_indexes`` lists them with their key, type and state. Triggers on ``points`` keep every table
in step, so each write path (upserts, overwrites, deletes, a streamed build's commit) changes it in the very
transaction that changes the points. An index added to a collection that already holds points is filled
chunk by chunk while writes go on (the triggers cover new rows from the moment it exists; the fill inserts
with OR IGNORE), then marked ready; only ready indexes are used by queries.

Every value at an indexed key must be of the index's type: a list's elements each, nulls allowed (they are
"no value"). A write holding another type is refused whole (``check``, inside its transaction: nothing is
written), and so is a fill that meets one (the index is dropped). So an index holds every value its key has,
and a filter answers the same with or without it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from encoders.errors import InvalidInput

IndexType = Literal["keyword", "integer", "float", "bool", "datetime"]
INDEX_TYPES: tuple[str, ...] = ("keyword", "integer", "float", "bool", "datetime")
INSTANT_FUNCTION = "trove_instant"  # registered on every store connection (Store._conn)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Per type: the SQLite column type, the json_each types a value may have, and the stored value of element j.
_COLUMN = {"keyword": "TEXT", "integer": "INTEGER", "float": "REAL", "bool": "INTEGER", "datetime": "INTEGER"}
_ACCEPTS = {
    "keyword": "j.type = 'text'",
    "integer": "j.type = 'integer'",
    "float": "j.type IN ('integer', 'real')",
    "bool": "j.type IN ('true', 'false')",
    "datetime": f"j.type = 'text' AND {INSTANT_FUNCTION}(j.value) IS NOT NULL",
}
_STORED = {
    "keyword": "j.value",
    "integer": "j.value",
    "float": "CAST(j.value AS REAL)",
    "bool": "j.type = 'true'",
    "datetime": f"{INSTANT_FUNCTION}(j.value)",
}
_DESCRIBED = {
    "keyword": "strings",
    "integer": "integers",
    "float": "numbers",
    "bool": "booleans",
    "datetime": "ISO-8601 date-time strings",
}
# json_each over a key's value: one row for a scalar (key NULL), one per element of an array (integer keys);
# an object's members (text keys) are not values of the key.
ELEMENT = "typeof(j.key) != 'text'"

REGISTRY = """CREATE TABLE IF NOT EXISTS payload_indexes (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    ready INTEGER NOT NULL
)"""


def instant(value: Any) -> int | None:
    """An ISO-8601 date or date-time string as UTC microseconds since 1970 (no zone: UTC); None otherwise."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // _MICROSECOND


def json_path(key: str) -> str:
    """A dot-joined filter key (checked by index.validation: names of [A-Za-z0-9_-]) as a SQLite JSON path."""
    return "$" + "".join(f'."{part}"' for part in key.split("."))


@dataclass(frozen=True)
class PayloadIndexSpec:
    key: str
    type: IndexType

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise InvalidInput(f"unknown payload index type {self.type!r}; choose one of {', '.join(INDEX_TYPES)}", code="invalid_index_type", details={"type": self.type})

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "type": self.type}


@dataclass(frozen=True)
class PayloadIndex:
    id: int
    spec: PayloadIndexSpec
    ready: bool  # False while a fill over the points stored before it is unfinished (or was interrupted)

    @property
    def table(self) -> str:
        return f"payload_index_{self.id}"


def register_functions(conn: sqlite3.Connection) -> None:
    conn.create_function(INSTANT_FUNCTION, 1, instant, deterministic=True)


def all_indexes(conn: sqlite3.Connection) -> dict[str, PayloadIndex]:
    conn.execute(REGISTRY)
    return {key: PayloadIndex(id_, PayloadIndexSpec(key, kind), bool(ready)) for id_, key, kind, ready in conn.execute("SELECT id, key, type, ready FROM payload_indexes ORDER BY id")}


def create(conn: sqlite3.Connection, spec: PayloadIndexSpec, ready: bool) -> PayloadIndex:
    """The table, its index and triggers, and its registry row, inside the caller's transaction."""
    (id_,) = conn.execute("INSERT INTO payload_indexes (key, type, ready) VALUES (?, ?, ?) RETURNING id", (spec.key, spec.type, int(ready))).fetchone()
    index = PayloadIndex(int(id_), spec, ready)
    t, path = index.table, json_path(spec.key).replace("'", "''")  # the key's characters are [A-Za-z0-9_.-]
    conn.execute(f"CREATE TABLE {t} (value {_COLUMN[spec.type]} NOT NULL, row INTEGER NOT NULL, PRIMARY KEY (value, row)) WITHOUT ROWID, STRICT")
    conn.execute(f"CREATE INDEX {t}_row ON {t} (row)")
    conn.execute(
        f"""CREATE TRIGGER {t}_insert AFTER INSERT ON points WHEN new.payload IS NOT NULL BEGIN
            INSERT OR IGNORE INTO {t} (value, row) SELECT {_STORED[spec.type]}, new.row FROM json_each(new.payload, '{path}') AS j
            WHERE {ELEMENT} AND {_ACCEPTS[spec.type]};
        END"""
    )
    conn.execute(f"CREATE TRIGGER {t}_delete AFTER DELETE ON points BEGIN DELETE FROM {t} WHERE row = old.row; END")
    return index


def drop(conn: sqlite3.Connection, index: PayloadIndex) -> None:
    t = index.table
    for statement in (f"DROP TRIGGER IF EXISTS {t}_insert", f"DROP TRIGGER IF EXISTS {t}_delete", f"DROP TABLE IF EXISTS {t}"):
        conn.execute(statement)
    conn.execute("DELETE FROM payload_indexes WHERE id = ?", (index.id,))


def check(conn: sqlite3.Connection, indexes: dict[str, PayloadIndex], table: str, where: str, params: list[Any]) -> None:
    """Refuse (InvalidInput, naming the point, key and type) the first row of ``table`` matching ``where`` whose
    payload holds a value of another type than an index on its key takes; ``table`` is points or staged_points."""
    for index in indexes.values():
        kind = index.spec.type
        path = json_path(index.spec.key)
        found = conn.execute(
            f"SELECT p.ext_id, json_type(p.payload, ?) FROM {table} AS p WHERE ({where}) AND p.payload IS NOT NULL AND (json_type(p.payload, ?) = 'object' "
            f"OR EXISTS (SELECT 1 FROM json_each(p.payload, ?) AS j WHERE {ELEMENT} AND j.type != 'null' AND NOT ({_ACCEPTS[kind]}))) LIMIT 1",
            [path, *params, path, path],
        ).fetchone()
        if found is not None:
            point_id = json.loads(found[0])
            raise InvalidInput(
                f"point {point_id!r}: the payload index on {index.spec.key!r} takes {_DESCRIBED[kind]} ({kind}), and this point's value there is not one "
                "(nulls are allowed; a list's elements must each be one); nothing was written",
                code="payload_type_mismatch",
                details={"id": point_id, "key": index.spec.key, "type": kind, "found": found[1]},
            )


def fill(conn: sqlite3.Connection, index: PayloadIndex, after: int, limit: int) -> tuple[int, int]:
    """Check and index up to ``limit`` rows after ``after``: (last row looked at, rows scanned); -1 when none is left."""
    last = conn.execute("SELECT MAX(row), COUNT(*) FROM (SELECT row FROM points WHERE row > ? ORDER BY row LIMIT ?)", (after, limit)).fetchone()
    if last[0] is None:
        return -1, 0
    check(conn, {index.spec.key: index}, "points", "p.row > ? AND p.row <= ?", [after, last[0]])
    path = json_path(index.spec.key)
    conn.execute(
        f"INSERT OR IGNORE INTO {index.table} (value, row) SELECT {_STORED[index.spec.type]}, p.row FROM points AS p, json_each(p.payload, ?) AS j "
        f"WHERE p.row > ? AND p.row <= ? AND p.payload IS NOT NULL AND {ELEMENT} AND {_ACCEPTS[index.spec.type]}",
        (path, after, last[0]),
    )
    return int(last[0]), int(last[1])


def mark_ready(conn: sqlite3.Connection, index: PayloadIndex) -> None:
    conn.execute("UPDATE payload_indexes SET ready = 1 WHERE id = ?", (index.id,))


def stats(conn: sqlite3.Connection, index: PayloadIndex) -> dict[str, int]:
    """Values held, and points holding at least one."""
    values, points = conn.execute(f"SELECT COUNT(*), COUNT(DISTINCT row) FROM {index.table}").fetchone()
    return {"values": int(values), "points": int(points)}
