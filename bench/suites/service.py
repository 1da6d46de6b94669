"""`trove bench service`: Trove's query path over HTTP beside Chroma's server, in one run.

Three real servers on 127.0.0.1 hold the same vectors: `trove serve` with an HNSW collection, Chroma's own
server (`chroma run`) with HNSW at the same M / ef_construction / ef_search, and `trove serve` with a flat
(exact) collection. The same closed-loop httpx load generator sends single top-k vector queries to each,
level by level (1 to 32 concurrent clients), the systems interleaved within each level so a busy machine
burdens them alike. Each level records QPS, latency, recall@k against exact search, and the server's CPU
per query (its event-loop thread and its other threads apart). In-process figures of the same Trove
collections (batched, and single queries with their CPU cost) are the baselines the goals divide by. A
soak phase samples each server's RSS over many more queries, and py-spy (when installed) splits the Trove
HNSW server's CPU into the stages of a query.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench import report
from bench.suites import Suite
from bench.suites.options import DEFAULT_OUT, Out, Queries, Source, csv_ints

UPSERT_BATCH = 5000
COLLECTION = "bench"
WARMUP = 200
IN_PROCESS_SINGLE_BUDGET_S = 5.0
SOAK_CLIENTS = 16
SOAK_SAMPLES = 12
CHROMA_QUERY = "/api/v2/tenants/default_tenant/databases/default_database/collections/{id}/query"


def _build(data_dir: Path, docs: np.ndarray, index: Any) -> float:
    """A vectors-only Trove collection with ``index`` (an IndexSpec), sealed; seconds taken."""
    from encoders.registry import ModelRegistry
    from index.catalog import Catalog
    from index.requests import PointInput

    started = time.perf_counter()
    catalog = Catalog(data_dir, ModelRegistry())
    catalog.load_all()
    collection = catalog.create(COLLECTION, model=None, dim=docs.shape[1], metric="ip", index=index)
    for start in range(0, len(docs), UPSERT_BATCH):
        collection.upsert([PointInput(id=start + i, vector=v) for i, v in enumerate(docs[start : start + UPSERT_BATCH])])
    collection.optimize(seal=True)  # sealed segments, so the server loads them instead of replaying the store
    catalog.close()
    return time.perf_counter() - started


def _build_chroma(url: str, docs: np.ndarray, m: int, ef_construction: int, ef_search: int) -> tuple[str, float]:
    """The same vectors in Chroma's server, over its own client; (collection id, seconds)."""
    import chromadb
    from chromadb.config import Settings

    started = time.perf_counter()
    host, port = url.removeprefix("http://").split(":")
    client = chromadb.HttpClient(host=host, port=int(port), settings=Settings(anonymized_telemetry=False))
    hnsw = {"space": "ip", "max_neighbors": m, "ef_construction": ef_construction, "ef_search": ef_search}
    collection = client.create_collection(COLLECTION, configuration={"hnsw": hnsw})  # type: ignore[arg-type]
    batch = min(client.get_max_batch_size(), UPSERT_BATCH)
    for start in range(0, len(docs), batch):
        block = docs[start : start + batch]
        collection.add(ids=[str(start + i) for i in range(len(block))], embeddings=block)
    return str(collection.id), time.perf_counter() - started


def _in_process(data_dir: Path, queries: np.ndarray, k: int) -> dict[str, float]:
    """Batched throughput (one query_batch call, best of three), and single queries' rate, latency and CPU."""
    from bench.metrics import latency_ms
    from encoders.registry import ModelRegistry
    from index.catalog import Catalog
    from index.requests import Query

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
    cpu_started = time.process_time()
    deadline = time.perf_counter() + IN_PROCESS_SINGLE_BUDGET_S
    for query in batch:
        started = time.perf_counter()
        collection.query(query)
        singles.append(time.perf_counter() - started)
        if time.perf_counter() > deadline:
            break
    cpu_ms = (time.process_time() - cpu_started) * 1000 / len(singles)
    catalog.close()
    return {"qps_batched": len(batch) / min(rounds), "qps_single": len(singles) / sum(singles), "cpu_ms_per_single_query": cpu_ms, **latency_ms(np.array(singles))}


