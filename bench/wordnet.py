"""WordNet 3.0 as a labelled retrieval corpus: synset glosses are documents, lemmas are queries,
and the synsets holding a lemma are its relevant set. A second query set: each usage example (the
quoted sentences in a gloss) is a query whose relevant document is its synset's definition (the gloss
without its examples, so the query cannot find itself).

A document is either the gloss alone (``doc_text="gloss"``) or the dictionary entry (``"entry"``): the
synset's lemmas, then its gloss, as a dictionary's search indexes it (lemma queries only).

Run `python -m bench.wordnet` to print the corpus counts and fill the embedding cache.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.cache import cache_dir, cached_embeddings, cached_token_sets
from encoders.base import Encoder

WORDNET_DIR = Path("/usr/share/wordnet")

# Data file -> key prefix and the synset types it may hold; adjective satellites ('s') count as adjectives.
DATA_FILES: dict[str, tuple[str, frozenset[str]]] = {
    "data.noun": ("n", frozenset("n")),
    "data.verb": ("v", frozenset("v")),
    "data.adj": ("a", frozenset("as")),
    "data.adv": ("r", frozenset("r")),
}

# Syntactic markers on adjective lemmas: (a) attributive, (p) predicative, (ip) immediately postnominal.
ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")

# A usage example is a double-quoted sentence after the definition: 'definition; "example"; "example"'.
USAGE_EXAMPLE = re.compile(r'"([^"]+)"')

DOC_TEXTS = ("gloss", "entry")


@dataclass
class WordNetCorpus:
    doc_keys: list[str]  # "<pos>:<synset offset>", e.g. "n:00001740"
    doc_texts: list[str]  # the gloss: definition plus its quoted examples
    queries: list[str]  # normalised lemmas, sorted
    relevant: list[np.ndarray]  # per query: sorted int32 indices into doc_texts

    def head(self, limit: int) -> WordNetCorpus:
        """The first `limit` documents, and only the queries with a relevant document among them."""
        queries: list[str] = []
        relevant: list[np.ndarray] = []
        for query, rel in zip(self.queries, self.relevant):
            # Documents keep their positions, so filtering the indices is all the remapping needed.
            kept = rel[rel < limit]
            if kept.size:
                queries.append(query)
                relevant.append(kept)
        return WordNetCorpus(self.doc_keys[:limit], self.doc_texts[:limit], queries, relevant)

    def sample(self, limit: int, seed: int = 0) -> WordNetCorpus:
        """``limit`` documents drawn at random from every part of speech (the first ``limit`` of one seeded
        permutation, so a smaller sample is a prefix of a larger one), with the queries that have a relevant
        one among them; relevant sets are renumbered to positions in the sample."""
        order = np.random.default_rng(seed).permutation(len(self.doc_texts))[:limit]
        position = np.full(len(self.doc_texts), -1, dtype=np.int64)
        position[order] = np.arange(len(order))
        queries: list[str] = []
        relevant: list[np.ndarray] = []
        for query, rel in zip(self.queries, self.relevant):
            kept = np.sort(position[rel][position[rel] >= 0]).astype(np.int32)
            if kept.size:
                queries.append(query)
                relevant.append(kept)
        return WordNetCorpus([self.doc_keys[i] for i in order], [self.doc_texts[i] for i in order], queries, relevant)


@dataclass(frozen=True)
class Synset:
    key: str
    lemmas: list[str]
    gloss: str


def normalize_lemma(word: str) -> str:
    return ADJ_MARKER.sub("", word).replace("_", " ").lower()


def parse_data_line(line: str, prefix: str, allowed_types: frozenset[str]) -> Synset:
    """One synset line: offset lex_filenum ss_type w_cnt word lex_id [...] p_cnt [ptr...] [frames] | gloss."""
    head, sep, gloss = line.partition("|")
    fields = head.split()
    if not sep or len(fields) < 5:
        raise ValueError(f"not a WordNet synset line: {line[:80]!r}")
    offset, ss_type = fields[0], fields[2]
    if ss_type not in allowed_types:
        raise ValueError(f"synset {offset}: type {ss_type!r} does not belong in a {prefix!r} data file")
    w_cnt = int(fields[3], 16)  # the word count is two hex digits; the pointer count is decimal
    if len(fields) < 5 + 2 * w_cnt:
        raise ValueError(f"synset {prefix}:{offset}: line ends inside its {w_cnt} words")
    words = fields[4 : 4 + 2 * w_cnt : 2]
    p_cnt = int(fields[4 + 2 * w_cnt])
    _check_tail(fields[5 + 2 * w_cnt :], p_cnt, prefix, offset)
    return Synset(f"{prefix}:{offset}", [normalize_lemma(w) for w in words], gloss.strip())


def _check_tail(tail: list[str], p_cnt: int, prefix: str, offset: str) -> None:
    """Pointers take four fields each, verb frames three after their count: a mismatch means a misparse."""
    expected = 4 * p_cnt
    if prefix == "v" and len(tail) > expected:
        expected += 1 + 3 * int(tail[expected])
    if len(tail) != expected:
        raise ValueError(f"synset {prefix}:{offset}: {len(tail)} fields after the words, expected {expected}")


def entry_text(synset: Synset) -> str:
    """A dictionary entry: the synset's distinct lemmas, then its gloss ("dog, domestic dog: a member of ...")."""
    return f"{', '.join(dict.fromkeys(synset.lemmas))}: {synset.gloss}"


