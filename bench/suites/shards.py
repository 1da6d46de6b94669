"""`trove bench shards`: the cost of fanning a query out over 2 and 4 shards against one, same data, same run;
and the per-shard figures (RAM per vector, per-shard query time at two shard sizes) the README's scaling model
is computed from.

Data: SYNTHETIC vectors from a Gaussian mixture fitted to real MiniLM embeddings of WordNet glosses (384-d),
so clusters and neighbourhoods behave as on real data. Every speed figure is a ratio to the one-shard
collection measured in the same run: single-query p50 (all collections taking turns query by query) and
throughput with concurrent clients (rounds rotating which collection goes first).
"""

from __future__ import annotations

import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench import report
from bench.suites import Suite
from bench.suites.options import DEFAULT_OUT, DEFAULT_THREADS, Out, Threads, csv_ints

GIB = 2**30
HNSW = {"type": "hnsw", "m": 16, "ef_construction": 100}
COMPRESSED = {"quantizer": {"kind": "binary"}, "rerank": {"oversample": 32, "storage": "mmap"}}
# The scaling model's node: RAM the index may use (of a 128 GiB node, leaving room for the OS, the store's
# page cache and a segment being rebuilt) and the cores that answer shard queries.
NODE_INDEX_RAM_GIB, NODE_CORES = 96, 32
TARGETS = (100_000_000, 1_000_000_000)
SEGMENT_POINTS = 1_000_000  # TROVE_MAX_SEGMENT_POINTS' default
BENCH_TIMEOUT_S = 600.0  # a shared machine may stall a shard for seconds; that is noise here, not an outage


def _collections(root: Path, docs: np.ndarray, index: dict[str, Any], shard_counts: tuple[int, ...], runtime: Any) -> dict[int, Any]:
    """One collection per shard count over the same points, every row in a sealed, indexed segment."""
    from encoders.registry import ModelRegistry
    from index.backends.faiss_index import IndexSpec
    from index.collection import Collection
    from index.config import CollectionConfig, ModelVersion
    from index.requests import PointInput
    from index.segments.policy import EngineSettings
    from index.shards.collection import ShardedCollection

    engine = EngineSettings(seal_points=len(docs), max_segment_points=len(docs))
    registry = ModelRegistry(root / "models")
    out: dict[int, Any] = {}
    for shards in shard_counts:
        config = CollectionConfig(name=f"s{shards}", dim=docs.shape[1], metric="ip", index=IndexSpec(**index), models=(ModelVersion(1, None, docs.shape[1]),))
        folder = root / f"{index['type']}-{shards}"
        collection = Collection.create(folder, config, registry, engine) if shards == 1 else ShardedCollection.create(folder, config, shards, registry, engine, runtime)
        for start in range(0, len(docs), 10_000):
            collection.upsert([PointInput(id=start + i, vector=v) for i, v in enumerate(docs[start : start + 10_000])])
        collection.optimize(seal=True)
        out[shards] = collection
    return out


def _single_p50(collections: dict[Any, Any], queries: np.ndarray) -> dict[Any, float]:
    from bench.collections import single_query_ms

    return single_query_ms(collections, queries, 10)


def _throughput(collections: dict[Any, Any], queries: np.ndarray, clients: int, rounds: int = 3) -> dict[Any, float]:
    """Queries per second with ``clients`` threads each sending single queries (batched by each collection's
    coalescer, as HTTP queries are: one search, or one fan-out, for the queries that arrive together); the
    median of rotated rounds."""
    from index.requests import Query

    asked = [Query(vector=q, k=10, with_payload=False) for q in queries]
    samples: dict[Any, list[float]] = {name: [] for name in collections}
    names = list(collections)
    with ThreadPoolExecutor(clients) as pool:
        for turn in range(rounds):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                collection = collections[name]
                started = time.perf_counter()
                list(pool.map(lambda q, c=collection: c.query(q), asked))
                samples[name].append(len(asked) / (time.perf_counter() - started))
    return {name: float(np.median(s)) for name, s in samples.items()}


def _recall(collection: Any, queries: np.ndarray, truth: np.ndarray) -> float:
    from bench.collections import recall_of

    return recall_of(collection, queries, truth)


