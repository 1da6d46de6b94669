"""The `hybrid` suite: dense, BM25 and hybrid (RRF, DBSF) retrieval on WordNet, lemma -> the synsets holding it.

Queries are lemmas, a document is relevant when its synset holds the lemma (bench/wordnet.py). A document is
one of two texts (``--doc-text``, both by default, each its own collection): the synset's gloss alone, or its
dictionary entry (its lemmas, then its gloss), the text a dictionary's search indexes. The dense model and
BM25 always see the same text. Everything runs through a real Collection: FAISS flat segments for the dense
side (cached MiniLM vectors), SQLite FTS5 bm25() for the keyword side, the collection's fusion for hybrid.
Quality: nDCG@10 (k=10 queries) and recall@100 (k=100 queries) against the relevant sets.

Fusion settings (RRF k, depth, dense weight; DBSF depth, dense weight) are chosen on the tuning side of the
shared query split, by fusing each tuning query's dense and BM25 top-100 (taken once from the collection)
with the collection's own ``fuse``; a list's top-d is its top-100's prefix, so this is exactly what a hybrid
query of depth d fuses. Every reported figure is on held-out test queries, through real hybrid queries.
Latency: single queries, k=10, in interleaved rounds (bench/measure.py) so a busy machine slows every mode
alike; every query carries its cached vector, so no mode pays for embedding and hybrid's ratio to dense is the
cost of the keyword search and the fusion alone.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench import report
from bench.metrics import ndcg_at_k
from bench.suites import Suite
from bench.suites.options import (
    DEFAULT_OUT,
    DEFAULT_THREADS,
    Docs,
    Out,
    Queries,
    Threads,
)
from index.query.fusion import DEFAULT_DEPTH, RRF_K, Fusion, fuse

# What each row asks the collection; fused rows' Fusion is filled in per row.
MODES = {"dense": "dense", "bm25": "keyword", "hybrid_rrf": "hybrid", "hybrid_dbsf": "hybrid"}
# Fusion settings tried on the tuning queries (dense weight relative to a keyword weight of 1).
RRF_KS = (1.0, 5.0, 10.0, 20.0, 40.0, 60.0, 100.0)
DEPTHS = (10, 20, 50, 100)
DENSE_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)
POOL = max(DEPTHS)  # candidates taken once per list for tuning
LATENCY_BUDGET_S = 3.0  # per timed row
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


def fusion_grid() -> list[Fusion]:
    weights = [{"dense": w, "keyword": 1.0} for w in DENSE_WEIGHTS]
    rrf = [Fusion("rrf", w, k, d) for k, d, w in itertools.product(RRF_KS, DEPTHS, weights)]
    return rrf + [Fusion("dbsf", w, None, d) for d, w in itertools.product(DEPTHS, weights)]


def describe(fusion: Fusion) -> dict[str, Any]:
    return {"method": fusion.method, "k": fusion.k if fusion.method == "rrf" else None, "depth": fusion.depth, "dense_weight": fusion.weight("dense")}


def fused_ndcg(pools: dict[str, list[list[tuple[int, float]]]], relevant: list[np.ndarray], fusion: Fusion) -> float:
    """Mean nDCG@10 of k=10 hybrid queries with ``fusion``, fused from each query's dense and BM25 pools."""
    depth = fusion.depth_for(10)
    found = [
        [key for key, _, _ in fuse({"dense": dense[:depth], "keyword": keyword[:depth]}, fusion, 10)]
        for dense, keyword in zip(pools["dense"], pools["keyword"], strict=True)
    ]
    return float(per_query_ndcg(found, relevant).mean())


