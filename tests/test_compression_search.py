"""Compressed multi-stage search in a real collection (SQLite + FAISS + fitted transforms) on real MiniLM vectors.

Congruence with exact search: with a generous oversample every configuration returns the exact top-10;
deletes and filters keep working; the fitted pipeline and the compressed segments survive a reopen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders.errors import InvalidInput
from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec
from index.catalog import Catalog
from index.collection import Collection
from index.compression.spec import CompressionSpec
from index.query.filters import Filter, Match
from index.requests import PointInput, Query

CONFIGS = {
    "binary1": {"quantizer": {"kind": "binary"}},
    "binary3-int8-mmap": {"quantizer": {"kind": "binary", "bits": 3}, "rerank": {"with": "int8", "storage": "mmap"}},
    "leanvec-ood-lvq8": {"leanvec": {"dim": 96, "variant": "ood"}, "quantizer": {"kind": "lvq8"}},
    "leanvec-id-float": {"leanvec": {"dim": 96}},
    "matryoshka-funnel": {"matryoshka": {"funnel": [64, 128]}},
    "matryoshka-int8": {"matryoshka": {"dim": 192}, "quantizer": {"kind": "int8"}, "rerank": {"storage": "mmap"}},
}


def make_collection(root: Path, registry: ModelRegistry, vectors: np.ndarray) -> tuple[Catalog, Collection]:
    catalog = Catalog(root, registry)
    catalog.load_all()
    collection = catalog.create("c", model=None, dim=vectors.shape[1], metric="cosine", index=IndexSpec())
    collection.upsert([PointInput(id=i, vector=v, payload={"odd": i % 2}) for i, v in enumerate(vectors)])
    return catalog, collection


def ids(hits: list[list]) -> list[list]:  # type: ignore[type-arg]
    return [[h.id for h in row] for row in hits]


def recall(found: list[list], truth: list[list]) -> float:  # type: ignore[type-arg]
    """Share of the exact top-10 found (scores that tie within float rounding may swap the 10th place)."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_generous_oversample_returns_the_exact_top10(name: str, tmp_path: Path, registry: ModelRegistry, sentence_vectors: np.ndarray, word_queries: np.ndarray) -> None:
    docs = sentence_vectors
    catalog, collection = make_collection(tmp_path, registry, docs)
    spec = CompressionSpec.from_json(CONFIGS[name])
    queries = word_queries[:100] if spec.leanvec and spec.leanvec.variant == "ood" else None
    report = collection.compression.fit(spec, queries, lambda *a: None)
    assert [s["name"] for s in report["stages"]] == [s["name"] for s in collection.info()["stages"]]
    assert all(0 <= s["recall_at_10"] <= 1 for s in report["stages"]) and report["stages"][-1]["recall_at_10"] >= 0.8

    probe = word_queries[100:160]
    exact = ids(collection.query_batch([Query(vector=q, exact=True) for q in probe]))
    assert recall(exact, [list(r) for r in np.argsort(-(probe @ docs.T), axis=1, kind="stable")[:, :10]]) >= 0.995
    # An int8 rerank ranks by approximate scores: near-exact, not exact.
    floor = 0.995 if spec.rerank.with_ == "float" else 0.97
    assert recall(ids(collection.query_batch([Query(vector=q, oversample=300) for q in probe])), exact) >= floor
    # The default depth (oversample 4) finds at least half of it, even on prefixes of a model not trained for Matryoshka.
    assert recall(ids(collection.query_batch([Query(vector=q) for q in probe])), exact) >= 0.5
    memory = collection.info()["memory_bytes"]
    # A float rerank copy in RAM costs the floats plus the coarse stage; otherwise RAM is a fraction of them.
    assert memory < 1.3 * docs.nbytes if spec.rerank.storage == "ram" and spec.rerank.with_ == "float" else memory < 0.5 * docs.nbytes
    catalog.close()


def test_deletes_filters_and_reopen(tmp_path: Path, registry: ModelRegistry, sentence_vectors: np.ndarray, word_queries: np.ndarray) -> None:
    docs = sentence_vectors
    catalog, collection = make_collection(tmp_path, registry, docs)
    collection.compression.fit(CompressionSpec.from_json(CONFIGS["binary1"]), None, lambda *a: None)
    probe = word_queries[:20]
    collection.delete(list(range(200)))
    for q in probe:
        hits = collection.query(Query(vector=q, oversample=300, filter=Filter((Match("odd", (1,)),))))
        allowed = np.flatnonzero((np.arange(len(docs)) % 2 == 1) & (np.arange(len(docs)) >= 200))
        assert recall([[h.id for h in hits]], [list(allowed[np.argsort(-(docs[allowed] @ q), kind="stable")[:10]])]) >= 0.9
        assert all(h.id >= 200 for h in collection.query(Query(vector=q, oversample=300)))
    # A row written after the fit goes to the appendable segment and is replayed on reopen; the compressed
    # segment is loaded from its files.
    collection.upsert([PointInput(id="new", vector=probe[0])])
    sealed = [s for s in collection.info()["segments"] if s["state"] == "sealed"]
    assert [s["index"] for s in sealed] == ["compressed"] and sealed[0]["dead"] == 200
    catalog.close()

    catalog = Catalog(tmp_path, registry)
    catalog.load_all()
    reopened = catalog.get("c")
    assert reopened.info()["compression"]["state"] == "fitted" and reopened.info()["stages"][0]["name"] == "binary1 hamming"
    assert [s["id"] for s in reopened.info()["segments"] if s["state"] == "sealed"] == [s["id"] for s in sealed]
    assert reopened.info()["segments"][-1]["points"] == 1
    assert reopened.query(Query(vector=probe[0]))[0].id == "new"
    assert all(h.id == "new" or h.id >= 200 for h in reopened.query(Query(vector=probe[1], oversample=300)))
    catalog.close()