def _per_shard_model(bytes_per_vector: float, t_small: float, n_small: int, t_big: float, n_big: int, scan: bool) -> list[dict[str, Any]]:
    """Nodes, RAM per node and QPS for each target size, one shard per node, from measured per-shard figures.

    A shard holds segments of at most SEGMENT_POINTS (the engine's default), each searched per query. A
    scan (flat) costs time linear in points, so the measured time scales by points. A graph (HNSW) segment
    costs a + b ln(points), fitted on the two measured sizes (b clamped at 0) and taken at SEGMENT_POINTS,
    times the number of segments. Every query visits every shard, so one copy of the collection answers at
    most NODE_CORES / t_shard queries a second however many nodes it spans: more throughput takes replicas
    (not built yet); more nodes give capacity.
    """
    rows = []
    for total in TARGETS:
        per_node = int(NODE_INDEX_RAM_GIB * GIB / bytes_per_vector)
        nodes = math.ceil(total / per_node)
        shard_points = math.ceil(total / nodes)
        segments = math.ceil(shard_points / SEGMENT_POINTS)
        if scan:
            t_shard = t_big * shard_points / n_big
        else:  # a noisy machine can time the smaller shard slower: the model never lets time fall with size
            b = max(t_big - t_small, 0.0) / math.log(n_big / n_small)
            t_shard = segments * (t_big + b * math.log(SEGMENT_POINTS / n_big))
        rows.append({
            "vectors": total, "nodes": nodes, "points_per_shard": shard_points, "segments_per_shard": segments,
            "ram_per_node_gib": round(shard_points * bytes_per_vector / GIB, 1),
            "t_shard_ms": round(t_shard, 3), "qps_per_replica": round(NODE_CORES / (t_shard / 1000), 1),
        })
    return rows


def shards(
    source: Annotated[str, typer.Option(help="'wordnet' (its first --fit-docs glosses, embedded and cached) or an .npz with 'docs'.")] = "wordnet",
    fit_docs: Annotated[int, typer.Option(help="Real vectors the Gaussian mixture is fitted to.")] = 5000,
    points: Annotated[int, typer.Option(help="Points in every collection (the same ones).")] = 100_000,
    shard_counts: Annotated[str, typer.Option(help="Comma-separated shard counts; 1 is the baseline.")] = "1,2,4",
    queries: Annotated[int, typer.Option(help="Queries per measurement.")] = 300,
    clients: Annotated[int, typer.Option(help="Concurrent clients of the throughput figure.")] = 4,
    ray: Annotated[bool, typer.Option(help="Also measure the sharded collections with their shards as actors on a local Ray.")] = True,
    threads: Threads = DEFAULT_THREADS,
    out: Out = DEFAULT_OUT,
) -> None:
    """Sharded collections: fan-out cost of 2 and 4 shards vs 1 (in process and on Ray), per-shard figures, scaling model."""
    from bench.groundtruth import exact_topk
    from bench.suites.engine import _real_vectors
    from bench.synthetic import GaussianMixture
    from bench.threads import thread_budget
    from index.compression.spec import CompressionSpec
    from index.shards.collection import ShardedCollection
    from index.shards.handles import ShardRuntime

    head = report.header("shards")
    counts = tuple(sorted(set(csv_ints(shard_counts)) | {1}))
    mixture = GaussianMixture.fit(_real_vectors(source, fit_docs))
    docs = mixture.draw(points, seed=1)
    probe = mixture.draw(queries, seed=2)
    truth = exact_topk(docs, probe, 10).ids
    figures: dict[str, Any] = {"points": points, "dim": docs.shape[1], "clients": clients, "fanout": {}, "per_shard": {}}

    def step(what: str) -> None:
        typer.echo(f"[{time.strftime('%H:%M:%S')}] {what}", err=True)

    with thread_budget(threads), tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        root = Path(tmp)
        for index in ({"type": "flat"}, HNSW):
            kind = index["type"]
            step(f"{kind}: {points:,} points into collections of {counts} shards (in process)")
            made = _collections(root, docs, index, counts, ShardRuntime(timeout_s=BENCH_TIMEOUT_S))
            collections: dict[int, Any] = made
            for placement in ("in_process", "ray") if ray else ("in_process",):
                if placement == "ray":
                    step(f"{kind}: the same shard folders reopened as Ray actors")
                    runtime = ShardRuntime(ray=True, cpus_per_shard=0.5, timeout_s=BENCH_TIMEOUT_S)
                    for n in counts[1:]:
                        collections[n].close()
                        collections[n] = ShardedCollection.open(made[n].root, made[n].registry, made[n].engine_settings, runtime)
                        collections[n].load()
                step(f"{kind} {placement}: single-query p50, {clients}-client throughput, recall")
                p50 = _single_p50(collections, probe)
                qps = _throughput(collections, probe, clients)
                figures["fanout"][f"{kind}/{placement}"] = {
                    n: {"p50_ms": p50[n], "qps": qps[n], "p50_x_one": p50[n] / p50[1], "qps_x_one": qps[n] / qps[1], "recall_at_10": _recall(c, probe, truth),
                        "memory_bytes": c.info()["memory_bytes"]}
                    for n, c in collections.items()
                }
            for collection in collections.values():
                collection.close()

        # Per-shard figures: one shard (a plain collection) at points/4 and at points, float HNSW and binary.
        small = points // 4
        for name, index, compression in (("float-hnsw", HNSW, None), ("binary1-hnsw", HNSW, COMPRESSED), ("float-flat", {"type": "flat"}, None)):
            step(f"per shard {name}: {small:,} and {points:,} points")
            sizes = {}
            for n in (small, points):
                collection = _collections(root / f"{name}-{n}", docs[:n], index, (1,), ShardRuntime())[1]
                if compression is not None:
                    collection.compression.fit(CompressionSpec.from_json(compression), None, lambda *a: None)
                info = collection.info()
                sizes[n] = {"memory_bytes": info["memory_bytes"], "bytes_per_vector": info["memory_bytes"] / n,
                            "p50_ms": _single_p50({"one": collection}, probe)["one"], "recall_at_10": _recall(collection, probe, exact_topk(docs[:n], probe, 10).ids)}
                collection.close()
            figures["per_shard"][name] = {"sizes": sizes, "model": _per_shard_model(
                sizes[points]["bytes_per_vector"], sizes[small]["p50_ms"], small, sizes[points]["p50_ms"], points, scan=index["type"] == "flat")}
    payload = {**head, "data": f"SYNTHETIC: {points:,} vectors ({docs.shape[1]}-d) from a Gaussian mixture fitted to {fit_docs:,} real MiniLM embeddings ({source})",
               "node": {"index_ram_gib": NODE_INDEX_RAM_GIB, "cores": NODE_CORES}, "figures": figures}
    for path in report.write(out, "shards", payload, render(payload)):
        typer.echo(f"wrote {path}", err=True)
    typer.echo(render(payload))