def hybrid(
    docs: Docs = None,
    doc_text: Annotated[
        list[str] | None, typer.Option(help="Document text, repeatable: 'entry' (lemmas + gloss, as a dictionary indexes it) and/or 'gloss' (default: both).")
    ] = None,
    queries: Queries = 2000,
    tokenizer: Annotated[str, typer.Option(help="FTS5 tokenizer of the text index: porter, unicode61, ascii, trigram.")] = "porter",
    index: Annotated[str, typer.Option(help="Dense index of the collection: 'flat' (exact) or 'hnsw' (its defaults).")] = "flat",
    threads: Threads = DEFAULT_THREADS,
    seed: Annotated[int, typer.Option(help="Seed of the query sample.")] = 0,
    out: Out = DEFAULT_OUT,
) -> None:
    """Dense vs BM25 (SQLite FTS5) vs hybrid (RRF, DBSF) on WordNet lemmas: nDCG@10, recall@100, single-query latency."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.threads import thread_budget
    from bench.wordnet import DOC_TEXTS, embed_corpus, query_split
    from encoders.registry import ModelRegistry
    from index.backends.faiss_index import IndexSpec

    variants = doc_text or ["entry", "gloss"]
    if index not in ("flat", "hnsw"):
        raise typer.BadParameter(f"--index is 'flat' or 'hnsw', not {index!r}")
    unknown = sorted(set(variants) - set(DOC_TEXTS))
    if unknown:
        raise typer.BadParameter(f"--doc-text is one of {', '.join(DOC_TEXTS)}, not {', '.join(unknown)}")
    head = report.header("hybrid")
    registry = ModelRegistry()
    results: dict[str, dict[str, Any]] = {}
    with thread_budget(threads):
        for variant in dict.fromkeys(variants):
            corpus, doc_vectors, query_vectors = embed_corpus(registry.get("minilm-l6"), docs, doc_text=variant)
            results[variant] = _run_variant(variant, corpus, doc_vectors, query_vectors, query_split, registry, queries, tokenizer, IndexSpec(index), seed)
    payload = {
        **head,
        "dataset": "WordNet 3.0 synsets (documents: the gloss, or the entry = lemmas + gloss), lemma queries, "
        "relevant = the synsets holding the lemma; all-MiniLM-L6-v2 384-d, real embeddings",
        "index": {"dense": "flat (exact) FAISS segments" if index == "flat" else "HNSW FAISS segments (M 32, ef_construction 200, ef_search measured at seal for recall 0.95)", "text": f"SQLite FTS5, tokenizer {tokenizer}, bm25()"},
        "defaults": {"rrf_k": RRF_K, "depth": f"max(k, {DEFAULT_DEPTH})", "weights": "1 and 1"},
        "grid": {"rrf_k": RRF_KS, "depth": DEPTHS, "dense_weight": DENSE_WEIGHTS},
        "variants": results,
        "default_rrf_k": default_k_choice(results),
    }
    paths = report.write(out, "hybrid", payload, render(payload))
    typer.echo(render(payload))
    typer.echo("wrote " + ", ".join(str(p) for p in paths), err=True)


def default_k_choice(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The RRF k that the tuning queries favour at the default weights (1 and 1) and depth, averaged over the
    document texts run: how the service's default RRF_K is chosen (weights stay 1 and 1: which list deserves
    more depends on the data, as the tuned weights of the two texts show)."""
    by_k = {
        k: float(np.mean([next(t["ndcg_at_10"] for t in r["tuning"]["all"] if (t["method"], t["k"], t["depth"], t["dense_weight"]) == ("rrf", k, DEFAULT_DEPTH, 1.0)) for r in results.values()]))
        for k in RRF_KS
    }
    return {"mean_tuning_ndcg_at_10_by_k": by_k, "best": max(by_k, key=by_k.__getitem__), "service_default": RRF_K}