def read_data_file(path: Path, prefix: str, allowed_types: frozenset[str]) -> list[Synset]:
    synsets: list[Synset] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            # The license header lines start with two spaces; stray blank lines are tolerated.
            if line.startswith("  ") or not line.strip():
                continue
            synsets.append(parse_data_line(line, prefix, allowed_types))
    return synsets


def _missing_files(wordnet_dir: Path) -> list[str]:
    return [name for name in DATA_FILES if not (wordnet_dir / name).is_file()]


def load_corpus(wordnet_dir: Path = WORDNET_DIR, doc_text: str = "gloss") -> WordNetCorpus:
    """The whole corpus; documents are glosses or entries (``doc_text``, one of DOC_TEXTS)."""
    if doc_text not in DOC_TEXTS:
        raise ValueError(f"unknown WordNet document text {doc_text!r}; one of {', '.join(DOC_TEXTS)}")
    missing = _missing_files(wordnet_dir)
    if missing:
        raise FileNotFoundError(
            f"WordNet data files missing under {wordnet_dir}: {', '.join(missing)}; "
            "install them with `sudo bench/install_wordnet.sh`"
        )
    synsets = [
        synset
        for name, (prefix, types) in DATA_FILES.items()
        for synset in read_data_file(wordnet_dir / name, prefix, types)
    ]
    by_lemma: dict[str, set[int]] = defaultdict(set)  # a set: one synset can hold a lemma twice after lowercasing
    for index, synset in enumerate(synsets):
        for lemma in synset.lemmas:
            by_lemma[lemma].add(index)
    queries = sorted(by_lemma)
    return WordNetCorpus(
        doc_keys=[s.key for s in synsets],
        doc_texts=[s.gloss if doc_text == "gloss" else entry_text(s) for s in synsets],
        queries=queries,
        relevant=[np.array(sorted(by_lemma[q]), dtype=np.int32) for q in queries],
    )


def split_gloss(gloss: str) -> tuple[str, list[str]]:
    """A gloss -> (its definition, its usage examples)."""
    examples = [e.strip() for e in USAGE_EXAMPLE.findall(gloss) if e.strip()]
    first_quote = gloss.find('"')
    definition = (gloss if first_quote < 0 else gloss[:first_quote]).strip().rstrip(";").strip()
    return definition or gloss, examples


def example_corpus(corpus: WordNetCorpus) -> WordNetCorpus:
    """Definitions as documents (same positions as the glosses), usage examples as queries; an example
    that occurs in several glosses is one query relevant to each of their synsets."""
    definitions: list[str] = []
    by_example: dict[str, set[int]] = defaultdict(set)
    for index, gloss in enumerate(corpus.doc_texts):
        definition, examples = split_gloss(gloss)
        definitions.append(definition)
        for example in examples:
            by_example[example].add(index)
    queries = sorted(by_example)
    return WordNetCorpus(
        doc_keys=corpus.doc_keys,
        doc_texts=definitions,
        queries=queries,
        relevant=[np.array(sorted(by_example[q]), dtype=np.int32) for q in queries],
    )


