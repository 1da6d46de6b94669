"""Token vectors stored as float16 or int8 (muvera.token_storage): the codec, and collections that rerank with them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encoders.errors import InvalidInput
from encoders.transforms.chamfer import chamfer_scores
from index.token_codec import TokenCodec

N_DOCS = 150
MUVERA = {"k_sim": 3, "d_proj": 16, "r_reps": 10, "projection": "ams", "seed": 5}
QUERIES = ["reading a file from disk", "parse command line arguments", "a network socket connection", "random numbers", "date and time"]



@pytest.mark.parametrize(("storage", "bytes_per_token", "tolerance"), [("float32", 4 * 384, 0.0), ("float16", 2 * 384, 1e-3), ("int8", 384 + 4, None)])
def test_codec_round_trip(doc_tokens: list[np.ndarray], storage: str, bytes_per_token: int, tolerance: float | None) -> None:
    codec = TokenCodec(storage, 384)  # type: ignore[arg-type]
    assert codec.bytes_per_token == bytes_per_token
    for tokens in doc_tokens[:20]:
        blob = codec.encode(tokens)
        assert len(blob) == len(tokens) * bytes_per_token
        back = codec.decode(blob)
        assert back.dtype == np.float32 and back.shape == tokens.shape
        # int8: every coordinate within half a step of its token's scale (largest coordinate / 127).
        allowed = np.abs(tokens).max(axis=1, keepdims=True) / 127 / 2 + 1e-7 if tolerance is None else tolerance
        assert (np.abs(back - tokens) <= allowed).all()


def test_int8_keeps_a_zero_token_and_refuses_an_unknown_storage() -> None:
    codec = TokenCodec("int8", 4)
    tokens = np.array([[0.0, 0.0, 0.0, 0.0], [0.5, -0.25, 0.0, 1.0]], dtype=np.float32)
    back = codec.decode(codec.encode(tokens))
    assert np.array_equal(back[0], tokens[0])  # a zero token stays zero (scale 1, not a division by zero)
    assert back[1, 3] == pytest.approx(1.0) and back[1, 2] == 0.0  # the largest coordinate maps to 127 exactly
    np.testing.assert_allclose(back[1], tokens[1], atol=0.5 / 127)
    with pytest.raises(InvalidInput) as err:
        TokenCodec("bfloat16", 4)  # type: ignore[arg-type]
    assert err.value.code == "invalid_token_storage"


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_collection_reranks_with_compact_tokens_and_keeps_them_across_a_restart(
    make_client: Callable[..., TestClient], doc_tokens: list[np.ndarray], query_tokens: list[np.ndarray], sentences: list[str], storage: str
) -> None:
    client = make_client()
    created = client.post("/v1/collections", json={"name": "mv", "multivector": True, "muvera": MUVERA | {"token_storage": storage}})
    assert created.status_code == 201, created.text
    points = [{"id": i, "vectors": t.tolist(), "text": s} for i, (t, s) in enumerate(zip(doc_tokens, sentences, strict=False))]
    assert client.put("/v1/collections/mv/points", json={"points": points}).status_code == 200
    info = client.get("/v1/collections/mv").json()
    assert info["muvera"]["token_storage"] == storage
    stage = info["stages"][-1]
    assert (stage["name"], stage["bytes_per_vector"]) == (f"tokens {storage}", TokenCodec(storage, 384).bytes_per_token)  # type: ignore[arg-type]
    exact = chamfer_scores(query_tokens, doc_tokens)
    decoded = [TokenCodec(storage, 384).decode(TokenCodec(storage, 384).encode(t)) for t in doc_tokens]  # type: ignore[arg-type]
    stored_exact = chamfer_scores(query_tokens, decoded)
    found = 0
    for q, tokens in enumerate(query_tokens):
        body: dict[str, Any] = {"vectors": tokens.tolist(), "k": 10, "params": {"exact": True}}
        results = client.post("/v1/collections/mv/query", json=body).json()["results"]
        # Scores are Chamfer over the stored (approximated) tokens, close to the float32 ones.
        # (The server normalises the JSON tokens again under cosine: a rounding step may differ here and there.)
        np.testing.assert_allclose([r["score"] for r in results], stored_exact[q, [r["id"] for r in results]], atol=1e-3 * len(tokens))
        np.testing.assert_allclose([r["score"] for r in results], exact[q, [r["id"] for r in results]], atol=0.02 * len(tokens))
        found += len({r["id"] for r in results} & set(np.argsort(-exact[q], kind="stable")[:10].tolist()))
    assert found >= 0.9 * 10 * len(query_tokens)
    client.__exit__(None, None, None)
    again = make_client()
    got = again.get("/v1/collections/mv/points/3", params={"with_vector": True}).json()
    step = 1e-3 if storage == "float16" else float(np.abs(doc_tokens[3]).max()) / 127  # at most one rounding step from the stored copy
    np.testing.assert_allclose(np.asarray(got["vectors"], np.float32), decoded[3], atol=step)


def test_an_unknown_token_storage_is_refused_at_the_edge(client: TestClient) -> None:
    response = client.post("/v1/collections", json={"name": "mv", "multivector": True, "muvera": {"token_storage": "int4"}})
    assert response.status_code == 422, response.text  # the request schema's validation_error, as for other muvera fields
    assert response.json()["error"]["details"]["errors"][0]["loc"] == ["body", "muvera", "token_storage"]
    assert client.get("/v1/collections/mv").status_code == 404
