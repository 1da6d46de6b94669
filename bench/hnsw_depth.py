"""The recall-targeted depth of `trove bench ann --part depth`: does every kind of HNSW collection answer its held
queries at the documented recall (target 0.95, band [0.95, 0.97]) without tuning?

Kinds: HNSW in one segment, HNSW in ten segments (the fan-out), and compressed collections whose coarse stage is
an HNSW graph (binary codes, LeanVec-reduced floats). Each is a real collection on the suite's M and
ef_construction, sealed before any query. Its recall@10 on the held-out test queries is taken with the depths
measured at seal (held vectors), then the tuning queries run as traffic, the optimizer re-measures (each
segment's depth, then the merged answer's: index/segments/fanout_depth.py) or the compression is fitted (its
depths measured on the same recent queries: index/compression/fit_report.py), and the test queries, which
neither step saw, are measured again.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.collections import fill, open_catalog, recall_of
from bench.datasets import Dataset
from index.segments.recent_queries import RecentQueries

BAND = (0.95, 0.97)
SEGMENTS = 10  # the fan-out kind's segment count


def kinds(dim: int) -> dict[str, tuple[int, dict[str, Any] | None]]:
    """name -> (segments, compression config or None)."""
    return {
        "hnsw, 1 segment": (1, None),
        f"hnsw, {SEGMENTS} segments": (SEGMENTS, None),
        "binary1 codes, hnsw coarse stage": (1, {"quantizer": {"kind": "binary"}}),
        f"leanvec-id{dim // 4} floats, hnsw coarse stage": (1, {"leanvec": {"dim": dim // 4, "variant": "id"}}),
    }


def _depths(collection: Any) -> dict[str, Any]:
    """What the collection searches at: per calibrated segment its ef and scale, or the compression's depths."""
    info = collection.info()
    graphs = [s for s in info["segments"] if s.get("graph")]
    compression = collection.compression.info()
    out: dict[str, Any] = {"segments": len([s for s in info["segments"] if s["state"] == "sealed"])}
    if graphs:
        out["order"] = sorted({s["graph"]["order"] for s in graphs})
        out["ef_search"] = sorted({s["graph"]["ef_search"] for s in graphs if s["graph"]["ef_search"] is not None})
        out["depth_scale"] = sorted({s["depth_scale"] for s in graphs if "depth_scale" in s})
    fanout = collection.engine.fanout
    if fanout is not None:
        out["fanout"] = fanout.to_json() | {"segments": len(fanout.segments)}
    if compression is not None and isinstance(compression.get("search"), dict):
        out["compression_search"] = compression["search"]
    return out


def _kind(dataset: Dataset, segments: int, config: dict[str, Any] | None, m: int, ef_construction: int, truths: dict[str, Any], root: Path) -> dict[str, Any]:
    from index.backends.faiss_index import IndexSpec
    from index.compression.spec import CompressionSpec

    per_segment = -(-len(dataset.docs) // segments)
    catalog = open_catalog(root, seal_points=per_segment, max_segment_points=per_segment, merge_factor=1000)
    collection = catalog.create("c", model=None, dim=dataset.dim, metric="ip", index=IndexSpec(type="hnsw", m=m, ef_construction=ef_construction))
    fill(collection, dataset.docs, settle=False)
    collection.optimize(seal=True)  # one seal, cut into segments of per_segment rows
    row: dict[str, Any] = {}
    if config is None:
        row["at_seal"] = {"recall_at_10": recall_of(collection, dataset.test.vectors, truths["test"]), **_depths(collection)}
        collection.engine.recent_queries = RecentQueries(dataset.dim)  # the test queries just served calibrate nothing
    recall_of(collection, dataset.tune.vectors, truths["tune"])  # traffic: the recent queries
    if config is None:
        row["calibrations"] = collection.engine.optimize()
    else:
        collection.compression.fit(CompressionSpec.from_json(config), None, lambda *a: None)
    row["after_queries"] = {"recall_at_10": recall_of(collection, dataset.test.vectors, truths["test"]), **_depths(collection)}
    row["in_band"] = BAND[0] <= row["after_queries"]["recall_at_10"] <= BAND[1]
    catalog.close()
    return row


def study(dataset: Dataset, m: int, ef_construction: int, target: float, step: Any) -> dict[str, Any]:
    truths = {"tune": dataset.truth(dataset.tune).ids[:, :10], "test": dataset.truth(dataset.test).ids[:, :10]}
    rows: dict[str, Any] = {}
    for name, (segments, config) in kinds(dataset.dim).items():
        step(name)
        with tempfile.TemporaryDirectory(prefix="bench-depth-") as tmp:
            rows[name] = {"segments": segments, "compression": config, **_kind(dataset, segments, config, m, ef_construction, truths, Path(tmp))}
    return {
        "name": dataset.name,
        "label": dataset.label,
        "synthetic": dataset.synthetic,
        "docs": len(dataset.docs),
        "tune_queries": len(dataset.tune),
        "test_queries": len(dataset.test),
        "target_recall_at_10": target,
        "band": list(BAND),
        "kinds": rows,
    }


def _searched_at(depths: dict[str, Any]) -> str:
    if "compression_search" in depths:
        search = depths["compression_search"]
        return f"coarse {search['oversample']:g} x k (fit aimed at {search['aimed_at']:.3f}, measured {search['recall_at_10']})"
    text = f"ef {depths.get('ef_search') or 'fallback'}"
    if depths.get("fanout"):
        fanout = depths["fanout"]
        text += f" x scale {fanout['scale']:g} (merged recall {fanout['recall_at_10']:.3f} on {fanout['queries']} recent queries, aimed at {fanout['aimed_at']:.3f})"
    return text


def markdown(result: dict[str, Any]) -> str:
    low, high = result["band"]
    lines = [
        f"## {result['name']}" + (" (SYNTHETIC)" if result["synthetic"] else ""),
        "",
        (
            f"{result['label']}. {result['docs']:,} documents; {result['tune_queries']} tuning queries served as traffic, "
            f"{result['test_queries']} held-out test queries measured. Target recall@10 {result['target_recall_at_10']}, band [{low}, {high}]."
        ),
        "",
        "| collection | recall@10 at seal (held-vector depths) | recall@10 after the queries | in band | searched at |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["kinds"].items():
        seal = f"{row['at_seal']['recall_at_10']:.3f}" if "at_seal" in row else "– (compressed once queries arrived)"
        after = row["after_queries"]
        lines.append(f"| {name} | {seal} | {after['recall_at_10']:.3f} | {'yes' if row['in_band'] else '**no**'} | {_searched_at(after)} |")
    return "\n".join(lines)