def test_unfitted_collections_search_exactly_and_fits_need_points(tmp_path: Path, registry: ModelRegistry, sentence_vectors: np.ndarray) -> None:
    catalog, collection = make_collection(tmp_path, registry, sentence_vectors[:10])
    collection.compression.configure(CompressionSpec.from_json(CONFIGS["binary1"]), None)
    assert collection.compression.unfitted and collection.info()["compression"]["state"] == "unfitted"
    assert collection.info()["stages"] == [{"name": "float32", "bytes_per_vector": 1536}]
    assert collection.query(Query(vector=sentence_vectors[3]))[0].id == 3
    with pytest.raises(InvalidInput) as err:
        collection.compression.fit(CompressionSpec.from_json(CONFIGS["binary1"]), None, lambda *a: None)
    assert err.value.code == "too_few_points"
    assert not (tmp_path / "collections" / "c" / "compression" / "current.json").exists()
    catalog.close()


@pytest.mark.parametrize("name", ["leanvec-ood-lvq8", "binary1", "matryoshka-funnel"])
def test_a_batch_scans_the_codes_once_however_its_later_stages_are_split(
    name: str, tmp_path: Path, registry: ModelRegistry, sentence_vectors: np.ndarray, word_queries: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The later stages go in small query blocks (their gathers are bounded), the coarse stage over the whole batch
    at once: split like the later stages, 300 queries 5,534 deep scanned every code 43 times. The answers must be
    those of each query searched alone (up to float rounding: matrix products of other shapes may swap near ties),
    with one coarse scan per COARSE_CANDIDATES of candidates."""
    from index.compression import multistage

    catalog, collection = make_collection(tmp_path, registry, sentence_vectors)
    spec = CompressionSpec.from_json(CONFIGS[name])
    collection.compression.fit(spec, word_queries[:100] if spec.leanvec else None, lambda *a: None)
    probe = word_queries[100:160]
    alone = [collection.query_batch([Query(vector=q, oversample=20)])[0] for q in probe]

    def same_as_alone(batch: list[list]) -> bool:  # type: ignore[type-arg]
        scores_match = np.allclose([[h.score for h in row] for row in batch], [[h.score for h in row] for row in alone], atol=1e-5)
        return scores_match and recall(ids(batch), ids(alone)) >= 0.99
    scans: list[int] = []
    coarse_search = multistage.MultiStageIndex._coarse_search

    def counted(self: multistage.MultiStageIndex, reduced: np.ndarray, depth: int, allowed: np.ndarray | None) -> multistage.Ranked:
        scans.append(len(reduced))
        return coarse_search(self, reduced, depth, allowed)

    monkeypatch.setattr(multistage.MultiStageIndex, "_coarse_search", counted)
    # Later-stage blocks of 3 queries 200 deep (binary codes: of one query); the gathers' own blocks of a row or two.
    monkeypatch.setattr(multistage, "GATHER_FLOATS", 200 * 3)
    assert same_as_alone(collection.query_batch([Query(vector=q, oversample=20) for q in probe]))
    assert scans == [len(probe)]
    scans.clear()
    monkeypatch.setattr(multistage, "COARSE_CANDIDATES", 200 * 25)  # 25 queries a scan: 25, 25, 10
    assert same_as_alone(collection.query_batch([Query(vector=q, oversample=20) for q in probe]))
    assert scans == [25, 25, 10]
    catalog.close()


def test_funnel_stages_score_each_prefix_as_the_funnel_does(tmp_path: Path, registry: ModelRegistry, sentence_vectors: np.ndarray, word_queries: np.ndarray) -> None:
    """Each funnel stage adds to the previous prefix's inner products only the dimensions it did not read: its
    cosines must still be the funnel's own at that prefix, its shortlist the best of the previous one by them, and
    the rerank the full inner products."""
    from index.compression.fit_report import compressed_indexes

    catalog, collection = make_collection(tmp_path, registry, sentence_vectors)
    collection.compression.fit(CompressionSpec.from_json(CONFIGS["matryoshka-funnel"]), None, lambda *a: None)
    (index,) = compressed_indexes(collection.engine.view())
    assert index.funnel is not None and index.funnel.dims == (64, 128, 384)
    queries = np.ascontiguousarray(word_queries[:30])
    full = index.reconstruct(np.arange(index.ntotal))
    norms = index.funnel.prefix_norms(full)
    (coarse_scores, coarse_rows), (mid_scores, mid_rows), (final_scores, final_rows) = index.ranked_stages(queries, 10, ef_search=300)
    reference_mid = index.funnel.score(queries, full, norms, 1, coarse_rows)
    np.testing.assert_allclose(index.funnel.score(queries, full, norms, 1, mid_rows), mid_scores, atol=2e-6)
    kept = mid_rows.shape[1]
    assert kept < coarse_rows.shape[1]
    np.testing.assert_allclose(np.sort(mid_scores, axis=1), np.sort(reference_mid, axis=1)[:, -kept:], atol=2e-6)
    np.testing.assert_allclose(final_scores, np.einsum("md,mkd->mk", queries, full[final_rows]), atol=2e-6)
    assert set(final_rows.ravel()) <= set(mid_rows.ravel())
    catalog.close()
