"""Compression transforms: Matryoshka, LeanVec (ID and OOD), LVQ, int8 and binary codes.

Round trips through save/load are bit-exact; LeanVec-ID is numpy's PCA; LeanVec-OOD beats ID on held-out
queries when queries and documents differ (Gaussians and real MiniLM: words against sentences) and
matches or beats the paper's Frank-Wolfe solver; quantisation error falls as bits grow; scoring from
codes equals scoring the reconstructions; bits are FAISS's; and a compressed shortlist reranked in float
finds the exact top-10 on real MiniLM vectors.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from encoders.errors import InvalidInput, Unsupported
from encoders.registry import ModelRegistry
from encoders.transforms.base import Pipeline, Transform
from encoders.transforms.binary import BinaryQuantizer, hamming
from encoders.transforms.leanvec import LeanVec, inner_product_loss, second_moment
from encoders.transforms.lvq import LVQ, Int8Quantizer
from encoders.transforms.matryoshka import Matryoshka, MatryoshkaFunnel
from encoders.transforms.quantizer import Quantizer


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """MKL's threaded eigensolvers spin-wait, and stall for seconds, when the shared 2-core host is busy.

    Per test, so the session's embedding fixtures (set up before it) still encode with every thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gaussian(n: int, dim: int, decay: float, seed: int, shift: float = 0.0) -> np.ndarray:
    """Rows from N(shift, U diag(exp(-i/decay)) U^T) with a random rotation U fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    return (rng.normal(size=(n, dim)) * np.exp(-np.arange(dim) / decay / 2) @ rotation.T + shift).astype(np.float32)


@pytest.fixture(scope="module")
def ood_gaussians() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Docs and queries with different covariances (and means): docs, fitting queries, held-out queries."""
    docs = gaussian(4000, 64, decay=16, seed=1, shift=0.1)
    queries = gaussian(1600, 64, decay=8, seed=2)
    return docs, queries[:800], queries[800:]


