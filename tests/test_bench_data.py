"""Benchmark building blocks on hand-made data: metrics, exact ground truth and its cache, the synthetic set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.datasets import QuerySet, Source, real_dataset, synthetic_dataset
from bench.groundtruth import exact_topk
from bench.metrics import mrr, ndcg_at_k, recall_at_k
from bench.synthetic import Gaussian
from encoders.base import l2_normalize


@pytest.fixture(autouse=True)
def bench_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TROVE_BENCH_CACHE", str(tmp_path))
    return tmp_path


def test_recall_counts_overlap_and_ignores_padding() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, -1], [5, 6, 7, 8]])
    assert recall_at_k(found, truth, 4) == pytest.approx((2 / 4 + 1) / 2)
    assert recall_at_k(found, truth, 1) == pytest.approx(0.5)


def test_ndcg_and_mrr_by_hand() -> None:
    found = np.array([[9, 1, 8, 2]])
    relevant = [np.array([1, 2])]
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    assert ndcg_at_k(found, relevant, 10) == pytest.approx(dcg / (1 + 1 / np.log2(3)))
    assert mrr(found, relevant) == pytest.approx(0.5)
    assert mrr(np.array([[7, 8]]), [np.array([1])]) == 0.0


def test_exact_topk_matches_numpy_and_is_cached(bench_cache: Path) -> None:
    rng = np.random.default_rng(0)
    docs = l2_normalize(rng.standard_normal((500, 16)).astype(np.float32))
    queries = l2_normalize(rng.standard_normal((20, 16)).astype(np.float32))
    truth = exact_topk(docs, queries, k=50)
    expected = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :50]
    assert np.array_equal(truth.ids, expected)
    assert len(list(bench_cache.glob("truth-ip-*.npz"))) == 1
    assert np.array_equal(exact_topk(docs, queries, k=50).ids, expected)  # read back from the cache
    docs[0] *= -1  # different vectors: a new entry, never a stale answer
    exact_topk(docs, queries, k=50)
    assert len(list(bench_cache.glob("truth-ip-*.npz"))) == 2


def test_gaussian_draws_are_seeded_normalised_and_follow_the_fit() -> None:
    rng = np.random.default_rng(1)
    real = (rng.standard_normal((20_000, 8)) * np.arange(1, 9) + 3).astype(np.float32)
    model = Gaussian.fit(real)
    assert np.allclose(model.mean, real.mean(axis=0), atol=1e-6)
    drawn = model.draw(5000, seed=4)
    assert np.array_equal(drawn, model.draw(5000, seed=4)) and not np.array_equal(drawn, model.draw(5000, seed=5))
    assert np.allclose(np.linalg.norm(drawn, axis=1), 1.0, atol=1e-5)
    assert np.allclose(drawn.mean(axis=0), l2_normalize(real).mean(axis=0), atol=0.02)


def source(n_docs: int = 200, n_queries: int = 60) -> Source:
    rng = np.random.default_rng(2)
    relevant = [np.array([i % n_docs, (i * 7) % n_docs]) for i in range(n_queries)]
    return Source(
        name="toy",
        label="toy vectors",
        docs=l2_normalize(rng.standard_normal((n_docs, 8)).astype(np.float32)),
        queries=QuerySet(vectors=l2_normalize(rng.standard_normal((n_queries, 8)).astype(np.float32)), relevant=relevant),
    )


def test_real_slice_keeps_queries_with_a_relevant_document_in_it() -> None:
    data = real_dataset(source(), n_docs=20, n_queries=100)
    assert len(data.docs) == 20 and data.name == "toy-20"
    for part in (data.tune, data.test):
        assert part.relevant is not None and all(r.size and r.max() < 20 for r in part.relevant)
    tune_rows = {tuple(v) for v in data.tune.vectors.tolist()}
    assert not tune_rows & {tuple(v) for v in data.test.vectors.tolist()}  # tuning and test never share a query


def test_synthetic_set_is_labelled_and_unlabelled_by_relevance() -> None:
    data = synthetic_dataset(source(), n_docs=1000, n_queries=25)
    assert data.synthetic and data.name == "synthetic-1k" and "SYNTHETIC" in data.label
    assert data.docs.shape == (1000, 8) and len(data.tune) == len(data.test) == 25
    assert data.tune.relevant is None