def query_split(n_queries: int, seed: int = 0, test_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(tuning, held-out test) query indices, each sorted; fixed by the seed so every benchmark tunes alike."""
    order = np.random.default_rng(seed).permutation(n_queries)
    n_test = int(round(n_queries * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def embed_corpus(
    encoder: Encoder, limit: int | None = None, queries: str = "lemmas", doc_text: str = "gloss"
) -> tuple[WordNetCorpus, np.ndarray, np.ndarray]:
    """The corpus (or its first `limit` documents) with cached document and query vectors.

    `queries`: "lemmas" (documents are whole glosses, or entries: `doc_text`) or "examples" (documents are definitions).
    """
    if doc_text != "gloss" and queries != "lemmas":
        raise ValueError("entry documents hold their lemmas: they pair with lemma queries only")
    corpus = load_corpus(doc_text=doc_text)
    suffix = ""
    if limit is not None:
        corpus = corpus.head(limit)
        suffix = f"-first{limit}"
    tag = "wordnet"
    if queries == "examples":
        corpus, tag = example_corpus(corpus), "wordnet-examples"
    elif queries != "lemmas":
        raise ValueError(f"unknown WordNet query set {queries!r}; 'lemmas' or 'examples'")
    name = encoder.info.name
    doc_tag = "wordnet-entries" if doc_text == "entry" else tag  # the lemma queries are the same for both
    doc_vectors = cached_embeddings(
        f"{doc_tag}-{name}-docs{suffix}",
        corpus.doc_texts,
        lambda texts: encoder.encode_docs(texts),
        name,
    )
    query_vectors = cached_embeddings(
        f"{tag}-{name}-queries{suffix}",
        corpus.queries,
        lambda texts: encoder.encode_queries(texts),
        name,
    )
    return corpus, doc_vectors, query_vectors


SAMPLE_BLOCK = 5000  # a sample's documents are embedded and cached in blocks: a larger sample reuses a smaller one's


def sampled_doc_vectors(encoder: Encoder, corpus: WordNetCorpus, seed: int) -> np.ndarray:
    """Vectors of a ``WordNetCorpus.sample`` (seed ``seed``), cached per block of SAMPLE_BLOCK documents."""
    name, texts = encoder.info.name, corpus.doc_texts
    blocks = [
        cached_embeddings(f"wordnet-sample{seed}-{name}-docs-block{start // SAMPLE_BLOCK}", texts[start : start + SAMPLE_BLOCK], encoder.encode_docs, name)
        for start in range(0, len(texts), SAMPLE_BLOCK)
    ]
    return np.concatenate(blocks)


def doc_token_sets(encoder: Encoder, tag: str, texts: list[str]) -> list[np.ndarray]:
    """Token vectors of a document list (``tag``: "wordnet" glosses or "wordnet-examples" definitions), cached
    per tag and count: per-token vectors are ~15x the pooled ones and slow to make on a small host."""
    name = encoder.info.name
    return cached_token_sets(f"{tag}-{name}-doc-tokens-first{len(texts)}", texts, lambda chunk: encoder.encode_tokens(chunk), name)


def query_token_sets(encoder: Encoder, tag: str, split: str, texts: list[str]) -> list[np.ndarray]:
    """Token vectors of a query sample (cached per query set and split; re-encoded when the sample changes)."""
    name = encoder.info.name
    return cached_token_sets(f"{tag}-{name}-query-tokens-{split}", texts, lambda chunk: encoder.encode_tokens(chunk), name)


@dataclass
class TokenQuerySet:
    """One multi-vector evaluation set: document token sets and tuning / held-out query token sets."""

    name: str  # "examples" (usage-example sentences on definitions) or "lemmas" (lemmas on whole glosses)
    docs: list[np.ndarray]
    tune: list[np.ndarray]
    test: list[np.ndarray]
    tune_texts: list[str]
    test_texts: list[str]


def token_query_set(encoder: Encoder, queries: str, limit: int, n_queries: int, seed: int = 0) -> TokenQuerySet:
    """The first ``limit`` documents of a query set's corpus and up to ``n_queries`` queries from each side of
    the fixed split (only queries with a relevant document among those), all as cached token vectors."""
    corpus = load_corpus().head(limit)
    tag = "wordnet"
    if queries == "examples":
        corpus, tag = example_corpus(corpus), "wordnet-examples"
    elif queries != "lemmas":
        raise ValueError(f"unknown WordNet query set {queries!r}; 'lemmas' or 'examples'")
    tune_rows, test_rows = query_split(len(corpus.queries), seed=seed)
    rng = np.random.default_rng(seed)
    samples = [np.sort(rng.choice(rows, size=min(n_queries, len(rows)), replace=False)) for rows in (tune_rows, test_rows)]
    tune_texts, test_texts = ([corpus.queries[i] for i in rows] for rows in samples)
    return TokenQuerySet(
        name=queries,
        docs=doc_token_sets(encoder, tag, corpus.doc_texts),
        tune=query_token_sets(encoder, tag, "tune", tune_texts),
        test=query_token_sets(encoder, tag, "test", test_texts),
        tune_texts=tune_texts,
        test_texts=test_texts,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--limit", type=int, default=None, help="embed only the first N documents")
    parser.add_argument("--queries", choices=("lemmas", "examples"), default="lemmas", help="lemma queries on glosses, or usage-example queries on definitions")
    args = parser.parse_args()

    # Benchmarks never download: the model must already be on disk.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from encoders.registry import ModelRegistry

    corpus = load_corpus()
    sizes = np.array([r.size for r in corpus.relevant])
    print(
        f"documents {len(corpus.doc_texts)}  queries {len(corpus.queries)}  relevant per query: "
        f"mean {sizes.mean():.2f}  median {np.median(sizes):.0f}  max {sizes.max()}"
    )

    encoder = ModelRegistry().get(args.model)
    started = time.perf_counter()
    corpus, docs, queries = embed_corpus(encoder, args.limit, args.queries)
    seconds = time.perf_counter() - started
    print(f"doc vectors {docs.shape}  query vectors {queries.shape}  in {seconds:.1f}s  cache {cache_dir()}")


if __name__ == "__main__":
    main()