@pytest.fixture(scope="module")
def word_vectors(registry: ModelRegistry, sentences: list[str]) -> np.ndarray:
    """Real out-of-distribution queries: 500 single words from the corpus's vocabulary, embedded by MiniLM."""
    vocabulary = sorted({w.strip(".,:;()'\"`").lower() for s in sentences for w in s.split()})
    words = [w for w in vocabulary if w.isalpha() and 4 <= len(w) <= 12]
    return registry.get("minilm-l6").encode_docs(words[:: max(1, len(words) // 500)][:500])


def held_out_error(transform: LeanVec, queries: np.ndarray, docs: np.ndarray) -> float:
    """Relative squared error of reduced inner products (plus the query offset) against exact ones."""
    exact = queries @ docs.T
    approx = transform.encode_queries(queries) @ transform.encode_docs(docs).T + transform.query_offset(queries)[:, None]
    return float(((exact - approx) ** 2).mean() / (exact**2).mean())


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def exact_top(queries: np.ndarray, docs: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :k]


# ---------------------------------------------------------------- save / load


TRANSFORMS: dict[str, Callable[[], Transform]] = {
    "matryoshka": lambda: Matryoshka(24),
    "leanvec-id": lambda: LeanVec(16, max_samples=1000, seed=3),
    "leanvec-id-l2": lambda: LeanVec(16, metric="l2"),
    "leanvec-ood": lambda: LeanVec(16, "ood", seed=4),
    "lvq8": lambda: LVQ.named("lvq8"),
    "lvq4": lambda: LVQ.named("lvq4"),
    "lvq4x8": lambda: LVQ.named("lvq4x8"),
    "int8": lambda: Int8Quantizer(max_samples=500),
    **{f"binary{b}-{s}": (lambda b=b, s=s: BinaryQuantizer(b, s)) for b in (1, 2, 3, 4) for s in ("dimension", "vector")},
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_save_load_round_trip_is_bit_exact(name: str, ood_gaussians: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    docs, queries, held = ood_gaussians
    docs = docs[:, :63]  # an odd width exercises nibble and bit padding
    queries, held = queries[:, :63], held[:, :63]
    transform = TRANSFORMS[name]().fit(docs[:2000], queries)
    transform.save(tmp_path / name)
    loaded = Transform.load(tmp_path / name)

    assert type(loaded) is type(transform) and loaded.config() == transform.config()
    before, after = transform.encode_docs(docs[2000:]), loaded.encode_docs(docs[2000:])
    assert before.dtype == after.dtype and np.array_equal(before, after)
    assert np.array_equal(transform.encode_queries(held), loaded.encode_queries(held))
    if isinstance(transform, Quantizer):
        assert isinstance(loaded, Quantizer) and before.shape == (2000, transform.code_size) and before.dtype == np.uint8
        assert np.array_equal(transform.decode(before), loaded.decode(before))
        assert np.array_equal(transform.score(held[:20], before), loaded.score(held[:20], before))
    record = transform.config()["provenance"]
    assert record["input_dim"] == 63 and record["docs_seen"] == 2000
    if name == "leanvec-id":
        assert record["docs_used"] == 1000 and transform.config()["seed"] == 3
    if name == "leanvec-ood":
        assert record["queries_used"] == 800 and 0 <= record["shrinkage_used"] <= 1


def test_pipeline_round_trip(ood_gaussians: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    docs, queries, held = ood_gaussians
    pipeline = Pipeline([Matryoshka(48), LeanVec(24, "ood"), LVQ.named("lvq4x8")]).fit(docs, queries)
    pipeline.save(tmp_path / "pipeline")
    loaded = Pipeline.load(tmp_path / "pipeline")
    codes = pipeline.encode_docs(docs[:500])
    assert np.array_equal(codes, loaded.encode_docs(docs[:500]))
    reduced = loaded.encode_queries(held[:10])
    assert reduced.shape == (10, 24)
    quantizer = loaded.stages[-1]
    assert isinstance(quantizer, LVQ)
    assert np.array_equal(quantizer.score(reduced, codes), pipeline.stages[-1].score(reduced, codes))  # type: ignore[attr-defined]


# ---------------------------------------------------------------- Matryoshka


def test_matryoshka_keeps_a_renormalised_prefix(sentence_vectors: np.ndarray) -> None:
    x = sentence_vectors[:200]
    short = Matryoshka(64).fit(x).encode_docs(x)
    expected = x[:, :64] / np.linalg.norm(x[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(InvalidInput) as err:
        Matryoshka(64).fit(x).encode_docs(x[:, :128])
    assert err.value.code == "dimension_mismatch"


def test_matryoshka_funnel_scores_prefix_views_stage_by_stage(sentence_vectors: np.ndarray) -> None:
    docs, queries = sentence_vectors[100:], sentence_vectors[:100]
    funnel = MatryoshkaFunnel([64, 128], full_dim=384)
    assert funnel.dims == (64, 128, 384)
    assert np.shares_memory(funnel.view(docs, 0), docs) and funnel.view(docs, 1).shape == (len(docs), 128)
    norms = funnel.prefix_norms(docs)
    np.testing.assert_allclose(norms[:, 0], np.linalg.norm(docs[:, :64], axis=1), rtol=1e-5)

    scores = funnel.score(queries, docs, norms, stage=0)
    q64 = queries[:, :64] / np.linalg.norm(queries[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(scores, q64 @ (docs[:, :64] / norms[:, :1]).T, rtol=1e-4, atol=1e-5)
    rows = np.argsort(-scores, axis=1)[:, :30]
    np.testing.assert_allclose(funnel.score(queries, docs, norms, 0, rows), np.take_along_axis(scores, rows, 1), rtol=1e-5, atol=1e-6)

    # Stage by stage by hand: each stage ranks the previous survivors by cosine on its own prefix.
    funnel = MatryoshkaFunnel([128, 256], full_dim=384)
    norms = funnel.prefix_norms(docs)
    assert funnel.keep_sizes(10, 40) == [400, 64, 10]
    found, found_scores = funnel.search(queries, docs, norms, k=10, oversample=40)
    survivors, _ = funnel.narrow(queries, docs, norms, 1, 64, funnel.narrow(queries, docs, norms, 0, 400)[0])
    full = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (docs / norms[:, 2:]).T
    best = np.take_along_axis(survivors, np.argsort(-np.take_along_axis(full, survivors, 1), axis=1)[:, :10], 1)
    assert np.array_equal(found, best)
    np.testing.assert_allclose(found_scores, np.take_along_axis(full, found, 1), rtol=1e-5, atol=1e-6)
    # MiniLM was not trained for Matryoshka, so prefixes rank only roughly: near-exact, not exact, at 40x.
    assert recall_at(found, exact_top(queries, docs, 10)) >= 0.99
    with pytest.raises(InvalidInput):
        MatryoshkaFunnel([128, 64], full_dim=384)


# ---------------------------------------------------------------- LeanVec


def test_leanvec_id_is_numpy_pca(sentence_vectors: np.ndarray) -> None:
    docs = sentence_vectors[:600]
    leanvec = LeanVec(32).fit(docs)
    centred = docs.astype(np.float64) - docs.astype(np.float64).mean(axis=0)
    components = np.linalg.svd(centred, full_matrices=False)[2][:32].T  # (384, 32)
    projection = leanvec.tensor("doc_projection").cpu().numpy()
    signs = np.sign((projection * components).sum(axis=0))
    np.testing.assert_allclose(projection, components * signs, atol=1e-5)
    np.testing.assert_allclose(leanvec.encode_docs(docs), centred @ components * signs, atol=1e-4)
    # Queries are not centred for inner products: the offset q·μ restores the full score.
    np.testing.assert_allclose(leanvec.encode_queries(docs[:5]), docs[:5] @ components * signs, atol=1e-4)
    np.testing.assert_allclose(leanvec.query_offset(docs[:5]), docs[:5] @ docs.mean(axis=0), atol=1e-5)


def test_leanvec_ood_beats_id_on_gaussians_with_different_covariances(ood_gaussians: tuple[np.ndarray, ...]) -> None:
    docs, queries, held = ood_gaussians
    id_error = held_out_error(LeanVec(12).fit(docs), held, docs)
    ood_error = held_out_error(LeanVec(12, "ood").fit(docs, queries), held, docs)
    assert ood_error < 0.5 * id_error, (ood_error, id_error)


def test_leanvec_ood_beats_id_on_minilm_words_against_sentences(sentence_vectors: np.ndarray, word_vectors: np.ndarray) -> None:
    docs = sentence_vectors
    fit_words, held_words = word_vectors[:350], word_vectors[350:]
    for dim in (48, 96):
        id_error = held_out_error(LeanVec(dim).fit(docs), held_words, docs)
        ood_error = held_out_error(LeanVec(dim, "ood").fit(docs, fit_words), held_words, docs)
        assert ood_error < 0.9 * id_error, (dim, ood_error, id_error)


def test_leanvec_ood_is_competitive_when_queries_look_like_documents(ood_gaussians: tuple[np.ndarray, ...]) -> None:
    docs = ood_gaussians[0]
    queries, held = docs[:800], docs[3000:]
    id_error = held_out_error(LeanVec(12).fit(docs[800:]), held, docs[800:])
    ood_error = held_out_error(LeanVec(12, "ood").fit(docs[800:], queries), held, docs[800:])
    assert ood_error <= 1.05 * id_error, (ood_error, id_error)


def frank_wolfe(k_q: torch.Tensor, k_x: torch.Tensor, dim: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's LeanVec-OOD solver, as a reference: A, B in the spectral-norm ball (the convex hull of
    orthonormal frames), block coordinate descent with one Frank-Wolfe step per block, exact line search,
    started from PCA of the documents."""
    eye = torch.eye(len(k_q), dtype=k_q.dtype)
    a = b = torch.linalg.eigh(k_x).eigenvectors[:, -dim:]
    for _ in range(iterations):
        for side in ("a", "b"):
            gradient_m = 2 * k_q @ (a @ b.mT - eye) @ k_x  # d loss / d(AB^T)
            gradient = gradient_m @ b if side == "a" else gradient_m.mT @ a
            u, _, vh = torch.linalg.svd(gradient, full_matrices=False)
            direction = -u @ vh - (a if side == "a" else b)  # the oracle's vertex minus the current point
            change = direction @ b.mT if side == "a" else a @ direction.mT
            slope, curvature = (gradient_m * change).sum(), torch.trace(change.mT @ k_q @ change @ k_x)
            step = float((-slope / (2 * curvature)).clamp(0, 1))
            if side == "a":
                a = a + step * direction
            else:
                b = b + step * direction
    return a, b


def test_leanvec_ood_solver_matches_or_beats_frank_wolfe(ood_gaussians: tuple[np.ndarray, ...]) -> None:
    docs, queries, held = ood_gaussians
    docs_c = torch.from_numpy(docs - docs.mean(axis=0)).double()
    k_x = second_moment(docs_c)
    k_q, k_held = second_moment(torch.from_numpy(queries).double()), second_moment(torch.from_numpy(held).double())
    fw_a, fw_b = frank_wolfe(k_q, k_x, 8, iterations=100)
    ours = LeanVec(8, "ood", shrinkage=0.0).fit(docs, queries)
    a, b = (ours.tensor(n).cpu().double() for n in ("query_projection", "doc_projection"))
    assert inner_product_loss(k_q, k_x, a, b) <= inner_product_loss(k_q, k_x, fw_a, fw_b) * (1 + 1e-4)
    assert inner_product_loss(k_held, k_x, a, b) <= inner_product_loss(k_held, k_x, fw_a, fw_b) * 1.02
    ood = LeanVec(8, "ood").fit(docs, queries)
    assert held_out_error(ood, held, docs) <= held_out_error(ours, held, docs) * 1.02  # the shrinkage search does not hurt


def test_leanvec_rejects_what_it_cannot_do(ood_gaussians: tuple[np.ndarray, ...]) -> None:
    docs, queries, _ = ood_gaussians
    with pytest.raises(InvalidInput) as err:
        LeanVec(8, "ood").fit(docs, queries[:5])
    assert err.value.code == "queries_required"
    with pytest.raises(Unsupported):
        LeanVec(8, "ood", metric="l2")
    with pytest.raises(InvalidInput) as err:
        LeanVec(8).encode_docs(docs)
    assert err.value.code == "transform_not_fitted"
    with pytest.raises(InvalidInput) as err:
        LeanVec(8).fit(docs).encode_docs(docs[:, :32])
    assert err.value.code == "dimension_mismatch"


def test_leanvec_l2_metric_centres_queries_too(ood_gaussians: tuple[np.ndarray, ...]) -> None:
    docs = ood_gaussians[0]
    leanvec = LeanVec(40, metric="l2").fit(docs)
    q, x = leanvec.encode_queries(docs[:50]), leanvec.encode_docs(docs[50:])
    projection = leanvec.tensor("doc_projection").cpu().numpy()
    difference = docs[:50, None] - docs[None, 50:]
    # Reduced distances are the distances between projected differences: no per-query or per-document offset.
    np.testing.assert_allclose(((q[:, None] - x[None]) ** 2).sum(-1), ((difference @ projection) ** 2).sum(-1), rtol=1e-3, atol=1e-3)
    with pytest.raises(Unsupported):
        leanvec.query_offset(docs[:5])


# ---------------------------------------------------------------- quantizers


def reconstruction_error(quantizer: Quantizer, x: np.ndarray) -> float:
    return float(((quantizer.decode(quantizer.encode_docs(x)) - x) ** 2).sum() / (x**2).sum())


def test_lvq_error_falls_from_4_to_8_to_4x8_bits(sentence_vectors: np.ndarray) -> None:
    fit, x = sentence_vectors[:2000], sentence_vectors[2000:]
    errors = {name: reconstruction_error(LVQ.named(name).fit(fit), x) for name in ("lvq4", "lvq8", "lvq4x8")}
    assert errors["lvq4"] > errors["lvq8"] > errors["lvq4x8"], errors
    assert errors["lvq4x8"] < errors["lvq8"] / 10  # the residual's step is 15x finer than lvq8's
    assert reconstruction_error(Int8Quantizer().fit(fit), x) < errors["lvq4"]
    assert LVQ.named("lvq4").fit(fit).code_size == 4 + 192 and LVQ.named("lvq4x8").fit(fit).code_size == 4 + 192 + 384


@pytest.mark.parametrize("name", ["lvq8", "lvq4", "lvq4x8", "int8", "binary1-dimension", "binary3-vector"])
def test_scoring_codes_equals_scoring_reconstructions(name: str, sentence_vectors: np.ndarray) -> None:
    docs, queries = sentence_vectors[100:1100], sentence_vectors[:100]
    quantizer = TRANSFORMS[name]().fit(docs)
    assert isinstance(quantizer, Quantizer)
    codes = quantizer.encode_docs(docs)
    scores = quantizer.score(queries, codes)
    np.testing.assert_allclose(scores, queries @ quantizer.decode(codes).T, rtol=1e-4, atol=2e-6)
    rows = np.random.default_rng(0).integers(0, len(docs), size=(len(queries), 25))
    np.testing.assert_allclose(quantizer.score(queries, codes, rows), np.take_along_axis(scores, rows, axis=1), rtol=1e-5, atol=1e-6)
    readonly = codes.copy()
    readonly.flags.writeable = False  # memory-mapped codes are read-only
    np.testing.assert_allclose(quantizer.score(queries[:3], readonly), scores[:3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale", ["dimension", "vector"])
def test_residual_binary_codes_error_falls_strictly_with_bits(scale: str, sentence_vectors: np.ndarray) -> None:
    fit, x = sentence_vectors[:2000], sentence_vectors[2000:]
    quantizers = [BinaryQuantizer(bits, scale).fit(fit) for bits in (1, 2, 3, 4)]
    errors = [reconstruction_error(q, x) for q in quantizers]
    assert all(later < earlier for earlier, later in itertools.pairwise(errors)), errors
    # Every level refines the same code: the first planes of a 4-bit code are the 1-bit code.
    assert np.array_equal(quantizers[3].sign_bits(quantizers[3].encode_docs(x)), quantizers[0].sign_bits(quantizers[0].encode_docs(x)))
    if scale == "vector":  # the least-squares scale per vector lowers every single vector's error
        per_vector = [((q.decode(q.encode_docs(x)) - x) ** 2).sum(axis=1) for q in quantizers]
        assert all((later < earlier).all() for earlier, later in itertools.pairwise(per_vector))


@pytest.mark.parametrize("dim", [128, 100])
def test_binary_bits_are_faiss_bits(dim: int) -> None:
    rng = np.random.default_rng(7)
    docs, queries = rng.normal(size=(500, dim)).astype(np.float32), rng.normal(size=(20, dim)).astype(np.float32)
    quantizer = BinaryQuantizer(2).fit(docs)
    bits, query_bits = quantizer.sign_bits(quantizer.encode_docs(docs)), quantizer.query_bits(queries)
    mean = quantizer.tensor("mean").cpu().numpy()
    assert np.array_equal(bits, np.packbits(docs - mean > 0, axis=1, bitorder="little"))
    if dim % 8 == 0:  # FAISS's own binariser writes the same bytes
        centred = np.ascontiguousarray(docs - mean)
        faiss_bits = np.empty_like(bits)
        faiss.real_to_binary(centred.size, faiss.swig_ptr(centred), faiss.swig_ptr(faiss_bits))
        assert np.array_equal(bits, faiss_bits)
    index = faiss.IndexBinaryFlat(8 * quantizer.sign_bytes)
    index.add(bits)
    distances, ids = index.search(query_bits, len(docs))
    assert np.array_equal(np.take_along_axis(hamming(query_bits, bits), ids, axis=1), distances)


def test_quantizers_check_their_inputs(sentence_vectors: np.ndarray) -> None:
    lvq = LVQ.named("lvq8").fit(sentence_vectors[:100])
    with pytest.raises(InvalidInput) as err:
        lvq.score(sentence_vectors[:2], lvq.encode_docs(sentence_vectors[:10])[:, :-1])
    assert err.value.code == "dimension_mismatch"
    with pytest.raises(InvalidInput) as err:
        lvq.score(sentence_vectors[:2], lvq.encode_docs(sentence_vectors[:10]), rows=np.array([[0, 10], [1, 2]]))
    assert err.value.code == "invalid_rows"
    with pytest.raises(InvalidInput):
        LVQ(8, 4)
    with pytest.raises(InvalidInput):
        BinaryQuantizer(5)


# ---------------------------------------------------------------- compressed search on real vectors


SHORTLISTS: dict[str, Callable[[], Pipeline]] = {
    "binary1": lambda: Pipeline([BinaryQuantizer(1)]),
    "binary2-vector": lambda: Pipeline([BinaryQuantizer(2, "vector")]),
    "lvq4": lambda: Pipeline([LVQ.named("lvq4")]),
    "int8": lambda: Pipeline([Int8Quantizer()]),
    "leanvec96-lvq8": lambda: Pipeline([LeanVec(96), LVQ.named("lvq8")]),
}


@pytest.mark.parametrize("name", sorted(SHORTLISTS))
def test_compressed_shortlist_with_float_rerank_finds_exact_top10(name: str, sentence_vectors: np.ndarray) -> None:
    docs, queries = sentence_vectors[100:], sentence_vectors[:100]
    pipeline = SHORTLISTS[name]().fit(docs)
    codes = pipeline.encode_docs(docs)
    quantizer = pipeline.stages[-1]
    assert isinstance(quantizer, Quantizer)
    coarse = quantizer.score(pipeline.encode_queries(queries), codes)
    shortlist = np.argsort(-coarse, axis=1)[:, :200]  # 20x oversampling for k = 10
    rerank = np.take_along_axis(queries @ docs.T, shortlist, axis=1)
    found = np.take_along_axis(shortlist, np.argsort(-rerank, axis=1)[:, :10], axis=1)
    assert recall_at(found, exact_top(queries, docs, 10)) == 1.0


# ---------------------------------------------------------------- CPU and GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_gpu_agree(monkeypatch: pytest.MonkeyPatch, ood_gaussians: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    docs, queries, held = ood_gaussians
    pipelines = {"leanvec-lvq": Pipeline([LeanVec(24, "ood"), LVQ.named("lvq4x8")]), "binary": Pipeline([BinaryQuantizer(3)])}
    for name, pipeline in pipelines.items():
        monkeypatch.setenv("TROVE_DEVICE", "cpu")
        pipeline.fit(docs, queries).save(tmp_path / name)
        cpu_codes = pipeline.encode_docs(docs)
        cpu_scores = pipeline.stages[-1].score(pipeline.encode_queries(held), cpu_codes)  # type: ignore[attr-defined]
        monkeypatch.setenv("TROVE_DEVICE", "cuda")
        gpu = Pipeline.load(tmp_path / name)
        gpu_codes = gpu.encode_docs(docs)
        # Rounding can flip a code on a quantisation boundary; nearly all must agree.
        assert (gpu_codes == cpu_codes).mean() > 0.999
        gpu_scores = gpu.stages[-1].score(gpu.encode_queries(held), cpu_codes)  # type: ignore[attr-defined]
        np.testing.assert_allclose(gpu_scores, cpu_scores, rtol=1e-3, atol=1e-3)
