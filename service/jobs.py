"""Background jobs (builds, fits, upgrades, optimizer runs) with progress, cancel and durable records.

Job records live in ``<data_dir>/jobs.sqlite``. A job that was queued or running
when the process died is marked failed at the next start, with the reason,
never silently lost. The work itself leaves its collection unchanged unless it
finishes (each job's commit is one atomic step).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from encoders.errors import Cancelled, NotFound, TroveError

log = logging.getLogger(__name__)
State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Lane = Literal["jobs", "optimizer"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
PROGRESS_WRITE_INTERVAL_S = 0.5

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    collection TEXT,
    state TEXT NOT NULL,
    progress REAL NOT NULL,
    done INTEGER NOT NULL,
    total INTEGER,
    params TEXT NOT NULL,
    error TEXT,
    result TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
"""


@dataclass
class Job:
    id: str
    kind: str
    collection: str | None
    state: State
    progress: float
    done: int
    total: int | None
    params: dict[str, Any]
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"eta_seconds": self.eta_seconds()}

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left at the rate this job has gone so far: its own path on its own data (embedding dominates builds,
        upgrades and backfills), so no figure measured elsewhere is needed. None until it has made progress."""
        if self.state != "running" or self.started_at is None or not 0.0 < self.progress < 1.0:
            return None
        elapsed = (time.time() if now is None else now) - self.started_at
        return elapsed * (1.0 - self.progress) / self.progress


class JobContext:
    """What a running job sees: a progress reporter that is also its cancellation checkpoint."""

    def __init__(self, runner: JobRunner, job_id: str):
        self._runner = runner
        self.job_id = job_id
        self._last_write = 0.0

    @property
    def cancelled(self) -> bool:
        return self._runner.cancel_requested(self.job_id)

    def progress(self, fraction: float, done: int, total: int) -> None:
        if self.cancelled:
            raise Cancelled("cancelled on request; the collection was left as it was")
        now = time.monotonic()
        if now - self._last_write >= PROGRESS_WRITE_INTERVAL_S or fraction >= 1.0:
            self._last_write = now
            self._runner.update(self.job_id, progress=min(max(fraction, 0.0), 1.0), done=done, total=total)


JobFn = Callable[[JobContext], dict[str, Any]]


class JobRunner:
    def __init__(self, path: Path, workers: int = 1):
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._cancel: set[str] = set()
        # Optimizer jobs (seal, merge, vacuum) have a lane of their own, so a long build never holds them back.
        self._pools = {
            "jobs": ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trove-job"),
            "optimizer": ThreadPoolExecutor(max_workers=1, thread_name_prefix="trove-optimizer"),
        }
        self._mark_interrupted()

    def _mark_interrupted(self) -> None:
        reason = json.dumps(
            {"code": "interrupted", "message": "the server stopped while this job was queued or running; what it had not committed was discarded, run it again", "details": {}}
        )
        with self._lock:
            self._conn.execute(
                "UPDATE jobs SET state='failed', error=?, finished_at=? WHERE state IN ('queued', 'running')", (reason, time.time())
            )

    def submit(self, kind: str, collection: str | None, params: dict[str, Any], fn: JobFn, lane: Lane = "jobs") -> Job:
        job_id = uuid.uuid4().hex
        with self._lock:
            self._conn.execute(
                "INSERT INTO jobs (id, kind, collection, state, progress, done, total, params, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (job_id, kind, collection, "queued", 0.0, 0, None, json.dumps(params), time.time()),
            )
        self._pools[lane].submit(self._run, job_id, fn)
        return self.get(job_id)

    def _run(self, job_id: str, fn: JobFn) -> None:
        if self.cancel_requested(job_id):
            self.update(job_id, state="cancelled", finished_at=time.time())
            return
        self.update(job_id, state="running", started_at=time.time())
        try:
            result = fn(JobContext(self, job_id))
        except Cancelled as exc:
            self.update(job_id, state="cancelled", error=self._error(exc), finished_at=time.time())
        except TroveError as exc:
            self.update(job_id, state="failed", error=self._error(exc), finished_at=time.time())
        except Exception:
            log.exception("job %s failed", job_id)
            # The exception's text stays in the log: it may name files, paths or the process.
            error = {"code": "internal_error", "message": "the job failed on an internal error; see the server log", "details": {}}
            self.update(job_id, state="failed", error=error, finished_at=time.time())
        else:
            self.update(job_id, state="succeeded", progress=1.0, result=result, finished_at=time.time())
        finally:
            with self._lock:
                self._cancel.discard(job_id)

    @staticmethod
    def _error(exc: TroveError) -> dict[str, Any]:
        return {"code": exc.code, "message": exc.message, "details": exc.details}

    def update(self, job_id: str, **fields: Any) -> None:
        for key in ("error", "result"):
            if key in fields:
                fields[key] = json.dumps(fields[key])
        assignments = ", ".join(f"{k}=?" for k in fields)
        with self._lock:
            self._conn.execute(f"UPDATE jobs SET {assignments} WHERE id=?", (*fields.values(), job_id))

    def get(self, job_id: str) -> Job:
        with self._lock:
            row = self._conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id!r}", code="job_not_found", details={"id": job_id})
        return self._job(row)

    def list(self, collection: str | None = None, limit: int = 100) -> list[Job]:
        sql, params = "SELECT * FROM jobs", []
        if collection is not None:
            sql, params = sql + " WHERE collection=?", [collection]
        with self._lock:
            rows = self._conn.execute(f"{sql} ORDER BY created_at DESC LIMIT ?", (*params, limit)).fetchall()
        return [self._job(r) for r in rows]

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state not in FINISHED:
            with self._lock:
                self._cancel.add(job_id)
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancel

    def wait(self, job_id: str, timeout: float | None = None, poll_s: float = 0.1) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (job := self.get(job_id)).state not in FINISHED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state}")
            time.sleep(poll_s)
        return job

    def close(self) -> None:
        with self._lock:
            self._cancel.update(j.id for j in self._unfinished())
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=False)
        self._conn.close()

    def _unfinished(self) -> list[Job]:
        return [self._job(r) for r in self._conn.execute("SELECT * FROM jobs WHERE state IN ('queued', 'running')")]

    @staticmethod
    def _job(row: tuple[Any, ...]) -> Job:
        (job_id, kind, collection, state, progress, done, total, params, error, result, created, started, finished) = row
        return Job(
            id=job_id,
            kind=kind,
            collection=collection,
            state=state,
            progress=progress,
            done=done,
            total=total,
            params=json.loads(params),
            error=json.loads(error) if error else None,
            result=json.loads(result) if result else None,
            created_at=created,
            started_at=started,
            finished_at=finished,
        )
