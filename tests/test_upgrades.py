"""Model upgrades: the compatibility maps, the criterion on real text with two real models, promote and roll
back over HTTP, reprojection, the stale calibrator's refit, and a server killed in the middle of an upgrade."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from encoders.base import l2_normalize
from encoders.registry import ModelRegistry
from encoders.transforms.base import Transform
from encoders.transforms.compat import Orthogonal, make_compat
from index.models.upgrades import (
    CROPS_PER_TEXT,
    compare,
    fit_map,
    fit_pairs,
    short_crops,
    verdict,
)
from tests.conftest import ServerProcess
from tests.corpus import stdlib_labelled


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return l2_normalize(rng.normal(size=(n, d)).astype(np.float32))


def test_orthogonal_rotation_keeps_new_scores_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    new = _unit(rng, 500, 48)
    old = l2_normalize(new[:, :32] @ rng.normal(size=(32, 32)).astype(np.float32) + 0.1 * _unit(rng, 500, 32))
    compat = Orthogonal(source_model="new", target_model="old").fit_pair(new, old)
    rotation = compat.tensor("rotation").cpu().numpy().astype(np.float64)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(48), atol=1e-5)
    rotated = compat.rotate(new)
    np.testing.assert_allclose(rotated @ rotated.T, new @ new.T, atol=1e-5)  # new/new scores survive the rotation
    assert compat.encode_queries(new).shape == (500, 32)
    np.testing.assert_allclose(compat.encode_queries(new), rotated[:, :32], atol=1e-6)  # the aligned part is the first d_old axes
    # Mapped new vectors land near their old counterparts, far better than unrelated pairs.
    mapped = l2_normalize(compat.encode_queries(new))
    assert (mapped * old).sum(1).mean() > (mapped * np.roll(old, 1, axis=0)).sum(1).mean() + 0.3

    for method in ("orthogonal", "affine", "ridge", "low_rank"):
        fitted = make_compat(method, "new", "old", seed=3).fit_pair(new, old)
        fitted.save(tmp_path / method)
        again = Transform.load(tmp_path / method)
        np.testing.assert_array_equal(again.encode_docs(new[:20]), fitted.encode_docs(new[:20]))
        saved = json.loads((tmp_path / method / "config.json").read_text())
        assert saved["source_model"] == "new" and saved["target_model"] == "old" and saved["seed"] == 3
        assert saved["provenance"] == {"input_dim": 48, "output_dim": 32, "pairs": 500}


def test_query_side_fits_also_on_short_crops_of_the_sampled_texts() -> None:
    texts = ["Open a file and read its lines.", "Return the square root of x.", "42"]
    crops = short_crops(texts, seed=0)
    assert crops == short_crops(texts, seed=0) and len(crops) == 2 * CROPS_PER_TEXT  # a text without words gives none
    assert all(1 <= len(c.split()) <= 3 and any(c in t for t in texts) for c in crops), crops
    old, new = np.zeros((3, 4), np.float32), np.ones((3, 6), np.float32)
    pair_old, pair_new = fit_pairs("query_side", texts, old, new, lambda t: np.full((len(t), 4), 2.0), lambda t: np.full((len(t), 6), 3.0))
    assert pair_old.shape == (3 + len(crops), 4) and pair_new.shape == (3 + len(crops), 6) and (pair_old[3:] == 2).all() and (pair_new[3:] == 3).all()
    unchanged = fit_pairs("reproject", texts, old, new, lambda t: old, lambda t: new)
    assert unchanged[0] is old and unchanged[1] is new  # reproject maps stored texts: fitted on them alone


def test_criterion_holds_on_real_text_with_both_models(registry: ModelRegistry, models_dir: Path, static_model: str, sentences: list[str], sentence_vectors: np.ndarray) -> None:
    old = ModelRegistry(models_dir).get(static_model).encode_docs(sentences)
    new = sentence_vectors
    fit, held = slice(0, 2400), slice(2400, 3000)
    results = {}
    for method, mode in (("orthogonal", "query_side"), ("ridge", "reproject")):
        compat = fit_map(method, mode, old[fit], new[fit], static_model, "minilm-l6")  # type: ignore[arg-type]
        measured = compare(compat, mode, old[held], old[held], new[held], new[held], l2_normalize, "ip", exclude_self=True)  # type: ignore[arg-type]
        results[(method, mode)] = verdict(measured["neighbour_recall"])
        assert measured["neighbour_recall"]["new_new"] == 1.0
    holds, recovered = results[("orthogonal", "query_side")]
    assert holds and recovered is not None and recovered > 0.2, results
    assert results[("ridge", "reproject")][0], results


def _wait(http: TestClient | httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := http.get(f"/v1/jobs/{job_id}").json())["state"] in {"queued", "running"}:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return dict(job)


def _running_past(http: TestClient | httpx.Client, job_id: str, reached: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll a running job until ``reached(job)``; it must still be queued or running all the while."""
    deadline = time.monotonic() + 120
    while not reached(job := http.get(f"/v1/jobs/{job_id}").json()):
        assert job["state"] in {"queued", "running"} and time.monotonic() < deadline, job
        time.sleep(0.05)
    return dict(job)