def _server_metrics(url: str) -> dict[str, Any]:
    """What a Trove server's /metrics says of its coalescing: the batch sizes it formed and, per batch-size bucket,
    the flat path timings and the path it chose (these explain a flat server's QPS)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    batches: dict[str, float] = {}
    paths: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trove_query_batch_size_bucket":
                batches[sample.labels["le"]] = batches.get(sample.labels["le"], 0) + sample.value
            elif sample.name == "trove_flat_search_seconds":
                entry = paths.setdefault(sample.labels["batch"], {"seconds": {}, "chosen": None})
                entry["seconds"][sample.labels["path"]] = sample.value
                if sample.labels["chosen"] == "1":
                    entry["chosen"] = sample.labels["path"]
    return {"batch_size_cumulative": batches, "flat_paths": dict(sorted(paths.items(), key=lambda item: int(item[0])))}


def _trove_ids(answer: Any) -> list[Any]:
    return [hit["id"] for hit in answer["results"]]


def _chroma_ids(answer: Any) -> list[Any]:
    return [int(i) for i in answer["ids"][0]]


def _rss_slope(samples: list[tuple[int, float]]) -> dict[str, float]:
    """Least-squares RSS growth over the samples after the first third (the warm-up)."""
    kept = samples[len(samples) // 3 :]
    queries, rss = np.array([q for q, _ in kept], float), np.array([r for _, r in kept], float)
    slope = float(np.polyfit(queries, rss, 1)[0]) if len(kept) > 1 and np.ptp(queries) > 0 else 0.0
    return {"mib_per_1k_queries": slope * 1000, "rss_first_mib": samples[0][1], "rss_last_mib": samples[-1][1]}


def service(
    source: Source = "wordnet:10000",
    docs: Annotated[int, typer.Option(help="Vectors drawn from a Gaussian mixture fitted to the source (SYNTHETIC, clustered).")] = 20_000,
    queries: Queries = 1000,
    concurrency: Annotated[str, typer.Option(help="Concurrent client counts, one load level each.")] = "1,4,16,32",
    requests: Annotated[int, typer.Option(help="Requests per system and load level at most.")] = 3000,
    seconds: Annotated[float, typer.Option(help="Seconds per system and load level at most.")] = 15.0,
    systems: Annotated[str, typer.Option(help="Any of trove-hnsw, chromadb-hnsw, trove-flat.")] = "trove-hnsw,chromadb-hnsw,trove-flat",
    m: Annotated[int, typer.Option(help="HNSW links per node, both systems (Chroma: max_neighbors).")] = 16,
    ef_construction: Annotated[int, typer.Option(help="HNSW build depth, both systems.")] = 100,
    ef_search: Annotated[int, typer.Option(help="HNSW search depth, both systems (Trove: a fixed ef_search).")] = 100,
    k: Annotated[int, typer.Option(help="Neighbours per query.")] = 10,
    soak_seconds: Annotated[float, typer.Option(help="Seconds of queries per system while RSS is sampled (0 skips).")] = 60.0,
    profile_seconds: Annotated[float, typer.Option(help="Seconds py-spy samples the Trove HNSW server at 16 clients (0 skips).")] = 15.0,
    trove_code: Annotated[Path | None, typer.Option(help="Serve Trove from this checkout instead (e.g. an older commit, for a before/after).")] = None,
    out: Out = DEFAULT_OUT,
) -> None:
    """Trove HNSW and flat over HTTP beside Chroma's server: QPS, latency, recall, CPU per query, RSS."""
    from rich.progress import Progress

    from bench import profile
    from bench.datasets import clustered_dataset, load_source
    from bench.http_load import run_load
    from bench.metrics import latency_ms, recall_at_k
    from bench.server import Served, chroma_process, trove_process
    from index.backends.faiss_index import IndexSpec

    chosen = [s.strip() for s in systems.split(",") if s.strip()]
    if unknown := set(chosen) - {"trove-hnsw", "chromadb-hnsw", "trove-flat"}:
        raise typer.BadParameter(f"unknown systems: {sorted(unknown)}")
    head = report.header("service")
    dataset = clustered_dataset(load_source(source), docs, queries)
    vectors = dataset.test.vectors
    truth = dataset.truth(dataset.test).ids
    trove_bodies = [{"vector": q.tolist(), "k": k, "with_payload": False} for q in vectors]
    chroma_bodies = [{"query_embeddings": [q.tolist()], "n_results": k, "include": []} for q in vectors]
    specs = {"trove-hnsw": IndexSpec(type="hnsw", m=m, ef_construction=ef_construction, ef_search=ef_search), "trove-flat": IndexSpec(type="flat")}

    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        builds: dict[str, float] = {}
        in_process: dict[str, dict[str, float]] = {}
        served: dict[str, Served] = {}
        targets: dict[str, tuple[str, list[dict[str, Any]], Any]] = {}
        for name in chosen:
            typer.echo(f"building {name}: {len(dataset.docs)} x {dataset.dim}", err=True)
            if name == "chromadb-hnsw":
                served[name] = stack.enter_context(chroma_process(root / name))
                collection_id, builds[name] = _build_chroma(served[name].url, dataset.docs, m, ef_construction, ef_search)
                targets[name] = (CHROMA_QUERY.format(id=collection_id), chroma_bodies, _chroma_ids)
                continue
            builds[name] = _build(root / name, dataset.docs, specs[name])
            in_process[name] = _in_process(root / name, vectors, k)
            served[name] = stack.enter_context(trove_process(root / name, code=trove_code))
            targets[name] = (f"/v1/collections/{COLLECTION}/query", trove_bodies, _trove_ids)

        def load(name: str, clients: int, max_requests: int, max_seconds: float) -> Any:
            path, bodies, ids_of = targets[name]
            return run_load(served[name].url, path, bodies, clients, max_requests, max_seconds, ids_of)

        for name in chosen:
            load(name, 4, WARMUP, 30.0)
        levels: list[dict[str, Any]] = []
        with Progress(transient=True) as progress:
            task = progress.add_task("HTTP load", total=len(csv_ints(concurrency)) * len(chosen))
            for clients in csv_ints(concurrency):
                for name in chosen:
                    progress.update(task, description=f"{name}, {clients} clients")
                    server = served[name]
                    cpu, main = server.cpu_seconds(), server.main_thread_cpu_seconds()
                    result = load(name, clients, requests, seconds)
                    cpu, main = server.cpu_seconds() - cpu, server.main_thread_cpu_seconds() - main
                    answered = sorted(result.answers)
                    found = np.array([(result.answers[i] + [-1] * k)[:k] for i in answered], dtype=np.int64)
                    per_query = 1000 / max(result.requests, 1)
                    levels.append(
                        {
                            "system": name,
                            "concurrency": clients,
                            "requests": result.requests,
                            "errors": result.errors,
                            "seconds": result.seconds,
                            "qps": result.qps,
                            **latency_ms(result.latencies_s),
                            "recall_at_10": recall_at_k(found, truth[answered], min(10, k)),
                            "server_cpu_ms_per_query": cpu * per_query,
                            "event_loop_cpu_ms_per_query": main * per_query,
                            "other_threads_cpu_ms_per_query": (cpu - main) * per_query,
                        }
                    )
                    progress.advance(task)
        server_metrics = {name: _server_metrics(served[name].url) for name in chosen if name.startswith("trove-")}

        split: dict[str, float] | None = None
        if profile_seconds > 0 and "trove-hnsw" in chosen and profile.py_spy() is not None:
            typer.echo("py-spy: the Trove HNSW server's CPU by stage", err=True)
            sampler = profile.record(served["trove-hnsw"].pid, profile_seconds, root / "profile.txt")
            load("trove-hnsw", SOAK_CLIENTS, 10**9, profile_seconds)
            sampler.wait()
            split = profile.split(root / "profile.txt")

        soak: dict[str, Any] = {}
        if soak_seconds > 0:
            for name in chosen:
                typer.echo(f"soak: {name}, RSS over {soak_seconds:.0f}s of queries", err=True)
                samples = [(0, served[name].rss_mib())]
                for _ in range(SOAK_SAMPLES):
                    result = load(name, SOAK_CLIENTS, 10**9, soak_seconds / SOAK_SAMPLES)
                    samples.append((samples[-1][0] + result.requests, served[name].rss_mib()))
                soak[name] = {"samples": samples, **_rss_slope(samples)}

    payload = {
        **head,
        "dataset": {"name": dataset.name, "label": dataset.label, "docs": len(dataset.docs), "dim": dataset.dim, "queries": len(vectors)},
        "settings": {
            "systems": chosen, "k": k, "m": m, "ef_construction": ef_construction, "ef_search": ef_search,
            "max_requests_per_level": requests, "max_seconds_per_level": seconds, "soak_seconds": soak_seconds,
            "trove_code": str(trove_code) if trove_code else "this checkout",
        },
        "build_seconds": builds,
        "in_process": in_process,
        "http": levels,
        "server_metrics": server_metrics,
        "cpu_split": split,
        "soak": soak,
        "goals": _goals(levels, in_process, soak),
    }
    markdown = render(payload)
    files = report.write(out, "service", payload, markdown)
    typer.echo(markdown)
    typer.echo("wrote " + ", ".join(str(f) for f in files))


