"""The SQLite store: the source of truth for a collection's points.

Every point gets an internal ``row`` (int64, increasing, never reused) that names it in the segments.
Re-upserting an id gives it a new row; the old row simply stops being live.
Each write is one transaction tagged with a monotonically increasing operation
sequence; the index side (index/segments/) is derived and rebuilt from these rows.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import Conflict
from index.storage import payload_index, text_index
from index.storage.payload_index import PayloadIndex, PayloadIndexSpec
from index.storage.text_index import TextIndexSpec, TextIndexState
from index.validation import check_payload, check_point_id, check_text

PointId = int | str

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS points (
    row INTEGER PRIMARY KEY,
    ext_id TEXT NOT NULL UNIQUE,      -- JSON of the user's id, so 7 and "7" stay distinct
    text TEXT,
    payload TEXT,                     -- JSON object or NULL
    vector BLOB NOT NULL,             -- float32, as indexed
    model_version INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS point_tokens (  -- multi-vector collections: the token vectors behind a row's FDE
    row INTEGER PRIMARY KEY,          -- the point's row; deleted with it
    vectors BLOB NOT NULL             -- (tokens, dim) row-major, float32 or the collection's muvera.token_storage
);
CREATE TABLE IF NOT EXISTS staged_points (  -- a streamed build's rows until its commit moves them to points
    build TEXT NOT NULL,
    row INTEGER NOT NULL,             -- reserved for the build (reserve_rows)
    ext_id TEXT NOT NULL,
    text TEXT,
    payload TEXT,
    vector BLOB NOT NULL,
    PRIMARY KEY (build, row)
);
CREATE TABLE IF NOT EXISTS staged_tokens (  -- a streamed build's token vectors (multi-vector), moved to point_tokens with its rows
    build TEXT NOT NULL,
    row INTEGER NOT NULL,
    vectors BLOB NOT NULL,
    PRIMARY KEY (build, row)
);
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,               -- "upsert" | "delete"
    count INTEGER NOT NULL,
    at REAL NOT NULL                  -- unix time of the commit
);
"""


def encode_id(point_id: PointId) -> str:
    return json.dumps(point_id)


def decode_id(ext_id: str) -> PointId:
    value: PointId = json.loads(ext_id)
    return value


@dataclass(frozen=True)
class PointRecord:
    """A validated point ready to be written: its vector is final (normalised if the metric wants it)."""

    id: PointId
    vector: np.ndarray
    text: str | None = None
    payload: dict[str, Any] | None = None
    tokens: np.ndarray | bytes | None = None  # multi-vector points only: (tokens, dim) float32, or bytes its collection encoded


# Rows one numpy call stacks: numpy holds the GIL through a stack of many small rows (a build chunk's 50,000:
# 0.2 s, with every query of the server waiting), so larger sets are stacked a block at a time.
STACK_ROWS = 1024


def stacked_vectors(records: Sequence[PointRecord]) -> np.ndarray:
    """The records' vectors as one (n, dim) float32 matrix."""
    if len(records) <= STACK_ROWS:
        return np.stack([r.vector for r in records]).astype(np.float32, copy=False)
    out = np.empty((len(records), len(records[0].vector)), np.float32)
    for start in range(0, len(records), STACK_ROWS):
        out[start : start + STACK_ROWS] = np.stack([r.vector for r in records[start : start + STACK_ROWS]])
    return out


@dataclass(frozen=True)
class StoredPoint:
    row: int
    id: PointId
    text: str | None
    payload: dict[str, Any] | None
    model_version: int
    vector: np.ndarray | None = None
    tokens: np.ndarray | None = None


@dataclass(frozen=True)
class WriteResult:
    seq: int
    rows: np.ndarray  # rows written (upsert) or removed (delete)
    replaced: np.ndarray  # rows that an upsert made dead
    skipped: frozenset[PointId] = frozenset()  # ids a conditional upsert left alone (changed or deleted since read)


