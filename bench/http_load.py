"""A bounded closed loop of concurrent httpx async clients against one endpoint on this machine.

Each of `concurrency` clients sends a request, waits for the answer, sends the next; the loop stops after
`max_requests` requests or `max_seconds`, whichever comes first, so it always ends by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson

IdsOf = Callable[[Any], list[Any]]  # the ids a decoded answer lists, best first


def trove_ids(answer: Any) -> list[Any]:
    return [hit["id"] for hit in answer["results"]]


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_s: np.ndarray
    answers: dict[int, list[Any]]  # body index -> ids answered, for checking results as well as speed

    @property
    def qps(self) -> float:
        return (self.requests - self.errors) / self.seconds


async def _loop(base_url: str, path: str, bodies: list[bytes], concurrency: int, max_requests: int, max_seconds: float, ids_of: IdsOf) -> LoadResult:
    counter = itertools.count()
    latencies: list[float] = []
    answers: dict[int, list[Any]] = {}
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:
        deadline = time.perf_counter() + max_seconds

        async def client_task() -> None:
            nonlocal errors
            while (i := next(counter)) < max_requests and time.perf_counter() < deadline:
                body = i % len(bodies)
                started = time.perf_counter()
                try:
                    response = await client.post(path, content=bodies[body], headers=headers)
                except httpx.TimeoutException:  # counted, so one stalled answer cannot end the whole run
                    latencies.append(time.perf_counter() - started)
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors += 1
                    continue
                answers[body] = ids_of(orjson.loads(response.content))

        started = time.perf_counter()
        await asyncio.gather(*(client_task() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return LoadResult(concurrency, len(latencies), errors, seconds, np.array(latencies), answers)


def run_load(
    base_url: str, path: str, bodies: list[dict[str, Any]], concurrency: int, max_requests: int, max_seconds: float, ids_of: IdsOf = trove_ids
) -> LoadResult:
    # Bodies are serialised once, so the clients spend their CPU on HTTP rather than on JSON encoding.
    encoded = [orjson.dumps(b) for b in bodies]
    return asyncio.run(_loop(base_url, path, encoded, concurrency, max_requests, max_seconds, ids_of))
