"""`trove bench compression`: compressed collections with default settings against an uncompressed one, in one run.

Each configuration names only its kind of compression (no oversample, no storage, no target): the collection's
defaults decide the rest, as for a new user. Every system is a real collection (SQLite + segments + fitted
transforms) driven in process: the documents are upserted, the tuning queries are searched once (served traffic:
the collection keeps recent queries, which a fit measures on), then the compression is fitted (LeanVec-OOD also
learns from the tuning queries, as ``leanvec.queries``). The fit chooses its depths for the default target recall;
the table reports what it chose, what it measured on its held queries, and, on the test queries (never searched
before, not in the index), recall@10 against exact search, RAM per vector as a share of the float vectors, and
QPS as ratios to the uncompressed collection (FAISS flat) in the same run: batched (all test queries in one call,
the median of rounds in which every system answers: bench/measure.py ``interleaved_batched``) and single query
(one query per call, all systems interleaved in rounds: ``interleaved_single``).

For the one-byte code scan (index/compression/code_scan.py) the suite also times, single query, the scan of a
LeanVec + LVQ-8 segment's codes repeated to ``--scan-rows`` rows (the data sets here are small enough for their
codes to sit in cache), and the coarse stage as a search runs it (the scan and its top k * oversample), against the
floor of reading those code bytes once (an int64 sum over them), all on one thread as a single query's search runs
(index/backends/query_threads.py), in CPU time of that thread (a busy machine's scheduler waits left out).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from bench import report
from bench.measure import interleaved_batched, interleaved_single
from bench.metrics import recall_at_k
from bench.suites import Suite
from bench.suites.options import (
    DEFAULT_OUT,
    DEFAULT_THREADS,
    Out,
    Queries,
    Source,
    SyntheticDocs,
    Threads,
)
from bench.threads import thread_budget

if TYPE_CHECKING:
    from bench.datasets import Dataset

K = 10
EXACT = "exact (uncompressed, FAISS flat)"


def configurations(dim: int) -> dict[str, dict[str, Any]]:
    quarter, half = dim // 4, dim // 2
    return {
        "binary1": {"quantizer": {"kind": "binary"}},
        "binary2": {"quantizer": {"kind": "binary", "bits": 2}},
        "int8": {"quantizer": {"kind": "int8"}},
        f"leanvec-ood{quarter} + lvq8": {"leanvec": {"dim": quarter, "variant": "ood"}, "quantizer": {"kind": "lvq8"}},
        f"leanvec-id{quarter} + lvq8": {"leanvec": {"dim": quarter, "variant": "id"}, "quantizer": {"kind": "lvq8"}},
        f"leanvec-id{quarter} float": {"leanvec": {"dim": quarter, "variant": "id"}},
        f"matryoshka funnel {quarter}->{half}": {"matryoshka": {"funnel": [quarter, half]}},
    }


def _ids(hits: list[list[Any]]) -> np.ndarray:
    return np.array([([int(h.id) for h in row] + [-1] * K)[:K] for row in hits])


def _collection(catalog: Any, name: str, dataset: Dataset, config: dict[str, Any] | None) -> tuple[Any, dict[str, Any] | None, float]:
    """A filled collection, its tuning queries served once, then (with ``config``) fitted: (collection, fit report, fit s)."""
    from bench.collections import fill
    from index.backends.faiss_index import IndexSpec
    from index.compression.spec import CompressionSpec
    from index.requests import Query

    collection = catalog.create(name, model=None, dim=dataset.dim, metric="cosine", index=IndexSpec())
    fill(collection, dataset.docs, settle=False)
    collection.optimize(seal=True)
    collection.query_batch([Query(vector=q, k=K, with_payload=False) for q in dataset.tune.vectors])
    if config is None:
        return collection, None, 0.0
    spec = CompressionSpec.from_json(config)
    samples = dataset.tune.vectors if spec.leanvec is not None and spec.leanvec.variant == "ood" else None
    started = time.perf_counter()
    fitted = collection.compression.fit(spec, samples, lambda *a: None)
    return collection, fitted, time.perf_counter() - started


def _lvq_scan_vs_floor(collection: Any, queries: np.ndarray, budget: float, rows: int) -> dict[str, Any]:
    """Single-query CPU time (of the calling thread, the only one a single query's search uses) of the one-byte code
    scan (index/compression/code_scan.py: every row's ranking key) over ``rows`` rows (the first compressed
    segment's codes, repeated), of the coarse stage as a search runs it (the scan and the top k * oversample by
    FAISS's heap), and of reading those code bytes once (an int64 sum over them)."""
    import torch

    from index.backends.query_threads import threads_per_query
    from index.compression.fit_report import compressed_indexes
    from index.compression.multistage import scan_topk

    index = compressed_indexes(collection.engine.view())[0]
    own = index.code_scan()
    times = max(1, -(-rows // len(own)))

    def repeated(rows_of: torch.Tensor | None) -> torch.Tensor | None:
        return None if rows_of is None else rows_of.repeat(times)[:rows]

    scan = replace(own, values=own.values.repeat(times, 1)[:rows], scale=repeated(own.scale), bias=repeated(own.bias))
    reduced = index.reducer.encode_queries(queries)
    words = scan.values.view(torch.int64) if scan.values.shape[1] % 8 == 0 else scan.values.view(torch.uint8)
    depth = index.depth.keeps(K, int(np.ceil(K * index.depth.oversample)), 0)[0]
    n = len(scan)

    def scan_one(q: np.ndarray) -> None:
        with threads_per_query(1):  # as a single query's search runs it
            scan.keys(scan.prepare(reduced[int(q[0, 0])][None]), 0, n)

    def coarse_one(q: np.ndarray) -> None:
        with threads_per_query(1):
            prepared = scan.prepare(reduced[int(q[0, 0])][None])
            scan.scores_of(prepared, scan_topk(lambda s, e: scan.keys(prepared, s, e), n, depth, None, 1, scan.block_rows(1))[0])

    def floor(_: np.ndarray) -> None:
        with threads_per_query(1):
            words.sum()

    order = np.arange(len(queries), dtype=np.float32)[:, None]  # each "query" names a row of the reduced queries
    timed = interleaved_single({"scan": scan_one, "coarse": coarse_one, "floor": floor}, order, budget, clock=time.thread_time)
    code_bytes = scan.values.numel()
    floor_ms = max(timed["floor"]["p50_ms"], 1e-9)
    return {
        "rows": n,
        "code_bytes": code_bytes,
        "clock": "CPU time of the calling thread",
        "scan_ms": timed["scan"]["p50_ms"],
        "coarse_ms": timed["coarse"]["p50_ms"],
        "coarse_depth": depth,
        "floor_ms": timed["floor"]["p50_ms"],
        "scan_vs_floor": timed["scan"]["p50_ms"] / floor_ms,
        "coarse_vs_floor": timed["coarse"]["p50_ms"] / floor_ms,
        "scan_gb_s": code_bytes / (timed["scan"]["p50_ms"] / 1000) / 1e9,
    }


def measure_dataset(dataset: Dataset, target: float, single_budget: float, batched_rounds: int, scan_rows: int, workdir: Path) -> dict[str, Any]:
    from bench.collections import open_catalog
    from index.requests import Query

    catalog = open_catalog(workdir / dataset.name)
    test, truth = dataset.test.vectors, dataset.truth(dataset.test).ids
    float_bytes = len(dataset.docs) * dataset.dim * 4
    systems: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for i, (name, config) in enumerate([(EXACT, None), *configurations(dataset.dim).items()]):
        typer.echo(f"{dataset.name}: {name}", err=True)
        collection, fitted, fit_seconds = _collection(catalog, f"c{i}", dataset, config)
        systems[name] = collection

        def batch(q: np.ndarray, collection: Any = collection) -> list[list[Any]]:
            return collection.query_batch([Query(vector=v, k=K, with_payload=False) for v in q])

        batch(test[:8])  # warm-up, outside the clock
        row: dict[str, Any] = {
            "system": name,
            "config": config,
            "recall_at_10": recall_at_k(_ids(batch(test)), truth, K),
            "memory_bytes": collection.info()["memory_bytes"],
            "memory_vs_float": collection.info()["memory_bytes"] / float_bytes,
            "fit_seconds": fit_seconds,
        }
        if fitted is not None:
            row |= {"search": fitted["search"], "held_queries": fitted["held_queries"], "stages": fitted["stages"]}
        rows.append(row)
    typer.echo(f"{dataset.name}: batched and single-query rounds", err=True)
    batched = interleaved_batched({name: lambda q, c=c: c.query_batch([Query(vector=v, k=K, with_payload=False) for v in q]) for name, c in systems.items()}, test, batched_rounds)
    single = interleaved_single({name: lambda q, c=c: c.query_batch([Query(vector=q[0], k=K, with_payload=False)]) for name, c in systems.items()}, test, single_budget)
    base = next(r for r in rows if r["system"] == EXACT) | single[EXACT]
    for row in rows:
        row |= single[row["system"]] | {"qps_batched": len(test) / batched[row["system"]]}
        row["qps_batched_vs_exact"] = batched[EXACT] / batched[row["system"]]
        row["qps_single_vs_exact"] = row["qps_single"] / base["qps_single"]
        row["reaches_target"] = row["recall_at_10"] >= target
    lvq = next(name for name in systems if name.startswith("leanvec-ood"))
    scan = _lvq_scan_vs_floor(systems[lvq], dataset.test.vectors, single_budget / 2, scan_rows)
    catalog.close()
    return {
        "name": dataset.name, "label": dataset.label, "synthetic": dataset.synthetic, "docs": len(dataset.docs), "dim": dataset.dim,
        "tune_queries": len(dataset.tune), "test_queries": len(dataset.test), "rows": rows, "lvq_scan": {"system": lvq, **scan},
    }


def goals(result: dict[str, Any], target: float) -> dict[str, Any]:
    rows = {r["system"]: r for r in result["rows"]}
    d = result["dim"]
    binary, ood = rows["binary1"], rows[f"leanvec-ood{d // 4} + lvq8"]
    compressed = [r for r in result["rows"] if r["system"] != EXACT]
    return {
        f"every default configuration: recall@10 >= {target} on the test queries": all(r["reaches_target"] for r in compressed),
        "binary1: memory <= 1/30 of float": binary["memory_vs_float"] <= 1 / 30,
        "binary1: >= 8x exact single-query QPS": binary["qps_single_vs_exact"] >= 8,
        "leanvec-ood+lvq8: >= 3x exact single-query QPS": ood["qps_single_vs_exact"] >= 3,
        "leanvec-ood+lvq8: >= 1x exact batched QPS": ood["qps_batched_vs_exact"] >= 1,
        "lvq scan within 2x of the bandwidth floor of its code bytes": result["lvq_scan"]["scan_vs_floor"] <= 2,
        "lvq coarse stage (scan and top-k) within 2x of that floor": result["lvq_scan"]["coarse_vs_floor"] <= 2,
    }


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"# compression: default settings vs exact\n\n{report.machine_line(payload)}\n"]
    if payload.get("note"):
        lines.append(payload["note"] + "\n")
    for result in payload["datasets"]:
        lines += [
            f"## {result['name']}" + (" (SYNTHETIC)" if result["synthetic"] else ""),
            "",
            f"{result['label']}. {result['docs']} documents, {result['dim']}-d; {result['tune_queries']} tuning queries (served once before "
            f"the fit; LeanVec-OOD's samples) / {result['test_queries']} test queries (recall and QPS). Each configuration names only its "
            f"kind; the fit chose its depths for recall@10 {payload['target']} on its held queries. x exact: QPS as a ratio to the "
            f"uncompressed collection in this run, batched (all test queries in one call, median of {payload['batched_rounds']} interleaved rounds) and single query (interleaved rounds, "
            f"at most {payload['single_budget_s']:g} s each). RAM: the collection's memory_bytes over its float vectors' bytes.",
            "",
            "| configuration | fit chose oversample | fit measured recall@10 (held) | recall@10 (test) | RAM x float | x exact batched | x exact single | p50 ms single | fit s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            search = r.get("search")
            chose = "-" if search is None else f"{search['oversample']:g}" + ("" if not search["shares"] else " (rescoring keeps " + ", ".join(f"{s:.2f}" for s in search["shares"]) + ")")
            held = "-" if search is None else ", ".join(f"{k} {v:.3f}" for k, v in search["recall_at_10"].items())
            lines.append(
                f"| {r['system']} | {chose} | {held} | {r['recall_at_10']:.3f} | {r['memory_vs_float']:.3f} "
                f"| {r['qps_batched_vs_exact']:.2f} | {r['qps_single_vs_exact']:.2f} | {r['p50_ms']:.2f} | {r['fit_seconds']:.1f} |"
            )
        scan = result["lvq_scan"]
        lines += [
            "",
            f"LVQ-8 code scan ({scan['system']}'s codes repeated to {scan['rows']:,} rows, single query on one thread, p50 of "
            f"{scan['clock']}): {scan['scan_ms']:.2f} ms for {scan['code_bytes'] / 1e6:.1f} MB of codes ({scan['scan_gb_s']:.1f} GB/s); "
            f"reading those bytes once: {scan['floor_ms']:.2f} ms; scan / floor = {scan['scan_vs_floor']:.2f}"
            f"; the coarse stage (scan and top {scan['coarse_depth']}): {scan['coarse_ms']:.2f} ms, {scan['coarse_vs_floor']:.2f}x the floor.",
            "",
            "Goals:",
            *[f"- {goal}: **{met}**" for goal, met in result["goals"].items()],
            "",
        ]
    return "\n".join(lines)


def compression(
    source: Source = "wordnet",
    queries: Queries = 500,
    synthetic_docs: SyntheticDocs = 1_000_000,
    real: Annotated[bool, typer.Option(help="Measure the source's own vectors too (--no-real: only the clustered set drawn from them).")] = True,
    target: Annotated[float, typer.Option(help="Recall@10 the default target is checked against on the test queries.")] = 0.95,
    single_budget: Annotated[float, typer.Option(help="Seconds of single-query timing per system (at least 20 queries).")] = 10.0,
    batched_rounds: Annotated[int, typer.Option(help="Rounds of batched timing (every system answers all test queries in one call per round; the median counts).")] = 5,
    scan_rows: Annotated[int, typer.Option(help="Rows the LVQ-8 scan is timed over (a LeanVec-OOD segment's codes, repeated).")] = 1_000_000,
    threads: Threads = DEFAULT_THREADS,
    note: Annotated[str, typer.Option(help="A line for the report (e.g. why a data set is smaller).")] = "",
    learned: Annotated[bool, typer.Option(help="Instead: learned binary codes vs sign codes at equal bytes (bench/suites/compression_learned.py), into compression-learned.md/.json.")] = False,
    budgets: Annotated[str, typer.Option(help="With --learned: only these bytes per vector, comma-separated (e.g. 24,48); empty: all.")] = "",
    out: Out = DEFAULT_OUT,
) -> None:
    """Compressed collections with default settings (binary, int8, LeanVec ID/OOD + LVQ-8, Matryoshka funnel) vs exact."""
    from bench.datasets import clustered_dataset, load_source, real_dataset

    head = report.header("compression")
    src = load_source(source)
    plan = [real_dataset(src, None, queries)] if real else []
    if synthetic_docs:
        plan.append(clustered_dataset(src, synthetic_docs, queries))
    del src
    results: list[dict[str, Any]] = []
    files: list[Path] = []
    with thread_budget(threads), tempfile.TemporaryDirectory(prefix="bench-compression-") as tmp:
        if learned:
            from bench.suites import compression_learned

            files = compression_learned.run(plan, target, note, out, Path(tmp), tuple(int(b) for b in budgets.split(",")) if budgets else None)
            typer.echo((out / "compression-learned.md").read_text())
            typer.echo("wrote " + ", ".join(str(f) for f in files), err=True)
            return
        for dataset in plan:
            result = measure_dataset(dataset, target, single_budget, batched_rounds, scan_rows, Path(tmp))
            result["goals"] = goals(result, target)
            results.append(result)
            payload = {**head, "target": target, "k": K, "single_budget_s": single_budget, "batched_rounds": batched_rounds, "note": note, "datasets": results}
            files = report.write(out, "compression", payload, markdown(payload))
    typer.echo((out / "compression.md").read_text())
    typer.echo("wrote " + ", ".join(str(f) for f in files), err=True)


SUITE = Suite(name="compression", summary="compressed collections with default settings (binary, int8, LeanVec+LVQ, Matryoshka) vs exact", command=compression)