class Store:
    def __init__(self, path: Path, dim: int):
        self.path = path
        self.dim = dim
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        conn = self._conn()
        conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('next_row', 0), ('last_seq', 0)")
        self._text_index = text_index.state(conn)  # changed only through this object (one process per data dir)
        self._payload_indexes = payload_index.all_indexes(conn)  # likewise; replaced whole, under the write lock

    def _conn(self) -> sqlite3.Connection:
        """One connection per thread: WAL lets readers run beside the single writer."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before we acknowledge it, even across power loss.
            conn.execute("PRAGMA synchronous=FULL")
            payload_index.register_functions(conn)  # the payload indexes' triggers and filters call them
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    def _meta(self, conn: sqlite3.Connection, key: str) -> int:
        return int(conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

    @property
    def last_seq(self) -> int:
        return self._meta(self._conn(), "last_seq")

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM points").fetchone()[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _delete_ext_ids(conn: sqlite3.Connection, ext_ids: list[str]) -> list[int]:
        removed: list[int] = []
        for start in range(0, len(ext_ids), 500):
            chunk = ext_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = [r[0] for r in conn.execute(f"DELETE FROM points WHERE ext_id IN ({marks}) RETURNING row", chunk)]
            conn.execute(f"DELETE FROM point_tokens WHERE row IN ({','.join('?' * len(rows))})", rows)
            removed += rows
        return removed

    def _log_op(self, conn: sqlite3.Connection, kind: str, count: int) -> int:
        seq = self._meta(conn, "last_seq") + 1
        conn.execute("UPDATE meta SET value=? WHERE key='last_seq'", (seq,))
        conn.execute("INSERT INTO ops (seq, kind, count, at) VALUES (?, ?, ?, ?)", (seq, kind, count, time.time()))
        return seq

    def upsert(self, points: Sequence[PointRecord], model_version: int, expected_rows: Sequence[int] | None = None) -> WriteResult:
        """All points in one transaction: either every point is written or none is.

        With ``expected_rows`` (one per point) a point is written only if its id still holds that row, checked
        in the same transaction: a point re-upserted or deleted since it was read is skipped, never overwritten.
        """
        # Defence in depth: what could not be read back is refused here, before anything is written.
        storable = {p.id: storable_fields(p) for p in points}
        with self._transaction() as conn:
            skipped: frozenset[PointId] = frozenset()
            if expected_rows is not None:
                current = self._rows_of(conn, [encode_id(p.id) for p in points])
                skipped = frozenset(p.id for p, row in zip(points, expected_rows, strict=True) if current.get(encode_id(p.id)) != int(row))
                points = [p for p in points if p.id not in skipped]
                if not points:
                    return WriteResult(seq=self._meta(conn, "last_seq"), rows=np.zeros(0, np.int64), replaced=np.zeros(0, np.int64), skipped=skipped)
            seq = self._log_op(conn, "upsert", len(points))
            first_row = self._meta(conn, "next_row")
            ext_ids = [encode_id(p.id) for p in points]
            replaced = self._delete_ext_ids(conn, ext_ids)
            rows = np.arange(first_row, first_row + len(points), dtype=np.int64)
            conn.executemany(
                "INSERT INTO points (row, ext_id, text, payload, vector, model_version, seq) VALUES (?,?,?,?,?,?,?)",
                [
                    (int(row), ext_id, *storable[p.id], np.ascontiguousarray(p.vector, dtype=np.float32).tobytes(), model_version, seq)
                    for row, ext_id, p in zip(rows, ext_ids, points, strict=True)
                ],
            )
            conn.executemany(
                "INSERT INTO point_tokens (row, vectors) VALUES (?,?)",
                [(int(row), token_blob(p.tokens)) for row, p in zip(rows, points, strict=True) if p.tokens is not None],
            )
            payload_index.check(conn, self._payload_indexes, "points", "p.row >= ?", [first_row])  # raising rolls the batch back
            conn.execute("UPDATE meta SET value=? WHERE key='next_row'", (first_row + len(points),))
        return WriteResult(seq=seq, rows=rows, replaced=np.asarray(replaced, dtype=np.int64), skipped=skipped)

    @staticmethod
    def _rows_of(conn: sqlite3.Connection, ext_ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(ext_ids), 500):
            chunk = ext_ids[start : start + 500]
            found.update(conn.execute(f"SELECT ext_id, row FROM points WHERE ext_id IN ({','.join('?' * len(chunk))})", chunk).fetchall())
        return found

    # ---- streamed builds: rows staged outside ``points``, made live by one commit ---------------

    def reserve_rows(self, count: int) -> int:
        """Allocate ``count`` rows for a build (the first is returned); unused ones are simply never live."""
        with self._transaction() as conn:
            first = self._meta(conn, "next_row")
            conn.execute("UPDATE meta SET value=? WHERE key='next_row'", (first + count,))
        return first

    def stage(self, build: str, rows: np.ndarray, points: Sequence[PointRecord]) -> None:
        """Keep a chunk of a build's points (invisible to reads) until ``commit_staged``; one short transaction."""
        values = [
            (build, int(row), encode_id(p.id), *storable_fields(p), np.ascontiguousarray(p.vector, dtype=np.float32).tobytes())
            for row, p in zip(rows, points, strict=True)
        ]  # checked before anything is written, as upsert does
        tokens = [(build, int(row), token_blob(p.tokens)) for row, p in zip(rows, points, strict=True) if p.tokens is not None]
        with self._transaction() as conn:
            conn.executemany("INSERT INTO staged_points (build, row, ext_id, text, payload, vector) VALUES (?,?,?,?,?,?)", values)
            conn.executemany("INSERT INTO staged_tokens (build, row, vectors) VALUES (?,?,?)", tokens)
            if len(rows):  # a wrong-typed value for an indexed key fails the build now rather than at its commit
                payload_index.check(conn, self._payload_indexes, "staged_points", "p.build = ? AND p.row >= ? AND p.row <= ?", [build, int(min(rows)), int(max(rows))])

    def commit_staged(self, build: str, model_version: int) -> WriteResult:
        """Make every staged point of ``build`` live in one transaction, replacing points with the same ids."""
        with self._transaction() as conn:
            rows = np.fromiter((r[0] for r in conn.execute("SELECT row FROM staged_points WHERE build=? ORDER BY row", (build,))), dtype=np.int64)
            payload_index.check(conn, self._payload_indexes, "staged_points", "p.build = ?", [build])  # indexes added since staging
            seq = self._log_op(conn, "upsert", len(rows))
            replaced = [r[0] for r in conn.execute("DELETE FROM points WHERE ext_id IN (SELECT ext_id FROM staged_points WHERE build=?) RETURNING row", (build,))]
            for start in range(0, len(replaced), 500):
                chunk = replaced[start : start + 500]
                conn.execute(f"DELETE FROM point_tokens WHERE row IN ({','.join('?' * len(chunk))})", chunk)
            conn.execute(
                "INSERT INTO points (row, ext_id, text, payload, vector, model_version, seq) "
                "SELECT row, ext_id, text, payload, vector, ?, ? FROM staged_points WHERE build=? ORDER BY row",
                (model_version, seq, build),
            )
            conn.execute("INSERT INTO point_tokens (row, vectors) SELECT row, vectors FROM staged_tokens WHERE build=?", (build,))
            conn.execute("DELETE FROM staged_points WHERE build=?", (build,))
            conn.execute("DELETE FROM staged_tokens WHERE build=?", (build,))
        return WriteResult(seq=seq, rows=rows, replaced=np.asarray(replaced, dtype=np.int64))

    def drop_staged(self, build: str | None = None) -> None:
        """Forget a failed or cancelled build's staged points (None: every build's, at start-up)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM staged_points WHERE ? IS NULL OR build=?", (build, build))
            conn.execute("DELETE FROM staged_tokens WHERE ? IS NULL OR build=?", (build, build))

    def delete(self, ids: Sequence[PointId]) -> WriteResult:
        with self._transaction() as conn:
            removed = np.asarray(self._delete_ext_ids(conn, [encode_id(i) for i in ids]), dtype=np.int64)
            seq = self._log_op(conn, "delete", len(removed))
        return WriteResult(seq=seq, rows=removed, replaced=removed)

    # ---- the full-text index (index/storage/text_index.py): triggers keep it in every write's transaction ----

    @property
    def text_index(self) -> TextIndexState | None:
        return self._text_index

    def create_text_index(self, spec: TextIndexSpec) -> TextIndexState:
        """Start indexing the text of every write from now on; ready at once when no point is stored yet, else
        after ``fill_text_index`` has reached the end. An unfinished index of the same spec is kept (resumed)."""
        with self._transaction() as conn:
            current = text_index.state(conn)
            if current is None:
                text_index.create(conn, spec, ready=conn.execute("SELECT 1 FROM points LIMIT 1").fetchone() is None)
                current = text_index.state(conn)
            self._text_index = current
        assert current is not None
        return current

    def fill_text_index(self, progress: Callable[[float, int, int], None], chunk: int = 4096) -> int:
        """Index the points stored before the index existed, one short transaction per chunk (writes go on
        between them), then mark it ready; ``progress`` may raise (a cancel). Returns the rows indexed."""
        total = self.count()
        done, after = 0, -1
        while True:
            with self._transaction() as conn:
                if text_index.state(conn) is None:
                    raise Conflict("the text index was dropped while it was being filled", code="text_index_dropped")
                after, scanned = text_index.fill(conn, after, chunk)
                if after < 0:
                    text_index.mark_ready(conn)
                    self._text_index = text_index.state(conn)
                    return text_index.indexed_count(conn)
            done += scanned
            progress(min(done / max(total, 1), 1.0), done, max(total, done))

    def drop_text_index(self) -> bool:
        """Remove the index and its triggers in one transaction; False when there was none."""
        with self._transaction() as conn:
            existed = text_index.state(conn) is not None
            text_index.drop(conn)
            self._text_index = None
        return existed

    def text_indexed_count(self) -> int:
        return text_index.indexed_count(self._conn())

    def keyword_search(self, text: str, limit: int, where: str | None = None, params: Sequence[Any] = ()) -> list[tuple[int, float]]:
        """The ``limit`` best (row, BM25 score) for ``text`` among the points (matching ``where``), best first."""
        return text_index.search(self._conn(), text, limit, where, list(params))

    # ---- payload indexes (index/storage/payload_index.py): triggers keep them in every write's transaction ----

    @property
    def payload_indexes(self) -> dict[str, PayloadIndex]:
        """Every payload index by key, ready or still filling."""
        return self._payload_indexes

    def ready_payload_indexes(self) -> dict[str, PayloadIndex]:
        return {key: index for key, index in self._payload_indexes.items() if index.ready}

    def create_payload_index(self, spec: PayloadIndexSpec) -> PayloadIndex:
        """Index ``spec.key`` for every write from now on (writes with values of another type are refused); ready at
        once when no point is stored yet, else after ``fill_payload_index``. An unfinished index of the same spec is kept."""
        with self._transaction() as conn:
            current = payload_index.all_indexes(conn).get(spec.key)
            if current is None:
                current = payload_index.create(conn, spec, ready=conn.execute("SELECT 1 FROM points LIMIT 1").fetchone() is None)
            elif current.spec != spec:
                raise Conflict(f"the key {spec.key!r} already has a payload index of type {current.spec.type!r}", code="payload_index_exists", details=current.spec.to_json())
            indexes = payload_index.all_indexes(conn)
        self._payload_indexes = indexes
        return current

    def fill_payload_index(self, key: str, progress: Callable[[float, int, int], None], chunk: int = 8192) -> dict[str, int]:
        """Check and index the points stored before the index existed, one short transaction per chunk (writes go on
        between them), then mark it ready; ``progress`` may raise (a cancel), and so does a value of another type."""
        total = self.count()
        done, after = 0, -1
        while True:
            with self._transaction() as conn:
                index = payload_index.all_indexes(conn).get(key)
                if index is None:
                    raise Conflict(f"the payload index on {key!r} was dropped while it was being filled", code="payload_index_dropped")
                after, scanned = payload_index.fill(conn, index, after, chunk)
                if after < 0:
                    payload_index.mark_ready(conn, index)
                    self._payload_indexes = payload_index.all_indexes(conn)
                    return payload_index.stats(conn, index)
            done += scanned
            progress(min(done / max(total, 1), 1.0), done, max(total, done))

    def drop_payload_index(self, key: str) -> bool:
        """Remove the index on ``key``, its table and triggers in one transaction; False when there was none."""
        with self._transaction() as conn:
            index = payload_index.all_indexes(conn).get(key)
            if index is not None:
                payload_index.drop(conn, index)
            self._payload_indexes = payload_index.all_indexes(conn)
        return index is not None

    def payload_index_stats(self, index: PayloadIndex) -> dict[str, int]:
        return payload_index.stats(self._conn(), index)

    def copy_to(self, path: Path) -> None:
        """A consistent copy of the whole database (SQLite's online backup), durable before it returns."""
        target = sqlite3.connect(path)
        try:
            self._conn().backup(target)
        finally:
            target.close()
        with open(path, "rb+") as f:
            os.fsync(f.fileno())

    def map_vectors(self, fn: Callable[[np.ndarray], np.ndarray], progress: Callable[[float, int, int], None], chunk: int = 8192) -> None:
        """Replace every stored vector (of whatever width) by ``fn`` of it, a page at a time, in one transaction."""
        total = self.count()
        with self._transaction() as conn:
            done, after = 0, -1
            while page := conn.execute("SELECT row, vector FROM points WHERE row > ? ORDER BY row LIMIT ?", (after, chunk)).fetchall():
                vectors = np.frombuffer(b"".join(r[1] for r in page), dtype=np.float32).reshape(len(page), -1)
                mapped = np.ascontiguousarray(fn(vectors), dtype=np.float32)
                conn.executemany("UPDATE points SET vector=? WHERE row=?", [(v.tobytes(), r[0]) for r, v in zip(page, mapped, strict=True)])
                after, done = page[-1][0], done + len(page)
                progress(done / max(total, 1), done, total)

    def set_vectors(self, rows: np.ndarray, vectors: np.ndarray, model_version: int) -> None:
        """Replace the vectors of ``rows`` and the model version that made them, in one transaction (a rebuild's copy)."""
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE points SET vector=?, model_version=? WHERE row=?",
                [(np.ascontiguousarray(v, dtype=np.float32).tobytes(), model_version, int(r)) for r, v in zip(rows, vectors, strict=True)],
            )

    def catch_up(self, source: Store, vectors_of: Callable[[list[StoredPoint]], np.ndarray], model_version: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Make this copy of ``source`` (copy_to, its vectors replaced since) hold source's live points again, in one transaction.

        Rows are never reused, so a row both hold is the same point: rows only this copy holds were deleted or
        replaced there and are deleted here; rows only ``source`` holds are copied, with ``vectors_of`` their
        points as vectors. The op log and the row and sequence counters follow. Returns (added rows, their vectors,
        removed rows) for the copy's segments.
        """
        theirs, ours = source.live_rows(), self.live_rows()
        removed = np.setdiff1d(ours, theirs, assume_unique=True)
        wanted = np.setdiff1d(theirs, ours, assume_unique=True)
        read = source._conn()
        raw: list[tuple[Any, ...]] = []
        for start in range(0, len(wanted), 500):
            chunk = [int(r) for r in wanted[start : start + 500]]
            raw += read.execute(f"SELECT row, ext_id, text, payload, model_version, seq FROM points WHERE row IN ({','.join('?' * len(chunk))}) ORDER BY row", chunk).fetchall()
        added = np.array([r[0] for r in raw], dtype=np.int64)  # a row deleted since live_rows is simply not there
        vectors = np.ascontiguousarray(vectors_of([source._stored((*r[:5], None), False) for r in raw]), dtype=np.float32) if raw else np.zeros((0, self.dim), np.float32)
        with self._transaction() as conn:
            for start in range(0, len(removed), 500):
                chunk = [int(r) for r in removed[start : start + 500]]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM points WHERE row IN ({marks})", chunk)
                conn.execute(f"DELETE FROM point_tokens WHERE row IN ({marks})", chunk)
            conn.executemany(
                "INSERT INTO points (row, ext_id, text, payload, vector, model_version, seq) VALUES (?,?,?,?,?,?,?)",
                [(r[0], r[1], r[2], r[3], v.tobytes(), model_version, r[5]) for r, v in zip(raw, vectors, strict=True)],
            )
            ops = read.execute("SELECT seq, kind, count, at FROM ops WHERE seq > ? ORDER BY seq", (self._meta(conn, "last_seq"),)).fetchall()
            conn.executemany("INSERT INTO ops (seq, kind, count, at) VALUES (?,?,?,?)", ops)
            if ops:  # the ops copied, not source's counter: one committed meanwhile is copied by the next pass
                conn.execute("UPDATE meta SET value=? WHERE key='last_seq'", (ops[-1][0],))
            conn.execute("UPDATE meta SET value=MAX(value, ?) WHERE key='next_row'", (self._meta(read, "next_row"),))
        return added, vectors, removed

    def remove_files(self) -> None:
        remove_store_files(self.path)

    def live_rows(self) -> np.ndarray:
        """Every live row, sorted."""
        return np.fromiter((r[0] for r in self._conn().execute("SELECT row FROM points ORDER BY row")), dtype=np.int64)

    def vectors_of_rows(self, rows: np.ndarray, chunk: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows, vectors) of the given sorted rows that are live, in row order, chunked.

        One scan from the first row asked for: what start-up replays is mostly the newest rows.
        """
        if not len(rows):
            return
        wanted = np.asarray(rows, np.int64)
        cursor = self._conn().execute("SELECT row, vector FROM points WHERE row >= ? AND row <= ? ORDER BY row", (int(wanted[0]), int(wanted[-1])))
        while batch := cursor.fetchmany(chunk):
            found = np.fromiter((r[0] for r in batch), dtype=np.int64, count=len(batch))
            keep = np.isin(found, wanted, assume_unique=True)
            if keep.any():
                picked = [batch[i][1] for i in np.flatnonzero(keep)]
                yield found[keep], np.frombuffer(b"".join(picked), dtype=np.float32).reshape(len(picked), self.dim)

    def get(self, point_id: PointId, with_vector: bool = False) -> StoredPoint | None:
        row = self._conn().execute(
            f"SELECT row, ext_id, text, payload, model_version, {'vector' if with_vector else 'NULL'} FROM points WHERE ext_id=?",
            (encode_id(point_id),),
        ).fetchone()
        return None if row is None else self._stored(row, with_vector)

    def page(self, after_row: int, limit: int, with_vector: bool = False) -> list[StoredPoint]:
        """Up to ``limit`` points whose rows follow ``after_row``, in row order (a scroll's cursor is a row)."""
        records = self._conn().execute(
            "SELECT row, ext_id, text, payload, model_version, vector FROM points WHERE row > ? ORDER BY row LIMIT ?", (after_row, limit)
        )
        return [self._stored(record, with_vector) for record in records]

    def by_rows(self, rows: Sequence[int], with_vector: bool = False, with_text: bool = True, with_payload: bool = True) -> dict[int, StoredPoint]:
        """The points of the given rows that still exist; only the columns asked for are read (the others are None)."""
        found: dict[int, StoredPoint] = {}
        conn = self._conn()
        columns = f"row, ext_id, {'text' if with_text else 'NULL'}, {'payload' if with_payload else 'NULL'}, model_version, {'vector' if with_vector else 'NULL'}"
        for start in range(0, len(rows), 500):
            chunk = [int(r) for r in rows[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            for record in conn.execute(f"SELECT {columns} FROM points WHERE row IN ({marks})", chunk):
                found[record[0]] = self._stored(record, with_vector)
        return found

    def tokens_by_rows(self, rows: Sequence[int], dim: int, decode: Callable[[bytes], np.ndarray] | None = None) -> dict[int, np.ndarray]:
        """(tokens, dim) float32 token vectors of the given rows that have them (``decode``: the collection's own format)."""
        found: dict[int, np.ndarray] = {}
        conn = self._conn()
        for start in range(0, len(rows), 500):
            chunk = [int(r) for r in rows[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            for row, blob in conn.execute(f"SELECT row, vectors FROM point_tokens WHERE row IN ({marks})", chunk):
                found[row] = decode(blob) if decode else np.frombuffer(blob, dtype=np.float32).reshape(-1, dim)
        return found

    def _stored(self, record: tuple[Any, ...], with_vector: bool) -> StoredPoint:
        row, ext_id, text, payload, model_version, vector = record
        return StoredPoint(
            row=row,
            id=decode_id(ext_id),
            text=text,
            payload=None if payload is None else json.loads(payload),
            model_version=model_version,
            vector=np.frombuffer(vector, dtype=np.float32).copy() if with_vector else None,
        )

    def rows_of_other_versions(self, version: int, after_row: int, limit: int) -> np.ndarray:
        """Up to ``limit`` rows after ``after_row``, in row order, of points with text embedded by a model version other than ``version``."""
        cursor = self._conn().execute(
            "SELECT row FROM points WHERE model_version != ? AND text IS NOT NULL AND row > ? ORDER BY row LIMIT ?", (version, after_row, limit)
        )
        return np.fromiter((r[0] for r in cursor), dtype=np.int64)

    def rows_where(self, sql: str, params: Sequence[Any], between: tuple[int, int] | None = None) -> np.ndarray:
        """Live rows matching a WHERE clause over ``points`` (built by index.query.filters, never from user text),
        within the rows ``between`` (inclusive) if given; in no particular order."""
        low, high = between if between is not None else (-1, 2**63 - 1)
        cursor = self._conn().execute(f"SELECT row FROM points WHERE row >= ? AND row <= ? AND {sql}", [low, high, *params])
        return np.fromiter((r[0] for r in cursor), dtype=np.int64)


def remove_store_files(path: Path) -> None:
    """A database file with its WAL and shared-memory files (a stale WAL beside a new file would be replayed into it)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


validate_point_id = check_point_id


def storable_fields(point: PointRecord) -> tuple[str | None, str | None]:
    """(text, payload JSON) of a point as written: checked by the input policy (index/validation.py), so
    every read, GET or query, returns them as they were sent."""
    check_point_id(point.id)
    payload = check_payload(point.payload)
    return (None if point.text is None else check_text(point.text)), (None if payload is None else json.dumps(payload))


def token_blob(tokens: np.ndarray | bytes) -> bytes:
    """A point's token vectors as stored: bytes its collection already encoded, else float32 (tokens, dim) rows."""
    return tokens if isinstance(tokens, bytes) else np.ascontiguousarray(tokens, dtype=np.float32).tobytes()
