"""Batch builds as jobs: real files, the real encoder, progress, cancel, bad rows, restarts, the CLI and Ray."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from encoders.errors import InvalidInput
from encoders.registry import ModelRegistry
from index.ingest.builds import HEAD_ROWS
from service.client import TroveClient
from tests.conftest import TROVE, ServerProcess

TOPICS = ["astronomy", "cooking", "football", "gardening", "jazz", "medicine", "sailing", "taxes"]


def write_jsonl(path: Path, n: int, start: int = 0) -> Path:
    with open(path, "w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": i, "text": f"note {i} on {TOPICS[i % len(TOPICS)]} and more", "payload": {"topic": TOPICS[i % len(TOPICS)]}}) + "\n")
    return path


def wait(client: TestClient, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in {"succeeded", "failed", "cancelled"}:
            return dict(job)
        time.sleep(0.1)
    raise TimeoutError(job_id)


def start_build(client: TestClient, path: Path, fmt: str = "jsonl", **options: Any) -> str:
    response = client.post("/v1/collections/docs/builds", json={"source": {"path": str(path), "format": fmt}, **options})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


@pytest.fixture
def docs(client: TestClient) -> TestClient:
    assert client.post("/v1/collections", json={"name": "docs"}).status_code == 201
    client.put("/v1/collections/docs/points", json={"points": [{"id": "seed", "text": "the original point", "payload": {"topic": "seed"}}]})
    return client


def test_jsonl_build_reports_progress_and_serves_queries_meanwhile(docs: TestClient, tmp_path: Path) -> None:
    job_id = start_build(docs, write_jsonl(tmp_path / "rows.jsonl", 5000))
    seen_progress: list[float] = []
    answered = 0
    while (job := docs.get(f"/v1/jobs/{job_id}").json())["state"] not in {"succeeded", "failed"}:
        seen_progress.append(job["progress"])
        hits = docs.post("/v1/collections/docs/query", json={"text": "original", "k": 1}).json()["results"]
        answered += hits[0]["id"] == "seed"  # the old state serves until the swap
        time.sleep(0.2)
    assert job["state"] == "succeeded", job
    assert len({p for p in seen_progress if 0 < p < 1}) >= 3, "progress should move in steps"
    assert answered >= 3
    assert job["done"] == job["total"] == 5000 and job["progress"] == 1.0
    assert job["result"]["points"] == 5000 and job["result"]["skipped"] == 0
    assert docs.get("/v1/collections/docs").json()["points"] == 5001
    hits = docs.post("/v1/collections/docs/query", json={"text": "jazz", "k": 5, "filter": {"must": [{"key": "topic", "match": "jazz"}]}}).json()["results"]
    assert len(hits) == 5 and all(h["payload"]["topic"] == "jazz" for h in hits)
    listed = docs.get("/v1/jobs", params={"collection": "docs"}).json()["jobs"]
    assert [j["id"] for j in listed] == [job_id]


def test_cancel_mid_build_leaves_the_collection_as_it_was(docs: TestClient, tmp_path: Path) -> None:
    job_id = start_build(docs, write_jsonl(tmp_path / "rows.jsonl", 5000))
    while docs.get(f"/v1/jobs/{job_id}").json()["progress"] < 0.1:
        time.sleep(0.05)
    assert docs.delete(f"/v1/jobs/{job_id}").status_code == 200
    job = wait(docs, job_id)
    assert job["state"] == "cancelled" and job["error"]["code"] == "cancelled"
    assert docs.get("/v1/collections/docs").json()["points"] == 1
    assert docs.get("/v1/collections/docs").json()["operation_id"] == 1


BAD_FILES: list[tuple[str, str, str, int]] = [
    ("bad json line", '{"id": 1, "text": "fine"}\n{"id": 2, "text": \n', "invalid_json", 2),
    ("wrong dimension", '{"id": 1, "text": "fine"}\n{"id": 2, "vector": [0.1, 0.2]}\n', "wrong_dimension", 2),
    ("missing id", '{"id": 1, "text": "fine"}\n{"text": "no id"}\n', "missing_id", 2),
    ("empty text", '{"id": 1, "text": "fine"}\n{"id": 2, "text": "ok"}\n{"id": 3, "text": ""}\n', "empty_text", 3),
    ("duplicate id", '{"id": 1, "text": "fine"}\n{"id": 1, "text": "again"}\n', "duplicate_id", 2),
    ("vector of strings", '{"id": 1, "vector": ["a", "b"]}\n', "invalid_number", 1),
]


@pytest.mark.parametrize("after", [0, HEAD_ROWS], ids=["in-the-head-refused-at-request", "later-failing-the-job"])
@pytest.mark.parametrize("content,code,row", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_a_bad_row_fails_the_build_with_its_row_number(docs: TestClient, tmp_path: Path, content: str, code: str, row: int, after: int) -> None:
    """The request reads the first HEAD_ROWS rows: a bad one there is a 400; one further down fails the job, with the same code."""
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps({"id": 1000 + i, "text": f"good row {i}"}) + "\n" for i in range(after)) + content)
    response = docs.post("/v1/collections/docs/builds", json={"source": {"path": str(path), "format": "jsonl"}})
    if after < HEAD_ROWS:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
    else:
        job = wait(docs, response.json()["job_id"])
        assert job["state"] == "failed", job
        error = job["error"]
    assert error["code"] == code and error["details"]["row"] == after + row and f"row {after + row}" in error["message"], error
    assert docs.get("/v1/collections/docs").json()["points"] == 1


def test_unreadable_source_is_refused_clearly(docs: TestClient, tmp_path: Path) -> None:
    response = docs.post("/v1/collections/docs/builds", json={"source": {"path": str(tmp_path / "missing.jsonl"), "format": "jsonl"}})
    assert response.status_code == 400 and response.json()["error"]["code"] == "source_unreadable"
    assert "missing.jsonl" in response.json()["error"]["message"] and docs.get("/v1/jobs").json()["jobs"] == []


def test_skip_mode_counts_bad_rows(docs: TestClient, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"id": 1, "text": "fine"}\n{oops\n{"id": 3, "vector": [1, 2]}\n{"id": 4, "text": "also fine"}\n')
    job = wait(docs, start_build(docs, path, on_error="skip"))
    assert job["state"] == "succeeded"
    assert job["result"]["points"] == 2 and job["result"]["skipped"] == 2
    assert [b["row"] for b in job["result"]["bad_rows"]] == [2, 3]
    assert docs.get("/v1/collections/docs").json()["points"] == 3


def test_parquet_and_npy_sources(client: TestClient, tmp_path: Path, sentence_vectors: np.ndarray) -> None:
    client.post("/v1/collections", json={"name": "docs", "dim": 384, "metric": "ip"})
    vectors = sentence_vectors[:300]
    np.save(tmp_path / "m.npy", vectors)
    (tmp_path / "ids.txt").write_text("\n".join(f"doc-{i}" for i in range(300)))
    response = client.post("/v1/collections/docs/builds", json={"source": {"path": str(tmp_path / "m.npy"), "format": "npy", "ids_path": str(tmp_path / "ids.txt")}})
    assert wait(client, response.json()["job_id"])["state"] == "succeeded"
    table = pa.table(
        {
            "id": list(range(1000, 1100)),
            "vector": [v.tolist() for v in sentence_vectors[300:400]],
            "payload": [json.dumps({"n": i}) for i in range(100)],
        }
    )
    pq.write_table(table, tmp_path / "rows.parquet")
    assert wait(client, start_build(client, tmp_path / "rows.parquet", "parquet"))["state"] == "succeeded"
    assert client.get("/v1/collections/docs").json()["points"] == 400
    hit = client.post("/v1/collections/docs/query", json={"vector": vectors[7].tolist(), "k": 1}).json()["results"][0]
    assert hit["id"] == "doc-7"
    hit = client.post("/v1/collections/docs/query", json={"vector": sentence_vectors[350].tolist(), "k": 1}).json()["results"][0]
    assert hit == {"id": 1050, "score": pytest.approx(float(sentence_vectors[350] @ sentence_vectors[350]), rel=1e-4), "payload": {"n": 50}}


def test_build_sources_can_be_confined(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(build_source_dirs=[tmp_path / "imports"])
    client.post("/v1/collections", json={"name": "docs"})
    response = client.post("/v1/collections/docs/builds", json={"source": {"path": "/etc/passwd", "format": "jsonl"}})
    assert response.status_code == 400 and response.json()["error"]["code"] == "source_not_allowed"


def test_a_build_running_at_a_crash_is_reported_failed_and_changed_nothing(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server()
    with TroveClient(server.url) as trove:
        trove.create_collection("docs")
        trove.upsert("docs", [{"id": "seed", "text": "the original point"}])
        job_id = trove.build("docs", str(write_jsonl(tmp_path / "rows.jsonl", 5000)), "jsonl")
        while trove.job(job_id)["progress"] < 0.1:
            time.sleep(0.05)
    server.kill9()
    restarted = start_server()
    with TroveClient(restarted.url) as trove:
        job = trove.job(job_id)
        assert job["state"] == "failed" and job["error"]["code"] == "interrupted"
        assert trove.collection("docs")["points"] == 1


def test_cli_build_through_a_server_and_directly(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "rows.jsonl", 300)
    server = start_server()
    with TroveClient(server.url) as trove:
        trove.create_collection("docs")
    done = subprocess.run([TROVE, "build", "docs", str(rows), "--url", server.url], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout[done.stdout.index("{") :])
    assert report["state"] == "succeeded" and report["result"]["points"] == 300
    assert "build docs" in done.stdout + done.stderr  # the progress bar
    server.stop()

    more = write_jsonl(tmp_path / "more.jsonl", 50, start=300)
    direct = subprocess.run([TROVE, "build", "docs", str(more), "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=300)
    assert direct.returncode == 0, direct.stderr
    again = start_server()
    with TroveClient(again.url) as trove:
        assert trove.collection("docs")["points"] == 350
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{nope\n")
    failed = subprocess.run([TROVE, "build", "docs", str(bad), "--url", again.url], capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and '"invalid_json"' in failed.stdout


@pytest.fixture
def local_ray() -> Any:
    ray = pytest.importorskip("ray", reason="the 'distributed' extra is not installed")
    # The same code path as a cluster; only the address differs (none: a local Ray).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_build_matches_the_local_build(make_client: Callable[..., TestClient], tmp_path: Path, local_ray: Any) -> None:
    client = make_client(ray_actors=2)
    rows = write_jsonl(tmp_path / "rows.jsonl", 400)
    results = {}
    for engine in ("local", "ray"):
        client.post("/v1/collections", json={"name": engine})
        response = client.post(f"/v1/collections/{engine}/builds", json={"source": {"path": str(rows), "format": "jsonl"}, "engine": engine})
        job = wait(client, response.json()["job_id"], timeout=600)
        assert job["state"] == "succeeded", job
        queries = [{"text": t, "k": 10} for t in ("jazz music", "tax returns", "cooking dinner")]
        results[engine] = client.post(f"/v1/collections/{engine}/query/batch", json={"queries": queries}).json()["results"]
        assert client.get(f"/v1/collections/{engine}").json()["points"] == 400
    for local, ray in zip(results["local"], results["ray"], strict=True):
        assert [h["id"] for h in local] == [h["id"] for h in ray]
        np.testing.assert_allclose([h["score"] for h in local], [h["score"] for h in ray], atol=1e-5)


def test_a_ray_build_keeps_one_actor_pool_for_all_its_chunks_and_stops_it_at_the_end(
    tmp_path: Path, registry: ModelRegistry, local_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build calls its embedder once per chunk; the actors start on the first and serve every later one
    (starting them took as long as embedding a 50,000-row chunk), then stop when the build ends."""
    from index.backends.faiss_index import IndexSpec
    from index.catalog import Catalog
    from index.ingest import builds
    from index.ingest.distributed import RayEmbedder
    from index.ingest.sources import Source

    monkeypatch.setattr(builds, "BUILD_CHUNK", 150)  # 400 rows: three chunks, three calls
    rows = write_jsonl(tmp_path / "rows.jsonl", 400)
    catalog = Catalog(tmp_path / "data", registry)
    catalog.load_all()
    embed = RayEmbedder(model="minilm-l6", dim=384, actors=2)
    pools_seen: list[tuple[int, tuple[str, ...]]] = []
    try:
        collection = catalog.create("ray", model="minilm-l6", dim=None, metric="cosine", index=IndexSpec("flat"))
        result = builds.run_build(collection, Source(rows, "jsonl"), builds.BuildOptions(), lambda f, done, total: pools_seen.append((done, tuple(embed.actor_ids))), embed)
        assert result["points"] == 400 and result["segments"] == 3
        pools = {pool for done, pool in pools_seen if pool}
        chunk_ends = {done for done, pool in pools_seen if pool}
        assert {150, 300, 400} <= chunk_ends  # seen while each chunk finished: the pool was up for every one
        assert len(pools) == 1 and len(next(iter(pools))) == 2, pools  # the same two actors throughout
        assert embed.pools_started == 1
        assert embed.actor_ids == []  # stopped with the build
        texts = [json.loads(line)["text"] for line in rows.read_text().splitlines()]
        stored = np.stack([collection.get(i, with_vector=True).vector for i in (0, 199, 399)])
        local = registry.get("minilm-l6").encode_docs([texts[i] for i in (0, 199, 399)])
        assert (stored * local).sum(axis=1).min() > 0.9999  # and every vector went back to its own row
    finally:
        embed.close()
        catalog.close()


