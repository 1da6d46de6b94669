"""The `muvera` suite: multi-vector retrieval on WordNet with MiniLM token vectors, exact Chamfer top-10 as truth.

Two query sets over the first N synsets: usage-example sentences against the definitions (each example's own
synset is its relevant document, but the truth here is exact Chamfer), the set multi-vector retrieval is for;
and lemmas against whole glosses (1 to 3 tokens, where token-level search is already close to Chamfer).

Candidates from MUVERA FDEs and from the single-vector heuristic (token-level FAISS search over every document
token, candidates deduplicated by document in order of their best token score) are both reranked by exact
Chamfer, so recall@10 after reranking c candidates is the share of the true top-10 among the first c.
Everything is chosen on the sentence set's tuning queries and reported on held-out test queries: the FDE
shape (grid), then each of the paper's remaining parts in turn (documents' empty-partition filling, the same
for queries, the final Count-Sketch projection), kept only where it lowers the candidates needed for recall
0.9. The chosen FDE then runs through a MultiVectorCollection: float32 FDEs in a flat index, and FDEs
compressed by the collection's compression pipeline (binary codes with rescoring), with bytes per point and
recall measured there; latency through the collection against brute-force Chamfer over the same token sets
in memory, in the same run; FDE encoding throughput against fastembed's MUVERA.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench import report
from bench.suites import Suite
from bench.suites.options import DEFAULT_OUT, DEFAULT_THREADS, Out, Threads

CANDIDATES = (10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000)
TOKEN_NEIGHBOURS = 4000  # per query token: enough token hits for ~1000 distinct documents
RECALL_TARGETS = (0.9, 0.95)
# FDE shapes tried first (k_sim, d_proj, r_reps, projection), 5120 to 12288 dimensions; d_proj None: the token dim.
# Each with documents' empty partitions filled (the paper's default) and left empty.
GRID: tuple[tuple[int, int | None, int, str], ...] = (
    (3, 32, 20, "ams"),
    (4, 32, 20, "ams"),
    (5, 16, 20, "ams"),
    (2, None, 8, "identity"),
)
# Compressed FDEs through the collection's pipeline (PUT .../compression bodies), beside float32 FDEs. The float
# FDEs a final rerank reads stay memory-mapped on disk; only the coarse codes are resident. A prefix of a
# Count-Sketched FDE is a smaller sketch of the same FDE, so Matryoshka prefixes are meaningful here.
COMPRESSIONS: dict[str, dict[str, Any] | None] = {
    "float32 FDE, flat": None,
    "binary 1-bit, float rerank x20 (mmap)": {"quantizer": {"kind": "binary", "bits": 1}, "rerank": {"oversample": 20, "storage": "mmap"}},
    "binary 2-bit, float rerank x20 (mmap)": {"quantizer": {"kind": "binary", "bits": 2}, "rerank": {"oversample": 20, "storage": "mmap"}},
    "prefix 1/8 float32, float rerank x8 (mmap)": {"matryoshka": {"dim": "1/8"}, "rerank": {"oversample": 8, "storage": "mmap"}},
    "prefix 1/4 int8, float rerank x8 (mmap)": {"matryoshka": {"dim": "1/4"}, "quantizer": {"kind": "int8"}, "rerank": {"oversample": 8, "storage": "mmap"}},
}


def recall_curve(ranked: list[np.ndarray], truth: np.ndarray) -> np.ndarray:
    """Mean recall@10 after exactly reranking the first c candidates, for c = 1..max(CANDIDATES)."""
    depth = max(CANDIDATES)
    found = np.zeros((len(ranked), depth))
    for q, (candidates, true) in enumerate(zip(ranked, truth, strict=True)):
        hit = np.isin(candidates[:depth], true).astype(float)
        found[q, : len(hit)] = hit  # a shorter list finds nothing more
    return np.cumsum(found, axis=1).mean(axis=0) / truth.shape[1]


def needed(curve: np.ndarray, target: float) -> int | None:
    """Fewest candidates reaching ``target`` recall (None: not within the sweep)."""
    reached = np.flatnonzero(curve >= target - 1e-9)
    return int(reached[0]) + 1 if len(reached) else None


def fde_ranking(fde: Any, queries: list[np.ndarray], doc_fdes: np.ndarray) -> list[np.ndarray]:
    scores = fde.encode_queries(queries) @ doc_fdes.T
    depth = min(max(CANDIDATES), scores.shape[1])
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return list(np.take_along_axis(top, order, axis=1))


def heuristic_ranking(docs: list[np.ndarray], queries: list[np.ndarray]) -> list[np.ndarray]:
    """Documents in order of their best-scoring token hit over all query tokens, each once."""
    import faiss

    owner = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
    index = faiss.IndexFlatIP(docs[0].shape[1])
    index.add(np.concatenate(docs))
    scores, tokens = index.search(np.concatenate(queries), TOKEN_NEIGHBOURS)
    ranked, start = [], 0
    for q in queries:
        s, t = scores[start : start + len(q)].ravel(), tokens[start : start + len(q)].ravel()
        start += len(q)
        s, t = s[t >= 0], t[t >= 0]  # FAISS pads with -1 when the index holds fewer tokens than asked for
        hits = owner[t[np.argsort(-s, kind="stable")]]
        _, first = np.unique(hits, return_index=True)
        ranked.append(hits[np.sort(first)][: max(CANDIDATES)])
    return ranked


def chamfer_truth(queries: list[np.ndarray], docs: list[np.ndarray]) -> np.ndarray:
    from encoders.transforms.chamfer import chamfer_scores

    return np.argsort(-chamfer_scores(queries, docs), axis=1, kind="stable")[:, :10]


def _spec_label(spec: Any) -> str:
    s = f"k_sim={spec.k_sim}, d_proj={spec.d_proj} {spec.projection}, R={spec.r_reps}"
    s += "" if spec.fill_empty else ", no doc fill"
    s += ", query fill" if spec.query_fill_empty else ""
    return s + (f", final_dim={spec.final_dim}" if spec.final_dim else "")


class Evaluator:
    """FDE configurations scored on one query set: doc FDEs encoded once per configuration, rankings per split."""

    def __init__(self, docs: list[np.ndarray], splits: dict[str, list[np.ndarray]], truth: dict[str, np.ndarray]):
        self.docs, self.splits, self.truth = docs, splits, truth

    def run(self, spec: Any, splits: tuple[str, ...] = ("tune",)) -> dict[str, Any]:
        from index.multivector import fde_transform

        fde = fde_transform(spec, self.docs[0].shape[1])
        started = time.perf_counter()
        doc_fdes = fde.encode_docs(self.docs)
        row: dict[str, Any] = {"spec": asdict(spec), "label": _spec_label(spec), "fde_dim": fde.output_dim, "encode_seconds": time.perf_counter() - started}
        for split in splits:
            curve = recall_curve(fde_ranking(fde, self.splits[split], doc_fdes), self.truth[split])
            row[split] = summary(curve)
        typer.echo(f"{row['label']} ({fde.output_dim}-d): " + ", ".join(f"{s} {row[s]['candidates_for']}" for s in splits), err=True)
        return row


def summary(curve: np.ndarray) -> dict[str, Any]:
    return {
        "candidates_for": {str(t): needed(curve, t) for t in RECALL_TARGETS},
        "recall_at": {str(c): float(curve[c - 1]) for c in CANDIDATES},
    }


def _key(row: dict[str, Any]) -> tuple[int, int, int]:
    """Fewer candidates for recall 0.9 on tuning queries, then for 0.95, then the smaller FDE."""
    got = row["tune"]["candidates_for"]
    return (got["0.9"] or 10**6, got["0.95"] or 10**6, row["fde_dim"])


def tune_fde(evaluator: Evaluator, seed: int) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """The grid (shapes x documents' fill), then each option tried on the best so far and kept where it helps (tuning queries only)."""
    from index.config import MuveraSpec
    from index.multivector import resolve_spec

    dim = evaluator.docs[0].shape[1]
    grid = [
        evaluator.run(resolve_spec(MuveraSpec(k_sim=k, d_proj=d, r_reps=r, projection=p, seed=seed, fill_empty=fill), dim))  # type: ignore[arg-type]
        for k, d, r, p in GRID
        for fill in (True, False)
    ]
    best = min(grid, key=_key)
    options: list[dict[str, Any]] = []

    def attempt(option: str, spec: Any) -> None:
        nonlocal best
        row = evaluator.run(spec, ("tune", "test")) | {"option": option}  # test: for the report, never for the choice
        row["kept"] = _key(row) < _key(best)
        options.append(row)
        if row["kept"]:
            best = row

    def spec_of(row: dict[str, Any]) -> MuveraSpec:
        return MuveraSpec(**row["spec"])

    attempt("queries: empty partitions filled like documents'", replace(spec_of(best), query_fill_empty=True))
    # The final projection: a Count-Sketch of the whole FDE, from two and four times the repetitions down to
    # the same size, and from the same FDE down to a half and a quarter of it.
    base = spec_of(best)
    size = best["fde_dim"]
    for more in (2, 4):
        attempt(f"final projection: {more}x repetitions sketched to {size}", resolve_spec(replace(base, r_reps=more * base.r_reps, final_dim=size), dim))
    for fraction in (2, 4):
        attempt(f"final projection: sketched to {size // fraction}", replace(base, final_dim=size // fraction))
    return spec_of(best), grid, options


# ---- through a collection: float and compressed FDEs, bytes per point, latency ----------------------


def _fde_only_curve(collection: Any, queries: list[np.ndarray], truth: np.ndarray) -> dict[str, Any]:
    """Recall@10 after exact Chamfer over the collection's own top-c FDE candidates, for each c of the sweep."""
    from index.requests import Query

    recall: dict[str, float] = {}
    for c in CANDIDATES:
        hits = collection.query_batch([Query(vectors=q, k=c, fde_only=True, with_payload=False) for q in queries])
        recall[str(c)] = float(np.mean([len({int(h.id) for h in row} & set(t.tolist())) / 10 for row, t in zip(hits, truth, strict=True)]))
    values = np.array([recall[str(c)] for c in CANDIDATES])
    return {"recall_at": recall, "candidates_for": {str(t): next((c for c, v in zip(CANDIDATES, values, strict=True) if v >= t - 1e-9), None) for t in RECALL_TARGETS}}


def _sized(body: dict[str, Any], fde_dim: int) -> dict[str, Any]:
    """A compression body with its prefix given as a share ("1/8") of the FDE turned into dimensions."""
    prefix = body.get("matryoshka", {}).get("dim")
    if isinstance(prefix, str):
        return body | {"matryoshka": {"dim": fde_dim // int(prefix.split("/")[1])}}
    return body


def _timed_query(collection: Any, tokens: np.ndarray, **params: Any) -> tuple[float, list[int]]:
    from index.requests import Query

    started = time.perf_counter()
    hits = collection.query(Query(vectors=tokens, k=10, with_payload=False, **params))
    return time.perf_counter() - started, [int(h.id) for h in hits]


def _latency(collection: Any, queries: list[np.ndarray], truth: np.ndarray, candidates: int) -> dict[str, Any]:
    from bench.metrics import latency_ms

    samples, recall = [], []
    for q, true in zip(queries, truth, strict=True):
        seconds, ids = _timed_query(collection, q, oversample=candidates / 10)
        samples.append(seconds)
        recall.append(len(set(ids) & set(true.tolist())) / 10)
    return {**latency_ms(np.array(samples)), "recall_at_10": float(np.mean(recall)), "candidates": candidates}


def collections(
    spec: Any, docs: list[np.ndarray], test: list[np.ndarray], truth: np.ndarray, latency_queries: int, exact_queries: int, compressed: bool
) -> dict[str, Any]:
    """Each compression of the chosen FDE in a MultiVectorCollection (float32 only unless ``compressed``): RAM bytes per
    point, recall vs candidates, latency; then float32 FDEs over token vectors stored as float16 and int8."""
    from bench.metrics import latency_ms
    from encoders.registry import ModelRegistry
    from encoders.transforms.chamfer import PackedSets, chamfer_scores
    from index.backends.faiss_index import IndexSpec
    from index.catalog import Catalog
    from index.compression.spec import CompressionSpec
    from index.requests import PointInput

    out: dict[str, Any] = {"variants": {}, "queries": len(test), "token_storage": {}}
    timed = test[:latency_queries]
    with tempfile.TemporaryDirectory(prefix="trove-muvera-") as folder:
        catalog = Catalog(Path(folder), ModelRegistry())
        catalog.load_all()

        def build(name: str, muvera: Any) -> Any:
            collection = catalog.create(name, model=None, dim=docs[0].shape[1], metric="ip", index=IndexSpec(type="flat"), multivector=True, muvera=muvera)
            for start in range(0, len(docs), 500):
                collection.upsert([PointInput(id=i, vectors=docs[i]) for i in range(start, min(start + 500, len(docs)))])
            collection.optimize(seal=True)
            return collection

        started = time.perf_counter()
        collection = build("mv", spec)
        out["index_seconds"] = time.perf_counter() - started
        out["exact_api"] = {**latency_ms(np.array([_timed_query(collection, q, exact=True)[0] for q in timed[:exact_queries]])), "queries": min(exact_queries, len(timed))}
        for name, body in COMPRESSIONS.items() if compressed else list(COMPRESSIONS.items())[:1]:
            started = time.perf_counter()
            if body is not None:
                body = _sized(body, collection.fde.output_dim)
                collection.compression.fit(CompressionSpec.from_json(body), None, lambda f, d, t: None)
            info = collection.info()
            row: dict[str, Any] = {
                "compression": body,
                "fit_seconds": time.perf_counter() - started if body else None,
                "ram_bytes_per_point": info["memory_bytes"] / info["points"],
                "disk_bytes_per_point": (info["compression"] or {}).get("disk_bytes", 0) / info["points"] or None,
                "stages": info["stages"],
                **_fde_only_curve(collection, test, truth),
            }
            at = row["candidates_for"]["0.9"]
            if at is not None:
                row["latency"] = _latency(collection, timed, truth[: len(timed)], at)
            typer.echo(f"{name}: {row['ram_bytes_per_point']:.0f} B/point, candidates for 0.9 {at}", err=True)
            out["variants"][name] = row
        # The same float32 FDEs over compact token vectors: the rerank's candidates are the same, its scores approximate.
        at = out["variants"]["float32 FDE, flat"]["candidates_for"]["0.9"]
        for storage in ("float16", "int8"):
            served = build(f"mv-{storage}", replace(spec, token_storage=storage))
            info = served.info()
            out["token_storage"][storage] = {
                "bytes_per_token": info["stages"][-1]["bytes_per_vector"],
                "latency": _latency(served, timed, truth[: len(timed)], at or max(CANDIDATES)),
            }
            typer.echo(f"tokens {storage}: {out['token_storage'][storage]['latency']}", err=True)
        catalog.close()
    packed = PackedSets.pack(docs)  # brute force keeps every token in one matrix, packed before the clock starts
    brute = []
    for q in timed:
        t0 = time.perf_counter()
        scores = chamfer_scores([q], packed)[0]
        np.argpartition(-scores, 9)[:10]
        brute.append(time.perf_counter() - t0)
    out["brute_force_memory"] = latency_ms(np.array(brute))
    out["latency_queries"] = len(timed)
    for row in [*out["variants"].values(), *out["token_storage"].values()]:
        if "latency" in row:
            row["latency"]["speedup_vs_brute_force"] = out["brute_force_memory"]["mean_ms"] / row["latency"]["mean_ms"]
            row["latency"]["speedup_vs_exact_api"] = out["exact_api"]["mean_ms"] / row["latency"]["mean_ms"]
    return out


# ---- encoding throughput ---------------------------------------------------------------------


def _timed(fn: Any, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _throughput(spec: Any, sets: list[np.ndarray]) -> dict[str, Any]:
    """Documents per second: Trove's batched FDE against fastembed's per-set MUVERA on the same token sets.

    fastembed always projects (dense +-1) to dim_proj and fills empty clusters of documents.
    """
    from index.multivector import fde_transform

    dim = sets[0].shape[1]
    ours = fde_transform(spec, dim)
    ours.encode_docs(sets[:8])  # draws the matrices outside the timing
    out: dict[str, Any] = {"sets": len(sets), "trove_docs_per_s": len(sets) / _timed(lambda: ours.encode_docs(sets))}
    out["trove_queries_per_s"] = len(sets) / _timed(lambda: ours.encode_queries(sets))
    try:
        from fastembed.postprocess import Muvera
    except ImportError as exc:
        out["fastembed"] = f"not available: {exc}"
        return out
    theirs = Muvera(dim=dim, k_sim=spec.k_sim, dim_proj=spec.d_proj or dim, r_reps=spec.r_reps, random_seed=spec.seed)
    out["fastembed_docs_per_s"] = len(sets) / _timed(lambda: [theirs.process_document(s) for s in sets])
    out["fastembed_queries_per_s"] = len(sets) / _timed(lambda: [theirs.process_query(s) for s in sets])
    out["fastembed"] = "fastembed.postprocess.Muvera built from dimensions (dense +-1 projection, fills empty clusters; no model download)"
    out["docs_ratio"] = out["trove_docs_per_s"] / out["fastembed_docs_per_s"]
    out["queries_ratio"] = out["trove_queries_per_s"] / out["fastembed_queries_per_s"]
    return out


# ---- the suite --------------------------------------------------------------------------------


def muvera(
    docs: Annotated[int, typer.Option(help="The first N WordNet synsets (definitions for sentence queries, glosses for lemmas).")] = 10_000,
    queries: Annotated[int, typer.Option(help="Sentence (usage-example) queries sampled from each side of the tuning/test split.")] = 800,
    lemma_queries: Annotated[int, typer.Option(help="Lemma queries sampled from each side of the split.")] = 500,
    collection_queries: Annotated[int, typer.Option(help="Test queries whose recall is measured through the collection, per FDE storage.")] = 300,
    latency_queries: Annotated[int, typer.Option(help="Of those, queries timed one at a time.")] = 100,
    exact_queries: Annotated[int, typer.Option(help="Of those, queries timed with params.exact (reads every token from SQLite).")] = 5,
    throughput_sets: Annotated[int, typer.Option(help="Document token sets encoded for the throughput comparison.")] = 1000,
    compressed: Annotated[bool, typer.Option(help="Also fit each compressed FDE storage (a fit report per storage: slow at 10k wide FDEs).")] = True,
    seed: Annotated[int, typer.Option(help="FDE seed.")] = 1,
    threads: Threads = DEFAULT_THREADS,
    out: Out = DEFAULT_OUT,
) -> None:
    """MUVERA FDEs vs the single-vector heuristic on sentence and lemma queries: candidates, FDE options, compression, latency."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench import plots
    from bench.threads import thread_budget
    from bench.wordnet import token_query_set
    from encoders.registry import ModelRegistry

    head = report.header("muvera")
    with thread_budget(threads):
        encoder = ModelRegistry().get("minilm-l6")
        sets = {name: token_query_set(encoder, name, docs, n) for name, n in (("examples", queries), ("lemmas", lemma_queries))}
        data: dict[str, Any] = {}
        for name, s in sets.items():
            typer.echo(f"{name}: {len(s.docs)} documents ({sum(map(len, s.docs))} tokens), {len(s.tune)} tuning and {len(s.test)} test queries; exact Chamfer truth", err=True)
            data[name] = Evaluator(s.docs, {"tune": s.tune, "test": s.test}, {"tune": chamfer_truth(s.tune, s.docs), "test": chamfer_truth(s.test, s.docs)})

        sentences = data["examples"]
        chosen, grid, options = tune_fde(sentences, seed)
        results: dict[str, Any] = {}
        curves: dict[str, list[float]] = {}
        for name, evaluator in data.items():
            typer.echo(f"{name}: chosen FDE and the heuristic on test queries", err=True)
            fde_row = evaluator.run(chosen, ("test",))
            heuristic = recall_curve(heuristic_ranking(evaluator.docs, evaluator.splits["test"]), evaluator.truth["test"])
            lengths = [len(q) for q in evaluator.splits["test"]]
            results[name] = {
                "documents": len(evaluator.docs),
                "document_tokens": int(sum(map(len, evaluator.docs))),
                "queries": {"tune": len(evaluator.splits["tune"]), "test": len(evaluator.splits["test"])},
                "query_tokens_mean": float(np.mean(lengths)),
                "single_token_queries": float(np.mean([n == 1 for n in lengths])),
                "fde": fde_row["test"],
                "heuristic": summary(heuristic),
            }
            curves[f"{name}: MUVERA FDE"] = [fde_row["test"]["recall_at"][str(c)] for c in CANDIDATES]
            curves[f"{name}: single-vector heuristic"] = [float(heuristic[c - 1]) for c in CANDIDATES]
        typer.echo("collections: float and compressed FDEs, latency", err=True)
        n = collection_queries
        served = collections(chosen, sentences.docs, sentences.splits["test"][:n], sentences.truth["test"][:n], latency_queries, exact_queries, compressed)
        typer.echo("throughput", err=True)
        throughput = _throughput(chosen, sentences.docs[:throughput_sets])

    payload = {
        **head,
        "dataset": f"WordNet 3.0, the first {docs} synsets; MiniLM (all-MiniLM-L6-v2) token vectors, special tokens dropped, unit length",
        "truth": "exact Chamfer top-10 over all documents",
        "sets": {
            "examples": "usage-example sentences (the quoted parts of the glosses) as queries, definitions (glosses without their examples) as documents",
            "lemmas": "lemmas as queries, whole glosses as documents",
        },
        "chosen": asdict(chosen) | {"fde_dim": next(r["fde_dim"] for r in [*grid, *options] if r["spec"] == asdict(chosen)), "label": _spec_label(chosen)},
        "grid_on_tuning_queries": grid,
        "options": options,
        "results": results,
        "collections": served,
        "throughput": throughput,
    }
    payload["goals"] = goals(payload)
    Path(out).mkdir(parents=True, exist_ok=True)
    png = plots.recall_vs_candidates(
        Path(out) / "muvera.png",
        f"WordNet ({docs} synsets), MiniLM token vectors: recall@10 after exact Chamfer rerank (test queries); FDE {_spec_label(chosen)}",
        list(CANDIDATES),
        curves,
    )
    paths = [*report.write(out, "muvera", payload, render(payload)), png]
    typer.echo(render(payload))
    typer.echo("wrote " + ", ".join(str(p) for p in paths), err=True)


def goals(payload: dict[str, Any]) -> dict[str, Any]:
    sentences = payload["results"]["examples"]
    f90, h90 = sentences["fde"]["candidates_for"]["0.9"], sentences["heuristic"]["candidates_for"]["0.9"]
    variants = payload["collections"]["variants"]
    float_row = variants["float32 FDE, flat"]
    eighth = float_row["ram_bytes_per_point"] / 8
    return {
        "fde_at_most_half_the_heuristic_candidates_for_0.9": bool(f90 is not None and h90 is not None and 2 * f90 <= h90),
        "latency_10x_below_brute_force_flat_at_recall_0.9": bool(float_row.get("latency", {}).get("speedup_vs_brute_force", 0) >= 10),
        "compressed_fde_at_most_1/8_bytes_at_recall_0.9": [
            name
            for name, row in variants.items()
            if row["compression"] and row["ram_bytes_per_point"] <= eighth and _at_most(row["candidates_for"]["0.9"], float_row["candidates_for"]["0.9"])
        ],
    }


def _at_most(candidates: int | None, baseline: int | None) -> bool:
    """Recall 0.9 reached with no more candidates than the baseline needs (the same recall at the same cost)."""
    return candidates is not None and (baseline is None or candidates <= baseline)


def _n(value: int | None) -> str:
    return f"> {max(CANDIDATES)}" if value is None else str(value)


def _recall_table(columns: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| candidates | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {c} | " + " | ".join(f"{col['recall_at'][str(c)]:.3f}" for col in columns.values()) + " |" for c in CANDIDATES]
    lines += [f"| **for recall {t}** | " + " | ".join(_n(col["candidates_for"][str(t)]) for col in columns.values()) + " |" for t in RECALL_TARGETS]
    return lines


def render(payload: dict[str, Any]) -> str:
    chosen, served, thr = payload["chosen"], payload["collections"], payload["throughput"]
    lines = [
        "# MUVERA suite",
        "",
        report.machine_line(payload),
        f"Data: {payload['dataset']}; truth: {payload['truth']}. Everything chosen on tuning queries of the sentence set, figures on held-out test queries.",
        f"Chosen FDE: {chosen['label']}: {chosen['fde_dim']} dimensions.",
    ]
    for name, title in (("examples", "Sentence queries (usage examples)"), ("lemmas", "Lemma queries")):
        r = payload["results"][name]
        lines += [
            "",
            f"## {title}: recall@10 after exact Chamfer rerank vs candidates reranked",
            "",
            (
                f"{payload['sets'][name]}: {r['documents']} documents ({r['document_tokens']} tokens), {r['queries']['test']} test queries "
                f"of {r['query_tokens_mean']:.1f} tokens on average ({r['single_token_queries']:.0%} a single token)."
            ),
            "",
            *_recall_table({"MUVERA FDE": r["fde"], "single-vector heuristic": r["heuristic"]}),
        ]
    lines += [
        "",
        "## FDE grid: shapes, documents' empty partitions filled (paper default) or left empty (sentence set, tuning queries)",
        "",
        "| FDE | dims | cands for 0.9 | cands for 0.95 | recall@100 | encode s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['label']} | {r['fde_dim']} | {_n(r['tune']['candidates_for']['0.9'])} | {_n(r['tune']['candidates_for']['0.95'])} | {r['tune']['recall_at']['100']:.3f} | {r['encode_seconds']:.1f} |"
        for r in payload["grid_on_tuning_queries"]
    ]
    lines += [
        "",
        "## FDE options, each tried on the best so far (sentence set)",
        "",
        "| option | FDE | dims | tune: cands for 0.9 | test: cands for 0.9 | test: recall@100 | kept |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['option']} | {r['label']} | {r['fde_dim']} | {_n(r['tune']['candidates_for']['0.9'])} | {_n(r['test']['candidates_for']['0.9'])} | {r['test']['recall_at']['100']:.3f} | {'yes' if r['kept'] else 'no'} |"
        for r in payload["options"]
    ]
    lines += [
        "",
        f"## Compressed FDEs through the collection (sentence set, {served['queries']} test queries, flat index, exact Chamfer rerank unchanged)",
        "",
        "| FDE storage | RAM bytes/point | vs float32 | cands for 0.9 | recall@100 | recall@300 |",
        "|---|---|---|---|---|---|",
    ]
    base = served["variants"]["float32 FDE, flat"]["ram_bytes_per_point"]
    lines += [
        f"| {name} | {row['ram_bytes_per_point']:.0f} | 1/{base / row['ram_bytes_per_point']:.1f} | {_n(row['candidates_for']['0.9'])} | {row['recall_at']['100']:.3f} | {row['recall_at']['300']:.3f} |"
        for name, row in served["variants"].items()
    ]
    lines += [
        "",
        (
            "RAM bytes per point: the index's resident FDE stages (memory-mapped rerank copies excluded; they stay on disk, "
            "as do the token vectors in SQLite that the Chamfer rerank reads)."
        ),
        "",
        f"## Latency, one query at a time ({served['latency_queries']} test queries, same run, at each storage's candidates for recall 0.9)",
        "",
        "| path | candidates | mean ms | p50 ms | p99 ms | recall@10 | vs brute force (memory) | vs params.exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in served["variants"].items():
        if "latency" in row:
            lat = row["latency"]
            lines.append(
                f"| collection, {name} | {lat['candidates']} | {lat['mean_ms']:.1f} | {lat['p50_ms']:.1f} | {lat['p99_ms']:.1f} | {lat['recall_at_10']:.3f} | {lat['speedup_vs_brute_force']:.1f}x | {lat['speedup_vs_exact_api']:.1f}x |"
            )
    bf, ex = served["brute_force_memory"], served["exact_api"]
    lines += [
        f"| brute-force exact Chamfer, token sets in memory | all | {bf['mean_ms']:.1f} | {bf['p50_ms']:.1f} | {bf['p99_ms']:.1f} | 1.000 | 1.0x | |",
        f"| collection params.exact (tokens read from SQLite; {ex['queries']} queries) | all | {ex['mean_ms']:.1f} | {ex['p50_ms']:.1f} | {ex['p99_ms']:.1f} | 1.000 | | 1.0x |",
        "",
        "Brute force: exact Chamfer of each query against every document's tokens, packed in one matrix in memory (one matmul, a segment max per document).",
        "",
        "## Token vectors stored as float16 / int8 (float32 FDE, flat, same candidates as float32 tokens)",
        "",
        "| token storage | bytes per token | candidates | mean ms | p50 ms | recall@10 (vs float32 Chamfer truth) | vs brute force |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {storage} | {row['bytes_per_token']} | {row['latency']['candidates']} | {row['latency']['mean_ms']:.1f} | {row['latency']['p50_ms']:.1f} | {row['latency']['recall_at_10']:.3f} | {row['latency']['speedup_vs_brute_force']:.1f}x |"
            for storage, row in served["token_storage"].items()
        ),
        "",
        f"## FDE encoding throughput ({thr['sets']} document token sets, chosen FDE)",
        "",
        f"Trove MuveraFDE (batched torch): {thr['trove_docs_per_s']:.0f} documents/s, {thr['trove_queries_per_s']:.0f} queries/s.",
    ]
    if "docs_ratio" in thr:
        lines.append(
            f"fastembed MUVERA ({thr['fastembed']}): {thr['fastembed_docs_per_s']:.0f} documents/s, {thr['fastembed_queries_per_s']:.0f} queries/s; "
            f"ratio Trove / fastembed: {thr['docs_ratio']:.1f}x documents, {thr['queries_ratio']:.1f}x queries."
        )
    else:
        lines.append(f"fastembed: {thr['fastembed']}.")
    g = payload["goals"]
    s = payload["results"]["examples"]
    lines += [
        "",
        "## Goals (sentence set, test queries)",
        "",
        (
            f"- FDE needs <= 1/2 the heuristic's candidates for recall 0.9: {'met' if g['fde_at_most_half_the_heuristic_candidates_for_0.9'] else 'not met'} "
            f"({_n(s['fde']['candidates_for']['0.9'])} vs {_n(s['heuristic']['candidates_for']['0.9'])})."
        ),
        f"- >= 10x faster than brute-force Chamfer at recall 0.9, flat float32 FDE index: {'met' if g['latency_10x_below_brute_force_flat_at_recall_0.9'] else 'not met'}.",
        "- compressed FDEs at <= 1/8 of the float32 FDE's RAM bytes per point, reaching recall 0.9 with no more candidates than float32 FDEs: "
        + (", ".join(g["compressed_fde_at_most_1/8_bytes_at_recall_0.9"]) or ("not met" if len(served["variants"]) > 1 else "not run (--no-compressed)")),
    ]
    return "\n".join(lines)


SUITE = Suite(
    name="muvera",
    summary="MUVERA FDEs vs the single-vector heuristic on WordNet sentence and lemma queries: candidates, FDE options, compressed FDEs, latency",
    command=muvera,
)
