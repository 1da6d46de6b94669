"""`trove bench compression --learned`: learned binary codes (BEBR) against sign-residual codes at equal bytes per vector.

One collection per data set is filled once and its compression refitted for every configuration (each fit replaces
the last), so every system searches the same stored vectors. Pairs at 24, 48, 96 and 192 bytes per vector of a 384-d
model: learned 1 x 192 bits against the signs of a 192-d prefix (the sign code's one way to 24 bytes), and 1, 2 and
4 learned steps of 384 bits against 1, 2 and 4 sign-residual planes. On the test queries (never searched before, not
in the index), for each coarse scoring (symmetric: Hamming on plane 1, every plane rescored keeping half, then the
float rerank; asymmetric: the float query against every code, then the rerank): recall@10 after the rerank at a fixed
ladder of oversamples, and the smallest oversample reaching the target (bisected, index/backends/calibration.py
``scan_depths``), with the batched ms per query there. Fit time: the whole fit (training, encoding every row,
choosing depths, the fit report's two scorings) and the learned coder's training alone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer

from bench import report

if TYPE_CHECKING:
    from bench.datasets import Dataset

K = 10
LADDER = (1, 2, 4, 8, 16)
MAX_SEARCHED = 64  # the deepest oversample the search for the target tries (640 candidates)
SCORINGS = ("symmetric", "asymmetric")


def configurations(dim: int, budgets: tuple[int, ...] | None = None) -> list[tuple[str, int, dict[str, Any]]]:
    """(name, bytes per vector, compression config): sign and learned codes side by side at each byte budget
    (``budgets``: only those, in bytes per vector; None: all)."""
    half = dim // 2
    learned = {"kind": "binary", "learned": True}
    out: list[tuple[str, int, dict[str, Any]]] = [
        (f"sign: matryoshka{half} + binary1", half // 8, {"matryoshka": {"dim": half}, "quantizer": {"kind": "binary"}}),
        (f"learned 1x{half}", half // 8, {"quantizer": {**learned, "code_bits": half}}),
    ]
    for bits in (1, 2, 4):
        out += [
            (f"sign: binary{bits}", bits * dim // 8, {"quantizer": {"kind": "binary", "bits": bits}}),
            (f"learned {bits}x{dim}", bits * dim // 8, {"quantizer": {**learned, "bits": bits}}),
        ]
    return [c for c in out if budgets is None or c[1] in budgets]


def _found(collection: Any, queries: np.ndarray) -> np.ndarray:
    from index.requests import Query

    hits = collection.query_batch([Query(vector=q, k=K, with_payload=False) for q in queries])
    return np.array([([int(h.id) for h in row] + [-1] * K)[:K] for row in hits])


def _measure_scoring(collection: Any, dataset: Dataset, truth: np.ndarray, target: float, scoring: str) -> dict[str, Any]:
    from bench.metrics import recall_at_k
    from index.backends.calibration import scan_depths
    from index.compression.fit_report import compressed_indexes
    from index.compression.multistage import SearchDepth

    indexes = compressed_indexes(collection.engine.view())
    serving = [(i.scoring, i.depth) for i in indexes]
    test = dataset.test.vectors

    def at(oversample: float) -> np.ndarray:
        for index in indexes:
            index.scoring, index.depth = scoring, SearchDepth(oversample)
        return _found(collection, test)

    try:
        curve = {f"{o:g}": round(recall_at_k(at(o), truth, K), 4) for o in LADDER}
        ladder = tuple(K * 2**i for i in range(int(np.log2(MAX_SEARCHED)) + 1))
        reached, depths = scan_depths(lambda _, coarse: at(coarse / K), {"test": (test, truth)}, target, ladder, K)
        needed = depths[-1][0] / K if reached else None
        started = time.perf_counter()
        recall = recall_at_k(at(needed or ladder[-1] / K), truth, K)
        ms = 1000 * (time.perf_counter() - started) / len(test)
    finally:
        for index, (mode, depth) in zip(indexes, serving, strict=True):
            index.scoring, index.depth = mode, depth
    return {"recall_at_oversample": curve, "oversample_for_target": needed, "recall_there": round(recall, 4), "ms_per_query_there": round(ms, 3)}


def measure_dataset(dataset: Dataset, target: float, workdir: Path, budgets: tuple[int, ...] | None) -> dict[str, Any]:
    from bench.collections import fill, open_catalog
    from index.backends.faiss_index import IndexSpec
    from index.compression.fit_report import compressed_indexes
    from index.compression.spec import CompressionSpec

    catalog = open_catalog(workdir / dataset.name)
    collection = catalog.create("c", model=None, dim=dataset.dim, metric="cosine", index=IndexSpec())
    typer.echo(f"{dataset.name}: filling {len(dataset.docs)} vectors", err=True)
    fill(collection, dataset.docs, settle=False)
    collection.optimize(seal=True)
    truth = dataset.truth(dataset.test).ids[:, :K]
    rows = []
    for name, size, config in configurations(dataset.dim, budgets):
        typer.echo(f"{dataset.name}: {name}", err=True)
        # Served traffic, the same before every fit: the tuning queries alone (learned codes learn from three
        # quarters of the recent queries, the fit measures on the rest); the test queries an earlier
        # configuration's measurement searched must not be among them.
        collection.engine.recent_queries.clear()
        _found(collection, dataset.tune.vectors)
        started = time.perf_counter()
        fitted = collection.compression.fit(CompressionSpec.from_json(config), None, lambda *a: None)
        fit_seconds = time.perf_counter() - started
        quantizer = compressed_indexes(collection.engine.view())[0].quantizer
        training = (quantizer.provenance or {}).get("training") if quantizer is not None else None
        rows.append({
            "system": name, "bytes_per_vector": size, "config": config, "fit_seconds": round(fit_seconds, 1),
            "train_seconds": training["seconds"] if training else None, "training": training, "fit_report_scoring": fitted.get("scoring"),
            "scoring": {mode: _measure_scoring(collection, dataset, truth, target, mode) for mode in SCORINGS},
        })
    catalog.close()
    return {"name": dataset.name, "label": dataset.label, "synthetic": dataset.synthetic, "docs": len(dataset.docs), "dim": dataset.dim, "test_queries": len(dataset.test), "rows": rows}


def goals(result: dict[str, Any], target: float) -> dict[str, Any]:
    """The issue's goals, each where its configurations were measured."""
    rows = {r["system"]: r for r in result["rows"]}
    d = result["dim"]

    def need(row: dict[str, Any]) -> float | None:
        found = [row["scoring"][m]["oversample_for_target"] for m in SCORINGS]
        return min((f for f in found if f is not None), default=None)

    out = {}
    if "sign: binary1" in rows and f"learned 1x{d}" in rows:
        sign_need, learned_need = need(rows["sign: binary1"]), need(rows[f"learned 1x{d}"])
        out[f"{d // 8} bytes: learned codes reach recall@10 {target} at half the oversample sign codes need (or less)"] = (
            sign_need is not None and learned_need is not None and learned_need <= sign_need / 2
        )
    if f"learned 1x{d // 2}" in rows:
        short_need = need(rows[f"learned 1x{d // 2}"])
        out[f"{d // 16} bytes: learned codes reach recall@10 {target} (oversample <= {LADDER[-1]})"] = short_need is not None and short_need <= LADDER[-1]
    return out


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"# compression: learned binary codes (BEBR) vs sign-residual codes at equal bytes\n\n{report.machine_line(payload)}\n"]
    if payload.get("note"):
        lines.append(payload["note"] + "\n")
    ladder = " / ".join(f"{o}" for o in LADDER)
    for result in payload["datasets"]:
        lines += [
            f"## {result['name']}" + (" (SYNTHETIC)" if result["synthetic"] else ""),
            "",
            (
                f"{result['label']}. {result['docs']} documents, {result['dim']}-d; {result['test_queries']} test queries. Recall@10 after rescoring "
                f"and the float rerank at oversample {ladder} (coarse candidates = 10 x oversample; symmetric rescoring keeps half), the smallest "
                f"oversample reaching {payload['target']} (bisected; '-' not within {MAX_SEARCHED}) and the batched ms per query there. Fit s: the "
                "whole fit (training, encoding every row, choosing depths, measuring both scorings); train s: the learned coder alone."
            ),
            "",
            "| bytes | codes | symmetric recall@10 | oversample for target | ms/query | asymmetric recall@10 | oversample for target | ms/query | fit s | train s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            cells = []
            for mode in SCORINGS:
                m = r["scoring"][mode]
                over = m["oversample_for_target"]
                cells += [" / ".join(f"{v:.3f}" for v in m["recall_at_oversample"].values()), "-" if over is None else f"{over:g}", f"{m['ms_per_query_there']:.2f}"]
            train = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.1f}"
            lines.append(f"| {r['bytes_per_vector']} | {r['system']} | " + " | ".join(cells) + f" | {r['fit_seconds']:.1f} | {train} |")
        lines += ["", "Goals:", *[f"- {goal}: **{met}**" for goal, met in result["goals"].items()], ""]
    return "\n".join(lines)


def run(plan: list[Dataset], target: float, note: str, out: Path, workdir: Path, budgets: tuple[int, ...] | None = None) -> list[Path]:
    head = report.header("compression")
    results: list[dict[str, Any]] = []
    files: list[Path] = []
    for dataset in plan:
        result = measure_dataset(dataset, target, workdir, budgets)
        result["goals"] = goals(result, target)
        results.append(result)
        payload = {**head, "target": target, "k": K, "note": note, "datasets": results}
        files = report.write(out, "compression-learned", payload, markdown(payload))
    return files
