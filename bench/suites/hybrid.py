"""The `hybrid` suite: dense, BM25 and hybrid (RRF, DBSF) retrieval on WordNet, lemma -> the synsets holding it.

Documents are synset glosses, queries are lemmas from the held-out test side of the shared split, and a
gloss is relevant when its synset holds the lemma (bench/wordnet.py). Everything runs through a real
Collection: FAISS flat segments for the dense side (the cached MiniLM vectors), SQLite FTS5 bm25() for the
keyword side, the collection's fusion for hybrid. Quality: nDCG@10 and recall@100 against the relevant sets.
Each fusion runs with its default weights (1 and 1) and with a dense weight chosen on tuning queries of the
shared split; every reported figure is on test queries. nDCG@10 comes from k=10 queries (fusion depth
max(10, depth)), recall@100 from k=100 ones. Latency: single queries, k=10, taken in interleaved rounds
(bench/measure.py) so a busy machine slows every mode alike; every query carries its cached vector, so no mode pays for embedding and hybrid's ratio to dense
is the cost of the keyword search and the fusion alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench import report
from bench.metrics import ndcg_at_k
from bench.suites import Suite
from bench.suites.options import DEFAULT_OUT, DEFAULT_THREADS, Out, Queries, Threads

MODES: dict[str, dict[str, Any]] = {
    "dense": {"mode": "dense"},
    "bm25": {"mode": "keyword"},
    "hybrid_rrf": {"mode": "hybrid", "fusion": "rrf"},
    "hybrid_dbsf": {"mode": "hybrid", "fusion": "dbsf"},
}
# Dense weights (keyword weight 1) tried on the tuning queries; the best per method is then measured on test.
DENSE_WEIGHTS = (1.0, 2.0, 4.0, 8.0, 16.0)
LATENCY_BUDGET_S = 3.0  # per mode
LATENCY_GOAL = 1.5  # hybrid p50 at most this multiple of dense p50


def per_query_ndcg(found: list[list[int]], relevant: list[np.ndarray]) -> np.ndarray:
    return np.array([ndcg_at_k(np.array([(f + [-1] * 10)[:10]]), [rel], 10) for f, rel in zip(found, relevant, strict=True)])


def paired_interval(a: np.ndarray, b: np.ndarray, seed: int = 0, draws: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of mean(a - b) over queries resampled with replacement (paired)."""
    diff = a - b
    picks = np.random.default_rng(seed).integers(0, len(diff), (draws, len(diff)))
    means = diff[picks].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def recall_of_relevant(found: list[list[int]], relevant: list[np.ndarray], k: int) -> float:
    """Mean share of each query's relevant documents among its first k results."""
    return float(np.mean([np.isin(rel, f[:k]).mean() for f, rel in zip(found, relevant, strict=True)]))