def _by(levels: list[dict[str, Any]], system: str) -> dict[int, dict[str, Any]]:
    return {lv["concurrency"]: lv for lv in levels if lv["system"] == system}


def _goals(levels: list[dict[str, Any]], in_process: dict[str, dict[str, float]], soak: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, each with the figure measured in this run (absent when its systems were not run)."""
    goals: dict[str, Any] = {}
    trove, chroma, flat = _by(levels, "trove-hnsw"), _by(levels, "chromadb-hnsw"), _by(levels, "trove-flat")
    if trove and chroma:
        ratios = {c: trove[c]["qps"] / chroma[c]["qps"] for c in trove if c in chroma and chroma[c]["qps"] > 0}
        p99 = {c: trove[c]["p99_ms"] <= chroma[c]["p99_ms"] for c in ratios}
        goals["hnsw_qps_vs_chroma"] = {"by_clients": ratios, "target": 1.5, "met": all(r >= 1.5 for r in ratios.values()), "p99_no_worse": p99}
    if flat and "trove-flat" in in_process:
        top = max(flat)
        ratio = flat[top]["qps"] / in_process["trove-flat"]["qps_batched"]
        goals["flat_qps_vs_in_process_batched"] = {"clients": top, "ratio": ratio, "target": 0.5, "met": ratio >= 0.5}
    if trove and "trove-hnsw" in in_process:
        base = in_process["trove-hnsw"]["cpu_ms_per_single_query"]
        worst = max(lv["server_cpu_ms_per_query"] for lv in trove.values())
        goals["hnsw_server_cpu_ms_per_query"] = {"worst_level": worst, "in_process_single": base, "target": base + 0.5, "met": worst <= base + 0.5}
    if soak:
        goals["rss_mib_per_1k_queries"] = {name: s["mib_per_1k_queries"] for name, s in soak.items()}
    return goals


def render(payload: dict[str, Any]) -> str:
    s, ds = payload["settings"], payload["dataset"]
    lines = [
        "# service: Trove over HTTP beside Chroma's server",
        "",
        report.machine_line(payload),
        "",
        (
            f"Data: {ds['label']}; {ds['docs']} x {ds['dim']}-d, {ds['queries']} test queries as vectors, k={s['k']}. "
            f"HNSW on both with M={s['m']}, ef_construction={s['ef_construction']}, ef_search={s['ef_search']}; Trove flat is exact. "
            f"Trove served from {s['trove_code']}. Clients run on the same machine as the servers and share its cores; "
            "the systems are interleaved within each load level."
        ),
        "",
    ]
    for name, local in payload["in_process"].items():
        lines.append(
            f"- {name} in process (same collection, same run): batched {local['qps_batched']:,.0f} QPS; single query "
            f"{local['qps_single']:,.0f} QPS, p50 {local['p50_ms']:.2f} ms, {local['cpu_ms_per_single_query']:.2f} ms CPU per query."
        )
    lines += [
        "",
        "| clients | system | QPS | p50 ms | p99 ms | recall@10 | server CPU ms/query | event loop | other threads | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in payload["http"]:
        lines.append(
            f"| {lv['concurrency']} | {lv['system']} | {lv['qps']:,.0f} | {lv['p50_ms']:.2f} | {lv['p99_ms']:.2f} | {lv['recall_at_10']:.3f} "
            f"| {lv['server_cpu_ms_per_query']:.2f} | {lv['event_loop_cpu_ms_per_query']:.2f} | {lv['other_threads_cpu_ms_per_query']:.2f} | {lv['errors']} |"
        )
    for name, metrics in payload.get("server_metrics", {}).items():
        cumulative = metrics["batch_size_cumulative"]
        if cumulative:
            lines += ["", f"{name}: batches formed over the load levels, by size (from its /metrics, cumulative): " + ", ".join(f"<= {le}: {n:,.0f}" for le, n in cumulative.items())]
        if metrics["flat_paths"]:
            chosen = "; ".join(
                f"{batch}: {entry['chosen']} (" + ", ".join(f"{path} {seconds * 1000:.1f} ms" for path, seconds in entry["seconds"].items()) + ")"
                for batch, entry in metrics["flat_paths"].items()
            )
            lines += ["", f"{name}: flat path per batch-size bucket, measured at its first batch: {chosen}"]
    if payload["cpu_split"]:
        lines += ["", "Trove HNSW server CPU by stage (py-spy, 16 clients; share of busy samples):", ""]
        lines += [f"- {stage}: {share:.1%}" for stage, share in payload["cpu_split"].items()]
    if payload["soak"]:
        lines += ["", f"RSS under sustained queries ({SOAK_CLIENTS} clients, {s['soak_seconds']:.0f} s per system; slope fitted after the first third):", ""]
        for name, soak in payload["soak"].items():
            lines.append(
                f"- {name}: {soak['rss_first_mib']:.0f} -> {soak['rss_last_mib']:.0f} MiB over {soak['samples'][-1][0]:,} queries; "
                f"slope {soak['mib_per_1k_queries']:+.3f} MiB per 1k queries"
            )
    lines += ["", "Goals (issue 14):", ""]
    goals = payload["goals"]
    if g := goals.get("hnsw_qps_vs_chroma"):
        ratios = ", ".join(f"{c}: {r:.2f}x" for c, r in g["by_clients"].items())
        worse = [c for c, ok in g["p99_no_worse"].items() if not ok]
        lines.append(f"- Trove HNSW QPS / Chroma QPS >= 1.5 at every level: {ratios} ({'met' if g['met'] else 'not met'}); p99 worse than Chroma's at clients {worse or 'none'}.")
    if g := goals.get("flat_qps_vs_in_process_batched"):
        lines.append(f"- Trove flat at {g['clients']} clients >= 0.5 x in-process batched: {g['ratio']:.3f} ({'met' if g['met'] else 'not met'}).")
    if g := goals.get("hnsw_server_cpu_ms_per_query"):
        lines.append(
            f"- Trove HNSW server CPU per HTTP query <= in-process + 0.5 ms: worst level {g['worst_level']:.2f} ms vs {g['target']:.2f} ms ({'met' if g['met'] else 'not met'})."
        )
    if g := goals.get("rss_mib_per_1k_queries"):
        lines.append("- RSS slope ~0 after warm-up: " + ", ".join(f"{n} {v:+.3f} MiB/1k queries" for n, v in g.items()) + ".")
    return "\n".join(lines)


SUITE = Suite(name="service", summary="Trove over HTTP beside Chroma's server: QPS, latency, recall, CPU per query, RSS", command=service)