def _ids(http: TestClient | httpx.Client, collection: str, texts: list[str]) -> list[list[Any]]:
    response = http.post(f"/v1/collections/{collection}/query/batch", json={"queries": [{"text": t, "k": 5, "with_payload": False} for t in texts]})
    assert response.status_code == 200, response.text
    return [[h["id"] for h in r] for r in response.json()["results"]]


def _mapped_ids(http: TestClient, collection: str, texts: list[str], vectors: np.ndarray) -> list[list[Any]]:
    """What the collection must answer for these query vectors once mapped into its index space by hand."""
    queries = [{"vector": v.tolist(), "k": 5, "with_payload": False} for v in l2_normalize(vectors)]
    return [[h["id"] for h in r] for r in http.post(f"/v1/collections/{collection}/query/batch", json={"queries": queries}).json()["results"]]


QUERIES = ["read a file line by line", "parse command line arguments", "compute a hash digest", "send an email message"]


def test_upgrade_promote_rollback_and_refit_over_http(make_client: Callable[..., TestClient], models_dir: Path, static_model: str, registry: ModelRegistry, tmp_path: Path) -> None:
    client = make_client(models_dir=models_dir)
    docs, queries, relevant = stdlib_labelled()
    assert client.post("/v1/collections", json={"name": "py", "model": static_model}).status_code == 201
    assert client.put("/v1/collections/py/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(docs)]}).status_code == 200
    examples = [{"query": q, "relevant": r} for q, r in zip(queries, relevant, strict=True)]
    fitted = _wait(client, client.post("/v1/collections/py/relevance", json={"examples": examples, "calibrator": "platt"}).json()["job_id"])
    assert fitted["state"] == "succeeded", fitted
    before = _ids(client, "py", QUERIES)

    bad = client.post("/v1/collections/py/upgrades", json={"model": "no-such-model"})
    assert bad.status_code == 404
    started = client.post("/v1/collections/py/upgrades", json={"model": "minilm-l6", "sample": 600, "examples": examples})
    assert started.status_code == 202
    job = _wait(client, started.json()["job_id"])
    assert job["state"] == "succeeded", job["error"]
    report = job["result"]
    assert {"method", "mode", "m_old_old", "m_new_old", "m_new_new", "criterion_holds", "gap_recovered", "fit_seconds", "reembed_estimate_seconds"} <= set(report)
    assert report["criterion_metric"] == "ndcg@10" and report["criterion_holds"], report
    assert report["metrics"]["neighbour_recall"]["new_new"] == 1.0
    upgrade_id = report["upgrade_id"]
    listed = client.get("/v1/collections/py/upgrades").json()["upgrades"]
    assert [u["id"] for u in listed] == [upgrade_id] and listed[0]["state"] == "fitted"
    assert _ids(client, "py", QUERIES) == before  # fitting changes nothing that serves

    promoted = client.post(f"/v1/collections/py/upgrades/{upgrade_id}/promote")
    assert promoted.status_code == 200 and promoted.json()["state"] == "promoted" and promoted.json()["version"] == 2
    info = client.get("/v1/collections/py").json()
    assert info["model"] == "minilm-l6" and [(m["version"], m["serving"]) for m in info["models"]] == [(1, False), (2, True)]
    assert info["dim"] == 256 and info["relevance"]["stale"] is True and info["relevance"]["model_version"] == 1
    # Queries now run MiniLM and go through the fitted map into the untouched 256-d index.
    compat = Transform.load(tmp_path / "data" / "collections" / "py" / "upgrades" / upgrade_id / "map")
    new_queries = compat.encode_queries(registry.get("minilm-l6").encode_queries(QUERIES))
    after = _ids(client, "py", QUERIES)
    assert after == _mapped_ids(client, "py", QUERIES, new_queries) and after != before
    # A point written now is embedded by the serving version and says so.
    client.put("/v1/collections/py/points", json={"points": [{"id": "new", "text": "Open a file and read its lines."}]})
    assert client.get("/v1/collections/py/points/new").json()["model_version"] == 2
    assert client.get("/v1/collections/py/points/0").json()["model_version"] == 1
    client.post("/v1/collections/py/points/delete", json={"ids": ["new"]})

    refit = client.post("/v1/collections/py/relevance", json={"refit": True, "calibrator": "platt"})
    assert refit.status_code == 202 and _wait(client, refit.json()["job_id"])["state"] == "succeeded"
    relevance = client.get("/v1/collections/py").json()["relevance"]
    assert relevance["stale"] is False and relevance["model_version"] == 2

    rolled = client.post(f"/v1/collections/py/upgrades/{upgrade_id}/rollback")
    assert rolled.status_code == 200 and rolled.json()["state"] == "rolled_back"
    assert client.get("/v1/collections/py").json()["model"] == static_model
    assert _ids(client, "py", QUERIES) == before
    assert client.post(f"/v1/collections/py/upgrades/{upgrade_id}/rollback").json()["error"]["code"] == "not_serving"
    again = client.post(f"/v1/collections/py/upgrades/{upgrade_id}/promote")
    assert again.status_code == 200 and _ids(client, "py", QUERIES) == after


def test_reproject_maps_the_stored_vectors_and_rolls_back_into_the_new_space(make_client: Callable[..., TestClient], models_dir: Path, static_model: str, sentences: list[str], registry: ModelRegistry) -> None:
    client = make_client(models_dir=models_dir)
    client.post("/v1/collections", json={"name": "re", "model": static_model})
    client.put("/v1/collections/re/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(sentences[:500])]})
    job = _wait(client, client.post("/v1/collections/re/upgrades", json={"model": "minilm-l6", "sample": 500, "method": "ridge", "mode": "reproject"}).json()["job_id"])
    assert job["state"] == "succeeded" and job["result"]["mode"] == "reproject", job
    upgrade_id = job["result"]["upgrade_id"]
    promoted = client.post(f"/v1/collections/re/upgrades/{upgrade_id}/promote")
    assert promoted.status_code == 202
    assert _wait(client, promoted.json()["job_id"])["state"] == "succeeded"
    info = client.get("/v1/collections/re").json()
    assert info["dim"] == 384 and info["model"] == "minilm-l6" and info["points"] == 500
    # Native MiniLM queries against the mapped gallery: the same answer as the query's own vector.
    native = registry.get("minilm-l6").encode_queries(QUERIES)
    assert _ids(client, "re", QUERIES) == _mapped_ids(client, "re", QUERIES, native)
    hit = client.post("/v1/collections/re/query", json={"text": sentences[7], "k": 1}).json()["results"]
    assert hit[0]["id"] == 7
    # Rolling back serves the static model again, its queries mapped by the same reprojection.
    assert client.post(f"/v1/collections/re/upgrades/{upgrade_id}/rollback").status_code == 200
    assert client.get("/v1/collections/re").json()["dim"] == 384
    assert client.post("/v1/collections/re/query", json={"text": sentences[7], "k": 1}).json()["results"][0]["id"] == 7


def test_kill_9_during_an_upgrade_leaves_the_collection_as_it_was(start_server: Callable[..., ServerProcess], models_dir: Path, static_model: str, sentences: list[str], tmp_path: Path) -> None:
    server = start_server(TROVE_MODELS_DIR=str(models_dir))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        http.post("/v1/collections", json={"name": "up", "model": static_model})
        http.put("/v1/collections/up/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(sentences)]})
        before = _ids(http, "up", QUERIES)
        info_before = http.get("/v1/collections/up").json()
        job_id = http.post("/v1/collections/up/upgrades", json={"model": "minilm-l6", "sample": 3000}).json()["job_id"]
        _running_past(http, job_id, lambda job: job["progress"] > 0.05)
    server.kill9()

    restarted = start_server(TROVE_MODELS_DIR=str(models_dir))
    with httpx.Client(base_url=restarted.url, timeout=60) as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "failed" and job["error"]["code"] == "interrupted"
        assert http.get("/v1/collections/up/upgrades").json()["upgrades"] == []
        info = http.get("/v1/collections/up").json()
        assert info["models"] == info_before["models"] and info["points"] == len(sentences)
        assert _ids(http, "up", QUERIES) == before
        assert http.post(f"/v1/collections/up/upgrades/{job_id}/promote").status_code == 404


def _versions(http: TestClient | httpx.Client, collection: str, ids: list[Any]) -> dict[Any, int]:
    return {i: http.get(f"/v1/collections/{collection}/points/{i}").json()["model_version"] for i in ids}


def _promoted_collection(http: TestClient | httpx.Client, collection: str, model: str, texts: list[str], sample: int) -> str:
    """A collection of ``model`` holding ``texts`` (ids 0..), upgraded to MiniLM and promoted: the upgrade's id."""
    http.post("/v1/collections", json={"name": collection, "model": model})
    http.put(f"/v1/collections/{collection}/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(texts)]})
    return _promoted_upgrade(http, collection, sample)


def _promoted_upgrade(http: TestClient | httpx.Client, collection: str, sample: int) -> str:
    job = _wait(http, http.post(f"/v1/collections/{collection}/upgrades", json={"model": "minilm-l6", "sample": sample}).json()["job_id"])
    assert job["state"] == "succeeded", job
    upgrade_id: str = job["result"]["upgrade_id"]
    assert http.post(f"/v1/collections/{collection}/upgrades/{upgrade_id}/backfill").json()["error"]["code"] == "not_serving"
    assert http.post(f"/v1/collections/{collection}/upgrades/{upgrade_id}/promote", json={"force": True}).status_code == 200
    return upgrade_id


def test_backfill_reencodes_old_points_and_mixed_galleries_rank_as_if_written_that_way(
    make_client: Callable[..., TestClient], models_dir: Path, static_model: str, sentences: list[str], registry: ModelRegistry, tmp_path: Path
) -> None:
    from index.requests import PointInput

    client = make_client(models_dir=models_dir)
    texts = sentences[:400]
    rng = np.random.default_rng(0)
    client.post("/v1/collections", json={"name": "bf", "model": static_model})
    client.put("/v1/collections/bf/points", json={"points": [{"id": i, "text": t, "payload": {"n": i}} for i, t in enumerate(texts)]})
    bare = [{"id": f"vec{j}", "vector": v.tolist()} for j, v in enumerate(_unit(rng, 2, 256))]  # no text: cannot be re-encoded
    client.put("/v1/collections/bf/points", json={"points": bare})
    upgrade_id = _promoted_upgrade(client, "bf", sample=400)
    compat = Transform.load(tmp_path / "data" / "collections" / "bf" / "upgrades" / upgrade_id / "map")
    old_vectors = l2_normalize(ModelRegistry(models_dir).get(static_model).encode_docs(texts))
    new_vectors = l2_normalize(compat.encode_docs(registry.get("minilm-l6").encode_docs(texts)))  # new model, mapped into the index's space
    new_queries = compat.encode_queries(registry.get("minilm-l6").encode_queries(QUERIES))

    def check_against_fresh_collection(name: str) -> dict[Any, int]:
        """The collection answers as a fresh one written with each point's expected vector: old, or new mapped."""
        versions = _versions(client, "bf", list(range(len(texts))))
        expected = np.stack([new_vectors[i] if versions[i] == 2 else old_vectors[i] for i in range(len(texts))])
        stored = np.stack([client.get(f"/v1/collections/bf/points/{i}?with_vector=true").json()["vector"] for i in range(len(texts))])
        np.testing.assert_allclose(stored, expected, atol=1e-4)
        client.post("/v1/collections", json={"name": name, "dim": 256})
        client.put(f"/v1/collections/{name}/points", json={"points": [{"id": i, "vector": v.tolist()} for i, v in enumerate(expected)] + bare})
        assert _ids(client, "bf", QUERIES) == _mapped_ids(client, name, QUERIES, new_queries)
        return versions

    # A slow backfill, cancelled after its first chunk: the chunks it committed stay, the gallery is mixed.
    started = client.post(f"/v1/collections/bf/upgrades/{upgrade_id}/backfill", json={"rate": 100})
    assert started.status_code == 202
    deadline = time.monotonic() + 120
    while (job := client.get(f"/v1/jobs/{started.json()['job_id']}").json())["done"] < 100:
        assert job["state"] in {"queued", "running"} and time.monotonic() < deadline, job  # queued until the worker takes it
        time.sleep(0.05)
    client.delete(f"/v1/jobs/{job['id']}")
    job = _wait(client, job["id"])
    assert job["state"] == "cancelled" and "re-encoding" in job["error"]["message"], job
    versions = check_against_fresh_collection("mixed")
    assert 100 <= sum(v == 2 for v in versions.values()) < len(texts), versions

    # A write prepared from a row the user has since re-upserted is skipped in the write's own transaction.
    collection = client.app.state.catalog.get("bf")  # type: ignore[attr-defined]
    stale = collection.store.get(len(texts) - 1)
    client.put("/v1/collections/bf/points", json={"points": [{"id": len(texts) - 1, "text": "A user's own rewrite.", "payload": {"user": True}}]})
    serving = collection.serving
    ack = collection.write(collection.inputs.prepare([PointInput(id=stale.id, text=stale.text, payload=stale.payload)], serving), serving, expected_rows=[stale.row])
    assert ack.count == 0
    assert client.get(f"/v1/collections/bf/points/{len(texts) - 1}").json()["payload"] == {"user": True}

    # Running it again continues; a user upsert while it runs is not overwritten.
    rerun = client.post(f"/v1/collections/bf/upgrades/{upgrade_id}/backfill", json={"rate": 200}).json()["job_id"]
    client.put("/v1/collections/bf/points", json={"points": [{"id": len(texts) - 2, "text": "Another rewrite by the user.", "payload": {"user": True}}]})
    job = _wait(client, rerun)
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["without_text"] == 2 and result["complete"] is False and result["index_space"] == "mapped"
    still_old = len(texts) - sum(v == 2 for v in versions.values()) - 1
    # The user's rewrite may land before the job counts its candidates or after; the job re-encodes it only if it got there first.
    assert result["candidates"] in (still_old, still_old - 1)
    assert result["reencoded"] in (still_old - 1, still_old)
    assert result["changed_meanwhile"] == (1 if result["candidates"] > result["reencoded"] else 0)
    for i in (len(texts) - 2, len(texts) - 1):
        point = client.get(f"/v1/collections/bf/points/{i}").json()
        assert point["payload"] == {"user": True} and point["model_version"] == 2
    texts[-2:] = ["Another rewrite by the user.", "A user's own rewrite."]
    new_vectors[-2:] = l2_normalize(compat.encode_docs(registry.get("minilm-l6").encode_docs(texts[-2:])))
    assert set(check_against_fresh_collection("full").values()) == {2}
    assert _versions(client, "bf", ["vec0", "vec1"]) == {"vec0": 1, "vec1": 1}


def test_a_backfill_embeds_a_window_in_one_call_and_commits_it_a_chunk_at_a_time(
    make_client: Callable[..., TestClient], models_dir: Path, static_model: str, sentences: list[str], registry: ModelRegistry
) -> None:
    """Embedding each 256-point transaction alone sorted and padded it apart from the rest (0.6x the rate of
    the whole set at once); the window is embedded first, in one call, then written CHUNK points a transaction."""
    from index.models import backfill

    client = make_client(models_dir=models_dir)
    texts = sentences[:600]
    upgrade_id = _promoted_collection(client, "win", static_model, texts, sample=300)
    collection = client.app.state.catalog.get("win")  # type: ignore[attr-defined]
    seq_before = collection.store.last_seq
    reports: list[tuple[float, int]] = []
    result = backfill.run_backfill(collection, upgrade_id, None, lambda fraction, done, total: reports.append((fraction, done)))
    assert result["reencoded"] == len(texts) and backfill.CHUNK < len(texts) <= backfill.WINDOW
    # Before the first commit, the embedding had passed the first transaction's points: they were embedded together.
    assert max(fraction for fraction, done in reports if done == 0) == 1.0
    assert [done for fraction, done in reports if fraction == 1.0 and done] == [256, 512, 600, 600]  # then written 256 a transaction
    assert collection.store.last_seq - seq_before == 3
    stored = np.stack([collection.get(i, with_vector=True).vector for i in (0, 300, 599)])
    fresh = collection.inputs.to_index(registry.get("minilm-l6").encode_docs([texts[i] for i in (0, 300, 599)]), collection.serving)
    assert (stored * fresh).sum(axis=1).min() > 0.9999  # each vector went back to its own point


def test_kill_9_during_a_backfill_keeps_committed_chunks_and_a_rerun_finishes(start_server: Callable[..., ServerProcess], models_dir: Path, static_model: str, sentences: list[str]) -> None:
    texts = sentences[:600]
    server = start_server(TROVE_MODELS_DIR=str(models_dir))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        upgrade_id = _promoted_collection(http, "bk", static_model, texts, sample=300)
        job_id = http.post(f"/v1/collections/bk/upgrades/{upgrade_id}/backfill", json={"rate": 100}).json()["job_id"]
        _running_past(http, job_id, lambda job: job["done"] >= 100)
    server.kill9()

    restarted = start_server(TROVE_MODELS_DIR=str(models_dir))
    with httpx.Client(base_url=restarted.url, timeout=60) as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "failed" and job["error"]["code"] == "interrupted"
        assert http.get("/v1/collections/bk").json()["points"] == len(texts)
        versions = _versions(http, "bk", list(range(len(texts))))
        assert 100 <= sum(v == 2 for v in versions.values()) < len(texts), versions
        # The replayed index agrees with the store: every point, old or new, is its own nearest neighbour
        # (tied with texts of the same words while the static model embeds both).
        for i in (0, 1, 299, 300, 598, 599):
            vector = http.get(f"/v1/collections/bk/points/{i}?with_vector=true").json()["vector"]
            hits = http.post("/v1/collections/bk/query", json={"vector": vector, "k": 3}).json()["results"]
            assert hits[0]["score"] > 0.9999 and i in [h["id"] for h in hits if h["score"] > hits[0]["score"] - 1e-5], (i, hits)
        rerun = _wait(http, http.post(f"/v1/collections/bk/upgrades/{upgrade_id}/backfill").json()["job_id"])
        assert rerun["state"] == "succeeded" and rerun["result"]["reencoded"] == sum(v == 1 for v in versions.values()), rerun
        assert rerun["result"]["complete"] is True
        assert set(_versions(http, "bk", list(range(len(texts)))).values()) == {2}
        assert http.post("/v1/collections/bk/query", json={"text": texts[7], "k": 1}).json()["results"][0]["id"] == 7


SERVING_KEYS = ("model", "models", "dim", "points")


def _top10(http: TestClient, collection: str, texts: list[str]) -> list[list[tuple[Any, float]]]:
    response = http.post(f"/v1/collections/{collection}/query/batch", json={"queries": [{"text": t, "k": 10, "with_payload": False} for t in texts]})
    assert response.status_code == 200, response.text
    return [[(h["id"], h["score"]) for h in r] for r in response.json()["results"]]


def test_native_rebuild_after_a_backfill_equals_a_fresh_collection_of_the_new_model(
    make_client: Callable[..., TestClient], models_dir: Path, static_model: str, sentences: list[str], registry: ModelRegistry, tmp_path: Path
) -> None:
    from encoders.errors import Conflict
    from index.models import rebuild, upgrades

    client = make_client(models_dir=models_dir)
    texts = {i: t for i, t in enumerate(sentences[:300])}
    client.post("/v1/collections", json={"name": "nat", "model": static_model})
    client.put("/v1/collections/nat/points", json={"points": [{"id": i, "text": t, "payload": {"n": i}} for i, t in texts.items()]})
    upgrade_id = _promoted_upgrade(client, "nat", sample=300)
    collection = client.app.state.catalog.get("nat")  # type: ignore[attr-defined]
    refused = client.post(f"/v1/collections/nat/upgrades/{upgrade_id}/rebuild")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "backfill_incomplete", refused.text
    assert refused.json()["error"]["details"] == {"older_version_points": 300, "without_text": 0}
    with pytest.raises(Conflict) as not_query_side:
        rebuild.check_rebuildable(collection, {**upgrades.load_record(collection, upgrade_id), "mode": "reproject"})
    assert not_query_side.value.code == "rebuild_needs_query_side"
    assert _wait(client, client.post(f"/v1/collections/nat/upgrades/{upgrade_id}/backfill").json()["job_id"])["result"]["complete"] is True
    client.put("/v1/collections/nat/points", json={"points": [{"id": "bare", "vector": [1.0] * 256}]})
    refused = client.post(f"/v1/collections/nat/upgrades/{upgrade_id}/rebuild")
    assert refused.json()["error"]["details"] == {"older_version_points": 0, "without_text": 1}, refused.text
    client.post("/v1/collections/nat/points/delete", json={"ids": ["bare"]})
    mapped = _top10(client, "nat", QUERIES)
    info_before = client.get("/v1/collections/nat").json()

    # As a job: cancelled during its first window, it leaves the collection as it was, copy and segments removed.
    started = client.post(f"/v1/collections/nat/upgrades/{upgrade_id}/rebuild")
    assert started.status_code == 202
    client.delete(f"/v1/jobs/{started.json()['job_id']}")
    job = _wait(client, started.json()["job_id"])
    assert job["state"] == "cancelled" and job["kind"] == "rebuild", job
    assert [j["kind"] for j in client.get("/v1/jobs?collection=nat").json()["jobs"]][0] == "rebuild"
    assert {k: v for k, v in client.get("/v1/collections/nat").json().items() if k in SERVING_KEYS} == {k: info_before[k] for k in SERVING_KEYS}
    root = tmp_path / "data" / "collections" / "nat"
    assert not list(root.glob("store-*-native*")) and not list(root.glob("segments-store-*-native"))
    assert _top10(client, "nat", QUERIES) == mapped

    # Run in this thread: writes landing while it runs (here, after its first window) are carried over by the catch-up.
    def write_meanwhile(fraction: float, done: int, total: int) -> None:
        if done and "late" not in texts:
            texts.update({"late": "Return the number of items in a container.", 5: "A rewrite of point five by its user."})
            client.put("/v1/collections/nat/points", json={"points": [{"id": i, "text": texts[i]} for i in ("late", 5)]})
            client.post("/v1/collections/nat/points/delete", json={"ids": [7]})
            del texts[7]

    report = rebuild.run_rebuild(collection, upgrade_id, write_meanwhile)
    assert report["caught_up"] == {"added": 2, "removed": 2} and report["points"] == 300 and report["index_space"] == "native", report
    info = client.get("/v1/collections/nat").json()
    assert info["dim"] == 384 and info["points"] == 300 and info["model"] == "minilm-l6"
    assert [(m["version"], m["serving"], m["retired"]) for m in info["models"]] == [(1, False, True), (2, False, True), (3, True, False)]
    assert set(_versions(client, "nat", list(texts)).values()) == {3}

    # What a fresh collection of the new model holding the same points answers: the same top-10, the same scores.
    client.post("/v1/collections", json={"name": "fresh", "model": "minilm-l6"})
    client.put("/v1/collections/fresh/points", json={"points": [{"id": i, "text": t} for i, t in texts.items()]})
    probes = [*QUERIES, texts[0], texts[150], texts["late"]]
    rebuilt, fresh = _top10(client, "nat", probes), _top10(client, "fresh", probes)
    assert [[i for i, _ in r] for r in rebuilt] == [[i for i, _ in r] for r in fresh]
    np.testing.assert_allclose([[s for _, s in r] for r in rebuilt], [[s for _, s in r] for r in fresh], atol=1e-5)
    assert rebuilt[: len(QUERIES)] != mapped  # no longer through the map
    stored = client.get("/v1/collections/nat/points/0?with_vector=true").json()["vector"]
    np.testing.assert_allclose(stored, l2_normalize(registry.get("minilm-l6").encode_docs([texts[0]]))[0], atol=1e-5)

    # Nothing maps the older versions into the new space: rollbacks and the old upgrade's steps are refused.
    for step, code in (("rollback", "version_retired"), ("promote", "version_retired"), ("rebuild", "already_rebuilt"), ("backfill", "not_serving")):
        answer = client.post(f"/v1/collections/nat/upgrades/{upgrade_id}/{step}")
        assert answer.status_code == 409 and answer.json()["error"]["code"] == code, (step, answer.text)
    client.put("/v1/collections/nat/points", json={"points": [{"id": "after", "text": "Open a file and read its lines."}]})
    client.put("/v1/collections/fresh/points", json={"points": [{"id": "after", "text": "Open a file and read its lines."}]})
    after_nat, after_fresh = _top10(client, "nat", QUERIES), _top10(client, "fresh", QUERIES)  # a new point is embedded natively too
    assert [[i for i, _ in r] for r in after_nat] == [[i for i, _ in r] for r in after_fresh]
    np.testing.assert_allclose([[s for _, s in r] for r in after_nat], [[s for _, s in r] for r in after_fresh], atol=1e-5)


def test_kill_9_during_a_rebuild_leaves_the_mapped_collection_and_a_rerun_finishes(
    start_server: Callable[..., ServerProcess], models_dir: Path, static_model: str, sentences: list[str], tmp_path: Path
) -> None:
    texts = sentences[:600]
    server = start_server(TROVE_MODELS_DIR=str(models_dir))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        upgrade_id = _promoted_collection(http, "rk", static_model, texts, sample=300)
        assert _wait(http, http.post(f"/v1/collections/rk/upgrades/{upgrade_id}/backfill").json()["job_id"])["result"]["complete"] is True
        before = _ids(http, "rk", QUERIES)
        info_before = http.get("/v1/collections/rk").json()
        job_id = http.post(f"/v1/collections/rk/upgrades/{upgrade_id}/rebuild").json()["job_id"]
        _running_past(http, job_id, lambda job: job["state"] == "running")
    server.kill9()

    restarted = start_server(TROVE_MODELS_DIR=str(models_dir))
    with httpx.Client(base_url=restarted.url, timeout=60) as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "failed" and job["error"]["code"] == "interrupted"
        info = http.get("/v1/collections/rk").json()
        assert {k: info[k] for k in SERVING_KEYS} == {k: info_before[k] for k in SERVING_KEYS}
        assert _ids(http, "rk", QUERIES) == before
        root = tmp_path / "data" / "collections" / "rk"
        assert sorted(p.name for p in root.glob("store*.sqlite")) == ["store.sqlite"] and not list(root.glob("segments-*"))  # the copy is gone
        rerun = _wait(http, http.post(f"/v1/collections/rk/upgrades/{upgrade_id}/rebuild").json()["job_id"])
        assert rerun["state"] == "succeeded" and rerun["result"]["points"] == len(texts), rerun
        assert http.get("/v1/collections/rk").json()["dim"] == 384
        assert http.post("/v1/collections/rk/query", json={"text": texts[7], "k": 1}).json()["results"][0]["id"] == 7
    assert sorted(p.name for p in root.glob("store*.sqlite")) == [f"store-{upgrade_id}-native.sqlite"] and not (root / "segments").exists()


MULTI = {"k_sim": 3, "d_proj": 16, "r_reps": 10, "projection": "ams", "seed": 5, "max_tokens": 256}


def _chamfer_ranking(queries: list[np.ndarray], tokens: dict[Any, np.ndarray]) -> list[list[tuple[Any, float]]]:
    """Every point by exact Chamfer, best first, per query."""
    from encoders.transforms.chamfer import chamfer_scores

    ids = list(tokens)
    scores = chamfer_scores(queries, [tokens[i] for i in ids])
    return [[(ids[j], float(row[j])) for j in np.argsort(-row, kind="stable")] for row in scores]


def _hits(http: TestClient, collection: str, texts: list[str], params: dict[str, Any]) -> list[list[tuple[Any, float]]]:
    queries = [{"text": t, "k": 10, "with_payload": False, "params": params} for t in texts]
    response = http.post(f"/v1/collections/{collection}/query/batch", json={"queries": queries})
    assert response.status_code == 200, response.text
    return [[(h["id"], h["score"]) for h in r] for r in response.json()["results"]]


def _same_ranking(found: list[list[tuple[Any, float]]], truth: list[list[tuple[Any, float]]], tie: float = 1e-4) -> None:
    """The top of the full ``truth`` ranking: the same scores at every rank, and the same ids but where two scores tie
    within ``tie`` (points whose token sets score alike, which float32 sums may order either way)."""
    for got, ranking in zip(found, truth, strict=True):
        want = ranking[: len(got)]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=tie)
        scores = dict(ranking)
        assert all(i == j or abs(scores[i] - s) < tie for (i, s), (j, _) in zip(got, want, strict=True)), (got, want)


def test_a_multi_vector_upgrade_maps_token_vectors_and_keeps_the_exact_chamfer_top10(
    make_client: Callable[..., TestClient], models_dir: Path, static_model: str, sentences: list[str], registry: ModelRegistry, tmp_path: Path
) -> None:
    """static 256-d -> MiniLM on a multi-vector collection: the map fitted on pooled token sets takes every query and
    new token into the index's token space; FDE candidates reranked by Chamfer answer as exact Chamfer there does."""
    client = make_client(models_dir=models_dir)
    texts = {i: t for i, t in enumerate(sentences[:120])}
    assert client.post("/v1/collections", json={"name": "mvu", "model": static_model, "multivector": True, "muvera": MULTI}).status_code == 201
    client.put("/v1/collections/mvu/points", json={"points": [{"id": i, "text": t} for i, t in texts.items()]})
    job = _wait(client, client.post("/v1/collections/mvu/upgrades", json={"model": "minilm-l6", "sample": 120}).json()["job_id"])
    assert job["state"] == "succeeded", job
    report = job["result"]
    for key in ("m_old_old", "m_new_old", "m_new_new", "gap_recovered", "fraction_of_new", "criterion_holds", "fit_seconds", "backfill_estimate_seconds"):
        assert key in report, key
    assert report["metrics"]["neighbour_recall"]["new_new"] == 1.0 and report["sample"]["held_out"] == 24
    assert 0.0 < report["m_new_old"] <= 1.0 and 0.0 < report["m_old_old"] < 1.0, report
    upgrade_id = report["upgrade_id"]
    assert client.post(f"/v1/collections/mvu/upgrades/{upgrade_id}/promote", json={"force": True}).status_code == 200
    compat = Transform.load(tmp_path / "data" / "collections" / "mvu" / "upgrades" / upgrade_id / "map")
    minilm = registry.get("minilm-l6")

    def mapped(sets: list[np.ndarray]) -> list[np.ndarray]:
        return [l2_normalize(compat.encode_queries(s)) for s in sets]

    def stored() -> dict[Any, np.ndarray]:
        points = client.post("/v1/collections/mvu/points/scroll", json={"limit": 1024, "with_vector": True}).json()["points"]
        return {p["id"]: np.asarray(p["vectors"], np.float32) for p in sorted(points, key=lambda p: p["id"])}

    # Old points keep the static model's tokens; MiniLM query tokens go through the map, token by token.
    old_tokens = stored()
    static_tokens = ModelRegistry(models_dir).get(static_model).encode_tokens([texts[i] for i in texts])
    for i, tokens in zip(texts, static_tokens, strict=True):
        np.testing.assert_allclose(old_tokens[i], tokens, atol=1e-5)
    truth = _chamfer_ranking(mapped(minilm.encode_tokens(QUERIES)), old_tokens)
    _same_ranking(_hits(client, "mvu", QUERIES, {"exact": True}), truth)
    _same_ranking(_hits(client, "mvu", QUERIES, {"oversample": 20}), truth)  # the FDEs shortlist every point: their rerank is exact
    # A point written now stores MiniLM's tokens mapped, and its FDE comes from them; the backfill re-encodes the old ones.
    client.put("/v1/collections/mvu/points", json={"points": [{"id": "new", "text": texts[3]}]})
    np.testing.assert_allclose(client.get("/v1/collections/mvu/points/new?with_vector=true").json()["vectors"], mapped(minilm.encode_tokens([texts[3]]))[0], atol=1e-5)
    client.post("/v1/collections/mvu/points/delete", json={"ids": ["new"]})
    done = _wait(client, client.post(f"/v1/collections/mvu/upgrades/{upgrade_id}/backfill").json()["job_id"])
    assert done["state"] == "succeeded" and done["result"]["reencoded"] == len(texts) and done["result"]["complete"], done
    new_tokens = stored()
    expected = mapped(minilm.encode_tokens([texts[i] for i in texts]))
    for i, tokens in zip(texts, expected, strict=True):
        np.testing.assert_allclose(new_tokens[i], tokens, atol=1e-5)
    truth = _chamfer_ranking(mapped(minilm.encode_tokens(QUERIES)), new_tokens)
    _same_ranking(_hits(client, "mvu", QUERIES, {"exact": True}), truth)
    _same_ranking(_hits(client, "mvu", QUERIES, {"oversample": 20}), truth)
    default = _hits(client, "mvu", QUERIES, {})
    assert np.mean([len({i for i, _ in f} & {i for i, _ in t[:10]}) / 10 for f, t in zip(default, truth, strict=True)]) >= 0.8
    refused = client.post(f"/v1/collections/mvu/upgrades/{upgrade_id}/rebuild")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "rebuild_unsupported", refused.text
