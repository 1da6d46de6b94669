"""Learned binary codes (encoders/transforms/bebr.py): save/load and determinism, equal-bytes recall against sign codes
on real MiniLM vectors, the spec's refusals, both coarse scorings in the fit report, the upgrade refusal; and the HTTP
path on a real `trove serve` (create, build which fits, query, restart, query). Real encoder, FAISS, SQLite, uvicorn."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.errors import Conflict, InvalidInput
from encoders.registry import ModelRegistry
from encoders.transforms.base import Transform
from encoders.transforms.bebr import LearnedBinaryQuantizer, _beats
from encoders.transforms.binary import BinaryQuantizer
from encoders.transforms.matryoshka import Matryoshka
from index.compression.spec import CompressionSpec
from index.models.upgrades import UpgradeOptions, check_upgrade
from tests.conftest import ServerProcess
from tests.test_compression_api import wait_job
from tests.test_compression_defaults import make_collection, recall

INDEXED = 2600


def candidate_recall(scores: np.ndarray, truth: np.ndarray, depth: int) -> float:
    """Share of each query's exact top-10 among its ``depth`` best-scored rows: recall@10 after an exact rerank."""
    found = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]))


def test_round_trip_is_bit_exact_and_fitting_is_deterministic(sentence_vectors: np.ndarray, tmp_path: Path) -> None:
    docs, queries = sentence_vectors[:2000], sentence_vectors[2000:2050]
    first = LearnedBinaryQuantizer(2, code_bits=192, max_samples=1500, epochs=2).fit(docs)
    again = LearnedBinaryQuantizer(2, code_bits=192, max_samples=1500, epochs=2).fit(docs)
    codes = first.encode_docs(docs)
    assert codes.shape == (2000, 2 * 24) and codes.dtype == np.uint8 and first.code_size == 48
    assert all(torch.equal(first.tensors[name], again.tensors[name]) for name in first.tensors)
    assert np.array_equal(codes, again.encode_docs(docs))

    first.save(tmp_path / "q")
    loaded = Transform.load(tmp_path / "q")
    assert isinstance(loaded, LearnedBinaryQuantizer) and loaded.config() == first.config()
    assert np.array_equal(loaded.encode_docs(docs), codes) and np.array_equal(loaded.query_bits(queries), first.query_bits(queries))
    assert np.array_equal(loaded.score(queries, codes), first.score(queries, codes))
    # Scoring the codes equals scoring their reconstructions (the decoder is linear per step).
    assert np.allclose(first.score(queries, codes), queries @ first.decode(codes).T, atol=1e-4)
    training = json.loads((tmp_path / "q" / "config.json").read_text())["provenance"]["training"]
    assert len(training["steps"]) == 2 and training["train_rows"] + training["held_rows"] == 1500


def test_learned_codes_beat_sign_codes_at_equal_bytes(sentence_vectors: np.ndarray, word_queries: np.ndarray) -> None:
    """24 bytes per vector: 192 learned bits against the signs of a 192-d prefix (the sign code's way to 24 bytes)."""
    docs, queries = sentence_vectors[:INDEXED], np.concatenate([word_queries[:150], sentence_vectors[INDEXED:INDEXED + 150]])
    truth = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :10]
    learned = LearnedBinaryQuantizer(1, code_bits=192).fit(docs)
    prefix = Matryoshka(192).fit(docs)
    sign = BinaryQuantizer(1).fit(prefix.encode_docs(docs))
    assert learned.code_size == sign.code_size == 24
    learned_scores = learned.score(queries, learned.encode_docs(docs))
    sign_scores = sign.score(prefix.encode_queries(queries), sign.encode_docs(prefix.encode_docs(docs)))
    for depth in (40, 80):
        assert candidate_recall(learned_scores, truth, depth) >= candidate_recall(sign_scores, truth, depth) + 0.03


