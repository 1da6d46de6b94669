"""`trove bench service`: what the HTTP edge costs. A real `trove serve` process on 127.0.0.1 answers
vector queries from 1 to 32 concurrent httpx async clients; its throughput is divided by the in-process
batched throughput of the same collection, measured in the same run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer

from bench import plots, report
from bench.suites import Suite
from bench.suites.options import (
    DEFAULT_OUT,
    DEFAULT_THREADS,
    Docs,
    Out,
    Queries,
    Source,
    Threads,
    csv_ints,
)
from bench.threads import thread_budget

UPSERT_BATCH = 5000
COLLECTION = "bench"
WARMUP = 50
IN_PROCESS_SINGLE_BUDGET_S = 5.0


def _build(data_dir: Path, docs: np.ndarray, index: Literal["flat", "hnsw"]) -> float:
    from encoders.registry import ModelRegistry
    from index.backends.faiss_index import IndexSpec
    from index.catalog import Catalog
    from index.collection import PointInput

    started = time.perf_counter()
    catalog = Catalog(data_dir, ModelRegistry())
    catalog.load_all()
    collection = catalog.create(COLLECTION, model=None, dim=docs.shape[1], metric="ip", index=IndexSpec(type=index))
    for start in range(0, len(docs), UPSERT_BATCH):
        collection.upsert([PointInput(id=start + i, vector=v) for i, v in enumerate(docs[start : start + UPSERT_BATCH])])
    collection.optimize(seal=True)  # sealed segments, so the server loads them instead of replaying the store
    catalog.close()
    return time.perf_counter() - started


def _in_process(data_dir: Path, queries: np.ndarray, k: int) -> dict[str, float]:
    """Batched throughput (all queries in one query_batch call, best of three) and single-query latency."""
    from bench.metrics import latency_ms
    from encoders.registry import ModelRegistry
    from index.catalog import Catalog
    from index.collection import Query

    catalog = Catalog(data_dir, ModelRegistry())
    catalog.load_all()
    collection = catalog.get(COLLECTION)
    batch = [Query(vector=q, k=k, with_payload=False) for q in queries]
    collection.query_batch(batch[:WARMUP])
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        collection.query_batch(batch)
        rounds.append(time.perf_counter() - started)
    singles: list[float] = []
    deadline = time.perf_counter() + IN_PROCESS_SINGLE_BUDGET_S
    for query in batch:
        started = time.perf_counter()
        collection.query(query)
        singles.append(time.perf_counter() - started)
        if time.perf_counter() > deadline:
            break
    catalog.close()
    return {"qps_batched": len(batch) / min(rounds), "qps_single": len(singles) / sum(singles), **latency_ms(np.array(singles))}


def service(
    source: Source = "wordnet",
    docs: Docs = None,
    queries: Queries = 1000,
    concurrency: Annotated[str, typer.Option(help="Concurrent client counts, one load level each.")] = "1,2,4,8,16,32",
    requests: Annotated[int, typer.Option(help="Requests per load level at most.")] = 3000,
    seconds: Annotated[float, typer.Option(help="Seconds per load level at most.")] = 20.0,
    index: Annotated[str, typer.Option(help="Collection index: flat or hnsw.")] = "flat",
    k: Annotated[int, typer.Option(help="Neighbours per query.")] = 10,
    threads: Threads = DEFAULT_THREADS,
    out: Out = DEFAULT_OUT,
) -> None:
    """HTTP overhead and throughput under 1-32 concurrent clients, against in-process batched search."""
    from rich.progress import Progress

    from bench.datasets import load_source, real_dataset
    from bench.http_load import run_load
    from bench.metrics import latency_ms, recall_at_k
    from bench.server import trove_server

    if index not in ("flat", "hnsw"):
        raise typer.BadParameter("index must be flat or hnsw")
    head = report.header("service")
    dataset = real_dataset(load_source(source), docs, queries)
    vectors = dataset.test.vectors
    truth = dataset.truth(dataset.test).ids
    bodies = [{"vector": q.tolist(), "k": k, "with_payload": False} for q in vectors]
    path = f"/v1/collections/{COLLECTION}/query"

    levels: list[dict[str, Any]] = []
    # The server runs at its own default settings, as a user would start it; the budget binds this process.
    with thread_budget(threads), tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        data_dir = Path(tmp)
        typer.echo(f"building a {index} collection of {len(dataset.docs)} vectors", err=True)
        build_s = _build(data_dir, dataset.docs, index)  # type: ignore[arg-type]
        typer.echo("in-process baseline", err=True)
        local = _in_process(data_dir, vectors, k)
        typer.echo("starting trove serve", err=True)
        with trove_server(data_dir) as base_url:
            run_load(base_url, path, bodies, 4, WARMUP, 30.0)
            with Progress(transient=True) as progress:
                task = progress.add_task("HTTP load", total=len(csv_ints(concurrency)))
                for clients in csv_ints(concurrency):
                    progress.update(task, description=f"HTTP load, {clients} clients")
                    result = run_load(base_url, path, bodies, clients, requests, seconds)
                    answered = sorted(result.answers)
                    found = np.array([(result.answers[i] + [-1] * k)[:k] for i in answered], dtype=np.int64)
                    levels.append(
                        {
                            "concurrency": clients,
                            "requests": result.requests,
                            "errors": result.errors,
                            "seconds": result.seconds,
                            "qps": result.qps,
                            **latency_ms(result.latencies_s),
                            "recall_at_10": recall_at_k(found, truth[answered], min(10, k)),
                            "qps_vs_in_process_batched": result.qps / local["qps_batched"],
                        }
                    )
                    progress.advance(task)

    top = max(levels, key=lambda level: level["concurrency"])
    payload = {
        **head,
        "dataset": {"name": dataset.name, "label": dataset.label, "docs": len(dataset.docs), "dim": dataset.dim, "queries": len(vectors)},
        "settings": {"index": index, "k": k, "threads": threads, "max_requests_per_level": requests, "max_seconds_per_level": seconds},
        "build_seconds": build_s,
        "in_process": local,
        "http": levels,
        "goal": {
            "concurrency": top["concurrency"],
            "qps_vs_in_process_batched": top["qps_vs_in_process_batched"],
            "target": 0.8,
            "p99_ms": top["p99_ms"],
        },
    }
    markdown = render(payload)
    files = report.write(out, "service", payload, markdown)
    files.append(
        plots.throughput(
            out / "service-throughput.png",
            f"trove serve, {dataset.name} ({len(dataset.docs):,} x {dataset.dim}-d, {index}), vector queries k={k}",
            [lv["concurrency"] for lv in levels],
            [lv["qps"] for lv in levels],
            [lv["p50_ms"] for lv in levels],
            [lv["p99_ms"] for lv in levels],
            {"in-process batched": local["qps_batched"], "in-process single query": local["qps_single"]},
        )
    )
    typer.echo(markdown)
    typer.echo("wrote " + ", ".join(str(f) for f in files))


def render(payload: dict[str, Any]) -> str:
    local, goal = payload["in_process"], payload["goal"]
    lines = [
        "# service: HTTP throughput and latency",
        "",
        report.machine_line(payload),
        "",
        f"Data: {payload['dataset']['label']}; {payload['dataset']['queries']} held-out test queries as vectors. "
        f"Collection: {payload['settings']['index']} index, k={payload['settings']['k']}. The clients run on the same "
        "machine as the server and share its cores.",
        "",
        f"In process (same collection, same run): batched {local['qps_batched']:,.0f} QPS; single query "
        f"{local['qps_single']:,.0f} QPS, p50 {local['p50_ms']:.2f} ms, p99 {local['p99_ms']:.2f} ms.",
        "",
        "| clients | requests | errors | QPS | x in-process batched | p50 ms | p99 ms | recall@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lv in payload["http"]:
        lines.append(
            f"| {lv['concurrency']} | {lv['requests']} | {lv['errors']} | {lv['qps']:,.0f} | {lv['qps_vs_in_process_batched']:.3f} "
            f"| {lv['p50_ms']:.2f} | {lv['p99_ms']:.2f} | {lv['recall_at_10']:.3f} |"
        )
    met = "met" if goal["qps_vs_in_process_batched"] >= goal["target"] else "not met"
    lines += [
        "",
        f"Goal: QPS at {goal['concurrency']} clients >= {goal['target']} x in-process batched: "
        f"{goal['qps_vs_in_process_batched']:.3f} ({met}); p99 at {goal['concurrency']} clients {goal['p99_ms']:.2f} ms.",
    ]
    return "\n".join(lines)


SUITE = Suite(name="service", summary="HTTP overhead and throughput of trove serve under 1-32 concurrent clients", command=service)
