"""`trove bench engine`: the segment engine's costs as ratios measured in one run.

Data: SYNTHETIC vectors from a Gaussian mixture fitted to real embeddings (the first glosses of WordNet
embedded by MiniLM, or an .npz source), so clusters and neighbourhoods behave as on real data. Goals:

- single-point upsert p50 at N points <= 1.5x the same at 10k;
- bytes the engine writes per 10k new points at N <= 1.5x the same at N/10 (amortised over a window of
  new points, so the seals and merges they cause count);
- after overwriting every point 3 times and letting the optimizer settle: memory <= 1.2x a fresh
  collection of the same points, recall unchanged;
- search over 10 segments <= 1.3x the latency of one segment of the same points (flat, and HNSW), each after
  serving 1,000 queries (HNSW depths are measured on served queries); the CPU per query is reported beside;
- reopening an N-point collection (in process: load its segments, replay the rest) <= 3x reading its files once;
- a compressed collection (binary codes; LeanVec-reduced floats) with an HNSW coarse stage: recall@10 >= 0.95
  at >= 5x the QPS of the same compressed collection's flat scan;
- an npy build through a real `trove serve`: peak RSS <= 1.5x the final index memory, and query p99 during
  it <= 3x idle (the build, and the merges it starts, each against the collection it searches, idle).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench import report
from bench.collections import fill, open_catalog, recall_of, serve, single_query_ms
from bench.suites import Suite
from bench.suites.options import DEFAULT_OUT, DEFAULT_THREADS, Out, Threads

UPSERT_SAMPLES = 200
WARMUP_QUERIES = 1000  # the recent-query ring's size: what a served collection measures its depths on
OVERSAMPLES = (2, 4, 8, 16, 32, 64, 128)


def compressed_configs(dim: int) -> dict[str, dict[str, Any]]:
    """Compressed configs whose coarse stage can be a graph: binary codes (Hamming HNSW), reduced floats (HNSW)."""
    return {"binary1": {"quantizer": {"kind": "binary"}}, f"leanvec-id{dim // 4}": {"leanvec": {"dim": dim // 4}}}


TARGET_RECALL = 0.95
SETTLED_S = 5.0  # the optimizer looks every second: five quiet seconds after a build mean it found nothing more to do


def _single_upsert_ms(collection: Any, docs: np.ndarray, first_id: int) -> float:
    from index.requests import PointInput

    samples = []
    for i, v in enumerate(docs[:UPSERT_SAMPLES]):
        started = time.perf_counter()
        collection.upsert([PointInput(id=first_id + i, vector=v)])
        samples.append(time.perf_counter() - started)
    return float(np.percentile(samples, 50) * 1000)


def _bytes_per_10k(collection: Any, docs: np.ndarray, first_id: int) -> float:
    """Engine bytes written per 10k new points, amortised over inserting ``docs`` (seals and the merges they cause)."""
    before = collection.engine.bytes_written
    fill(collection, docs, first_id)
    return (collection.engine.bytes_written - before) * 10_000 / len(docs)


def _compressed_pair(root: Path, base: np.ndarray, probe: np.ndarray, truth: np.ndarray, spec: Any, points: int) -> dict[str, dict[str, Any]]:
    """The same compressed collection with a flat and an HNSW coarse stage: for each, the smallest oversample
    reaching the target recall (or the largest tried) and its single-query p50."""
    from index.backends.faiss_index import IndexSpec

    chosen: dict[str, dict[str, Any]] = {}
    for kind in ("flat", "hnsw"):
        catalog = open_catalog(root / kind, seal_points=points, max_segment_points=points)
        collection = catalog.create(kind, model=None, dim=base.shape[1], metric="ip", index=IndexSpec(type=kind, m=16, ef_construction=100, ef_search=64))  # type: ignore[arg-type]
        fill(collection, base, settle=False)
        collection.compression.fit(spec, None, lambda *a: None)
        curve = {os_: recall_of(collection, probe, truth, os_) for os_ in OVERSAMPLES}
        reach = [os_ for os_, r in curve.items() if r >= TARGET_RECALL]
        pick = reach[0] if reach else OVERSAMPLES[-1]
        chosen[kind] = {"oversample": pick, "recall_at_10": curve[pick], "curve": curve, "p50_ms": single_query_ms({kind: collection}, probe, 10, pick)[kind]}
        catalog.close()
    return chosen


def _build_step(data_dir: Path, rows: np.ndarray, probe: np.ndarray) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An npy build job on a real `trove serve`, through the merges it starts: its peak RSS against the
    collection's final memory, and single-query p99 in each phase against the same collection idle.

    Two phases, each against its own idle: until the build commits, queries search the collection as it was (its
    1,000 seed points), so they are set against that collection idle; after, they search the built collection
    while the merges its segments start run, so they are set against the built collection idle once the
    optimizer has settled. One idle for both would count the collection's growth (1,000 to N points: a far
    longer flat scan) as the build's interference."""
    import httpx

    from bench.metrics import latency_ms
    from bench.server import trove_server

    imports = data_dir / "imports"
    imports.mkdir(parents=True)
    np.save(imports / "build.npy", rows)
    bodies = [{"vector": q.tolist(), "k": 10, "with_payload": False} for q in probe]

    def timed(http: httpx.Client, body: dict[str, Any]) -> float:
        started = time.perf_counter()
        http.post("/v1/collections/b/query", json=body).raise_for_status()
        return time.perf_counter() - started

    with trove_server(data_dir) as base_url, httpx.Client(base_url=base_url, timeout=120) as http:
        pid = int((data_dir / ".lock").read_text())  # the server writes its pid into the data dir's lock
        http.post("/v1/collections", json={"name": "b", "dim": rows.shape[1], "metric": "ip"}).raise_for_status()
        http.put("/v1/collections/b/points", json={"points": [{"id": f"seed{i}", "vector": v.tolist()} for i, v in enumerate(rows[:1000])]}).raise_for_status()
        idle_before = [timed(http, body) for body in bodies]
        baseline_rss = _rss(pid, "VmRSS")
        job_id = http.post("/v1/collections/b/builds", json={"source": {"path": str(imports / "build.npy"), "format": "npy"}}).json()["job_id"]
        building: list[float] = []
        # Sampled after each query, per phase: which phase the peak falls in, and how much of it is file pages.
        peaks = {phase: dict.fromkeys(("VmRSS", "RssAnon", "RssFile"), 0) for phase in ("build", "merges")}

        def sample(phase: str) -> None:
            for field, peak in peaks[phase].items():
                peaks[phase][field] = max(peak, _rss(pid, field))

        while (job := http.get(f"/v1/jobs/{job_id}").json())["state"] not in ("succeeded", "failed", "cancelled"):
            building.append(timed(http, bodies[len(building) % len(bodies)]))
            sample("build")
        if job["state"] != "succeeded":
            raise RuntimeError(f"the build failed: {job['error']}")
        building = building[:-1]  # the last one may have met the commit
        # The merges the build's segments start belong to its cost: queries go on until the optimizer settles.
        merging: list[float] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < SETTLED_S:
            merging.append(timed(http, bodies[len(merging) % len(bodies)]))
            sample("merges")
            if any(j["kind"] == "optimize" and j["state"] in ("queued", "running") for j in http.get("/v1/jobs").json()["jobs"]):
                quiet_since = time.monotonic()
        idle_after = [timed(http, body) for body in bodies]
        peak_rss = _rss(pid, "VmHWM")
        info = http.get("/v1/collections/b").json()
        memory = int(info["memory_bytes"])
    peak_anon = max(phase["RssAnon"] for phase in peaks.values())  # what the build allocates, without file pages the kernel can drop
    figures = {
        "rows": len(rows),
        "seconds": job["result"]["seconds"],
        "segments_written": job["result"]["segments"],
        "segments_after": [segment["points"] for segment in info["segments"]],
        "peak_rss_bytes": peak_rss,
        "peak_anonymous_rss_bytes": peak_anon,
        "sampled_peaks_bytes": peaks,
        "rss_before_build_bytes": baseline_rss,
        "final_memory_bytes": memory,
        "idle_before": latency_ms(np.array(idle_before)),
        "during_build": latency_ms(np.array(building)),
        "queries_during_build": len(building),
        "during_merges": latency_ms(np.array(merging)),
        "queries_during_merges": len(merging),
        "idle_after": latency_ms(np.array(idle_after)),
    }
    return figures, [
        # RSS counts the memory-mapped source file's and segment files' pages too (clean, dropped under pressure).
        _goal(f"{len(rows):,}-row npy build: server peak RSS / final index memory", peak_rss / memory, 1.5, peak_rss=peak_rss, rss_before=baseline_rss, final_memory=memory),
        _goal(f"{len(rows):,}-row npy build: server peak anonymous RSS / final index memory", peak_anon / memory, 1.5, peak_anonymous=peak_anon),
        _goal("query p99 during the build / the collection before it, idle", figures["during_build"]["p99_ms"] / figures["idle_before"]["p99_ms"], 3.0),
        _goal("query p99 during the merges the build starts / the built collection, idle", figures["during_merges"]["p99_ms"] / figures["idle_after"]["p99_ms"], 3.0),
    ]


