"""Compression over HTTP on a real `trove serve`: create with a config, build (which fits it), query, info, restart, bad configs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import ServerProcess


def wait_job(http: httpx.Client, job_id: str) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise TimeoutError(job_id)


BAD = [
    ({"leanvec": {"dim": 500}}, "compression_dim_too_large"),
    ({"quantizer": {"kind": "binary", "bits": 5}}, "invalid_bits"),
    ({"quantizer": {"kind": "lvq8", "bits": 2}}, "invalid_bits"),
    ({"leanvec": {"dim": 48, "variant": "ood"}}, "queries_required"),
    ({"matryoshka": {"funnel": [128, 64]}}, "invalid_funnel"),
    ({"rerank": {"oversample": 0.5}, "quantizer": {"kind": "int8"}}, "invalid_rerank"),
    ({"rerank": {"target_recall": 1.5}, "quantizer": {"kind": "int8"}}, "invalid_rerank"),
]


def test_compression_end_to_end(start_server: Callable[..., ServerProcess], tmp_path: Path, sentence_vectors: np.ndarray, sentences: list[str]) -> None:
    server = start_server()
    source = tmp_path / "points.jsonl"
    source.write_text("".join(json.dumps({"id": i, "vector": v.tolist()}) + "\n" for i, v in enumerate(sentence_vectors[:1500])))
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for config, code in BAD:
            answer = http.post("/v1/collections", json={"name": "bad", "compression": config})
            assert answer.status_code == 400 and answer.json()["error"]["code"] == code, (config, answer.text)
        assert http.get("/v1/collections").json()["collections"] == []  # rejected configs wrote nothing

        config = {"leanvec": {"dim": 96, "variant": "ood", "queries": sentences[2000:2100]}, "quantizer": {"kind": "lvq8"}, "rerank": {"oversample": 8, "with": "int8", "storage": "mmap"}}
        created = http.post("/v1/collections", json={"name": "docs", "compression": config})
        assert created.status_code == 201, created.text
        info = created.json()
        assert info["compression"]["state"] == "unfitted" and info["compression"]["queries"] == 100 and info["stages"][0]["name"] == "float32"

        job = wait_job(http, http.post("/v1/collections/docs/builds", json={"source": {"path": str(source), "format": "jsonl"}}).json()["job_id"])
        assert job["state"] == "succeeded", job
        assert [s["name"] for s in job["result"]["compression"]["stages"]] == ["leanvec96-ood lvq8", "int8 rerank"]
        assert job["result"]["compression"]["search"]["chosen_by"] == "config" and job["result"]["compression"]["search"]["oversample"] == 8
        info = http.get("/v1/collections/docs").json()
        assert info["compression"]["state"] == "fitted" and info["compression"]["leanvec"] == {"dim": 96, "variant": "ood"}
        assert info["stages"][-1]["recall_at_10"] >= 0.9 and info["memory_bytes"] < 1500 * 1536 / 2

        probe = {"vector": sentence_vectors[7].tolist(), "k": 5}
        assert http.post("/v1/collections/docs/query", json=probe).json()["results"][0]["id"] == 7
        exact = http.post("/v1/collections/docs/query", json={**probe, "params": {"exact": True}}).json()["results"]
        deep = http.post("/v1/collections/docs/query", json={**probe, "params": {"oversample": 100}}).json()["results"]
        assert [h["id"] for h in exact][:3] == [h["id"] for h in deep][:3]

        # Changing the config refits on a copy while queries keep being answered.
        answer = http.put("/v1/collections/docs/compression", json={"quantizer": {"kind": "binary", "bits": 2}})
        assert answer.status_code == 202
        assert http.post("/v1/collections/docs/query", json=probe).status_code == 200
        assert wait_job(http, answer.json()["job_id"])["state"] == "succeeded"
        assert http.put("/v1/collections/docs/compression", json={"quantizer": {"kind": "binary", "bits": 7}}).json()["error"]["code"] == "invalid_bits"
        stages = http.get("/v1/collections/docs/compression").json()["stages"]
        assert [s["name"] for s in stages] == ["binary2 hamming", "binary2 asymmetric", "float32 rerank"]
        # No oversample given: the fit chose one for the default target, and the info says on which queries.
        info = http.get("/v1/collections/docs/compression").json()["compression"]
        assert info["rerank"]["oversample"] is None and info["rerank"]["storage"] == "mmap" and info["search"]["chosen_by"] == "fit"
        assert info["search"]["target_recall"] == 0.95 and info["held_queries"]["stored"]["count"] == 150
        assert http.put("/v1/collections/docs/points", json={"points": [{"id": "late", "vector": sentence_vectors[2500].tolist()}]}).status_code == 200
    server.stop()

    restarted = start_server(data_dir=tmp_path / "data")
    with httpx.Client(base_url=restarted.url, timeout=120) as http:
        info = http.get("/v1/collections/docs").json()
        assert info["compression"]["state"] == "fitted" and info["stages"][0]["name"] == "binary2 hamming" and info["points"] == 1501
        late = http.post("/v1/collections/docs/query", json={"vector": sentence_vectors[2500].tolist(), "k": 1}).json()["results"]
        assert late[0]["id"] == "late"