def test_kill_9_during_a_streamed_build_leaves_no_trace_and_a_rerun_serves_its_segments(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """A vectors build streams 50k-row chunks into sealed segments; kill -9 once some chunks are staged and
    indexed: after restart nothing of it is live or staged, no segment files are left, acknowledged writes
    are all there; run again, it commits and serves its chunks as sealed segments."""
    import sqlite3

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(200_000, 16)).astype(np.float32)
    imports = tmp_path / "data" / "imports"
    imports.mkdir(parents=True)
    np.save(imports / "big.npy", vectors)
    body = {"source": {"path": str(imports / "big.npy"), "format": "npy"}}
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        http.post("/v1/collections", json={"name": "v", "dim": 16, "metric": "ip"}).raise_for_status()
        http.put("/v1/collections/v/points", json={"points": [{"id": f"seed{i}", "vector": vectors[i].tolist()} for i in range(10)]}).raise_for_status()
        job_id = http.post("/v1/collections/v/builds", json=body).json()["job_id"]
        while http.get(f"/v1/jobs/{job_id}").json()["progress"] < 0.5:
            hits = http.post("/v1/collections/v/query", json={"vector": vectors[100_000].tolist(), "k": 20}).json()["results"]
            assert all(str(h["id"]).startswith("seed") for h in hits), "a build's rows were visible before its commit"
            time.sleep(0.02)
    server.kill9()
    collection_dir = tmp_path / "data" / "collections" / "v"
    restarted = start_server()
    with httpx.Client(base_url=restarted.url, timeout=30) as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "failed" and job["error"]["code"] == "interrupted"
        assert http.get("/v1/collections/v").json()["points"] == 10
        store = sqlite3.connect(collection_dir / "store.sqlite")
        assert store.execute("SELECT COUNT(*) FROM staged_points").fetchone()[0] == 0
        store.close()
        leftovers = [p.name for p in (collection_dir / "segments").iterdir()] if (collection_dir / "segments").exists() else []
        assert all(name == "manifest.json" for name in leftovers), leftovers

        job_id = http.post("/v1/collections/v/builds", json=body).json()["job_id"]
        deadline = time.monotonic() + 300
        while (job := http.get(f"/v1/jobs/{job_id}").json())["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert job["state"] == "succeeded" and job["result"]["points"] == 200_000 and job["result"]["segments"] == 4, job
        info = http.get("/v1/collections/v").json()
        assert info["points"] == 200_010
        assert sum(s["points"] for s in info["segments"] if s["state"] == "sealed") >= 200_000
        top = http.post("/v1/collections/v/query", json={"vector": vectors[123_456].tolist(), "k": 1, "params": {"exact": True}}).json()["results"][0]
        assert top["score"] == pytest.approx(float((vectors @ vectors[123_456]).max()), rel=1e-5)


def _mapped_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0] if line else ""
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads the kernel's per-mapping resident sizes (Linux)")
def test_an_npy_source_reads_its_rows_without_keeping_them_resident(tmp_path: Path) -> None:
    """A build reads its .npy once: the rows behind it must not stay resident (else peak RSS grows by the file),
    and every row comes back as stored, the last short block and a bad row included."""
    from index.ingest.sources import READ_ROWS, Source

    path = tmp_path / "big.npy"
    matrix = np.random.default_rng(0).random((3 * READ_ROWS + 100, 128), dtype=np.float32)
    matrix[READ_ROWS + 7, 3] = np.inf  # its block is checked row by row: only this row fails
    np.save(path, matrix)
    peak = 0
    for row, point in enumerate(Source(path, "npy").rows()):
        if row == READ_ROWS + 7:
            assert isinstance(point, InvalidInput) and point.code == "non_finite_vector" and f"row {row + 1}" in point.message
            continue
        assert not isinstance(point, Exception) and point.id == row
        assert np.array_equal(np.asarray(point.vector), matrix[row])
        if row % 2_000 == 0:
            peak = max(peak, _mapped_kib(path))
    assert row == len(matrix) - 1
    assert peak <= 64  # the header's page at most: rows come by file reads, not through a memory map
