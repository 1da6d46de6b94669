"""`trove bench ann`: dense top-k search on WordNet (real MiniLM embeddings) and on the 1M synthetic set.

Every system is built once per data set and walked through its sweep on the tuning queries; its best
setting (fastest batched QPS at recall@10 >= target) is then measured on the held-out test queries and
reported as ratios to raw FAISS flat measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bench import plots, report
from bench.peers import BASELINE, PEERS, BuildSettings
from bench.suites import Suite
from bench.suites.options import (
    DEFAULT_OUT,
    DEFAULT_THREADS,
    Docs,
    Out,
    Queries,
    Source,
    SyntheticDocs,
    Threads,
    csv_ints,
)
from bench.threads import thread_budget

if TYPE_CHECKING:  # bench.datasets pulls in torch: imported at run time so `trove bench --list` stays light
    from bench.datasets import Dataset

EF_SEARCH = "10,20,40,80,160,320,640"


def _selected(spec: str, known: list[str], baseline: str) -> list[str]:
    names = known if spec == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise typer.BadParameter(f"unknown peers {unknown}; known: {', '.join(known)}")
    return [baseline, *[n for n in names if n != baseline]]  # ratios need the baseline in every run


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _qps(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def summarise(runs: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Table rows: each system's best setting on the test queries, as ratios to the baseline."""
    base = next(r for r in runs if r["name"] == baseline and r["status"] == "ok")["best"]
    base_memory = next(r for r in runs if r["name"] == baseline)["memory_bytes"]
    rows = []
    for run in runs:
        if run["status"] != "ok":
            continue
        best = run["best"]
        rows.append(
            {
                "system": run["name"],
                "setting": best["params"],
                "reaches_target": run["reaches_target"],
                "recall_at_10": best["recall_at_10"],
                "ndcg_at_10": best["ndcg_at_10"],
                "mrr": best["mrr"],
                "qps_batched": best["qps_batched"],
                "qps_batched_vs_baseline": best["qps_batched"] / base["qps_batched"],
                "qps_single": best["qps_single"],
                "qps_single_vs_baseline": best["qps_single"] / base["qps_single"],
                "p50_ms": best["p50_ms"],
                "p99_ms": best["p99_ms"],
                "bytes_per_vector": run["bytes_per_vector"],
                "memory_vs_baseline": run["memory_bytes"] / base_memory,
                "build_seconds": run["build_seconds"],
            }
        )
    return rows