def _rss(pid: int, field: str) -> int:
    """A /proc status field of a process in bytes: VmRSS (now), VmHWM (the peak), RssAnon, RssFile."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for process {pid}")


def _goal(name: str, value: float, target: float, higher_is_better: bool = False, **extra: Any) -> dict[str, Any]:
    met = value >= target if higher_is_better else value <= target
    return {"goal": name, "value": round(value, 3), "target": target, "met": bool(met), **extra}


def engine(
    source: Annotated[str, typer.Option(help="'wordnet' (its first --fit-docs glosses, embedded and cached) or an .npz with 'docs'.")] = "wordnet",
    fit_docs: Annotated[int, typer.Option(help="Real vectors the Gaussian mixture is fitted to.")] = 5000,
    points: Annotated[int, typer.Option(help="N: the large collection of the write, bytes and restart goals.")] = 1_000_000,
    settle_points: Annotated[int, typer.Option(help="Points of the overwrite-and-settle goal (binary1 compressed).")] = 200_000,
    segment_points: Annotated[int, typer.Option(help="Points of the 10-segments-vs-one goal.")] = 100_000,
    compressed_points: Annotated[int, typer.Option(help="Points of the compressed HNSW-vs-flat goal.")] = 1_000_000,
    window: Annotated[int, typer.Option(help="New points the bytes-per-10k figure is amortised over (seals and merges included).")] = 200_000,
    seal_points: Annotated[int, typer.Option(help="The write goals' seal threshold (the service's default unless set).")] = 20_000,
    build_points: Annotated[int, typer.Option(help="Rows of the npy build measured through a real `trove serve`.")] = 1_000_000,
    steps: Annotated[str, typer.Option(help="Comma-separated steps to run: writes, settle, fanout, compressed, build.")] = "writes,settle,fanout,compressed,build",
    queries: Annotated[int, typer.Option(help="Queries per measurement.")] = 200,
    threads: Threads = DEFAULT_THREADS,
    out: Out = DEFAULT_OUT,
) -> None:
    """Segment engine: write cost, bytes written, memory after overwrites, segment fan-out, restart, compressed HNSW."""
    from bench.groundtruth import exact_topk
    from bench.synthetic import GaussianMixture
    from bench.threads import thread_budget
    from index.backends.faiss_index import IndexSpec
    from index.compression.spec import CompressionSpec

    head = report.header("engine")
    real = _real_vectors(source, fit_docs)
    mixture = GaussianMixture.fit(real)
    chosen_steps = {part.strip() for part in steps.split(",") if part.strip()}
    largest = max(points, settle_points, segment_points, compressed_points, build_points)
    typer.echo(f"drawing {largest:,} synthetic vectors from a {len(mixture.weights)}-cluster mixture fitted to {len(real):,} real ones", err=True)
    docs = mixture.draw(largest + window + 2 * UPSERT_SAMPLES, seed=1)
    probe = mixture.draw(queries, seed=2)
    warmup = mixture.draw(WARMUP_QUERIES, seed=3)  # traffic a collection serves before it is measured
    goals: list[dict[str, Any]] = []
    figures: dict[str, Any] = {}

    def step(what: str) -> None:
        typer.echo(f"[{time.strftime('%H:%M:%S')}] {what}", err=True)

    with thread_budget(threads), tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        root = Path(tmp)
        if "writes" in chosen_steps:
            # -- writes: single-point upserts, bytes per 10k, at N/10 and N; then restart at N ----------------
            step(f"writes: filling a flat collection to {points:,}")
            catalog = open_catalog(root / "writes", seal_points=seal_points)
            writes = catalog.create("w", model=None, dim=docs.shape[1], metric="ip", index=IndexSpec())
            small, mid = 10_000, points // 10
            extra = docs[largest:]
            fill(writes, docs[:small])
            upsert_small = _single_upsert_ms(writes, extra[window:], first_id=10**9)
            fill(writes, docs[small:mid], first_id=small)
            bytes_mid = _bytes_per_10k(writes, extra[:window], first_id=2 * 10**9)
            fill(writes, docs[mid:points], first_id=mid)
            upsert_big = _single_upsert_ms(writes, extra[window:], first_id=3 * 10**9)
            bytes_big = _bytes_per_10k(writes, extra[:window], first_id=4 * 10**9)
            figures["writes"] = {
                "upsert_p50_ms": {"10k": upsert_small, str(points): upsert_big},
                "bytes_per_10k": {str(mid): bytes_mid, str(points): bytes_big, "window": window},
                "segments_at_n": len(writes.info()["segments"]),
            }
            goals.append(_goal(f"single-point upsert p50 at {points:,} / at 10k", upsert_big / upsert_small, 1.5, small_ms=upsert_small, large_ms=upsert_big))
            goals.append(_goal(f"engine bytes per 10k new points at {points:,} / at {mid:,}", bytes_big / max(bytes_mid, 1), 1.5, mid_bytes=bytes_mid, large_bytes=bytes_big))
            catalog.close()
            step("restart")
            files = [f for f in (root / "writes").rglob("*") if f.is_file()]
            started = time.perf_counter()
            read = sum(len(f.read_bytes()) for f in files)
            read_s = time.perf_counter() - started
            started = time.perf_counter()
            catalog = open_catalog(root / "writes", seal_points=seal_points)
            reopen_s = time.perf_counter() - started
            figures["restart"] = {"read_files_s": read_s, "bytes": read, "reopen_s": reopen_s, "replayed": catalog.get("w").info()["segments"][-1]["points"]}
            goals.append(_goal(f"reopen {points:,} points / read its files once", reopen_s / read_s, 3.0, reopen_s=reopen_s, read_s=read_s))
            catalog.close()

        if "settle" in chosen_steps:
            # -- overwrite everything 3 times, settle: memory and recall ------------------------------------------
            step(f"settle: binary1 collection of {settle_points:,}, overwritten 3 times")
            base = docs[:settle_points]
            truth = exact_topk(base, probe, 10).ids
            spec = CompressionSpec.from_json({"quantizer": {"kind": "binary"}})

            def compressed(name: str, rounds: int) -> tuple[int, float]:
                catalog = open_catalog(root / name)
                collection = catalog.create("s", model=None, dim=docs.shape[1], metric="ip", index=IndexSpec())
                fill(collection, base, settle=False)
                collection.compression.fit(spec, None, lambda *a: None)
                for _ in range(rounds):
                    fill(collection, base)
                collection.optimize(seal=True)
                memory, recall = int(collection.info()["memory_bytes"]), recall_of(collection, probe, truth)
                catalog.close()
                return memory, recall

            fresh_memory, fresh_recall = compressed("fresh", 0)
            settled_memory, settled_recall = compressed("overwritten", 3)
            figures["settle"] = {"fresh": {"memory_bytes": fresh_memory, "recall_at_10": fresh_recall}, "overwritten_3x": {"memory_bytes": settled_memory, "recall_at_10": settled_recall}}
            goal = _goal("memory after 3 overwrites and settling / fresh (recall not lower)", settled_memory / fresh_memory, 1.2, recall_fresh=fresh_recall, recall_settled=settled_recall)
            goals.append({**goal, "met": goal["met"] and settled_recall >= fresh_recall - 0.01})

        if "fanout" in chosen_steps:
            # -- 10 segments vs one, each HNSW segment at its calibrated depth (the default config) -----------------
            truth = exact_topk(docs[:segment_points], probe, 10).ids
            for kind in ("flat", "hnsw"):
                step(f"fan-out: {kind}, 10 segments vs 1 of {segment_points:,}")
                part = segment_points // 10
                index = IndexSpec(type=kind, m=16, ef_construction=100)  # type: ignore[arg-type]
                ten_catalog = open_catalog(root / f"ten-{kind}", seal_points=part, max_segment_points=part, merge_factor=1000)
                one_catalog = open_catalog(root / f"one-{kind}", seal_points=segment_points, max_segment_points=segment_points)
                ten = ten_catalog.create("t", model=None, dim=docs.shape[1], metric="ip", index=index)
                one = one_catalog.create("o", model=None, dim=docs.shape[1], metric="ip", index=index)
                fill(ten, docs[:segment_points])
                fill(one, docs[:segment_points])
                one.optimize(seal=True)
                pair = {"ten": ten, "one": one}
                # A served collection has seen queries: each measures its depths on them (the optimizer's calibrate
                # tasks) before it is measured, on other queries.
                for collection in pair.values():
                    serve(collection, warmup, 10)
                    collection.optimize()
                latency = single_query_ms(pair, probe, 10)
                cpu = single_query_ms(pair, probe, 10, clock=time.process_time)
                recall = {name: recall_of(c, probe, truth) for name, c in pair.items()}
                sealed = sum(s["state"] == "sealed" for s in ten.info()["segments"])
                depths = {name: sorted({s["graph"]["ef_search"] for s in c.info()["segments"] if s.get("graph")}) for name, c in pair.items()}
                scales = {name: sorted({s["depth_scale"] for s in c.info()["segments"] if "depth_scale" in s}) for name, c in pair.items()}
                figures[f"fanout_{kind}"] = {**latency, "cpu_ms": cpu, "segments": sealed, "recall_at_10": recall, "ef_search": depths, "depth_scale": scales}
                goal = _goal(
                    f"search over {sealed} {kind} segments / one segment (recall not lower)",
                    latency["ten"] / latency["one"],
                    1.3,
                    ten_ms=latency["ten"],
                    one_ms=latency["one"],
                    cpu_ratio=round(cpu["ten"] / cpu["one"], 3),
                    recall=recall,
                )
                goals.append({**goal, "met": goal["met"] and recall["ten"] >= recall["one"] - 0.01})
                ten_catalog.close()
                one_catalog.close()

        if "compressed" in chosen_steps:
            # -- compressed: HNSW coarse stage vs the flat code scan ------------------------------------------------
            base = docs[:compressed_points]
            truth = exact_topk(base, probe, 10).ids
            for label, config in compressed_configs(docs.shape[1]).items():
                step(f"compressed: {label} over {compressed_points:,}, HNSW coarse stage vs flat scan")
                chosen = _compressed_pair(root / label, base, probe, truth, CompressionSpec.from_json(config), compressed_points)
                figures[f"compressed_hnsw_{label}"] = chosen
                speedup = chosen["flat"]["p50_ms"] / chosen["hnsw"]["p50_ms"]
                reached = chosen["hnsw"]["recall_at_10"] >= TARGET_RECALL
                goal = _goal(f"{label}: HNSW coarse QPS / flat scan QPS, at recall@10 >= {TARGET_RECALL}", speedup, 5.0, higher_is_better=True, recall=chosen["hnsw"]["recall_at_10"])
                goals.append({**goal, "met": goal["met"] and reached})

        if "build" in chosen_steps:
            step(f"build: a {build_points:,}-row npy through trove serve, queries meanwhile")
            figures["build"], build_goals = _build_step(root / "build", docs[:build_points], probe)
            goals += build_goals

    payload = {
        **head,
        "data": f"SYNTHETIC: vectors drawn from a {len(mixture.weights)}-cluster Gaussian mixture fitted to {len(real):,} real {_source_label(source)}",
        "settings": {"points": points, "settle_points": settle_points, "segment_points": segment_points, "compressed_points": compressed_points, "window": window, "seal_points": seal_points, "queries": queries, "threads": threads},
        "figures": figures,
        "goals": goals,
    }
    markdown = render(payload)
    files = report.write(out, "engine", payload, markdown)
    typer.echo(markdown)
    typer.echo("wrote " + ", ".join(str(f) for f in files))


def _source_label(source: str) -> str:
    return "WordNet gloss embeddings (all-MiniLM-L6-v2, 384-d)" if source == "wordnet" else f"vectors of {Path(source).name}"


def _real_vectors(source: str, limit: int) -> np.ndarray:
    if source != "wordnet":
        with np.load(source) as data:
            return np.asarray(data["docs"][:limit], np.float32)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.cache import cached_embeddings
    from bench.wordnet import load_corpus
    from encoders.registry import ModelRegistry

    encoder = ModelRegistry().get("minilm-l6")
    corpus = load_corpus().head(limit)
    encode: Callable[[list[str]], np.ndarray] = lambda texts: encoder.encode_docs(texts)  # noqa: E731
    return cached_embeddings(f"wordnet-{encoder.info.name}-docs-first{limit}", corpus.doc_texts, encode, encoder.info.name)


def render(payload: dict[str, Any]) -> str:
    lines = ["# engine: the segment engine's costs", "", report.machine_line(payload), "", f"Data: {payload['data']}.", "", "| goal | measured | target | met |", "|---|---|---|---|"]
    for goal in payload["goals"]:
        lines.append(f"| {goal['goal']} | {goal['value']} | {goal['target']} | {'met' if goal['met'] else 'NOT met'} |")
    lines += ["", "Figures (JSON has all):", "", "```", _figures(payload["figures"]), "```"]
    return "\n".join(lines)


def _figures(figures: dict[str, Any]) -> str:
    import json

    return json.dumps(figures, indent=1, default=float)


SUITE = Suite(name="engine", summary="segment engine: write cost, bytes per write, memory after overwrites, segment fan-out, restart, compressed HNSW", command=engine)
