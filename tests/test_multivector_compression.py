"""Compressed FDEs: a multi-vector collection's FDEs through the compression pipeline (binary codes with
rescoring, real FAISS), the exact Chamfer rerank unchanged, fitted state kept across a restart; and the FDE
options (documents' and queries' empty partitions) from the HTTP settings to the saved transform."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encoders.errors import InvalidInput
from encoders.transforms.base import Pipeline, Transform
from encoders.transforms.chamfer import chamfer_scores
from encoders.transforms.muvera import MuveraFDE
from tests.test_builds import wait

MUVERA = {"k_sim": 3, "d_proj": 16, "r_reps": 10, "projection": "ams", "seed": 5, "max_tokens": 100}  # 1280-d FDEs
N_DOCS = 200
QUERIES = ["reading a file from disk", "parse command line arguments", "a network socket connection", "random numbers", "date and time"]



def _results(client: TestClient, tokens: np.ndarray, **params: Any) -> list[dict[str, Any]]:
    answer = client.post("/v1/collections/mv/query", json={"vectors": tokens.tolist(), "k": 10, "params": params})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["results"])


def _fill(client: TestClient, doc_tokens: list[np.ndarray], **extra: Any) -> None:
    assert client.post("/v1/collections", json={"name": "mv", "multivector": True, "muvera": MUVERA, **extra}).status_code == 201
    assert client.put("/v1/collections/mv/points", json={"points": [{"id": i, "vectors": t.tolist()} for i, t in enumerate(doc_tokens)]}).status_code == 200


def test_binary_fde_codes_keep_the_exact_chamfer_rerank(
    make_client: Callable[..., TestClient], doc_tokens: list[np.ndarray], query_tokens: list[np.ndarray]
) -> None:
    client = make_client()
    _fill(client, doc_tokens)
    float_bytes = client.get("/v1/collections/mv").json()["memory_bytes"]
    answer = client.put("/v1/collections/mv/compression", json={"quantizer": {"kind": "binary", "bits": 2}, "rerank": {"oversample": 4, "storage": "mmap"}})
    assert answer.status_code == 202, answer.text
    job = wait(client, answer.json()["job_id"])
    assert job["state"] == "succeeded", job
    info = client.get("/v1/collections/mv").json()
    assert info["compression"]["state"] == "fitted" and info["muvera"]["fde_dim"] == 1280
    assert [s["name"] for s in info["stages"]] == ["binary2 hamming", "binary2 asymmetric", "float32 rerank", "tokens float32"]
    assert info["stages"][1]["bytes_per_vector"] == 2 * 1280 // 8 and info["stages"][-1]["bytes_per_vector"] == 4 * 384
    # 2-bit codes in RAM, the float FDEs memory-mapped: the resident index is a fraction of the float32 one.
    assert info["memory_bytes"] <= float_bytes / 8
    exact = chamfer_scores(query_tokens, doc_tokens)
    found = 0
    for q, tokens in enumerate(query_tokens):
        truth = [int(i) for i in np.argsort(-exact[q], kind="stable")[:10]]
        # Candidates from the compressed FDE stages, ranked by exact Chamfer: scores are the exact ones.
        hits = _results(client, tokens, oversample=5)
        np.testing.assert_allclose([h["score"] for h in hits], exact[q, [h["id"] for h in hits]], rtol=1e-5)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        found += len({h["id"] for h in hits} & set(truth))
        # Reranking every point through the compressed stages is the exact answer.
        assert [h["id"] for h in _results(client, tokens, oversample=20)] == truth
    assert found >= 0.8 * 10 * len(QUERIES)
    before = [_results(client, t, oversample=5) for t in query_tokens]
    # A batch shares its FDE searches (in chunks bounded by what the rerank gathers): the same answers.
    batch = client.post("/v1/collections/mv/query/batch", json={"queries": [{"vectors": t.tolist(), "k": 10, "params": {"oversample": 5}} for t in query_tokens]})
    assert batch.status_code == 200
    for got, single in zip(batch.json()["results"], before, strict=True):
        assert [h["id"] for h in got] == [h["id"] for h in single]
        np.testing.assert_allclose([h["score"] for h in got], [h["score"] for h in single], rtol=1e-5)
    client.__exit__(None, None, None)
    again = make_client()
    assert again.get("/v1/collections/mv").json()["compression"]["state"] == "fitted"
    assert [_results(again, t, oversample=5) for t in query_tokens] == before


def test_compression_is_checked_against_the_fde_width(client: TestClient, doc_tokens: list[np.ndarray]) -> None:
    _fill(client, doc_tokens)
    # A prefix of an FDE is its first repetitions: 640 of the 1280 dims is wider than the tokens and valid.
    answer = client.put("/v1/collections/mv/compression", json={"matryoshka": {"dim": 640}})
    assert answer.status_code == 202, answer.text
    assert wait(client, answer.json()["job_id"])["state"] == "succeeded"
    too_wide = client.put("/v1/collections/mv/compression", json={"matryoshka": {"dim": 2000}})
    assert too_wide.status_code == 400 and too_wide.json()["error"]["code"] == "compression_dim_too_large"
    vector_sample = client.put("/v1/collections/mv/compression", json={"leanvec": {"dim": 64, "variant": "ood", "queries": [[0.1] * 384] * 40}})
    assert vector_sample.status_code == 400 and vector_sample.json()["error"]["code"] == "vector_not_supported"


def test_a_compression_given_at_creation_is_fitted_by_the_first_build(client: TestClient, tmp_path: Any, doc_tokens: list[np.ndarray]) -> None:
    created = client.post("/v1/collections", json={"name": "mv", "multivector": True, "muvera": MUVERA, "compression": {"quantizer": {"kind": "binary"}}})
    assert created.status_code == 201 and created.json()["compression"]["state"] == "unfitted"
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"id": i, "vectors": t.tolist()}) + "\n" for i, t in enumerate(doc_tokens)))
    job = wait(client, client.post("/v1/collections/mv/builds", json={"source": {"path": str(source), "format": "jsonl"}}).json()["job_id"])
    assert job["state"] == "succeeded" and job["result"]["compression"]["stages"][0]["name"] == "binary1 hamming", job


def test_fde_options_reach_the_saved_transform(client: TestClient, tmp_path: Any) -> None:
    info = client.post("/v1/collections", json={"name": "mv", "multivector": True, "muvera": {**MUVERA, "fill_empty": False, "query_fill_empty": True}}).json()
    assert info["muvera"]["fill_empty"] is False and info["muvera"]["query_fill_empty"] is True
    (stage,) = Pipeline.load(tmp_path / "data" / "collections" / "mv" / "pipeline").stages
    assert isinstance(stage, MuveraFDE) and stage.fill_empty_partitions is False and stage.query_fill_empty_partitions is True
    bad = client.post("/v1/collections", json={"name": "bad", "multivector": True, "muvera": {"fill_empty": "yes"}})
    assert bad.status_code == 422


def _single_token_fde(fill: bool, documents: bool) -> np.ndarray:
    fde = MuveraFDE(8, num_repetitions=3, num_simhash_projections=2, projection_type="identity", fill_empty_partitions=fill, query_fill_empty_partitions=fill, seed=3)
    token = np.random.default_rng(0).normal(size=(1, 8)).astype(np.float32)
    out = (fde.encode_docs if documents else fde.encode_queries)([token])[0]
    return out.reshape(3, 4, 8), token[0]  # type: ignore[return-value]


@pytest.mark.parametrize("documents", [True, False], ids=["documents", "queries"])
def test_filling_empty_partitions_is_a_per_side_option(documents: bool) -> None:
    blocks, token = _single_token_fde(False, documents)
    # One token lands in one partition per repetition; the other three stay empty.
    assert [(np.abs(r).sum(axis=1) > 0).sum() for r in blocks] == [1, 1, 1]
    filled, _ = _single_token_fde(True, documents)
    # Filled: every partition takes the set's nearest (here its only) token.
    np.testing.assert_allclose(filled, np.broadcast_to(token, filled.shape), rtol=1e-6)


def test_query_fill_is_saved_and_configs_saved_before_it_load_without_it(tmp_path: Any) -> None:
    fde = MuveraFDE(8, num_repetitions=2, num_simhash_projections=2, projection_type="ams", projection_dimension=4, query_fill_empty_partitions=True, seed=1)
    fde.save(tmp_path / "fde")
    loaded = Transform.load(tmp_path / "fde")
    assert isinstance(loaded, MuveraFDE) and loaded.query_fill_empty_partitions is True
    sets = [np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)]
    np.testing.assert_array_equal(loaded.encode_queries(sets), fde.encode_queries(sets))
    config = json.loads((tmp_path / "fde" / "config.json").read_text())
    del config["query_fill_empty_partitions"]
    (tmp_path / "fde" / "config.json").write_text(json.dumps(config))
    older = Transform.load(tmp_path / "fde")
    assert isinstance(older, MuveraFDE) and older.query_fill_empty_partitions is False
    with pytest.raises(InvalidInput, match="query_fill_empty_partitions must be a boolean"):
        MuveraFDE(8, query_fill_empty_partitions=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_rerank_gather_of_wide_vectors_stays_within_its_float_budget(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """The 10k muvera bench ran out of memory here: 256 queries x every candidate's 10,240-d FDE gathered at once.
    A batch shares its blocks among the threads its search may use: the same answer, within the same budget."""
    import tracemalloc

    import torch

    from index.compression import multistage

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 4096)).astype(np.float32)
    queries = rng.standard_normal((8, 4096)).astype(np.float32)
    rows = np.stack([rng.permutation(300) for _ in range(8)])
    rows[0, -3:] = -1  # past the end of a short shortlist: scored (row 0) and dropped later by the caller
    want = np.einsum("qcd,qd->qc", vectors[np.maximum(rows, 0)], queries)
    monkeypatch.setattr(multistage, "GATHER_FLOATS", 20 * 4096)  # 20 candidate rows per block (320 KiB)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    tracemalloc.start()
    try:
        got = multistage._gathered_dot(queries, vectors, rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        torch.set_num_threads(before)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    assert peak < 2 << 20, peak  # all at once would be 8 x 300 x 4096 floats: 39 MB


def test_compressed_batches_in_small_blocks_answer_as_one_block(
    make_client: Callable[..., TestClient], doc_tokens: list[np.ndarray], query_tokens: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    from index.compression import multistage

    client = make_client()
    _fill(client, doc_tokens)
    answer = client.put("/v1/collections/mv/compression", json={"quantizer": {"kind": "binary", "bits": 1}, "rerank": {"oversample": 10, "storage": "mmap"}})
    assert wait(client, answer.json()["job_id"])["state"] == "succeeded"
    body = {"queries": [{"vectors": t.tolist(), "k": 10, "params": {"oversample": 5, "fde_only": True}} for t in query_tokens]}
    whole = client.post("/v1/collections/mv/query/batch", json=body).json()["results"]
    monkeypatch.setattr(multistage, "GATHER_FLOATS", 1280 * 7)  # one query per block, 7 candidates per gather
    blocked = client.post("/v1/collections/mv/query/batch", json=body).json()["results"]
    assert [[h["id"] for h in r] for r in blocked] == [[h["id"] for h in r] for r in whole]