def markdown_section(result: dict[str, Any], target: float, baseline: str) -> str:
    lines = [
        f"## {result['name']}" + (" (SYNTHETIC)" if result["synthetic"] else ""),
        "",
        f"{result['label']}. {result['docs']} documents, {result['dim']}-d; "
        f"{result['tune_queries']} tuning and {result['test_queries']} held-out test queries.",
        "",
        f"Best setting = fastest batched QPS with recall@10 >= {target} on the tuning queries; every figure below "
        f"is that setting on the test queries. QPS and memory are also given as ratios to {baseline} in this run.",
        "",
        "| system | setting | recall@10 | nDCG@10 | MRR | QPS batched | x flat | QPS single | x flat | p50 ms | p99 ms | bytes/vec | memory x flat | build s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["summary"]:
        setting = ", ".join(f"{k}={v}" for k, v in row["setting"].items()) or "exact"
        if not row["reaches_target"]:
            setting += f" (never reached {target})"
        lines.append(
            f"| {row['system']} | {setting} | {_fmt(row['recall_at_10'])} | {_fmt(row['ndcg_at_10'])} | {_fmt(row['mrr'])} "
            f"| {_qps(row['qps_batched'])} | {row['qps_batched_vs_baseline']:.2f} | {_qps(row['qps_single'])} "
            f"| {row['qps_single_vs_baseline']:.2f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['bytes_per_vector']:,.0f} | {row['memory_vs_baseline']:.2f} | {row['build_seconds']:.1f} |"
        )
    missing = [r for r in result["peers"] if r["status"] != "ok"] + result["not_selected"]
    if missing:
        lines += ["", "Not measured here:", ""]
        lines += [f"- **{r['name']}** ({r['status']}): {r['reason']}" for r in missing]
    methods = sorted({(r["name"], r["memory_method"]) for r in result["peers"] if r["status"] == "ok"})
    lines += ["", "Memory is measured as: " + "; ".join(f"{name}: {how}" for name, how in methods) + "."]
    return "\n".join(lines)


def _curves(result: dict[str, Any], baseline: str) -> list[plots.Curve]:
    base = next(r for r in result["peers"] if r["name"] == baseline)["sweep"][0]
    return [
        plots.Curve(
            system=run["name"],
            recall=[p["recall_at_10"] for p in run["sweep"]],
            speed_batched=[p["qps_batched"] / base["qps_batched"] for p in run["sweep"]],
            speed_single=[p["qps_single"] / base["qps_single"] for p in run["sweep"]],
            bytes_per_vector=run["bytes_per_vector"],
        )
        for run in result["peers"]
        if run["status"] == "ok"
    ]


def write_plots(out: Path, result: dict[str, Any], target: float, baseline: str) -> list[Path]:
    curves = _curves(result, baseline)
    title = f"{result['name']}: {result['docs']:,} x {result['dim']}-d" + (" (SYNTHETIC vectors)" if result["synthetic"] else "")
    return [
        plots.pareto(out / f"ann-pareto-{result['name']}.png", f"recall@10 vs QPS, {title}", curves, baseline, target),
        plots.memory(out / f"ann-memory-{result['name']}.png", f"bytes per vector vs recall@10, {title}", curves, target),
    ]


def ann(
    source: Source = "wordnet",
    docs: Docs = None,
    queries: Queries = 1000,
    synthetic_docs: SyntheticDocs = 1_000_000,
    peers: Annotated[str, typer.Option(help="Systems on the real data: 'all' or a comma list (see --list-peers).")] = "all",
    synthetic_peers: Annotated[str, typer.Option(help="Systems on the synthetic set: 'all' or a comma list.")] = "all",
    k: Annotated[int, typer.Option(help="Neighbours per query.")] = 10,
    target: Annotated[float, typer.Option(help="Recall@10 a setting must reach to count as a system's best.")] = 0.95,
    m: Annotated[int, typer.Option(help="Graph degree for every graph index.")] = 16,
    ef_construction: Annotated[int, typer.Option(help="Build-time search depth for every graph index.")] = 100,
    ef_search: Annotated[str, typer.Option(help="Search depths every graph index is swept over.")] = EF_SEARCH,
    single_budget: Annotated[float, typer.Option(help="Seconds of single-query timing per sweep point (at least 20 queries).")] = 3.0,
    threads: Threads = DEFAULT_THREADS,
    out: Out = DEFAULT_OUT,
    list_peers: Annotated[bool, typer.Option("--list-peers", help="Print the known systems and exit.")] = False,
    part: Annotated[
        str,
        typer.Option(
            help="peers: every system's sweep (ann.md); orders: HNSW insertion orders on the real set and the clustered set (ann-orders.md); "
            "depth: held-query recall of each kind of HNSW collection at its calibrated depth (ann-depth.md)."
        ),
    ] = "peers,orders,depth",
    clustered_docs: Annotated[int, typer.Option(help="Size of the clustered synthetic set of the orders part (0 skips it).")] = 1_000_000,
    depth_docs: Annotated[int, typer.Option(help="Documents of the real set that the depth part's collections hold.")] = 40_000,
) -> None:
    """Dense top-k: recall, QPS, latency, memory and build time of Trove and its peers; HNSW insertion orders."""
    if list_peers:
        for name, cls in PEERS.items():
            typer.echo(f"{name:14} {cls.package}")
        return
    from bench.datasets import load_source, real_dataset, synthetic_dataset

    from bench.datasets import clustered_dataset

    parts = {p.strip() for p in part.split(",") if p.strip()}
    src = load_source(source)
    real = real_dataset(src, docs, queries)
    if "orders" in parts:
        orders_plan = [real] + ([clustered_dataset(src, clustered_docs, queries)] if clustered_docs else [])
        with thread_budget(threads):
            files = measure_orders(orders_plan, m, ef_construction, target, threads, out)
        typer.echo((out / "ann-orders.md").read_text())
        typer.echo("wrote " + ", ".join(str(f) for f in files))
    if "depth" in parts:
        with thread_budget(threads):
            files = measure_depth(real_dataset(src, depth_docs, queries), m, ef_construction, target, threads, out)
        typer.echo((out / "ann-depth.md").read_text())
        typer.echo("wrote " + ", ".join(str(f) for f in files))
    if "peers" in parts:
        head = report.header("ann")
        settings = BuildSettings(m=m, ef_construction=ef_construction, ef_search=csv_ints(ef_search), threads=threads)
        plan = [(real, _selected(peers, list(PEERS), BASELINE))]
        if synthetic_docs:
            plan.append((synthetic_dataset(src, synthetic_docs, queries), _selected(synthetic_peers, list(PEERS), BASELINE)))
        del src
        with thread_budget(threads):
            files = measure_all(plan, settings, k, target, single_budget, head, out)
        typer.echo((out / "ann.md").read_text())
        typer.echo("wrote " + ", ".join(str(f) for f in files))


def measure_orders(plan: list[Dataset], m: int, ef_construction: int, target: float, threads: int, out: Path) -> list[Path]:
    """The insertion-order study on every data set (bench/hnsw_orders.py), written after each one."""
    from bench.hnsw_orders import markdown, study

    head = report.header("ann-orders")
    results: list[dict[str, Any]] = []
    files: list[Path] = []
    for dataset in plan:
        def step(what: str, name: str = dataset.name) -> None:
            typer.echo(f"[{time.strftime('%H:%M:%S')}] orders {name}: {what}", err=True)

        results.append(study(dataset, m, ef_construction, target, step))
        payload = {**head, "settings": {"m": m, "ef_construction": ef_construction, "target_recall_at_10": target, "threads": threads}, "datasets": results}
        text = "\n\n".join(
            [
                f"# ann-orders: HNSW insertion order\n\n{report.machine_line(payload)}\n\n"
                f"M={m}, ef_construction={ef_construction}; every graph built by Trove's segment builder (index/backends/hnsw_graph.py).",
                *(markdown(r, target) for r in results),
            ]
        )
        files = report.write(out, "ann-orders", payload, text)
    return files


def measure_depth(dataset: Dataset, m: int, ef_construction: int, target: float, threads: int, out: Path) -> list[Path]:
    """Held-query recall of each kind of HNSW collection at its calibrated depth (bench/hnsw_depth.py)."""
    from bench.hnsw_depth import markdown, study

    def step(what: str) -> None:
        typer.echo(f"[{time.strftime('%H:%M:%S')}] depth {dataset.name}: {what}", err=True)

    head = report.header("ann-depth")
    result = study(dataset, m, ef_construction, target, step)
    payload = {**head, "settings": {"m": m, "ef_construction": ef_construction, "target_recall_at_10": target, "threads": threads}, "datasets": [result]}
    text = (
        f"# ann-depth: recall-targeted search depth per kind of HNSW collection\n\n{report.machine_line(payload)}\n\n"
        f"M={m}, ef_construction={ef_construction}; collections on Trove's defaults otherwise (no ef_search, no oversample).\n\n{markdown(result)}"
    )
    return report.write(out, "ann-depth", payload, text)


def measure_all(
    plan: list[tuple[Dataset, list[str]]], settings: BuildSettings, k: int, target: float, single_budget: float, head: dict[str, Any], out: Path
) -> list[Path]:
    """Every selected peer on every data set, results written after each data set."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from bench.measure import run_peer

    run_settings = {"k": k, "target_recall_at_10": target, "baseline": BASELINE, "build": asdict(settings), "single_query_budget_s": single_budget}
    results: list[dict[str, Any]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        for dataset, names in plan:
            task = progress.add_task(f"{dataset.name}: ground truth", total=len(names))
            started = time.perf_counter()
            dataset.truth(dataset.tune)  # computed once here, then read from the cache by every peer
            dataset.truth(dataset.test)
            runs = []
            for name in names:
                def step(what: str, name: str = name) -> None:
                    progress.update(task, description=f"{dataset.name}: {name} {what}")

                runs.append(run_peer(PEERS[name], dataset, settings, k, target, single_budget, step).to_json())
                progress.advance(task)
            result = {
                "name": dataset.name,
                "label": dataset.label,
                "synthetic": dataset.synthetic,
                "docs": len(dataset.docs),
                "dim": dataset.dim,
                "tune_queries": len(dataset.tune),
                "test_queries": len(dataset.test),
                "ground_truth": "exact top-100 by inner product (torch matmul + topk), cached by content hash",
                "seconds": time.perf_counter() - started,
                "peers": runs,
                "not_selected": [
                    {"name": n, "status": "not selected", "reason": "left out of this data set's peer list by the command's options"}
                    for n in PEERS
                    if n not in names
                ],
            }
            result["summary"] = summarise(runs, BASELINE)
            results.append(result)
            # Written after every data set, so an interrupted run keeps what it measured.
            write_results(out, {**head, "settings": run_settings, "datasets": results, "complete": False})

    return write_results(out, {**head, "settings": run_settings, "datasets": results, "complete": True})


def write_results(out: Path, payload: dict[str, Any]) -> list[Path]:
    """ann.json, ann.md and the plots for every data set finished so far."""
    settings = payload["settings"]
    target, baseline = settings["target_recall_at_10"], settings["baseline"]
    sections = [markdown_section(r, target, baseline) for r in payload["datasets"]]
    if not payload["complete"]:
        sections.append("_Run in progress or interrupted: later data sets are missing._")
    intro = report.machine_line(payload) + (f"\n\n{payload['note']}" if payload.get("note") else "")
    markdown = "\n\n".join([f"# ann: dense top-{settings['k']}\n\n{intro}", *sections])
    files = report.write(out, "ann", payload, markdown)
    for result in payload["datasets"]:
        files += write_plots(out, result, target, baseline)
    return files


SUITE = Suite(name="ann", summary="dense top-k on WordNet and a 1M synthetic set: Trove vs FAISS, hnswlib, usearch, SVS, Milvus Lite, LanceDB, Chroma", command=ann)
