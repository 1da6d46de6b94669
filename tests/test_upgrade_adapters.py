"""The residual MLP adapter (round trip, determinism, what it learns that a linear map cannot) and method "auto"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient

from encoders.base import l2_normalize
from encoders.registry import ModelRegistry
from encoders.transforms.base import Transform
from encoders.transforms.compat import CompatMap, ResidualMLP, make_compat
from index.models.upgrades import AUTO_METHODS
from tests.test_upgrades import QUERIES, _ids, _mapped_ids, _wait


def _pairs(registry: ModelRegistry, models_dir: Path, static_model: str, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Real pairs: the static model's vectors (source) and MiniLM's (target) of the same sentences."""
    texts = sentences[:1200]
    return ModelRegistry(models_dir).get(static_model).encode_docs(texts), registry.get("minilm-l6").encode_docs(texts)


def test_residual_mlp_round_trips_and_records_its_training(registry: ModelRegistry, models_dir: Path, static_model: str, sentences: list[str], tmp_path: Path) -> None:
    source, target = _pairs(registry, models_dir, static_model, sentences)
    mlp = make_compat("mlp", static_model, "minilm-l6", seed=3).fit_pair(source, target)
    mlp.save(tmp_path / "map")
    loaded = Transform.load(tmp_path / "map")
    assert isinstance(loaded, ResidualMLP) and loaded.seed == 3 and loaded.hidden == mlp.hidden  # type: ignore[attr-defined]
    assert np.array_equal(loaded.encode_queries(source[:50]), mlp.encode_queries(source[:50]))
    assert loaded.encode_docs(source[:50]).shape == (50, 384)
    training = loaded.provenance["training"]  # type: ignore[attr-defined]
    assert training["held_pairs"] == len(source) // 5 and 1 <= training["epochs_run"] <= mlp.epochs and training["best_epoch"] <= training["epochs_run"]


def test_residual_mlp_is_deterministic_per_seed(registry: ModelRegistry, models_dir: Path, static_model: str, sentences: list[str]) -> None:
    source, target = _pairs(registry, models_dir, static_model, sentences)
    first, again, other = (make_compat("mlp", "a", "b", seed=s).fit_pair(source, target) for s in (0, 0, 1))
    assert all(torch.equal(first.tensors[k], again.tensors[k]) for k in first.expected_tensors())
    assert not torch.equal(first.tensors["w1"], other.tensors["w1"])


def test_residual_mlp_learns_a_non_linear_map_a_linear_one_cannot() -> None:
    rng = np.random.default_rng(0)
    source = l2_normalize(rng.normal(size=(6000, 32)).astype(np.float32))
    mixing = rng.normal(size=(32, 48)).astype(np.float32)
    target = l2_normalize(np.tanh(3 * source @ mixing) + 0.5 * (source @ mixing) ** 2)
    train, test = slice(0, 5000), slice(5000, None)

    def held_cosine(compat: CompatMap) -> float:
        mapped = l2_normalize(compat.fit_pair(source[train], target[train]).encode_queries(source[test]))
        return float((mapped * target[test]).sum(axis=1).mean())

    # The capacity and training budget to learn this map are given here, not left to the defaults (sized for upgrades).
    ridge, mlp = held_cosine(make_compat("ridge", "a", "b")), held_cosine(ResidualMLP(hidden=512, epochs=60, patience=4))
    assert mlp > ridge + 0.05, (ridge, mlp)


def test_auto_keeps_the_method_best_on_the_held_out_sample_and_serves_it(make_client: Callable[..., TestClient], models_dir: Path, static_model: str, sentences: list[str], registry: ModelRegistry, tmp_path: Path) -> None:
    client = make_client(models_dir=models_dir)
    client.post("/v1/collections", json={"name": "auto", "model": static_model})
    client.put("/v1/collections/auto/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(sentences[:600])]})
    job = _wait(client, client.post("/v1/collections/auto/upgrades", json={"model": "minilm-l6", "sample": 600, "method": "auto"}).json()["job_id"])
    assert job["state"] == "succeeded", job
    report = job["result"]
    tried = report["auto"]["tried"]
    assert set(tried) == set(AUTO_METHODS) and report["requested_method"] == "auto"
    assert report["method"] == max(tried, key=lambda m: tried[m]["m_new_old"]) and report["m_new_old"] == tried[report["method"]]["m_new_old"]
    assert report["fraction_of_new"] == report["m_new_old"] / report["m_new_new"] and report["backfill_estimate_seconds"] > 0
    saved = Transform.load(tmp_path / "data" / "collections" / "auto" / "upgrades" / report["upgrade_id"] / "map")
    assert saved.kind == make_compat(report["method"], None, None).kind
    # Promoted, queries go through the chosen map.
    assert client.post(f"/v1/collections/auto/upgrades/{report['upgrade_id']}/promote", json={"force": True}).status_code == 200
    mapped = saved.encode_queries(registry.get("minilm-l6").encode_queries(QUERIES))
    assert _ids(client, "auto", QUERIES) == _mapped_ids(client, "auto", QUERIES, mapped)


def test_an_mlp_reprojection_maps_the_stored_vectors(make_client: Callable[..., TestClient], models_dir: Path, static_model: str, sentences: list[str], registry: ModelRegistry) -> None:
    client = make_client(models_dir=models_dir)
    client.post("/v1/collections", json={"name": "re", "model": static_model})
    client.put("/v1/collections/re/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(sentences[:500])]})
    job = _wait(client, client.post("/v1/collections/re/upgrades", json={"model": "minilm-l6", "sample": 500, "method": "mlp", "mode": "reproject"}).json()["job_id"])
    assert job["state"] == "succeeded" and job["result"]["method"] == "mlp", job
    promoted = client.post(f"/v1/collections/re/upgrades/{job['result']['upgrade_id']}/promote", json={"force": True})
    assert promoted.status_code == 202 and _wait(client, promoted.json()["job_id"])["state"] == "succeeded"
    info = client.get("/v1/collections/re").json()
    assert info["dim"] == 384 and info["model"] == "minilm-l6"
    native = registry.get("minilm-l6").encode_queries(QUERIES)
    assert _ids(client, "re", QUERIES) == _mapped_ids(client, "re", QUERIES, native)
