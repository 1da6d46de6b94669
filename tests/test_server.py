"""A real `trove serve` process on 127.0.0.1: the client end to end, restarts, and kill -9 mid-stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from service.client import TroveAPIError, TroveClient
from tests.conftest import ServerProcess


def test_client_end_to_end_and_restart(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server()
    with TroveClient(server.url) as trove:
        assert trove.healthy() and trove.ready()
        assert trove.models()[0]["name"] == "minilm-l6"
        trove.create_collection("notes", index={"type": "hnsw", "m": 16})
        trove.upsert(
            "notes",
            [
                {"id": 1, "text": "Buy milk and eggs on the way home.", "payload": {"list": "errands"}},
                {"id": 2, "text": "The quarterly report is due on Friday.", "payload": {"list": "work"}},
                {"id": 3, "text": "Call the vet about the dog's vaccination.", "payload": {"list": "errands"}},
            ],
        )
        assert trove.query("notes", text="groceries", k=1).ids == [1]
        batch = trove.query_batch("notes", [{"text": "deadline at work", "k": 1}, {"text": "puppy shots", "k": 1}])
        assert [[h.id for h in r] for r in batch.results] == [[2], [3]]
        trove.delete("notes", [1])
        try:
            trove.get_point("notes", 1)
            raise AssertionError("deleted point still readable")
        except TroveAPIError as err:
            assert err.status == 404 and err.code == "point_not_found"
        before = trove.query("notes", text="groceries", k=3).ids
    server.stop()

    again = start_server()
    with TroveClient(again.url) as trove:
        info = trove.collection("notes")
        assert info["points"] == 2 and info["operation_id"] == 2 and info["dead_rows"] == 0
        after = trove.query("notes", text="groceries", k=3).ids
        assert after == before and len(after) == 2


# Small segments and a busy optimizer, so kills land while seals, merges and vacuums are running.
ENGINE_ENV = {"TROVE_SEAL_POINTS": "200", "TROVE_MAX_SEGMENT_POINTS": "1000", "TROVE_MERGE_FACTOR": "3", "TROVE_OPTIMIZER_INTERVAL_S": "0.02"}


def test_kill_9_mid_stream_loses_no_acknowledged_write(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """Writers overwrite and delete while the optimizer seals, merges and vacuums; kill -9, restart, repeat.

    After every restart each acknowledged write is there: the newest acknowledged version of every id, no
    acknowledged delete undone, the in-flight batch all or nothing. The rounds go on until kills have
    interrupted a seal, and a merge or a vacuum (the job records say so), within a bound.
    """
    dim, batch_size, ids_range = 64, 10, 600
    rng = np.random.default_rng(7)
    server = start_server(**ENGINE_ENV)
    with TroveClient(server.url) as trove:
        trove.create_collection("stream", dim=dim, metric="cosine", index={"type": "hnsw", "m": 16})
    latest: dict[int, int] = {}  # id -> version of its newest acknowledged write (-1: deleted)
    vectors: dict[tuple[int, int], list[float]] = {}
    in_flight: dict[int, int] = {}  # the batch sent and not (yet) acknowledged: id -> version
    interrupted: set[str] = set()
    version = 0
    for _round in range(12):
        stop = threading.Event()
        acked = 0

        def stream() -> None:
            nonlocal version, acked
            with httpx.Client(base_url=server.url, timeout=10) as http:
                while not stop.is_set():
                    version += 1
                    ids = [int(i) for i in rng.choice(ids_range, batch_size, replace=False)]
                    in_flight.clear()
                    try:
                        if version % 7 == 0:
                            in_flight.update({i: -1 for i in ids})
                            response = http.post("/v1/collections/stream/points/delete", json={"ids": ids})
                        else:
                            for i in ids:
                                vectors[(i, version)] = rng.normal(size=dim).tolist()
                            in_flight.update({i: version for i in ids})
                            points = [{"id": i, "vector": vectors[(i, version)], "payload": {"v": version}} for i in ids]
                            response = http.put("/v1/collections/stream/points", json={"points": points})
                    except httpx.TransportError:
                        return
                    if response.status_code == 200 and response.json()["status"] == "acknowledged":
                        latest.update(in_flight)
                        in_flight.clear()
                        acked += 1

        writer = threading.Thread(target=stream)
        writer.start()
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while time.monotonic() < deadline and (acked < 20 or not _optimizer_running(http)):
                time.sleep(0.002)
        server.kill9()
        stop.set()
        writer.join(timeout=30)
        assert acked, "the writer made no progress before the kill"

        server = start_server(**ENGINE_ENV)
        with TroveClient(server.url) as trove:
            _check_acknowledged(trove, latest, in_flight, vectors)
            for job in httpx.get(f"{server.url}/v1/jobs", params={"collection": "stream", "limit": 1000}).json()["jobs"]:
                if job["kind"] == "optimize" and (job.get("error") or {}).get("code") == "interrupted":
                    interrupted.add(job["params"]["task"])
        if "seal" in interrupted and interrupted & {"merge", "vacuum"}:
            break
    assert "seal" in interrupted and interrupted & {"merge", "vacuum"}, f"kills interrupted only {interrupted}"


def _optimizer_running(http: httpx.Client) -> bool:
    jobs = http.get("/v1/jobs", params={"collection": "stream"}).json()["jobs"]
    return any(j["kind"] == "optimize" and j["state"] == "running" for j in jobs)


def _check_acknowledged(trove: TroveClient, latest: dict[int, int], in_flight: dict[int, int], vectors: dict[tuple[int, int], list[float]]) -> None:
    """Every id holds its newest acknowledged version; the in-flight batch shows everywhere or nowhere."""
    applied: list[bool] = []  # per in-flight id whose new version differs from its acknowledged one
    for point_id in sorted(set(latest) | set(in_flight)):
        got, old = _version(trove, point_id), latest.get(point_id, -1)
        if point_id in in_flight and in_flight[point_id] != old:
            assert got in (old, in_flight[point_id]), f"id {point_id}: acknowledged {old}, sent {in_flight[point_id]}, found {got}"
            applied.append(got == in_flight[point_id])
        else:
            assert got == old, f"id {point_id}: acknowledged version {old}, found {got}"
    assert all(applied) or not any(applied), "the in-flight batch was half-written"
    if applied and all(applied):  # committed before the kill, unacknowledged: the truth from here on
        latest.update(in_flight)
    in_flight.clear()
    info = trove.collection("stream")
    assert info["points"] == sum(1 for v in latest.values() if v != -1)
    # Segments + replay: live points find themselves, with their newest vector.
    live = [(i, v) for i, v in latest.items() if v != -1][:40]
    results = trove.query_batch("stream", [{"vector": vectors[(i, v)], "k": 1} for i, v in live]).results
    assert [(r[0].id, (r[0].payload or {})["v"]) for r in results] == live


def _version(trove: TroveClient, point_id: int) -> int:
    """The version a point holds (-1 if it is absent: deleted or never written)."""
    try:
        return int((trove.get_point("stream", point_id).payload or {})["v"])
    except TroveAPIError as err:
        assert err.status == 404
        return -1


