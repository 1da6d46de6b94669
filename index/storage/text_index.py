"""A collection's optional full-text index: SQLite FTS5 over the stored text, ranked by FTS5's own bm25().

The index is a regular FTS5 table whose rowid is the point's row. Triggers on ``points`` keep it in step,
so every write path (upserts, overwrites, deletes, a streamed build's commit, a reprojection's copy) changes
it in the very transaction that changes the points: a crash leaves both at the same commit. An index added
to a collection that already holds points is filled by ``fill`` chunk by chunk while writes go on: the
triggers index new rows from the moment the table exists, the fill skips rows already there, and deleting
a row the fill has not reached yet deletes nothing. Only then is it marked ready.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from encoders.errors import InvalidInput

# The tokenizers a collection may ask for, and the FTS5 tokenize argument each one means.
TOKENIZERS: dict[str, str] = {
    "porter": "porter unicode61 remove_diacritics 2",  # English stemming over Unicode words: "dogs" finds "dog"
    "unicode61": "unicode61 remove_diacritics 2",  # Unicode words, case and accents folded, no stemming
    "ascii": "ascii",  # ASCII letters and digits only
    "trigram": "trigram",  # substrings of three or more characters (product codes, partial words)
}
DEFAULT_TOKENIZER = "porter"
# Distinct terms one keyword query may hold; each is a phrase OR'ed into the FTS5 expression.
MAX_QUERY_TERMS = 1024

# Created in one transaction; a trigger body's own semicolons are why these are a list, not a script.
SCHEMA = (
    "CREATE TABLE text_index (id INTEGER PRIMARY KEY CHECK (id = 1), tokenizer TEXT NOT NULL, ready INTEGER NOT NULL)",
    "CREATE VIRTUAL TABLE points_text USING fts5(text, tokenize = '{tokenize}')",
    """CREATE TRIGGER points_text_insert AFTER INSERT ON points WHEN new.text IS NOT NULL BEGIN
        INSERT INTO points_text (rowid, text) VALUES (new.row, new.text);
    END""",
    """CREATE TRIGGER points_text_delete AFTER DELETE ON points BEGIN
        DELETE FROM points_text WHERE rowid = old.row;
    END""",
    """CREATE TRIGGER points_text_update AFTER UPDATE OF text ON points BEGIN
        DELETE FROM points_text WHERE rowid = old.row;
        INSERT INTO points_text (rowid, text) SELECT new.row, new.text WHERE new.text IS NOT NULL;
    END""",
)
DROP = (
    "DROP TRIGGER IF EXISTS points_text_insert",
    "DROP TRIGGER IF EXISTS points_text_delete",
    "DROP TRIGGER IF EXISTS points_text_update",
    "DROP TABLE IF EXISTS points_text",
    "DROP TABLE IF EXISTS text_index",
)


@dataclass(frozen=True)
class TextIndexSpec:
    tokenizer: str = DEFAULT_TOKENIZER

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise InvalidInput(
                f"unknown tokenizer {self.tokenizer!r}; choose one of {', '.join(TOKENIZERS)}",
                code="invalid_tokenizer",
                details={"tokenizer": self.tokenizer, "choices": list(TOKENIZERS)},
            )

    def to_json(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer}


@dataclass(frozen=True)
class TextIndexState:
    spec: TextIndexSpec
    ready: bool  # False while a fill over the points already stored is unfinished (or was interrupted)


def state(conn: sqlite3.Connection) -> TextIndexState | None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='text_index'").fetchone() is None:
        return None
    tokenizer, ready = conn.execute("SELECT tokenizer, ready FROM text_index").fetchone()
    return TextIndexState(TextIndexSpec(tokenizer), bool(ready))


def create(conn: sqlite3.Connection, spec: TextIndexSpec, ready: bool) -> None:
    """The table, its triggers and its state row, inside the caller's transaction (executescript would commit it)."""
    for statement in SCHEMA:
        # The tokenize argument comes from the fixed TOKENIZERS table, never from user text.
        conn.execute(statement.replace("{tokenize}", TOKENIZERS[spec.tokenizer]))
    conn.execute("INSERT INTO text_index (id, tokenizer, ready) VALUES (1, ?, ?)", (spec.tokenizer, int(ready)))


def drop(conn: sqlite3.Connection) -> None:
    for statement in DROP:
        conn.execute(statement)


def fill(conn: sqlite3.Connection, after: int, limit: int) -> tuple[int, int]:
    """Index the text of up to ``limit`` rows after ``after`` that the index lacks: (last row looked at, rows scanned).

    The last row is -1 when no row is left after ``after``.
    """
    last = conn.execute("SELECT MAX(row), COUNT(*) FROM (SELECT row FROM points WHERE row > ? ORDER BY row LIMIT ?)", (after, limit)).fetchone()
    if last[0] is None:
        return -1, 0
    conn.execute(
        "INSERT INTO points_text (rowid, text) SELECT row, text FROM points WHERE row > ? AND row <= ? AND text IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM points_text WHERE points_text.rowid = points.row)",
        (after, last[0]),
    )
    return int(last[0]), int(last[1])


def mark_ready(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE text_index SET ready = 1")


def indexed_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM points_text").fetchone()[0])


def match_expression(text: str) -> str:
    """Free text as an FTS5 query: each whitespace-separated piece a quoted phrase, OR'ed, so any term
    matches and bm25() ranks by how many and how rare; FTS5 syntax in the text is taken literally."""
    pieces = list(dict.fromkeys(text.split()))
    if len(pieces) > MAX_QUERY_TERMS:
        raise InvalidInput(
            f"a keyword query holds at most {MAX_QUERY_TERMS} distinct terms", code="too_many_terms", details={"terms": len(pieces), "max": MAX_QUERY_TERMS}
        )
    return " OR ".join('"' + piece.replace('"', '""') + '"' for piece in pieces)


def search(conn: sqlite3.Connection, text: str, limit: int, where: str | None = None, params: list[Any] | None = None) -> list[tuple[int, float]]:
    """The ``limit`` best (row, BM25 score) for ``text``, best first, among the points matching ``where`` (a
    clause over ``points`` built by index.query.filters; None: all). Scores are FTS5's bm25() negated, so
    higher is better. Unfiltered, no join: the index holds exactly the live rows with text."""
    if where is None:
        sql = "SELECT rowid, -bm25(points_text) AS score FROM points_text WHERE points_text MATCH ? ORDER BY score DESC, rowid LIMIT ?"
        return conn.execute(sql, (match_expression(text), limit)).fetchall()
    sql = (
        "SELECT points.row, -bm25(points_text) AS score FROM points_text JOIN points ON points.row = points_text.rowid "
        f"WHERE points_text MATCH ? AND ({where}) ORDER BY score DESC, points.row LIMIT ?"
    )
    return conn.execute(sql, [match_expression(text), *(params or []), limit]).fetchall()
