"""`trove bench` suites end to end on a tiny slice the test makes (no WordNet, no embedding cache).

Peers outside the `test` extra (Milvus Lite, LanceDB, Chroma, SVS) are exercised only where installed;
their tests are skipped, saying so, elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.datasets import npz_source, real_dataset
from bench.measure import MIN_SINGLE, ROUND_QUERIES, interleaved_single, run_peer
from bench.metrics import recall_at_k
from bench.peers import PEERS, BuildSettings, Params, Peer
from service.cli import app

TEST_EXTRA_PEERS = "faiss-flat,faiss-hnsw,faiss-ivfpq,faiss-binary,hnswlib,usearch,trove-flat,trove-hnsw"
EXACT = {"faiss-flat", "trove-flat"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 documents and 120 queries around 20 cluster centres (32-d); a query's relevant set is its cluster."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, 32))
    doc_cluster, query_cluster = rng.integers(0, 20, 400), rng.integers(0, 20, 120)
    docs = centres[doc_cluster] + 0.5 * rng.standard_normal((400, 32))
    queries = centres[query_cluster] + 0.5 * rng.standard_normal((120, 32))
    relevant = [np.flatnonzero(doc_cluster == c) for c in query_cluster]
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(
        path,
        docs=docs.astype(np.float32),
        queries=queries.astype(np.float32),
        relevant_ids=np.concatenate(relevant),
        relevant_offsets=np.cumsum([0, *[len(r) for r in relevant]]),
    )
    return path


@pytest.fixture(autouse=True)
def bench_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROVE_BENCH_CACHE", str(tmp_path / "cache"))


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000, path


def test_list_names_every_suite() -> None:
    listed = invoke("--list")
    assert "ann" in listed and "service" in listed and "muvera" in listed


def test_muvera_recall_counts_true_documents_among_the_first_candidates() -> None:
    from bench.suites.muvera import heuristic_ranking, needed, recall_curve

    truth = np.array([[0, 1], [2, 3]])
    curve = recall_curve([np.array([5, 0, 1]), np.array([3, 9, 8, 2])], truth)
    assert curve[:4].tolist() == [0.25, 0.5, 0.75, 1.0] and curve[-1] == 1.0
    assert needed(curve, 0.75) == 3 and needed(curve, 1.0) == 4 and needed(curve * 0.5, 0.9) is None
    # Token-level heuristic: documents ordered by their best token hit over all query tokens, each once.
    tokens = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]] * np.array([[1.0], [0.9], [0.8], [0.7], [0.95]], dtype=np.float32)
    docs = [tokens[0:1], tokens[1:2], tokens[2:4], tokens[4:5]]  # document 2 has two tokens
    query = [np.eye(4, dtype=np.float32)[[0, 2, 3]]]
    assert heuristic_ranking(docs, query)[0].tolist() == [0, 3, 2, 1]  # 1 only through zero-score hits


def test_hybrid_tuning_fuses_each_lists_prefix_and_picks_the_default_k_over_texts() -> None:
    from bench.suites.hybrid import DEFAULT_DEPTH, RRF_KS, default_k_choice, fused_ndcg
    from index.query.fusion import Fusion

    # Query 0's relevant document (99) is 11th in both lists (no other document is in both).
    pools = {"dense": [[(i, 1.0 - i / 100) for i in range(10)] + [(99, 0.5)]], "keyword": [[(i, 20.0 - i) for i in range(10, 20)] + [(99, 5.0)]]}
    relevant = [np.array([99])]
    # k=10 queries fuse at least 10 per list, as the service does: depth 10 leaves 99 out; depth 11 fuses it first (2/71 > 1/61).
    assert fused_ndcg(pools, relevant, Fusion(k=60.0, depth=1)) == fused_ndcg(pools, relevant, Fusion(k=60.0, depth=10)) == 0.0
    assert fused_ndcg(pools, relevant, Fusion(k=60.0, depth=11)) == 1.0
    # The default k: the best mean over the document texts of the default weights' and depth's tuning figures.
    def tuning(scores: dict[float, float]) -> dict:
        return {"tuning": {"all": [{"method": "rrf", "k": k, "depth": DEFAULT_DEPTH, "dense_weight": 1.0, "ndcg_at_10": scores.get(k, 0.0)} for k in RRF_KS]}}

    choice = default_k_choice({"entry": tuning({5.0: 0.9, 60.0: 0.7}), "gloss": tuning({5.0: 0.1, 60.0: 0.4})})
    assert choice["best"] == 60.0 and choice["mean_tuning_ndcg_at_10_by_k"][5.0] == pytest.approx(0.5)


def test_ann_suite_end_to_end(tiny_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    invoke(
        "ann", "--source", str(tiny_npz), "--docs", "300", "--queries", "40", "--synthetic-docs", "500",
        "--peers", TEST_EXTRA_PEERS, "--synthetic-peers", "faiss-flat,faiss-hnsw,trove-flat",
        "--single-budget", "0.02", "--part", "peers", "--out", str(out),
    )  # fmt: skip
    assert not (out / "ann-orders.json").exists()
    report = json.loads((out / "ann.json").read_text())
    assert report["suite"] == "ann" and report["command"]
    assert report["machine"]["cores"] and report["date"]
    real, synthetic = report["datasets"]
    assert real["docs"] == 300 and not real["synthetic"] and "SYNTHETIC" not in real["label"]
    assert synthetic["docs"] == 500 and synthetic["synthetic"] and "SYNTHETIC" in synthetic["label"]
    for dataset, expected in ((real, TEST_EXTRA_PEERS.split(",")), (synthetic, ["faiss-flat", "faiss-hnsw", "trove-flat"])):
        runs = {r["name"]: r for r in dataset["peers"]}
        assert list(runs) == expected
        assert {r["name"] for r in dataset["not_selected"]} | set(runs) == set(PEERS)  # nobody silently dropped
        for name, run in runs.items():
            assert run["status"] == "ok", run
            recalls = [p["recall_at_10"] for p in run["sweep"]] + [run["best"]["recall_at_10"]]
            assert all(0.0 <= r <= 1.0 for r in recalls)
            if name in EXACT:
                assert recalls == [1.0] * len(recalls)
            assert run["bytes_per_vector"] > 0 and run["build_seconds"] >= 0
        assert max(p["recall_at_10"] for p in runs["faiss-hnsw"]["sweep"]) >= 0.95
        summary = {row["system"]: row for row in dataset["summary"]}
        assert summary["faiss-flat"]["qps_batched_vs_baseline"] == 1.0
        assert summary["faiss-flat"]["memory_vs_baseline"] == 1.0
    assert real["summary"][0]["ndcg_at_10"] > 0.5 and synthetic["summary"][0]["ndcg_at_10"] is None
    markdown = (out / "ann.md").read_text()
    assert "| trove-flat | exact | 1.000 |" in markdown and "(SYNTHETIC)" in markdown
    for name in ("file-tiny-300", "synthetic-500"):
        assert_png(out / f"ann-pareto-{name}.png")
        assert_png(out / f"ann-memory-{name}.png")


def test_ann_orders_part_compares_insertion_orders(tiny_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    invoke("ann", "--source", str(tiny_npz), "--queries", "40", "--part", "orders", "--clustered-docs", "3000", "--m", "8", "--ef-construction", "40", "--out", str(out))
    assert not (out / "ann.json").exists() and not (out / "ann-depth.json").exists()
    report = json.loads((out / "ann-orders.json").read_text())
    real, clustered = report["datasets"]
    assert real["docs"] == 400 and clustered["docs"] == 3000 and clustered["synthetic"] and not real["synthetic"]
    for dataset in (real, clustered):
        assert set(dataset["orders"]) == {"lid_desc", "lid_asc", "arrival"}
        for row in dataset["orders"].values():
            assert all(0.0 <= r <= 1.0 for r in row["recall_at_10"].values())
            assert row["recall_at_10"]["128"] >= row["recall_at_10"]["16"] - 0.05  # deeper search does not lose recall
            assert row["lid"]["p10"] <= row["lid"]["p50"] <= row["lid"]["p90"] and row["lid"]["mean"] > 1
            assert row["qps_at_target"] > 0 and 0 < row["lid_seconds"] < row["build_seconds"]
        seal = dataset["seal"]
        assert seal["with_lid_seconds"] == pytest.approx(seal["without_lid_seconds"] + seal["lid_seconds"]) and seal["ratio"] > 1
    # Graphs of 3000 are calibrated (held vectors); of 400 they are too small and keep the fallback depth.
    assert all(row["calibrated_ef"] is not None for row in clustered["orders"].values())
    assert all(row["calibrated_ef"] is None for row in real["orders"].values())
    markdown = (out / "ann-orders.md").read_text()
    assert "| lid_desc |" in markdown and "(SYNTHETIC)" in markdown and "Seal time" in markdown


def test_ann_depth_part_measures_each_kind_of_hnsw_collection_on_held_queries(tiny_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    invoke("ann", "--source", str(tiny_npz), "--queries", "40", "--part", "depth", "--depth-docs", "400", "--m", "8", "--ef-construction", "40", "--out", str(out))
    assert not (out / "ann-orders.json").exists()
    (dataset,) = json.loads((out / "ann-depth.json").read_text())["datasets"]
    kinds = dataset["kinds"]
    assert list(kinds) == ["hnsw, 1 segment", "hnsw, 10 segments", "binary1 codes, hnsw coarse stage", "leanvec-id8 floats, hnsw coarse stage"]
    for row in kinds.values():
        after = row["after_queries"]
        assert 0.0 <= after["recall_at_10"] <= 1.0 and row["in_band"] == (0.95 <= after["recall_at_10"] <= 0.97)
    for name in ("hnsw, 1 segment", "hnsw, 10 segments"):  # the tuning queries were traffic: the merged depth was measured on them
        fanout = kinds[name]["after_queries"]["fanout"]
        assert fanout["queries"] == 40 and fanout["segments"] == kinds[name]["segments"] == kinds[name]["after_queries"]["segments"]
    assert all(kinds[name]["after_queries"]["compression_search"]["chosen_by"] == "fit" for name in list(kinds)[2:])
    assert "| hnsw, 10 segments |" in (out / "ann-depth.md").read_text()


def test_service_suite_end_to_end(tiny_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    invoke(
        "service", "--source", str(tiny_npz), "--docs", "300", "--queries", "30", "--systems", "trove-hnsw,trove-flat",
        "--concurrency", "1,4", "--requests", "60", "--seconds", "10", "--soak-seconds", "2", "--profile-seconds", "0", "--out", str(out),
    )  # fmt: skip
    report = json.loads((out / "service.json").read_text())
    assert [(level["concurrency"], level["system"]) for level in report["http"]] == [(1, "trove-hnsw"), (1, "trove-flat"), (4, "trove-hnsw"), (4, "trove-flat")]
    for level in report["http"]:
        assert level["errors"] == 0 and level["requests"] == 60
        if level["system"] == "trove-flat":
            assert level["recall_at_10"] == 1.0  # a flat collection answers exactly over HTTP too
        assert level["qps"] > 0 and level["p99_ms"] >= level["p50_ms"] > 0
        assert level["server_cpu_ms_per_query"] > 0 and level["event_loop_cpu_ms_per_query"] > 0
    assert report["in_process"]["trove-flat"]["qps_batched"] > 0
    assert report["goals"]["flat_qps_vs_in_process_batched"]["clients"] == 4
    assert set(report["soak"]) == {"trove-hnsw", "trove-flat"} and len(report["soak"]["trove-flat"]["samples"]) == 13
    # Each Trove server's own account of its batches: every request formed part of one; the flat server chose a path.
    flat = report["server_metrics"]["trove-flat"]
    assert flat["batch_size_cumulative"]["+Inf"] >= 2 * 60 and flat["flat_paths"]
    assert all(entry["chosen"] in ("faiss", "matmul") for entry in flat["flat_paths"].values())
    assert "| 4 | trove-flat | " in (out / "service.md").read_text()


def test_engine_suite_end_to_end(tiny_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    invoke(
        "engine", "--source", str(tiny_npz), "--fit-docs", "400", "--points", "3000", "--settle-points", "600",
        "--segment-points", "1000", "--compressed-points", "1000", "--window", "1000", "--seal-points", "500", "--build-points", "2000",
        "--queries", "20", "--out", str(out),
    )  # fmt: skip
    report = json.loads((out / "engine.json").read_text())
    assert len(report["goals"]) == 12 and all(isinstance(g["value"], float) and isinstance(g["met"], bool) for g in report["goals"])
    figures = report["figures"]
    assert figures["writes"]["bytes_per_10k"]["300"] > 0 and figures["writes"]["segments_at_n"] > 1  # seals and merges wrote segments
    assert figures["fanout_flat"]["segments"] == 10 and figures["fanout_hnsw"]["segments"] == 10
    assert figures["settle"]["overwritten_3x"]["recall_at_10"] == figures["settle"]["fresh"]["recall_at_10"]
    assert figures["build"]["rows"] == 2000 and figures["build"]["peak_rss_bytes"] >= figures["build"]["rss_before_build_bytes"] > 0
    assert "SYNTHETIC" in (out / "engine.md").read_text()


def test_filters_suite_end_to_end(tiny_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    invoke("filters", "--source", str(tiny_npz), "--fit-docs", "400", "--points", "6000", "--queries", "20", "--indexes", "flat,hnsw", "--out", str(out))
    report = json.loads((out / "filters.json").read_text())
    flat, hnsw = report["runs"]["flat"]["results"], report["runs"]["hnsw"]["results"]
    assert set(flat) == {"unfiltered", "indexed 1%", "indexed 50%", "unindexed 1%"}
    assert all(r["recall_at_10"] == 1.0 for r in flat.values())  # flat search and brute force are exact
    assert 0.005 < flat["indexed 1%"]["share"] < 0.02 and 0.45 < flat["indexed 50%"]["share"] < 0.55
    assert hnsw["indexed 1%"]["recall_at_10"] == 1.0 and all(r["p50_vs_unfiltered"] > 0 for r in hnsw.values())
    assert "SYNTHETIC" in (out / "filters.md").read_text()


class _NotInstalled(PEERS["faiss-flat"]):  # type: ignore[misc, valid-type]
    name = "not-installed"
    package = "no-such-package"
    modules = ("no_such_module_for_trove_bench",)


class _Broken(PEERS["faiss-flat"]):  # type: ignore[misc, valid-type]
    name = "broken"

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        raise RuntimeError("index exploded")


def tiny_dataset(path: Path) -> Any:
    return real_dataset(npz_source(path), n_docs=300, n_queries=30)


@pytest.mark.parametrize(("peer", "status", "reason"), [(_NotInstalled, "unavailable", "pip install no-such-package"), (_Broken, "failed", "index exploded")])
def test_a_peer_that_cannot_run_is_reported_with_its_reason(tiny_npz: Path, tmp_path: Path, peer: type[Peer], status: str, reason: str) -> None:
    run = run_peer(peer, tiny_dataset(tiny_npz), BuildSettings(), k=10, target=0.95, single_budget_s=0.01)
    assert run.status == status and reason in (run.reason or "")


# Peers from the `bench` extra only: skipped, by name, where that extra is not installed. They run through
# the real `trove` entry point in a child process: Milvus Lite keeps threads and state alive after close,
# which must not leak into the rest of the test session.
BENCH_EXTRA = {"milvus-lite": "milvus_lite", "lancedb": "lancedb", "chromadb": "chromadb", "svs-vamana": "svs"}


@pytest.fixture(scope="module")
def bench_extra_runs(tiny_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    installed = [name for name, module in BENCH_EXTRA.items() if importlib.util.find_spec(module) is not None]
    if not installed:
        return {}
    out = tmp_path_factory.mktemp("extra")
    trove = str(Path(sys.executable).parent / "trove")
    command = [
        trove, "bench", "ann", "--part", "peers", "--source", str(tiny_npz), "--docs", "300", "--queries", "30", "--synthetic-docs", "0",
        "--peers", ",".join(installed), "--ef-search", "40,160", "--single-budget", "0.01", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "TROVE_BENCH_CACHE": str(out / "cache")}
    subprocess.run(command, check=True, capture_output=True, timeout=300, env=env)
    return {run["name"]: run for run in json.loads((out / "ann.json").read_text())["datasets"][0]["peers"]}


@pytest.mark.parametrize("name", sorted(BENCH_EXTRA))
def test_bench_extra_peer_searches_correctly(bench_extra_runs: dict[str, dict[str, Any]], name: str) -> None:
    pytest.importorskip(BENCH_EXTRA[name], reason=f"{name} is in the bench extra, not the test extra")
    run = bench_extra_runs[name]
    assert run["status"] == "ok", run["reason"]
    assert run["best"]["recall_at_10"] >= 0.9


@pytest.mark.parametrize("name", ["svs-lvq4x8", "svs-leanvec"])
def test_svs_compressed_storage_runs_or_records_the_refusal(tiny_npz: Path, name: str) -> None:
    pytest.importorskip("svs", reason="scalable-vs is in the bench extra, not the test extra")
    run = run_peer(PEERS[name], tiny_dataset(tiny_npz), BuildSettings(ef_search=(80,)), k=10, target=0.95, single_budget_s=0.01)
    if run.status == "unavailable":  # non-Intel CPUs: SVS says so and ends its process
        assert "refused" in (run.reason or "")
    else:
        assert run.status == "ok" and run.best is not None and run.best.recall_at_10 >= 0.8, run.reason


# Every swept peer must actually change its search depth: on random vectors a shallow search misses
# neighbours a deep one finds. (Milvus Lite is left out: it answers exactly at every ef here.)
SWEPT = {
    "faiss-hnsw": "faiss", "faiss-ivfpq": "faiss", "hnswlib": "hnswlib", "usearch": "usearch.index",
    "trove-hnsw": "faiss", "svs-vamana": "svs", "chromadb": "chromadb", "lancedb": "lancedb",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SWEPT))
def test_sweep_reaches_the_index(tmp_path: Path, name: str) -> None:
    pytest.importorskip(SWEPT[name], reason=f"{name} is not installed (bench extra)")
    rng = np.random.default_rng(3)
    docs = rng.standard_normal((4000, 32)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:100] + 0.3 * rng.standard_normal((100, 32)).astype(np.float32)
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    peer = PEERS[name](BuildSettings(m=8, ef_construction=40, ef_search=(10, 400)), tmp_path)
    peer.build(docs)
    try:
        sweep = peer.sweep()
        shallow, deep = (recall_at_k(peer.search(queries, 10, params), truth, 10) for params in (sweep[0], sweep[-1]))
    finally:
        peer.close()
    assert deep > shallow + 0.05, (shallow, deep)


def test_interleaved_single_gives_every_system_the_same_queries_within_its_budget() -> None:
    queries = np.arange(200, dtype=np.float32).reshape(200, 1)
    calls: list[tuple[str, int]] = []

    def system(name: str, pause_s: float) -> Callable[[np.ndarray], object]:
        def search(q: np.ndarray) -> None:
            assert q.shape == (1, 1)  # one query per call
            calls.append((name, int(q[0, 0])))
            time.sleep(pause_s)

        return search

    figures = interleaved_single({"quick": system("quick", 0.0), "slow": system("slow", 0.002)}, queries, budget_s=0.05)
    timed = calls[2:]  # the first call of each system is its warm-up
    quick, slow = ([q for n, q in timed if n == name] for name in ("quick", "slow"))
    assert quick == list(range(200))  # within its budget all along: every query
    assert MIN_SINGLE <= len(slow) < 200 and slow == quick[: len(slow)]  # stopped by its budget, on the same queries
    assert figures["slow"]["single_queries"] == len(slow) and figures["quick"]["single_queries"] == 200
    assert figures["quick"]["qps_single"] > figures["slow"]["qps_single"]
    round_size = 2 * ROUND_QUERIES
    assert [timed[0][0], timed[round_size][0]] == ["quick", "slow"]  # the order rotates from round to round