BAD = [
    ({"quantizer": {"kind": "int8", "learned": True}}, "invalid_quantizer"),
    ({"quantizer": {"kind": "lvq8", "scoring": "asymmetric"}}, "invalid_quantizer"),
    ({"quantizer": {"kind": "binary", "scoring": "hamming"}}, "invalid_quantizer"),
    ({"quantizer": {"kind": "binary", "code_bits": 192}}, "invalid_bits"),
    ({"quantizer": {"kind": "binary", "learned": True, "code_bits": 100}}, "invalid_bits"),
    ({"quantizer": {"kind": "binary", "learned": True, "code_bits": 2048}}, "invalid_bits"),
    ({"quantizer": {"kind": "binary", "learned": True, "bits": 5}}, "invalid_bits"),
    ({"quantizer": {"kind": "binary", "learned": "yes"}}, "invalid_compression"),
]


def test_query_samples_choose_the_epochs_over_held_vectors_no_step_trained_on(sentence_vectors: np.ndarray, word_queries: np.ndarray) -> None:
    """Each epoch is measured on held vectors, never on rows a step trained on (over the training rows, on WordNet,
    codes that ranked better there ranked lemma queries over the corpus worse), by the given query samples when
    there are enough: the recall recorded is the samples' exact top-10 over the held vectors, found among 40
    candidates scored against the kept codes."""
    docs, samples = sentence_vectors[:2000], word_queries[:100]
    coder = LearnedBinaryQuantizer(code_bits=192, max_samples=len(docs), epochs=2).fit(docs, samples)
    training = coder.provenance["training"]
    assert training["epochs_chosen_by"] == "100 query samples over the held vectors"
    # Two starts competed: the documents' principal directions and those of documents and queries together.
    step = training["steps"][0]
    assert len(step["start_recalls"]) == 2 and step["held_recall_initial"] in step["start_recalls"]
    assert step["started_from"] == ("documents' principal directions", "documents' and queries' principal directions")[step["start_recalls"].index(step["held_recall_initial"])]
    # The fit holds out the first HELD_SHARE of its seeded permutation of the sample (here every row).
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(0)).numpy()
    held = docs[order[: training["held_rows"]]]
    assert training["held_rows"] == 600 and training["train_rows"] == 1400
    truth = np.argsort(-(samples @ held.T), axis=1, kind="stable")[:, :10]
    assert candidate_recall(coder.score(samples, coder.encode_docs(held)), truth, 40) == pytest.approx(training["steps"][0]["held_recall"], abs=1e-3)

    # Too few samples: the held vectors choose, each a query over the others.
    few = LearnedBinaryQuantizer(code_bits=192, max_samples=len(docs), epochs=2).fit(docs, samples[:19])
    assert few.provenance["training"]["epochs_chosen_by"] == "held vectors, each a query over the others"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([i / 10 for i in range(11)]), min_size=2, max_size=60), st.data())
def test_a_start_or_epoch_is_replaced_only_by_a_gain_beyond_the_probe_noise(old: list[float], data: st.DataObject) -> None:
    """A tie or a loss never replaces what is kept; a gain by every query always does; a gain of a single query among
    many (what the probe's noise gives) does not."""
    kept = torch.tensor(old)
    assert not _beats(kept, kept)
    lower = torch.tensor([max(r - 0.1, 0.0) for r in old])
    assert not _beats(lower, kept)
    if all(r <= 0.9 for r in old):
        assert _beats(kept + 0.1, kept)
    one = data.draw(st.integers(0, len(old) - 1))
    single = kept.clone()
    single[one] = min(float(single[one]) + 0.1, 1.0)
    if len(old) >= 8:
        assert not _beats(single, kept)


