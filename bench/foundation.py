"""Foundation benchmark: HTTP overhead over in-process queries, and exact search vs the memory-bandwidth floor.

    python -m bench.foundation [--docs 100000] [--queries 1000]

Runs on WordNet gloss embeddings (bundled MiniLM, 384-d; see bench/wordnet.py).
Every figure is a ratio or difference between measurements taken in this run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import httpx
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.server import trove_server  # noqa: E402
from bench.wordnet import embed_corpus  # noqa: E402
from encoders.registry import ModelRegistry  # noqa: E402
from index.backends.faiss_index import IndexSpec, VectorIndex, set_search_threads  # noqa: E402
from index.catalog import Catalog  # noqa: E402
from index.requests import PointInput, Query  # noqa: E402
from service.settings import Settings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def timed_ms(fn: Callable[[], object], repeats: int) -> np.ndarray:
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - start) * 1000
    return out


def percentiles(samples: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(samples, 50)), "p99_ms": float(np.percentile(samples, 99)), "mean_ms": float(samples.mean())}


def build_collection(data_dir: Path, texts: list[str], vectors: np.ndarray) -> None:
    catalog = Catalog(data_dir, ModelRegistry())
    catalog.load_all()
    collection = catalog.create("wordnet", model="minilm-l6", dim=None, metric="cosine", index=IndexSpec("flat"))
    for start in range(0, len(vectors), 5000):
        stop = min(start + 5000, len(vectors))
        collection.upsert([PointInput(id=i, text=texts[i], vector=vectors[i].tolist(), payload={"n": i}) for i in range(start, stop)])
    collection.optimize(seal=True)  # sealed into indexed segments, as the optimizer leaves a settled collection
    catalog.close()


def interleaved_latency(data_dir: Path, queries: np.ndarray, threads: int) -> dict[str, np.ndarray]:
    """Per-query latency in-process and over HTTP, taken in turn for each query so load on a shared machine hits all alike.

    The server runs on a copy of the data dir (one process per data dir). Two HTTP clients on
    keep-alive connections: http.client is lean, so its figure is close to the server's own
    overhead; httpx is what Python users often pick, and adds client-side time of its own.
    """
    served = data_dir.with_name(data_dir.name + "-served")
    shutil.copytree(data_dir, served)
    (served / ".lock").unlink(missing_ok=True)
    set_search_threads(threads)
    catalog = Catalog(data_dir, ModelRegistry())
    catalog.load_all()
    collection = catalog.get("wordnet")
    path = "/v1/collections/wordnet/query"
    headers = {"content-type": "application/json"}
    try:
        with trove_server(served, settings={"TROVE_FAISS_THREADS": str(threads)}) as base_url, httpx.Client(base_url=base_url, timeout=30) as web:
            port = int(base_url.rsplit(":", 1)[1])
            lean = http.client.HTTPConnection("127.0.0.1", port)

            def with_http_client(body: bytes) -> None:
                lean.request("POST", path, body=body, headers=headers)
                response = lean.getresponse()
                response.read()
                assert response.status == 200

            def with_httpx(body: bytes) -> None:
                web.post(path, content=body, headers=headers).raise_for_status()

            samples: dict[str, list[float]] = {"in_process": [], "http.client": [], "httpx": []}
            for i, q in enumerate(queries):
                body = json.dumps({"vector": q.tolist(), "k": 10}).encode()
                runs = {
                    "in_process": lambda q=q: collection.query(Query(vector=q.tolist(), k=10)),
                    "http.client": lambda b=body: with_http_client(b),
                    "httpx": lambda b=body: with_httpx(b),
                }
                for name, run in runs.items():
                    elapsed = timed_ms(run, 1)[0]
                    if i >= 20:  # the first queries warm caches and connections
                        samples[name].append(elapsed)
            lean.close()
            return {name: np.array(values) for name, values in samples.items()}
    finally:
        catalog.close()
        shutil.rmtree(served, ignore_errors=True)


def bandwidth_floor_ms(matrix: np.ndarray, repeats: int) -> dict[str, float]:
    """Time to stream the matrix once from RAM: the best of simple read kernels."""
    column_sums = timed_ms(lambda: np.add.reduce(matrix, axis=0), repeats)
    flat_view = matrix.reshape(-1)
    total = timed_ms(lambda: flat_view.sum(), repeats)
    return {"add_reduce_axis0_ms": float(np.median(column_sums)), "flat_sum_ms": float(np.median(total))}


def exact_search_ms(matrix: np.ndarray, queries: np.ndarray, threads: int) -> float:
    set_search_threads(threads)
    index = VectorIndex(matrix.shape[1], "ip", IndexSpec("flat"))
    index.add(0, matrix)
    for q in queries[:5]:
        index.search(q[None], 10)
    return float(np.median([timed_ms(lambda q=q: index.search(q[None], 10), 1)[0] for q in queries]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()

    corpus, doc_vectors, query_vectors = embed_corpus(ModelRegistry().get("minilm-l6"))
    n = min(args.docs, len(doc_vectors))
    docs = np.ascontiguousarray(doc_vectors[:n])
    queries = query_vectors[np.random.default_rng(0).permutation(len(query_vectors))[: args.queries]]

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        build_collection(data_dir / "data", corpus.doc_texts[:n], docs)
        build_s = time.perf_counter() - started
        latency = interleaved_latency(data_dir / "data", queries, Settings().faiss_threads)

    floor = bandwidth_floor_ms(docs, repeats=50)
    floor_ms = min(floor.values())
    search = {threads: exact_search_ms(docs, queries[:300], threads) for threads in (1, 2)}
    best_threads = min(search, key=lambda t: search[t])

    local_p, remote_p, httpx_p = (percentiles(latency[name]) for name in ("in_process", "http.client", "httpx"))
    report = {
        "command": "python -m bench.foundation " + " ".join(sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(), "faiss": faiss.__version__},
        "data": f"WordNet 3.0 glosses, first {n} of {len(doc_vectors)}, MiniLM-L6 384-d (real embeddings); {len(queries)} lemma queries",
        "build_seconds": build_s,
        "latency": {
            "in_process": local_p,
            "http": remote_p,
            "http_httpx_client": httpx_p,
            "http_minus_in_process_p50_ms": remote_p["p50_ms"] - local_p["p50_ms"],
            "httpx_minus_in_process_p50_ms": httpx_p["p50_ms"] - local_p["p50_ms"],
            "goal_p50_overhead_ms": 1.5,
        },
        "exact_search_vs_bandwidth_floor": {
            "matrix_mb": docs.nbytes / 2**20,
            "floor_ms": floor_ms,
            "floor_kernels": floor,
            "faiss_flat_single_query_ms": {str(k): v for k, v in search.items()},
            "best_threads": best_threads,
            "fraction_of_floor": floor_ms / search[best_threads],
            "goal_fraction": 0.7,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "foundation.json").write_text(json.dumps(report, indent=2))
    lat, bw = report["latency"], report["exact_search_vs_bandwidth_floor"]
    table = "\n".join(
        [
            f"# Foundation benchmark\n\n`{report['command']}` on {report['machine']['cores']} cores ({report['machine']['cpu']}), faiss {faiss.__version__}.",
            f"Data: {report['data']}.\n",
            "| measure | value | goal |",
            "|---|---|---|",
            f"| query p50 in-process (k=10, exact) | {local_p['p50_ms']:.2f} ms | |",
            f"| query p50 over HTTP, http.client / httpx client | {remote_p['p50_ms']:.2f} / {httpx_p['p50_ms']:.2f} ms | |",
            f"| HTTP overhead at p50, http.client client | {lat['http_minus_in_process_p50_ms']:.2f} ms | <= 1.5 ms |",
            f"| HTTP overhead at p50, httpx client | {lat['httpx_minus_in_process_p50_ms']:.2f} ms | |",
            f"| query p99 in-process / http.client / httpx | {local_p['p99_ms']:.2f} / {remote_p['p99_ms']:.2f} / {httpx_p['p99_ms']:.2f} ms | |",
            f"| memory-bandwidth floor (read {bw['matrix_mb']:.0f} MB once) | {floor_ms:.2f} ms | |",
            f"| FAISS flat single query, 1 / 2 threads | {search[1]:.2f} / {search[2]:.2f} ms | |",
            f"| exact search as a fraction of the floor ({best_threads} thread(s)) | {bw['fraction_of_floor']:.2f} | >= 0.70 |",
        ]
    )
    (RESULTS / "foundation.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
