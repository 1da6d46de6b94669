"""`trove bench filters`: filtered search through payload indexes against unfiltered search, in one run.

Data: SYNTHETIC clustered vectors (a Gaussian mixture fitted to WordNet MiniLM embeddings: the engine
suite's clustered set), with payloads drawn independently of the vectors: ``bucket`` (integer 0..99,
indexed: ``bucket = 7`` allows 1%), ``half`` (keyword "a" / "b", indexed: ``half = "a"`` allows 50%) and
``tag`` (integer 0..99, not indexed: the same 1% share through the stored JSON). The collection is one sealed
segment of N points (HNSW at its calibrated depth, or flat), in process.

Goals (issue 14): the 1%-selective indexed filter at <= 2x the unfiltered single-query p50, the 50% one at
<= 1.5x, recall@10 >= 0.95 on both, against exact search over the points each filter allows. Latencies are
taken in turns, query by query, so one machine's noise falls on all alike. A filter's first query computes
the segment's mask (SQLite); it is reported apart ("cold"), the steady state after it ("warm").
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench import report
from bench.collections import open_catalog
from bench.suites import Suite
from bench.suites.options import DEFAULT_OUT, Out

BATCH = 5000
TRUTH_CHUNK = 100_000
GOALS = {"indexed 1%": 2.0, "indexed 50%": 1.5}
RECALL_GOAL = 0.95


def _payloads(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"bucket": rng.integers(0, 100, n), "half": rng.integers(0, 2, n), "tag": rng.integers(0, 100, n)}


def _filters(columns: dict[str, np.ndarray]) -> dict[str, tuple[Any, np.ndarray | None]]:
    from index.query.filters import Filter, Match

    return {
        "unfiltered": (None, None),
        "indexed 1%": (Filter((Match("bucket", (7,)),)), columns["bucket"] == 7),
        "indexed 50%": (Filter((Match("half", ("a",)),)), columns["half"] == 0),
        "unindexed 1%": (Filter((Match("tag", (7,)),)), columns["tag"] == 7),
    }


def _exact_top10(docs: np.ndarray, queries: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """Exact top-10 ids (inner product) among the allowed documents, in chunks of documents."""
    best_scores = np.full((len(queries), 10), -np.inf, np.float32)
    best_ids = np.full((len(queries), 10), -1, np.int64)
    for start in range(0, len(docs), TRUTH_CHUNK):
        scores = queries @ docs[start : start + TRUTH_CHUNK].T
        if allowed is not None:
            scores[:, ~allowed[start : start + TRUTH_CHUNK]] = -np.inf
        ids = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        merged_scores, merged_ids = np.concatenate([best_scores, scores], axis=1), np.concatenate([best_ids, ids], axis=1)
        top = np.argsort(-merged_scores, axis=1, kind="stable")[:, :10]
        best_scores, best_ids = np.take_along_axis(merged_scores, top, axis=1), np.take_along_axis(merged_ids, top, axis=1)
    return best_ids


def _load(root: Path, kind: str, docs: np.ndarray, columns: dict[str, np.ndarray]) -> tuple[Any, Any, dict[str, float]]:
    from index.backends.faiss_index import IndexSpec
    from index.requests import PointInput
    from index.storage.payload_index import PayloadIndexSpec

    n = len(docs)
    catalog = open_catalog(root / kind, seal_points=n, max_segment_points=n)
    collection = catalog.create(kind, model=None, dim=docs.shape[1], metric="ip", index=IndexSpec(type=kind, m=16, ef_construction=100))  # type: ignore[arg-type]
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        stop = min(start + BATCH, n)
        collection.upsert(
            [
                PointInput(id=i, vector=docs[i], payload={"bucket": int(columns["bucket"][i]), "half": "ab"[columns["half"][i]], "tag": int(columns["tag"][i])})
                for i in range(start, stop)
            ]
        )
    seconds["upsert"] = time.perf_counter() - started
    for key, kind_ in (("bucket", "integer"), ("half", "keyword")):
        started = time.perf_counter()
        collection.indexes.build_payload(PayloadIndexSpec(key, kind_), lambda *a: None)  # type: ignore[arg-type]
        seconds[f"index {key}"] = time.perf_counter() - started
    started = time.perf_counter()
    collection.optimize(seal=True)
    seconds["seal"] = time.perf_counter() - started
    return catalog, collection, seconds


def _measure(collection: Any, docs: np.ndarray, queries: np.ndarray, columns: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    from bench.metrics import latency_ms, recall_at_k
    from index.requests import Query

    cases = _filters(columns)
    collection.filters.cache.clear()
    out: dict[str, dict[str, Any]] = {}
    for name, (f, _) in cases.items():  # each filter's first query: the segment's mask computed in SQLite
        started = time.perf_counter()
        collection.query_batch([Query(vector=queries[0], k=10, filter=f, with_payload=False)])
        out[name] = {"cold_ms": (time.perf_counter() - started) * 1000}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    found: dict[str, list[list[int]]] = {name: [] for name in cases}
    for q in queries:
        for name, (f, _) in cases.items():
            started = time.perf_counter()
            hits = collection.query_batch([Query(vector=q, k=10, filter=f, with_payload=False)])[0]
            samples[name].append(time.perf_counter() - started)
            found[name].append(([int(h.id) for h in hits] + [-1] * 10)[:10])
    for name, (_, allowed) in cases.items():
        truth = _exact_top10(docs, queries, allowed)
        share = 1.0 if allowed is None else float(allowed.mean())
        out[name] |= {"share": share, "recall_at_10": recall_at_k(np.array(found[name]), truth, 10), "warm": latency_ms(np.array(samples[name][5:]))}
    base = out["unfiltered"]["warm"]["p50_ms"]
    for name in cases:
        out[name]["p50_vs_unfiltered"] = out[name]["warm"]["p50_ms"] / base
    return out


def _markdown(head: dict[str, Any], payload: dict[str, Any]) -> str:
    lines = [
        "# Filtered search (`trove bench filters`)",
        "",
        report.machine_line(head),
        "",
        f"Data: {payload['dataset']}. {payload['points']:,} points, {payload['queries']} queries, k = 10, single queries in process, taken in turns.",
        "Payloads are independent of the vectors; `bucket` and `half` have payload indexes, `tag` has none.",
        "",
    ]
    for kind, run in payload["runs"].items():
        lines += [
            f"## {kind} (one sealed segment)",
            "",
            "load: " + ", ".join(f"{step} {s:.1f} s" for step, s in run["seconds"].items()),
            "",
            "| filter | share | recall@10 | p50 ms | p99 ms | p50 / unfiltered | goal | cold first query ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in run["results"].items():
            goal = GOALS.get(name)
            verdict = "" if goal is None else f"<= {goal}x: {'met' if r['p50_vs_unfiltered'] <= goal and r['recall_at_10'] >= RECALL_GOAL else 'NOT met'}"
            lines.append(
                f"| {name} | {r['share']:.3f} | {r['recall_at_10']:.3f} | {r['warm']['p50_ms']:.2f} | {r['warm']['p99_ms']:.2f} | {r['p50_vs_unfiltered']:.2f}x | {verdict} | {r['cold_ms']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def filters(
    source: Annotated[str, typer.Option(help="'wordnet:N' (its first N glosses, embedded and cached) or an .npz with 'docs' and 'queries'.")] = "wordnet:10000",
    fit_docs: Annotated[int, typer.Option(help="Real vectors the Gaussian mixture is fitted to.")] = 10_000,
    points: Annotated[int, typer.Option(help="N: points in the collection.")] = 1_000_000,
    queries: Annotated[int, typer.Option(help="Queries per measurement.")] = 200,
    indexes: Annotated[str, typer.Option(help="Comma-separated index types to run: hnsw, flat.")] = "hnsw",
    out: Out = DEFAULT_OUT,
) -> None:
    """Filtered vs unfiltered search: a 1% and a 50% indexed filter (and a 1% unindexed one) on N synthetic clustered points."""
    from bench.datasets import clustered_dataset, load_source
    from index.backends.faiss_index import set_search_threads

    set_search_threads(1)  # as `trove serve` runs each search (TROVE_FAISS_THREADS)
    head = report.header("filters")
    dataset = clustered_dataset(load_source(source), points, queries, fit_docs=fit_docs)
    docs, probe = dataset.docs, dataset.test.vectors[:queries]
    columns = _payloads(len(docs))
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="trove-bench-filters-") as tmp:
        for kind in [k.strip() for k in indexes.split(",") if k.strip()]:
            typer.echo(f"filters: loading {len(docs):,} points into a {kind} collection")
            catalog, collection, seconds = _load(Path(tmp), kind, docs, columns)
            typer.echo(f"filters: loaded ({', '.join(f'{k} {v:.1f} s' for k, v in seconds.items())}); measuring")
            runs[kind] = {"seconds": seconds, "segments": collection.info()["segments"], "results": _measure(collection, docs, probe, columns)}
            catalog.close()
    payload = {**head, "dataset": dataset.label, "points": len(docs), "queries": len(probe), "runs": runs, "recall_goal": RECALL_GOAL, "goals": GOALS}
    markdown = _markdown(head, payload)
    typer.echo(markdown)
    for path in report.write(out, "filters", payload, markdown):
        typer.echo(f"wrote {path}")


SUITE = Suite("filters", "filtered search through payload indexes vs unfiltered: 1% and 50% filters, recall and latency ratios", filters)
