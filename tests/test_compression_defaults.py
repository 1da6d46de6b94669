"""Compression defaults that deliver: the fit chooses its depths for target_recall on held queries that are not in the
index, reports what it chose and measured, an explicit oversample wins, the rerank copy is memory-mapped; and the
one-byte code scan agrees with the quantizers' own scoring. Real MiniLM vectors, SQLite, FAISS, fitted transforms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.registry import ModelRegistry
from encoders.transforms.lvq import LVQ, Int8Quantizer
from index.backends.faiss_index import IndexSpec
from index.backends.measured_choice import MeasuredChoice, bucket
from index.catalog import Catalog
from index.collection import Collection
from index.compression import code_scan
from index.compression.code_scan import CodeScan
from index.compression.multistage import scan_topk
from index.compression.spec import CompressionSpec
from index.requests import PointInput, Query

INDEXED = 2600  # sentence vectors indexed; the rest are document-like test queries the index never saw


def make_collection(root: Path, registry: ModelRegistry, vectors: np.ndarray) -> tuple[Catalog, Collection]:
    catalog = Catalog(root, registry)
    catalog.load_all()
    collection = catalog.create("c", model=None, dim=vectors.shape[1], metric="cosine", index=IndexSpec())
    collection.upsert([PointInput(id=i, vector=v) for i, v in enumerate(vectors)])
    return catalog, collection


def recall(collection: Collection, queries: np.ndarray, docs: np.ndarray, **params: object) -> float:
    truth = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :10]
    found = collection.query_batch([Query(vector=q, with_payload=False, **params) for q in queries])  # type: ignore[arg-type]
    return float(np.mean([len({h.id for h in hits} & set(t.tolist())) / 10 for hits, t in zip(found, truth, strict=True)]))


@pytest.mark.parametrize(
    "config",
    [{"quantizer": {"kind": "binary"}}, {"leanvec": {"dim": 96, "variant": "ood"}, "quantizer": {"kind": "lvq8"}}],
    ids=["binary1", "leanvec-ood-lvq8"],
)
def test_defaults_reach_target_recall_on_queries_the_index_never_saw(
    config: dict, tmp_path: Path, registry: ModelRegistry, sentence_vectors: np.ndarray, word_queries: np.ndarray
) -> None:
    docs, test_docs = sentence_vectors[:INDEXED], sentence_vectors[INDEXED:]
    catalog, collection = make_collection(tmp_path, registry, docs)
    spec = CompressionSpec.from_json(config)
    assert spec.rerank.oversample is None and spec.rerank.target_recall == 0.95 and spec.rerank.storage == "mmap"
    ood = spec.leanvec is not None
    if not ood:  # a collection in use: its recent queries are held queries of the fit
        collection.query_batch([Query(vector=q, with_payload=False) for q in word_queries[:100]])
    report = collection.compression.fit(spec, word_queries[:100] if ood else None, lambda *a: None)

    search = report["search"]
    assert search["chosen_by"] == "fit" and search["reached"] and search["target_recall"] == 0.95
    assert set(search["recall_at_10"]) == {"stored", "queries"} and min(search["recall_at_10"].values()) >= 0.95
    held = report["held_queries"]
    assert held["stored"]["count"] == 200 and "removed from the searched set" in held["stored"]["from"]
    # LeanVec-OOD learned from the given samples: the fit measures on the quarter it held out of that.
    assert held["queries"] == ({"count": 25, "from": "the query samples given with the config that LeanVec-OOD did not learn from"} if ood else {"count": 100, "from": "the collection's recent queries"})
    assert report["stages"][-1]["recall_at_10"] == min(report["stages"][-1]["recall_at_10_by_queries"].values())
    info = collection.info()["compression"]
    assert info["search"] == search and info["held_queries"] == held  # the collection info says where the figure came from

    # Queries the fit never saw, at the default depth: word queries and documents that are not in the index (100 and
    # 400 of them: a sample's recall varies by about 0.02 around what the fit measured on its own 25 to 200).
    assert recall(collection, word_queries[200:300], docs) >= 0.92
    assert recall(collection, test_docs, docs) >= 0.93
    catalog.close()


def test_the_report_does_not_count_self_matches(tmp_path: Path, registry: ModelRegistry) -> None:
    """Isotropic random vectors: a stored vector's only close neighbour is itself. Held stored vectors removed from
    the searched set measure what new queries from the same distribution get; counting the self-match would add
    about 0.1 (the query's own row, always found, is a tenth of its top-10)."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((3000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs, fresh = vectors[:2500], vectors[2500:]
    catalog, collection = make_collection(tmp_path, registry, docs)
    report = collection.compression.fit(CompressionSpec.from_json({"quantizer": {"kind": "binary"}, "rerank": {"oversample": 2}}), None, lambda *a: None)
    reported = report["search"]["recall_at_10"]["stored"]
    on_fresh = recall(collection, fresh, docs)
    assert on_fresh < 0.6  # hard enough that a self-match would show
    assert abs(reported - on_fresh) < 0.045, (reported, on_fresh)
    catalog.close()


def test_explicit_oversample_wins_and_queries_still_override(tmp_path: Path, registry: ModelRegistry, sentence_vectors: np.ndarray, word_queries: np.ndarray) -> None:
    docs = sentence_vectors[:INDEXED]
    catalog, collection = make_collection(tmp_path, registry, docs)
    report = collection.compression.fit(CompressionSpec.from_json({"quantizer": {"kind": "binary"}, "rerank": {"oversample": 1.5}}), None, lambda *a: None)
    assert report["search"]["oversample"] == 1.5 and report["search"]["chosen_by"] == "config" and report["search"]["target_recall"] is None
    probe = word_queries[:100]
    shallow = recall(collection, probe, docs)
    # The default depth is the config's: the same answers as asking for it per query.
    assert shallow == recall(collection, probe, docs, oversample=1.5)
    assert recall(collection, probe, docs, oversample=300) > shallow and recall(collection, probe, docs, oversample=300) >= 0.99

    # A lower target needs no deeper search than a higher one, and what the fit chose is what queries use.
    low = collection.compression.fit(CompressionSpec.from_json({"quantizer": {"kind": "binary"}, "rerank": {"target_recall": 0.7}}), None, lambda *a: None)
    high = collection.compression.fit(CompressionSpec.from_json({"quantizer": {"kind": "binary"}, "rerank": {"target_recall": 0.99}}), None, lambda *a: None)
    assert low["search"]["oversample"] < high["search"]["oversample"]
    assert recall(collection, probe, docs) == recall(collection, probe, docs, oversample=high["search"]["oversample"])
    catalog.close()


def _row_ids_mapped(collection: Collection) -> list[bool]:
    return [isinstance(p.rows, np.memmap) for p in collection.engine.view().parts if p.kind == "sealed"]


def test_rerank_copy_is_memory_mapped_unless_config_says_ram(tmp_path: Path, registry: ModelRegistry, sentence_vectors: np.ndarray) -> None:
    docs = sentence_vectors[:INDEXED]
    catalog, collection = make_collection(tmp_path, registry, docs)
    mapped = CompressionSpec.from_json({"quantizer": {"kind": "binary"}, "rerank": {"oversample": 4}})
    collection.compression.fit(mapped, None, lambda *a: None)
    assert collection.info()["stages"][-1]["storage"] == "mmap"
    # RAM holds the 48 bytes of sign bits and a liveness byte per point: the row ids stay in their file with the rerank
    # copy (in RAM they were 8 bytes more a point, and binary1 cost 1/27 of the floats).
    assert _row_ids_mapped(collection) and all(_row_ids_mapped(collection))
    assert collection.info()["memory_bytes"] <= docs.nbytes / 30
    answers = collection.query_batch([Query(vector=q, with_payload=False) for q in docs[:5]])
    catalog.close()
    catalog = Catalog(tmp_path, registry)
    catalog.load_all()
    reopened = catalog.get("c")
    assert all(_row_ids_mapped(reopened))
    assert [[h.id for h in hits] for hits in reopened.query_batch([Query(vector=q, with_payload=False) for q in docs[:5]])] == [[h.id for h in hits] for hits in answers]
    reopened.compression.fit(CompressionSpec.from_json({"quantizer": {"kind": "binary"}, "rerank": {"oversample": 4, "storage": "ram"}}), None, lambda *a: None)
    assert reopened.info()["stages"][-1]["storage"] == "ram" and reopened.info()["memory_bytes"] > docs.nbytes
    assert not any(_row_ids_mapped(reopened))
    catalog.close()


def one_byte_codes(kind: str, sentence_vectors: np.ndarray) -> tuple[LVQ | Int8Quantizer, np.ndarray, int]:
    """A fitted one-byte quantizer, its docs, and its width: lvq8 at a LeanVec-sized 96 dimensions, int8 at the full 384."""
    width = 96 if kind == "lvq8" else 384
    quantizer = LVQ.named("lvq8") if kind == "lvq8" else Int8Quantizer()
    docs = np.ascontiguousarray(sentence_vectors[:, :width])
    return quantizer.fit(docs), docs, width


ONE_BYTE = pytest.mark.parametrize("kind", ["lvq8", "int8"])


@ONE_BYTE
def test_code_scan_agrees_with_the_quantizers_scoring(kind: str, sentence_vectors: np.ndarray, word_queries: np.ndarray) -> None:
    quantizer, docs, width = one_byte_codes(kind, sentence_vectors)
    queries = np.ascontiguousarray(word_queries[:40, :width])
    codes = quantizer.encode_docs(docs)
    reference = quantizer.score(queries, codes)
    scan = CodeScan.of(quantizer, codes)
    prepared = scan.prepare(queries)
    got = np.concatenate([scan.scores(prepared, s, min(s + 1000, len(docs))) for s in range(0, len(docs), 1000)], axis=1)
    # Only the query is rounded (to int8 per query): the scores stay within a small part of their spread...
    assert np.abs(got - reference).max() < 0.05 * reference.std()
    # ...and rank the rows as the reference does.
    top = [set(r) for r in np.argsort(-reference, axis=1)[:, :10]]
    assert np.mean([len(set(g) & t) / 10 for g, t in zip(np.argsort(-got, axis=1)[:, :10], top, strict=True)]) >= 0.95
    assert scan.values.dtype == torch.int8 and scan.values.data_ptr() % 64 == 0  # the codes' own bytes, aligned: no float copy
    one = scan.scores(scan.prepare(queries[:1]), 0, len(docs))
    assert np.allclose(one, got[:1], atol=1e-4 * float(np.abs(got).max()))  # a single query scores as it does in a batch



@settings(max_examples=25, deadline=None)
@given(
    dim=st.sampled_from([1, 7, 96, 384, code_scan.EXACT_FLOAT_DIM]),
    queries=st.integers(1, 40),
    rows=st.integers(1, 300),
    seed=st.integers(0, 2**16),
    extremes=st.booleans(),
)
def test_the_float_kernel_gives_the_integer_kernels_keys_to_the_bit(dim: int, queries: int, rows: int, seed: int, extremes: bool) -> None:
    """A batch's keys may come from the float product of the converted codes (measured faster for batches): every
    product and partial sum is an integer below 2^24 up to EXACT_FLOAT_DIM, so both kernels agree exactly, even
    with every code and query value at its extreme (the largest sums)."""
    rng = np.random.default_rng(seed)
    values = torch.full((rows, dim), -128, dtype=torch.int8) if extremes else torch.from_numpy(rng.integers(-128, 128, (rows, dim), dtype=np.int8))
    codes = torch.full((queries, dim), -127, dtype=torch.int8) if extremes else torch.from_numpy(rng.integers(-127, 128, (queries, dim), dtype=np.int8))
    integer = codes.double() @ values.double().T  # exact: the integer kernel's sums, far below 2^53
    floated = codes.float() @ values.float().T
    assert torch.equal(floated.double(), integer)


@settings(max_examples=30, deadline=None)
@given(
    dim=st.sampled_from([8, 96, 384]),
    queries=st.integers(1, code_scan.COLUMN_MAX_QUERIES + 3),
    rows=st.integers(1, 300),
    seed=st.integers(0, 2**16),
)
def test_integer_products_are_exact_in_either_orientation(dim: int, queries: int, rows: int, seed: int) -> None:
    """A few queries may take the integer matmul with the codes on the left (on some machines a faster oneDNN kernel
    for one row; which runs is measured): every orientation gives the exact products, for any number of rows and
    queries on either side of the switch, whichever the measurement picked."""
    rng = np.random.default_rng(seed)
    values = torch.from_numpy(rng.integers(-128, 128, (rows, dim), dtype=np.int8))
    codes = torch.from_numpy(rng.integers(-127, 128, (queries, dim), dtype=np.int8))
    exact = codes.double() @ values.double().T
    measured: MeasuredChoice[torch.Tensor] = MeasuredChoice()
    for orientation in (_OnlyKernel("codes-left"), _OnlyKernel("queries-left"), measured):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(code_scan, "ORIENTATIONS", orientation)
            got = code_scan.integer_products(codes, values)
        assert got.shape == (queries, rows) and got.is_contiguous()
        assert torch.equal(got.double(), exact)
    # The measured choice timed both orientations for a few queries, and none for more (queries on the left).
    assert set(measured.timings_snapshot()) == ({(dim, bucket(queries))} if queries <= code_scan.COLUMN_MAX_QUERIES else set())


class _OnlyKernel:
    """A kernel choice that always runs the named kernel (to compare the two on the same batch)."""

    def __init__(self, name: str):
        self.name = name

    def run(self, width: int, queries: int, kernels: dict[str, Callable[[], torch.Tensor]]) -> torch.Tensor:
        return kernels[self.name]()


@ONE_BYTE
def test_code_scan_keys_are_the_same_whichever_kernel_a_batch_takes(
    kind: str, sentence_vectors: np.ndarray, word_queries: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    quantizer, docs, width = one_byte_codes(kind, sentence_vectors)
    scan = CodeScan.of(quantizer, quantizer.encode_docs(docs))
    prepared = scan.prepare(np.ascontiguousarray(word_queries[:64, :width]))
    keys = {}
    for name in ("int8", "float32"):
        monkeypatch.setattr(code_scan, "KERNELS", _OnlyKernel(name))
        keys[name] = scan.keys(prepared, 0, len(docs))
    assert torch.equal(keys["int8"], keys["float32"])
    measured: MeasuredChoice[torch.Tensor] = MeasuredChoice()
    monkeypatch.setattr(code_scan, "KERNELS", measured)
    assert torch.equal(scan.keys(prepared, 0, len(docs)), keys["int8"])
    single = scan.prepare(np.ascontiguousarray(word_queries[:1, :width]))
    assert torch.equal(scan.keys(single, 0, len(docs)), keys["int8"][:1])
    assert set(measured.timings_snapshot()) == {(width, 64)}  # the batch measured both kernels; the single query never


@ONE_BYTE
def test_code_scan_top_k_by_keys_matches_its_scores_with_deletions(kind: str, sentence_vectors: np.ndarray, word_queries: np.ndarray) -> None:
    """A search ranks rows by the scan's keys, in blocks, and turns only the survivors' keys into scores: the same rows
    and scores as ranking every row's full score, whatever the block size; removed rows never come back."""
    quantizer, docs, width = one_byte_codes(kind, sentence_vectors)
    queries = np.ascontiguousarray(word_queries[:12, :width])
    scan = CodeScan.of(quantizer, quantizer.encode_docs(docs))
    allowed = np.random.default_rng(1).random(len(docs)) > 0.3
    for batch in (queries[:1], queries):
        prepared = scan.prepare(batch)
        full = np.where(allowed, scan.scores(prepared, 0, len(docs)), -np.inf)
        for block_rows in (len(docs), 700, scan.block_rows(len(batch))):
            keys, rows = scan_topk(lambda s, e: scan.keys(prepared, s, e), len(docs), 50, allowed, len(batch), block_rows)
            got = scan.scores_of(prepared, keys)
            assert allowed[rows].all()
            assert np.allclose(got, np.take_along_axis(full, rows, axis=1), rtol=1e-5, atol=1e-6)
            assert np.allclose(got, -np.sort(-full, axis=1)[:, :50], rtol=1e-5, atol=1e-6)  # the best 50, best first
    few = np.zeros(len(docs), bool)
    few[[3, 17, 40]] = True  # fewer allowed rows than asked for: the rest are missing (-1), not removed rows
    keys, rows = scan_topk(lambda s, e: scan.keys(scan.prepare(queries[:2]), s, e), len(docs), 10, few, 2, 700)
    assert (np.sort(rows[:, :3], axis=1) == [3, 17, 40]).all() and (rows[:, 3:] == -1).all() and np.isneginf(keys[:, 3:]).all()