@pytest.mark.parametrize(("config", "code"), BAD)
def test_spec_refuses_what_learned_codes_cannot_do(config: dict, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        CompressionSpec.from_json(config).validate(384, "cosine", "flat", 0)
    assert refused.value.code == code


def test_fit_report_measures_both_scorings_and_upgrades_refuse(tmp_path: Path, registry: ModelRegistry, sentence_vectors: np.ndarray, word_queries: np.ndarray) -> None:
    docs = sentence_vectors[:INDEXED]
    catalog, collection = make_collection(tmp_path, registry, docs)
    collection.query_batch([collection_query(q) for q in word_queries[:100]])
    spec = CompressionSpec.from_json({"quantizer": {"kind": "binary", "learned": True, "code_bits": 192}})
    report = collection.compression.fit(spec, None, lambda *a: None)
    # Without query samples the recent queries choose the epochs: three quarters of them; the fit measures on the rest.
    assert report["held_queries"]["queries"] == {"count": 25, "from": "the collection's recent queries that the learned binary codes did not learn from"}
    assert collection.compression.fitted.pipeline.stages[-1].provenance["training"]["epochs_chosen_by"] == "75 query samples over the held vectors"
    assert [s["name"] for s in report["stages"]] == ["learned-binary1x192 hamming", "learned-binary1x192 asymmetric", "float32 rerank"]
    assert report["stages"][0]["bytes_per_vector"] == report["stages"][1]["bytes_per_vector"] == 24
    scoring = report["scoring"]
    assert scoring["serving"] == "symmetric" and set(scoring) == {"serving", "symmetric", "asymmetric"}
    for mode in ("symmetric", "asymmetric"):
        assert scoring[mode]["reached"] and min(scoring[mode]["recall_at_10"].values()) >= 0.95 and scoring[mode]["ms_per_query"] > 0
    assert recall(collection, word_queries[200:300], docs) >= 0.9

    # The asymmetric scoring serves when the config says so: one coarse stage, no Hamming shortlist.
    asymmetric = CompressionSpec.from_json({"quantizer": {"kind": "binary", "learned": True, "scoring": "asymmetric"}})
    report = collection.compression.fit(asymmetric, None, lambda *a: None)
    assert [s["name"] for s in report["stages"]] == ["learned-binary1x384 asymmetric", "float32 rerank"] and report["scoring"]["serving"] == "asymmetric"
    assert recall(collection, word_queries[200:300], docs) >= 0.9

    with pytest.raises(Conflict) as refused:
        check_upgrade(collection, UpgradeOptions(model="minilm-l12"))
    assert refused.value.code == "upgrade_learned_codes"
    catalog.close()


def collection_query(vector: np.ndarray):  # type: ignore[no-untyped-def]
    from index.requests import Query

    return Query(vector=vector, k=10, with_payload=False)


def test_learned_codes_over_http_survive_a_restart(start_server: Callable[..., ServerProcess], tmp_path: Path, sentence_vectors: np.ndarray) -> None:
    server = start_server()
    source = tmp_path / "points.jsonl"
    source.write_text("".join(json.dumps({"id": i, "vector": v.tolist()}) + "\n" for i, v in enumerate(sentence_vectors[:1500])))
    config = {"quantizer": {"kind": "binary", "bits": 2, "learned": True, "code_bits": 256}, "rerank": {"oversample": 20}}
    probe = {"vector": sentence_vectors[7].tolist(), "k": 5}
    with httpx.Client(base_url=server.url, timeout=120) as http:
        bad = http.post("/v1/collections", json={"name": "bad", "compression": {"quantizer": {"kind": "binary", "code_bits": 256}}})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_bits"
        assert http.post("/v1/collections", json={"name": "docs", "compression": config}).status_code == 201
        job = wait_job(http, http.post("/v1/collections/docs/builds", json={"source": {"path": str(source), "format": "jsonl"}}).json()["job_id"])
        assert job["state"] == "succeeded", job
        compression = http.get("/v1/collections/docs/compression").json()
        assert compression["compression"]["quantizer"] == {"kind": "binary", "bits": 2, "learned": True, "code_bits": 256, "scoring": "symmetric"}
        assert [s["name"] for s in compression["stages"]] == ["learned-binary2x256 hamming", "learned-binary2x256 asymmetric", "float32 rerank"]
        before = http.post("/v1/collections/docs/query", json=probe).json()["results"]
        assert before[0]["id"] == 7
    server.stop()
    server = start_server(data_dir=tmp_path / "data")
    with httpx.Client(base_url=server.url, timeout=120) as http:
        assert http.post("/v1/collections/docs/query", json=probe).json()["results"] == before
    server.stop()
