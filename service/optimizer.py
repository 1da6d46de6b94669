"""The optimizer loop: finds segments to seal, vacuum or merge and runs each rebuild as a job (kind "optimize").

At most one optimizer job per collection at a time, on the job runner's optimizer lane, so they show in
/v1/jobs with progress and can be cancelled like any job (a cancelled rebuild leaves its segments as they were).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from index.catalog import Catalog
from index.collection import Collection
from index.segments.policy import Task
from service.jobs import FINISHED, JobContext, JobFn, JobRunner

log = logging.getLogger(__name__)


class OptimizerLoop:
    def __init__(self, catalog: Catalog, jobs: JobRunner, interval_s: float):
        self._catalog, self._jobs, self._interval = catalog, jobs, interval_s
        self._running: dict[str, str] = {}  # collection -> its optimizer job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trove-optimizer-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception:  # keep optimizing the other collections; the store holds every write regardless
                log.exception("optimizer tick failed")

    def tick(self) -> None:
        for collection in self._catalog.all():
            name = collection.config.name
            job_id = self._running.get(name)
            if job_id is not None and self._jobs.get(job_id).state not in FINISHED:
                continue
            task = collection.optimizer_task()
            if task is None:
                self._running.pop(name, None)
                continue
            params = {"task": task.kind, "segments": list(task.segments), "points": task.points}
            self._running[name] = self._jobs.submit("optimize", name, params, _runner(collection, task), lane="optimizer").id


def _runner(collection: Collection, task: Task) -> JobFn:
    def run(ctx: JobContext) -> dict[str, Any]:
        return collection.run_optimizer_task(task, ctx.progress)

    return run
