"""Flat search by the measured faster path: the blocked matrix product answers as FAISS does; the choice is measured once per bucket."""

from __future__ import annotations

from collections import Counter

import faiss
import numpy as np
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from index.backends import flat_path
from index.backends.faiss_index import IndexSpec, VectorIndex, bitmap_selector
from index.backends.flat_path import faiss_search, matmul_search
from index.backends.measured_choice import MeasuredChoice, bucket


def _flat(vectors: np.ndarray, metric: str, allowed: np.ndarray | None) -> tuple[faiss.IndexFlat, faiss.SearchParameters, object]:
    """A FAISS flat index of ``vectors`` and search parameters selecting ``allowed``; the last item keeps the
    selector's packed bits alive while the parameters are used."""
    index = faiss.IndexFlat(vectors.shape[1], faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2)
    index.add(vectors)
    params = faiss.SearchParameters()
    keepalive = None
    if allowed is not None:
        params.sel, keepalive = bitmap_selector(allowed)
    return index, params, keepalive


def _faiss(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    index, params, _keepalive = _flat(vectors, metric, allowed)
    return index.search(queries, k, params=params)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    queries=st.integers(1, 9),
    k=st.integers(1, 40),
    metric=st.sampled_from(["ip", "l2"]),
    dead=st.floats(0.0, 1.0),
    block=st.sampled_from([7, 64, 32_768]),
    seed=st.integers(0, 2**16),
)
def test_matmul_search_answers_as_faiss_flat_does(n: int, queries: int, k: int, metric: str, dead: float, block: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    asked = rng.standard_normal((queries, 8)).astype(np.float32)
    allowed = rng.random(n) >= dead if dead > 0 else None
    flat_path.BLOCK_ROWS, saved = block, flat_path.BLOCK_ROWS  # several blocks merged, or one
    try:
        scores, rows = matmul_search(vectors, asked, k, metric, allowed)  # type: ignore[arg-type]
    finally:
        flat_path.BLOCK_ROWS = saved
    want_scores, want_rows = _faiss(vectors, asked, k, metric, allowed)
    np.testing.assert_array_equal(rows >= 0, want_rows >= 0)  # as many found, -1 past the allowed rows
    found = rows >= 0
    np.testing.assert_allclose(scores[found], want_scores[found], rtol=1e-4, atol=1e-4)
    # Rows may differ only between equal scores; each found row's own score is the score it is listed with.
    own = np.where(found, np.einsum("qd,qkd->qk", asked, vectors[np.maximum(rows, 0)]), 0)
    if metric == "ip":
        np.testing.assert_allclose(own[found], scores[found], rtol=1e-4, atol=1e-4)
    if allowed is not None:
        assert allowed[rows[found]].all()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 400),
    queries=st.sampled_from([1, 4, 5, 33]),  # either side of BLAS_MIN_QUERIES (5)
    k=st.integers(1, 40),
    metric=st.sampled_from(["ip", "l2"]),
    dead=st.floats(0.0, 1.0),
    overfetch_max=st.sampled_from([0, 50, 1_024]),  # the selector, deeper search, or either by the count
    seed=st.integers(0, 2**16),
)
def test_faiss_search_deeper_without_the_selector_answers_as_with_it(
    n: int, queries: int, k: int, metric: str, dead: float, overfetch_max: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    asked = rng.standard_normal((queries, 8)).astype(np.float32)
    allowed = rng.random(n) >= dead
    index, params, _keepalive = _flat(vectors, metric, allowed)
    flat_path.OVERFETCH_MAX, saved = overfetch_max, flat_path.OVERFETCH_MAX
    try:
        scores, rows = faiss_search(index, asked, min(k, n), params, allowed)
    finally:
        flat_path.OVERFETCH_MAX = saved
    want_scores, want_rows = _faiss(vectors, asked, min(k, n), metric, allowed)
    np.testing.assert_array_equal(rows >= 0, want_rows >= 0)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4)  # the fill past the allowed rows too
    assert allowed[rows[rows >= 0]].all()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 2000),
    queries=st.integers(1, 40),
    k=st.integers(1, 40),
    metric=st.sampled_from(["ip", "l2"]),
    share=st.sampled_from([0.0, 0.001, 0.01, 0.03, 0.5]),  # gathered, or not, by the count
    seed=st.integers(0, 2**16),
)
def test_a_selective_mask_is_answered_as_faiss_with_the_selector(n: int, queries: int, k: int, metric: str, share: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    asked = rng.standard_normal((queries, 8)).astype(np.float32)
    allowed = rng.random(n) < share
    index, params, _keepalive = _flat(vectors, metric, allowed)
    scores, rows = flat_path.flat_search(index, asked, min(k, n), metric, params, allowed)  # type: ignore[arg-type]
    want_scores, want_rows = _faiss(vectors, asked, min(k, n), metric, allowed)
    np.testing.assert_array_equal(rows >= 0, want_rows >= 0)
    found = rows >= 0
    np.testing.assert_allclose(scores[found], want_scores[found], rtol=1e-4, atol=1e-4)
    assert allowed[rows[found]].all()


def test_a_batch_lowers_faiss_blas_threshold_only_while_it_runs() -> None:
    """FAISS 1.15's default (128,000 queries) kept every coalesced batch off BLAS; left at 20 for the whole process
    it slowed a server's single queries threefold. Two batches overlapping: lowered until the last one ends."""
    default = faiss.cvar.distance_compute_blas_threshold
    with flat_path._blas_threshold_lowered():
        with flat_path._blas_threshold_lowered():
            assert faiss.cvar.distance_compute_blas_threshold == flat_path.BLAS_MIN_QUERIES
        assert faiss.cvar.distance_compute_blas_threshold == flat_path.BLAS_MIN_QUERIES
    assert faiss.cvar.distance_compute_blas_threshold == default


def test_the_chooser_measures_each_bucket_once_then_runs_only_the_faster_path() -> None:
    calls: Counter[str] = Counter()
    answer = (np.zeros((1, 1), np.float32), np.zeros((1, 1), np.int64))

    def path(name: str, cost: int) -> object:
        def run() -> tuple[np.ndarray, np.ndarray]:
            calls[name] += 1
            sum(range(cost))  # a path that costs more work takes longer
            return answer

        return run

    chooser: MeasuredChoice[tuple[np.ndarray, np.ndarray]] = MeasuredChoice()
    runs = {"faiss": path("faiss", 2_000_000), "matmul": path("matmul", 10)}
    for queries in (3, 4, 3, 4, 1):
        chooser.run(384, queries, runs)
    assert bucket(3) == bucket(4) == 4 and bucket(1) == 1
    assert chooser.choices() == {(384, 4): "matmul", (384, 1): "matmul"}
    # Two buckets measured (each path once untimed, then twice), and the three calls between on the chosen path only.
    assert calls == {"faiss": 6, "matmul": 3 + 3 + 3}
    timings = chooser.timings_snapshot()
    assert timings[(384, 4)]["faiss"] > timings[(384, 4)]["matmul"]


def test_a_flat_index_answers_the_same_by_either_path() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((2000, 32)).astype(np.float32)
    index = VectorIndex(32, "ip", IndexSpec(type="flat"))
    index.add(0, vectors)
    allowed = rng.random(2000) > 0.2
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    for _ in range(3):  # the first call of the bucket measures both paths; the later ones use the chosen one
        scores, rows = index.search(queries, 10, allowed=allowed)
        want_scores, want_rows = _faiss(vectors, queries, 10, "ip", allowed)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4)
        assert (rows == want_rows).mean() > 0.99  # ties aside
    assert (32, bucket(40)) in flat_path.CHOOSER.choices()


def test_metrics_export_formed_batch_sizes_and_flat_path_timings(client: TestClient) -> None:
    vectors = np.random.default_rng(0).standard_normal((30, 8))
    assert client.post("/v1/collections", json={"name": "m", "dim": 8, "metric": "ip"}).status_code == 201
    client.put("/v1/collections/m/points", json={"points": [{"id": i, "vector": v.tolist()} for i, v in enumerate(vectors)]})
    for v in vectors[:5]:
        assert client.post("/v1/collections/m/query", json={"vector": v.tolist(), "k": 3}).status_code == 200
    text = client.get("/metrics").text
    assert 'trove_query_batch_size_count{collection="m"} 5.0' in text
    assert 'trove_query_batch_size_bucket{collection="m",le="1"} 5.0' in text
    assert 'trove_query_linger_seconds_total{collection="m"} 0.0' in text, "one query after another never waits"
    assert "# TYPE trove_flat_search_seconds gauge" in text
