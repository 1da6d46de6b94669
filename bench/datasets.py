"""Data sets a suite runs on: document vectors, tuning and held-out test queries, optional relevant sets.

A `Source` is everything one corpus offers (WordNet, or an .npz file a user or a test made); a `Dataset`
is the slice a run measures: the first N documents and a fixed sample of each side of the query split.
Parameters are picked on the tuning queries and reported on the test queries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.groundtruth import GroundTruth, exact_topk
from bench.synthetic import Gaussian, GaussianMixture
from bench.wordnet import query_split
from encoders.base import l2_normalize

SPLIT_SEED = 0  # the one tuning/test split every benchmark shares
SYNTHETIC_DOC_SEED, SYNTHETIC_TUNE_SEED, SYNTHETIC_TEST_SEED = 1, 2, 3


@dataclass(frozen=True)
class QuerySet:
    vectors: np.ndarray  # (n, d) float32, L2-normalised
    relevant: list[np.ndarray] | None = None  # per query: indices of relevant documents
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.vectors)

    def take(self, rows: np.ndarray) -> QuerySet:
        return QuerySet(
            vectors=np.ascontiguousarray(self.vectors[rows]),
            relevant=None if self.relevant is None else [self.relevant[i] for i in rows],
            texts=None if self.texts is None else [self.texts[i] for i in rows],
        )


@dataclass(frozen=True)
class Source:
    name: str  # "wordnet", or "file-<stem>"
    label: str  # where the vectors come from, for reports
    docs: np.ndarray
    queries: QuerySet
    doc_texts: list[str] | None = None


@dataclass(frozen=True)
class Dataset:
    name: str  # short and file-safe: "wordnet-117k", "synthetic-1M"
    label: str  # one line for reports; says "synthetic" for drawn vectors
    synthetic: bool
    docs: np.ndarray
    tune: QuerySet
    test: QuerySet
    doc_texts: list[str] | None = None

    @property
    def dim(self) -> int:
        return int(self.docs.shape[1])

    def truth(self, queries: QuerySet) -> GroundTruth:
        return exact_topk(self.docs, queries.vectors)


def count_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n >= 1000 else str(n)


def wordnet_source(limit: int | None = None, queries: str = "lemmas") -> Source:
    """WordNet 3.0 embedded with the bundled MiniLM (cached; see bench/wordnet.py): glosses and lemma
    queries, or (``queries="examples"``) definitions and usage-example queries; ``limit``: only the
    first documents (and the queries with a relevant one among them) are embedded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.wordnet import embed_corpus
    from encoders.registry import ModelRegistry

    corpus, docs, query_vectors = embed_corpus(ModelRegistry().get("minilm-l6"), limit, queries)
    label = {
        "lemmas": "WordNet 3.0 synset glosses (documents) and lemmas (queries)",
        "examples": "WordNet 3.0 synset definitions (documents) and the glosses' usage examples (queries)",
    }[queries]
    return Source(
        name="wordnet" if queries == "lemmas" else "wordnet-examples",
        label=f"{label}, all-MiniLM-L6-v2 384-d, real embeddings" + ("" if limit is None else f" (only the first {limit} documents embedded)"),
        docs=docs,
        queries=QuerySet(vectors=query_vectors, relevant=corpus.relevant, texts=corpus.queries),
        doc_texts=corpus.doc_texts,
    )


def npz_source(path: Path) -> Source:
    """Vectors from an .npz with `docs` and `queries` (float32), and optionally relevant sets stored flat
    as `relevant_ids` with `relevant_offsets` (query i owns ids[offsets[i]:offsets[i+1]])."""
    with np.load(path) as data:
        docs = l2_normalize(np.asarray(data["docs"], dtype=np.float32))
        queries = l2_normalize(np.asarray(data["queries"], dtype=np.float32))
        relevant = None
        if "relevant_ids" in data:
            ids, offsets = data["relevant_ids"], data["relevant_offsets"]
            relevant = [np.asarray(ids[offsets[i] : offsets[i + 1]], dtype=np.int64) for i in range(len(queries))]
    return Source(
        name=f"file-{path.stem}",
        label=f"vectors from {path.name} ({docs.shape[1]}-d)",
        docs=docs,
        queries=QuerySet(vectors=queries, relevant=relevant),
    )