def _run_variant(
    variant: str, corpus: Any, doc_vectors: np.ndarray, query_vectors: np.ndarray, query_split: Any, registry: Any, queries: int, tokenizer: str, index: Any, seed: int
) -> dict[str, Any]:
    from bench.measure import interleaved_single
    from index.catalog import Catalog
    from index.requests import PointInput, Query
    from index.storage.text_index import TextIndexSpec

    tune, test = query_split(len(corpus.queries))
    rng = np.random.default_rng(seed)
    tune_picked = np.sort(rng.choice(tune, min(queries, len(tune)), replace=False))
    picked = np.sort(rng.choice(test, min(queries, len(test)), replace=False))

    with tempfile.TemporaryDirectory(prefix="trove-bench-hybrid-") as tmp:
        catalog = Catalog(Path(tmp), registry)
        catalog.load_all()
        collection = catalog.create(variant, model=None, dim=doc_vectors.shape[1], metric="cosine", index=index, text_index=TextIndexSpec(tokenizer))
        typer.echo(f"[{variant}] indexing {len(corpus.doc_texts)} documents (vectors and FTS5 text index)", err=True)
        for start in range(0, len(corpus.doc_texts), 5000):
            stop = min(start + 5000, len(corpus.doc_texts))
            collection.upsert([PointInput(id=i, text=corpus.doc_texts[i], vector=doc_vectors[i]) for i in range(start, stop)])
        collection.optimize(seal=True)

        def query(mode: str, q: int, k: int, fusion: Fusion | None = None) -> Query:
            """Query ``q`` (an index into the corpus's lemmas); hybrid ones carry its vector and its text."""
            asked = MODES[mode]
            return Query(
                text=corpus.queries[q] if asked != "dense" else None,
                vector=query_vectors[q] if asked != "keyword" else None,
                k=k,
                with_payload=False,
                mode=asked,
                fusion=fusion if asked == "hybrid" else None,
            )

        def ranked(mode: str, sample: np.ndarray, k: int, fusion: Fusion | None = None) -> list[list[tuple[int, float]]]:
            found: list[list[tuple[int, float]]] = []
            for start in range(0, len(sample), 256):
                batch = [query(mode, int(q), k, fusion) for q in sample[start : start + 256]]
                found += [[(int(h.id), h.score) for h in hits] for hits in collection.query_batch(batch)]
            return found

        def ids(found: list[list[tuple[int, float]]]) -> list[list[int]]:
            return [[key for key, _ in hits] for hits in found]

        # Tuning: every setting fused from the same pools, with the collection's own fuse.
        typer.echo(f"[{variant}] tuning {len(fusion_grid())} fusion settings on {len(tune_picked)} tuning queries", err=True)
        tune_relevant = [corpus.relevant[q] for q in tune_picked]
        pools = {"dense": ranked("dense", tune_picked, POOL), "keyword": ranked("bm25", tune_picked, POOL)}
        tuning = [describe(f) | {"ndcg_at_10": fused_ndcg(pools, tune_relevant, f)} for f in fusion_grid()]
        chosen = {
            method: max((t for t in tuning if t["method"] == method), key=lambda t: t["ndcg_at_10"]) for method in ("rrf", "dbsf")
        }

        def fusion_of(setting: dict[str, Any]) -> Fusion:
            return Fusion(setting["method"], {"dense": setting["dense_weight"], "keyword": 1.0}, setting["k"], setting["depth"])

        # Held-out test: real queries, every mode, defaults and tuned settings.
        plans: dict[str, tuple[str, Fusion | None]] = {
            "dense": ("dense", None),
            "bm25": ("bm25", None),
            "hybrid_rrf": ("hybrid_rrf", Fusion("rrf")),
            "hybrid_dbsf": ("hybrid_dbsf", Fusion("dbsf")),
            "hybrid_rrf_k60": ("hybrid_rrf", Fusion("rrf", k=60.0)),
            "hybrid_rrf_tuned": ("hybrid_rrf", fusion_of(chosen["rrf"])),
            "hybrid_dbsf_tuned": ("hybrid_dbsf", fusion_of(chosen["dbsf"])),
        }
        relevant = [corpus.relevant[q] for q in picked]
        rows: dict[str, dict[str, Any]] = {}
        per_query: dict[str, np.ndarray] = {}
        for name, (mode, fusion) in plans.items():
            typer.echo(f"[{variant}] test queries: {name}", err=True)
            top10 = ids(ranked(mode, picked, 10, fusion))
            per_query[name] = per_query_ndcg(top10, relevant)
            rows[name] = {
                "ndcg_at_10": float(per_query[name].mean()),
                "recall_at_100": recall_of_relevant(ids(ranked(mode, picked, 100, fusion)), relevant, 100),
                "empty_results": float(np.mean([not f for f in top10])),
            } | ({"fusion": describe(fusion)} if fusion is not None else {})
        # The tuning path must fuse what a real hybrid query fuses: check it on the test queries' default RRF.
        test_pools = {"dense": ranked("dense", picked, POOL), "keyword": ranked("bm25", picked, POOL)}
        offline_default = fused_ndcg(test_pools, relevant, Fusion("rrf"))

        typer.echo(f"[{variant}] latency (single queries, k=10, interleaved rounds)", err=True)
        searches = {name: (lambda ix, m=mode, f=fusion: collection.query_batch([query(m, int(ix[0]), 10, f)])) for name, (mode, f) in plans.items()}
        latency = interleaved_single(searches, picked, LATENCY_BUDGET_S)
        points = collection.info()["points"]
        catalog.close()

    for name, row in rows.items():
        if name != "dense":
            row["ndcg_at_10_minus_dense_95ci"] = paired_interval(per_query[name], per_query["dense"])
        if name == "hybrid_rrf":  # the service's default against Cormack's constant, on the same queries
            row["ndcg_at_10_minus_rrf_k60_95ci"] = paired_interval(per_query[name], per_query["hybrid_rrf_k60"])
        if name.startswith("hybrid"):
            better = "dense" if rows["dense"]["ndcg_at_10"] >= rows["bm25"]["ndcg_at_10"] else "bm25"
            row["ndcg_at_10_minus_better_single_95ci"] = paired_interval(per_query[name], per_query[better])
        row |= {k: latency[name][k] for k in ("p50_ms", "p99_ms", "mean_ms", "single_queries")}
        row["p50_ratio_to_dense"] = latency[name]["p50_ms"] / latency["dense"]["p50_ms"]
        row["p99_ratio_to_dense"] = latency[name]["p99_ms"] / latency["dense"]["p99_ms"]
    best_single = max(rows["dense"]["ndcg_at_10"], rows["bm25"]["ndcg_at_10"])
    goals = {
        name: {
            "beats_better_of_dense_and_bm25_on_ndcg_at_10": rows[name]["ndcg_at_10"] > best_single,
            "beats_it_with_95ci_above_0": rows[name]["ndcg_at_10_minus_better_single_95ci"][0] > 0,
            f"p50_at_most_{LATENCY_GOAL}x_dense": rows[name]["p50_ratio_to_dense"] <= LATENCY_GOAL,
        }
        for name in rows
        if name.startswith("hybrid")
    }
    return {
        "documents": len(corpus.doc_texts),
        "points": points,
        "queries": {"test": len(picked), "tuning": len(tune_picked)},
        "rows": rows,
        "goals": goals,
        "tuning": {"chosen": chosen, "all": tuning},
        "offline_fusion_check": {"default_rrf_ndcg_at_10_fused_from_pools": offline_default, "from_hybrid_queries": rows["hybrid_rrf"]["ndcg_at_10"]},
    }


