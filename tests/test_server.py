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
        assert [h["id"] for h in trove.query("notes", text="groceries", k=1)["results"]] == [1]
        batch = trove.query_batch("notes", [{"text": "deadline at work", "k": 1}, {"text": "puppy shots", "k": 1}])
        assert [[h["id"] for h in r] for r in batch["results"]] == [[2], [3]]
        trove.delete("notes", [1])
        try:
            trove.get_point("notes", 1)
            raise AssertionError("deleted point still readable")
        except TroveAPIError as err:
            assert err.status == 404 and err.code == "point_not_found"
        before = trove.query("notes", text="groceries", k=3)["results"]
    server.stop()  # graceful: snapshots FAISS on the way out

    assert list((tmp_path / "data" / "collections" / "notes" / "index").glob("*.faiss"))
    again = start_server()
    with TroveClient(again.url) as trove:
        info = trove.collection("notes")
        assert info["points"] == 2 and info["snapshot_operation_id"] == info["operation_id"] == 2
        after = trove.query("notes", text="groceries", k=3)["results"]
        assert [h["id"] for h in after] == [h["id"] for h in before] and len(after) == 2


def test_kill_9_mid_stream_loses_no_acknowledged_write(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    # Frequent snapshots so the crash lands between a snapshot and later writes, exercising replay.
    env = {"TROVE_SNAPSHOT_INTERVAL_S": "0.2", "TROVE_SNAPSHOT_MIN_OPS": "5"}
    server = start_server(**env)
    dim, batch_size = 16, 20
    rng = np.random.default_rng(7)
    with TroveClient(server.url) as trove:
        trove.create_collection("stream", dim=dim, metric="cosine")

    acked: dict[int, list[int]] = {}  # batch number -> ids
    attempted: dict[int, list[int]] = {}
    vectors: dict[int, list[float]] = {}
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for batch in range(100000):
                if stop.is_set():
                    return
                ids = list(range(batch * batch_size, (batch + 1) * batch_size))
                points = []
                for i in ids:
                    vectors[i] = rng.normal(size=dim).tolist()
                    points.append({"id": i, "vector": vectors[i], "payload": {"batch": batch, "n": i}})
                attempted[batch] = ids
                try:
                    response = http.put("/v1/collections/stream/points", json={"points": points})
                except httpx.TransportError:
                    return
                if response.status_code == 200 and response.json()["status"] == "acknowledged":
                    acked[batch] = ids

    writer = threading.Thread(target=stream)
    writer.start()
    snapshot_dir = tmp_path / "data" / "collections" / "stream" / "index"

    def snapshot_taken() -> bool:
        return any(snapshot_dir.glob("*.faiss"))

    # Crash only once a snapshot exists and writes have gone on after it, so both snapshot and replay are exercised.
    deadline = time.monotonic() + 60
    while not snapshot_taken() and time.monotonic() < deadline:
        time.sleep(0.05)
    after_snapshot = len(acked) + 30
    while len(acked) < max(after_snapshot, 60) and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill9()
    stop.set()
    writer.join(timeout=30)
    assert snapshot_taken(), "no snapshot was taken before the crash, so replay from a snapshot went untested"
    assert len(acked) >= 60, "the writer made too little progress before the kill"

    restarted = start_server(**env)
    with TroveClient(restarted.url) as trove:
        info = trove.collection("stream")
        unacked = [b for b in attempted if b not in acked]
        present_unacked = 0
        for batch in unacked:  # at most the in-flight one: all of it or none of it
            found = [_exists(trove, i) for i in attempted[batch]]
            assert all(found) or not any(found), f"batch {batch} was half-written"
            present_unacked += all(found)
        assert info["points"] == batch_size * (len(acked) + present_unacked)
        for batch, ids in acked.items():
            point = trove.get_point("stream", ids[-1])
            assert point["payload"] == {"batch": batch, "n": ids[-1]}
        # FAISS was rebuilt from snapshot + replay: every acknowledged vector finds itself.
        sample = [ids[0] for ids in acked.values()]
        results = trove.query_batch("stream", [{"vector": vectors[i], "k": 1, "with_payload": False} for i in sample])["results"]
        assert [r[0]["id"] for r in results] == sample


def _exists(trove: TroveClient, point_id: int) -> bool:
    try:
        trove.get_point("stream", point_id)
        return True
    except TroveAPIError as err:
        assert err.status == 404
        return False