def render(payload: dict[str, Any]) -> str:
    figures = payload["figures"]
    lines = ["# shards: fan-out cost and the per-shard figures of the scaling model", "", report.machine_line(payload), "", f"Data: {payload['data']}.", "",
             f"Fan-out: the same points in 1, 2 and 4 shards; single-query p50 (collections taking turns) and QPS with {figures['clients']} concurrent clients; ratios to 1 shard in the same run.", "",
             "| index / placement | shards | p50 ms | p50 x 1 shard | QPS | QPS x 1 shard | recall@10 |", "|---|---|---|---|---|---|---|"]
    for where, rows in figures["fanout"].items():
        for n, row in rows.items():
            lines.append(f"| {where} | {n} | {row['p50_ms']:.2f} | {row['p50_x_one']:.2f} | {row['qps']:.0f} | {row['qps_x_one']:.2f} | {row['recall_at_10']:.3f} |")
    node = payload["node"]
    lines += ["", (f"Per shard (one collection at two sizes) and the scaling model: one shard per node, {node['index_ram_gib']} GiB of index RAM and {node['cores']} cores a node; "
                   "QPS is what one copy of the collection answers (every query visits every shard)."), "",
              "| config | shard points | bytes/vector (RAM) | p50 ms | recall@10 |", "|---|---|---|---|---|"]
    for name, entry in figures["per_shard"].items():
        for n, size in entry["sizes"].items():
            lines.append(f"| {name} | {int(n):,} | {size['bytes_per_vector']:.0f} | {size['p50_ms']:.2f} | {size['recall_at_10']:.3f} |")
    lines += ["", "| config | vectors | nodes | points/shard | segments/shard | RAM/node GiB | shard query ms (extrapolated) | QPS per replica |", "|---|---|---|---|---|---|---|---|"]
    for name, entry in figures["per_shard"].items():
        for row in entry["model"]:
            lines.append(
                f"| {name} | {row['vectors']:,} | {row['nodes']} | {row['points_per_shard']:,} | {row['segments_per_shard']} | {row['ram_per_node_gib']} | {row['t_shard_ms']} | {row['qps_per_replica']:,} |"
            )
    return "\n".join(lines)


SUITE = Suite("shards", "Sharded collections: fan-out cost of 2 and 4 shards vs 1, per-shard figures, scaling model", shards)