NAMES = {
    "dense": "dense (MiniLM, flat)",
    "bm25": "BM25 (FTS5)",
    "hybrid_rrf": "hybrid RRF, defaults",
    "hybrid_dbsf": "hybrid DBSF, defaults",
    "hybrid_rrf_k60": "hybrid RRF, k=60 (Cormack et al.)",
    "hybrid_rrf_tuned": "hybrid RRF, tuned",
    "hybrid_dbsf_tuned": "hybrid DBSF, tuned",
}


def _setting(fusion: dict[str, Any] | None) -> str:
    if fusion is None:
        return "-"
    depth = fusion["depth"] if fusion["depth"] is not None else f"max(k, {DEFAULT_DEPTH})"
    rrf = f"k={fusion['k'] if fusion['k'] is not None else RRF_K:g}, " if fusion["method"] == "rrf" else ""
    return f"{rrf}depth {depth}, dense weight {fusion['dense_weight']:g}"


def render(payload: dict[str, Any]) -> str:
    names = NAMES | {"dense": "dense (MiniLM, flat)" if payload["index"]["dense"].startswith("flat") else "dense (MiniLM, HNSW)"}
    lines = [
        "# Hybrid suite",
        "",
        report.machine_line(payload),
        f"Data: {payload['dataset']}.",
        f"Text index: {payload['index']['text']}. Defaults: RRF k={RRF_K:g}, DBSF (mean +- 3 std), depth max(k, {DEFAULT_DEPTH}) per list, weights 1 and 1.",
        (
            f"Tuned: the best setting on tuning queries of RRF k in {', '.join(f'{k:g}' for k in RRF_KS)}, depth in {', '.join(map(str, DEPTHS))}, "
            f"dense weight (keyword 1) in {', '.join(f'{w:g}' for w in DENSE_WEIGHTS)}; DBSF depth and weight likewise. All figures are on held-out test queries."
        ),
        "Latency: single queries through the Collection at k=10, interleaved rounds; every query carries its cached vector (no mode pays for embedding).",
    ]
    for variant, result in payload["variants"].items():
        rows = result["rows"]
        lines += [
            "",
            f"## Documents: {variant} ({result['documents']} synsets; {result['queries']['test']} test, {result['queries']['tuning']} tuning queries)",
            "",
            "| mode | fusion | nDCG@10 | minus dense (95% CI) | recall@100 | empty | p50 ms | p99 ms | p50 / dense | p99 / dense |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key, row in rows.items():
            lines.append(
                f"| {names[key]} | {_setting(row.get('fusion'))} | {row['ndcg_at_10']:.4f} | {_interval(row.get('ndcg_at_10_minus_dense_95ci'))} | {row['recall_at_100']:.4f} "
                f"| {row['empty_results']:.3f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['p50_ratio_to_dense']:.2f}x | {row['p99_ratio_to_dense']:.2f}x |"
            )
        lines.append("")
        for name, goal in result["goals"].items():
            latency_ok = next(v for k, v in goal.items() if k.startswith("p50"))
            lines.append(
                f"- {names[name]}: beats the better of dense and BM25 on nDCG@10: {'yes' if goal['beats_better_of_dense_and_bm25_on_ndcg_at_10'] else 'no'} "
                f"(difference {_interval(rows[name]['ndcg_at_10_minus_better_single_95ci'])}); p50 <= {LATENCY_GOAL}x dense: {'yes' if latency_ok else 'no'}."
            )
        if "ndcg_at_10_minus_rrf_k60_95ci" in rows["hybrid_rrf"]:  # absent from results made before it was measured
            lines.append(f"- Default RRF (k={RRF_K:g}) minus RRF k=60, nDCG@10 (95% CI): {_interval(rows['hybrid_rrf']['ndcg_at_10_minus_rrf_k60_95ci'])}.")
        check = result["offline_fusion_check"]
        lines.append(
            f"- Tuning path check (default RRF on test queries): fused from pools {check['default_rrf_ndcg_at_10_fused_from_pools']:.4f}, "
            f"real hybrid queries {check['from_hybrid_queries']:.4f}."
        )
    choice = payload["default_rrf_k"]
    lines += [
        "",
        f"Default RRF k: mean tuning nDCG@10 over the document texts at weights 1 and 1, depth {DEFAULT_DEPTH}: "
        + ", ".join(f"k={float(k):g} {v:.4f}" for k, v in choice["mean_tuning_ndcg_at_10_by_k"].items())
        + f"; best k={float(choice['best']):g}, the service's default k={choice['service_default']:g}.",
    ]
    return "\n".join(lines)


def _interval(interval: list[float] | tuple[float, float] | None) -> str:
    if interval is None:
        return "-"
    low, high = interval
    return f"[{low:+.4f}, {high:+.4f}]"


SUITE = Suite(name="hybrid", summary="dense vs BM25 vs hybrid (RRF, DBSF) on WordNet lemmas (gloss and entry texts): nDCG@10, recall@100, latency", command=hybrid)