def load_source(spec: str) -> Source:
    """`wordnet`, `wordnet:N` (its first N glosses), or the path of an .npz file."""
    if spec == "wordnet" or spec.startswith("wordnet:"):
        return wordnet_source(int(spec.split(":", 1)[1]) if ":" in spec else None)
    return npz_source(Path(spec))


def _sample(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(rows) <= n:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=n, replace=False))


def real_dataset(source: Source, n_docs: int | None, n_queries: int, seed: int = 0) -> Dataset:
    """The first n_docs documents; queries sampled from each side of the fixed split.

    With relevant sets, a query is kept only when one of its relevant documents is in the slice, and its
    relevant set is cut to the slice (documents keep their positions, so no remapping is needed).
    """
    n = len(source.docs) if n_docs is None else min(n_docs, len(source.docs))
    queries = source.queries
    if queries.relevant is not None:
        queries = replace(queries, relevant=[r[r < n] for r in queries.relevant])
    tune_rows, test_rows = query_split(len(queries), seed=SPLIT_SEED)
    if queries.relevant is not None:
        has_relevant = np.array([r.size > 0 for r in queries.relevant])
        tune_rows, test_rows = tune_rows[has_relevant[tune_rows]], test_rows[has_relevant[test_rows]]
    return Dataset(
        name=f"{source.name}-{count_label(n)}",
        label=f"{source.label}; first {n} of {len(source.docs)} documents",
        synthetic=False,
        docs=np.ascontiguousarray(source.docs[:n]),
        tune=queries.take(_sample(tune_rows, n_queries, seed)),
        test=queries.take(_sample(test_rows, n_queries, seed + 1)),
        doc_texts=None if source.doc_texts is None else source.doc_texts[:n],
    )


def clustered_dataset(source: Source, n_docs: int, n_queries: int, fit_docs: int = 20_000) -> Dataset:
    """Documents and queries drawn from one Gaussian mixture fitted to the source's first ``fit_docs`` documents
    (the engine suite's clustered set): neighbourhoods as in real embeddings, queries shaped like documents."""
    mixture = GaussianMixture.fit(source.docs[:fit_docs])
    label = (
        f"SYNTHETIC: {n_docs} vectors drawn from a {len(mixture.weights)}-cluster Gaussian mixture fitted to the first "
        f"{min(fit_docs, len(source.docs))} documents of {source.label.split(';')[0]} (queries from the same mixture)"
    )
    return _drawn(f"clustered-{count_label(n_docs)}", label, mixture, mixture, n_docs, n_queries)


def synthetic_dataset(source: Source, n_docs: int, n_queries: int) -> Dataset:
    """Documents from a Gaussian fitted to the source's document vectors, queries from one fitted to its
    query vectors; fixed seeds, L2-normalised. No relevant sets: only recall against exact search means
    anything here."""
    doc_model, query_model = Gaussian.fit(source.docs), Gaussian.fit(source.queries.vectors)
    label = (
        f"SYNTHETIC: {n_docs} vectors drawn from a Gaussian fitted to the mean and covariance of "
        f"{source.label.split(';')[0]} (documents; queries from a Gaussian fitted to the query vectors)"
    )
    return _drawn(f"synthetic-{count_label(n_docs)}", label, doc_model, query_model, n_docs, n_queries)


def _drawn(name: str, label: str, docs: Gaussian | GaussianMixture, queries: Gaussian | GaussianMixture, n_docs: int, n_queries: int) -> Dataset:
    """A synthetic data set: documents and both query samples drawn with the fixed seeds every suite shares."""
    return Dataset(
        name=name,
        label=label,
        synthetic=True,
        docs=docs.draw(n_docs, SYNTHETIC_DOC_SEED),
        tune=QuerySet(vectors=queries.draw(n_queries, SYNTHETIC_TUNE_SEED)),
        test=QuerySet(vectors=queries.draw(n_queries, SYNTHETIC_TEST_SEED)),
    )