def hybrid(
    docs: Annotated[int, typer.Option(help="The first N WordNet glosses (their MiniLM vectors are cached after the first run).")] = 20_000,
    queries: Queries = 2000,
    tokenizer: Annotated[str, typer.Option(help="FTS5 tokenizer of the text index: porter, unicode61, ascii, trigram.")] = "porter",
    threads: Threads = DEFAULT_THREADS,
    depth: Annotated[int, typer.Option(help="Candidates each list gives the fusion (fusion.depth; the service's default is max(k, 100)).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the query sample.")] = 0,
    out: Out = DEFAULT_OUT,
) -> None:
    """Dense vs BM25 (SQLite FTS5) vs hybrid (RRF, DBSF) on WordNet lemmas: nDCG@10, recall@100, single-query latency."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.threads import thread_budget
    from bench.wordnet import embed_corpus, query_split
    from encoders.registry import ModelRegistry
    from index.backends.faiss_index import IndexSpec
    from index.catalog import Catalog
    from index.query.fusion import Fusion
    from index.requests import PointInput, Query
    from index.storage.text_index import TextIndexSpec

    head = report.header("hybrid")
    registry = ModelRegistry()
    corpus, doc_vectors, query_vectors = embed_corpus(registry.get("minilm-l6"), docs)
    tune, test = query_split(len(corpus.queries))
    rng = np.random.default_rng(seed)
    tune_picked = np.sort(rng.choice(tune, min(queries, len(tune)), replace=False))
    picked = np.sort(rng.choice(test, min(queries, len(test)), replace=False))

    with tempfile.TemporaryDirectory(prefix="trove-bench-hybrid-") as tmp, thread_budget(threads):
        catalog = Catalog(Path(tmp), registry)
        catalog.load_all()
        collection = catalog.create("wordnet", model=None, dim=doc_vectors.shape[1], metric="cosine", index=IndexSpec(), text_index=TextIndexSpec(tokenizer))
        typer.echo(f"indexing {len(corpus.doc_texts)} glosses (vectors and FTS5 text index)", err=True)
        for start in range(0, len(corpus.doc_texts), 5000):
            stop = min(start + 5000, len(corpus.doc_texts))
            collection.upsert([PointInput(id=i, text=corpus.doc_texts[i], vector=doc_vectors[i]) for i in range(start, stop)])
        collection.optimize(seal=True)

        def query(mode: str, q: int, k: int, dense_weight: float = 1.0) -> Query:
            """Query ``q`` (an index into the corpus's lemmas) in a mode; hybrid ones carry its vector and text."""
            spec = MODES[mode]
            return Query(
                text=corpus.queries[q] if spec["mode"] != "dense" else None,
                vector=query_vectors[q] if spec["mode"] != "keyword" else None,
                k=k,
                with_payload=False,
                mode=spec["mode"],
                fusion=Fusion(method=spec["fusion"], weights={"dense": dense_weight, "keyword": 1.0}, depth=depth) if "fusion" in spec else None,
            )

        def ranked(mode: str, sample: np.ndarray, k: int, dense_weight: float) -> list[list[int]]:
            found: list[list[int]] = []
            for start in range(0, len(sample), 256):
                batch = [query(mode, int(q), k, dense_weight) for q in sample[start : start + 256]]
                found += [[int(h.id) for h in hits] for hits in collection.query_batch(batch)]
            return found

        def quality(mode: str, sample: np.ndarray, dense_weight: float = 1.0, with_recall: bool = True) -> dict[str, Any]:
            """nDCG@10 of k=10 queries (as a user asks them: the fusion depth is max(10, depth)); recall@100 of k=100 ones."""
            relevant = [corpus.relevant[q] for q in sample]
            top10 = ranked(mode, sample, 10, dense_weight)
            per_query = per_query_ndcg(top10, relevant)
            out: dict[str, Any] = {"ndcg_at_10": float(per_query.mean()), "per_query_ndcg": per_query, "empty_results": float(np.mean([not f for f in top10]))}
            if with_recall:
                out["recall_at_100"] = recall_of_relevant(ranked(mode, sample, 100, dense_weight), relevant, 100)
            return out

        rows: dict[str, dict[str, Any]] = {}
        for mode in MODES:
            typer.echo(f"quality: {mode}", err=True)
            rows[mode] = quality(mode, picked) | ({"weights": {"dense": 1.0, "keyword": 1.0}} if mode.startswith("hybrid") else {})
        tuning: dict[str, dict[str, float]] = {}
        for mode in ("hybrid_rrf", "hybrid_dbsf"):
            typer.echo(f"tuning the dense weight of {mode} on tuning queries", err=True)
            tuning[mode] = {str(w): quality(mode, tune_picked, w, with_recall=False)["ndcg_at_10"] for w in DENSE_WEIGHTS}
            best = max(DENSE_WEIGHTS, key=lambda w: tuning[mode][str(w)])
            rows[f"{mode}_tuned"] = quality(mode, picked, best) | {"weights": {"dense": best, "keyword": 1.0}}
        typer.echo("latency (single queries, k=10, interleaved rounds)", err=True)
        from bench.measure import interleaved_single

        searches = {mode: (lambda ix, m=mode: collection.query_batch([query(m, int(ix[0]), 10)])) for mode in MODES}
        latency = interleaved_single(searches, picked, LATENCY_BUDGET_S)
        info = collection.info()
        dense_per_query = rows["dense"]["per_query_ndcg"]
        catalog.close()

    for mode in rows:
        per_query = rows[mode].pop("per_query_ndcg")
        if mode != "dense":
            rows[mode]["ndcg_at_10_minus_dense_95ci"] = paired_interval(per_query, dense_per_query)
        timed = mode.removesuffix("_tuned")  # the weights do not change the work: tuned rows share their method's timing
        rows[mode] |= {k: latency[timed][k] for k in ("p50_ms", "p99_ms", "mean_ms", "single_queries")}
        rows[mode]["p50_ratio_to_dense"] = latency[timed]["p50_ms"] / latency["dense"]["p50_ms"]
    best_single = max(rows["dense"]["ndcg_at_10"], rows["bm25"]["ndcg_at_10"])
    goals = {
        fused: {
            "beats_better_of_dense_and_bm25_on_ndcg_at_10": rows[fused]["ndcg_at_10"] > best_single,
            f"p50_at_most_{LATENCY_GOAL}x_dense": rows[fused]["p50_ratio_to_dense"] <= LATENCY_GOAL,
        }
        for fused in rows
        if fused.startswith("hybrid")
    }
    payload = {
        **head,
        "dataset": f"WordNet 3.0: first {len(corpus.doc_texts)} synset glosses (documents), lemmas of the held-out split (queries), "
        "relevant = the synsets holding the lemma; all-MiniLM-L6-v2 384-d, real embeddings",
        "queries": {"test": len(picked), "tuning": len(tune_picked)},
        "dense_weight_tuning_ndcg_at_10": tuning,
        "index": {"dense": "flat (exact) FAISS segments", "text": f"SQLite FTS5, tokenizer {tokenizer}, bm25()"},
        "fusion": {"rrf": {"k": 60}, "dbsf": {}, "depth": f"max(k, {depth}) per list"},
        "points": info["points"],
        "rows": rows,
        "goals": goals,
    }
    paths = report.write(out, "hybrid", payload, render(payload))
    typer.echo(render(payload))
    typer.echo("wrote " + ", ".join(str(p) for p in paths), err=True)


def render(payload: dict[str, Any]) -> str:
    names = {"dense": "dense (MiniLM, flat)", "bm25": "BM25 (FTS5)", "hybrid_rrf": "hybrid, RRF", "hybrid_dbsf": "hybrid, DBSF"}
    for fused, row in payload["rows"].items():
        if fused.endswith("_tuned"):
            names[fused] = f"{names[fused.removesuffix('_tuned')]}, dense weight {row['weights']['dense']:g} (tuned)"
    lines = [
        "# Hybrid suite",
        "",
        report.machine_line(payload),
        f"Data: {payload['dataset']}; {payload['queries']['test']} test queries.",
        f"Text index: {payload['index']['text']}. Fusion: RRF k=60, DBSF (mean +- 3 std), {payload['fusion']['depth']}; weights 1 and 1 (the defaults),"
        f" and the dense weight (keyword 1) chosen from {', '.join(f'{w:g}' for w in DENSE_WEIGHTS)} on {payload['queries']['tuning']} tuning queries (tuned).",
        "Latency: single queries through the Collection at k=10, interleaved rounds; every query carries its cached vector (no mode pays for embedding).",
        "",
        "| mode | nDCG@10 | minus dense (95% CI) | recall@100 | empty results | p50 ms | p99 ms | p50 / dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, row in payload["rows"].items():
        lines.append(
            f"| {names[key]} | {row['ndcg_at_10']:.4f} | {_interval(row)} | {row['recall_at_100']:.4f} | {row['empty_results']:.3f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['p50_ratio_to_dense']:.2f}x |"
        )
    lines.append("")
    for fused, goal in payload["goals"].items():
        ndcg, latency = goal["beats_better_of_dense_and_bm25_on_ndcg_at_10"], next(v for k, v in goal.items() if k.startswith("p50"))
        lines.append(
            f"{names[fused]}: beats the better of dense and BM25 on nDCG@10: {'yes' if ndcg else 'no'}; p50 <= {LATENCY_GOAL}x dense: {'yes' if latency else 'no'}."
        )
    return "\n".join(lines)


def _interval(row: dict[str, Any]) -> str:
    if "ndcg_at_10_minus_dense_95ci" not in row:
        return "-"
    low, high = row["ndcg_at_10_minus_dense_95ci"]
    return f"[{low:+.4f}, {high:+.4f}]"


SUITE = Suite(name="hybrid", summary="dense vs BM25 vs hybrid (RRF, DBSF) on WordNet lemmas: nDCG@10, recall@100, latency", command=hybrid)
