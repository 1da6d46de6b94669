"""A sharded collection's compression: one pipeline fitted on a sample from every shard, installed on each.

Each shard chooses its own search depth on its own held rows (Compression.install); the collection's info
merges the shards' reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders.errors import Conflict, Unsupported
from encoders.transforms.common import DEFAULT_MAX_SAMPLES
from index.compression.lifecycle import Progress, fit_pipeline
from index.compression.spec import CompressionSpec

if TYPE_CHECKING:
    from index.shards.collection import ShardedCollection



class CompressionSplit(Conflict):
    """A collection-wide compression fit that some shards installed and others did not."""

    default_code = "compression_split"


class ShardedCompression:
    unfitted = False  # compression is set only by a fit, which leaves every shard fitted

    def __init__(self, host: ShardedCollection):
        self.host = host

    def query_vectors(self, queries: Sequence[str | Sequence[float]]) -> np.ndarray:
        return self.host.inputs.sample_query_vectors(queries)

    def pending_queries(self) -> np.ndarray | None:
        return None  # query samples given at create are a one-shard feature for now (create refuses compression on shards)

    def configure(self, spec: CompressionSpec, queries: np.ndarray | None) -> None:
        """Compression configured at create, fitted later, is a one-shard feature for now: a sharded collection fits it with PUT .../compression."""
        raise unsupported(self.host.config.name, "compression given at create (fit it with PUT .../compression once points are in)", {"operation": "compression"})

    def fit(self, spec: CompressionSpec, queries: np.ndarray | None, progress: Progress, seed: int = 0) -> dict[str, Any]:
        """Sample every shard in proportion to its points, fit one pipeline, then index each shard with it in parallel.

        Each shard builds and measures its new segments up to the swap (queries meanwhile use the old ones); the
        shards swap only once all of them got there. A shard that fails before (or a cancel) drops every shard's
        new segments: CompressionFailed names it. Only a shard failing in the swap itself (or restarted while
        staged) leaves the others switched: CompressionSplit names which, and a new PUT fits again.
        """
        host = self.host
        started = time.perf_counter()
        spec.check_for(host.config, 0 if queries is None else len(queries))
        counts: dict[int, int] = host.gather_all({s.index: s.call("count") for s in host.shards}, host.runtime.timeout_s)
        total = sum(counts.values())
        spec.check_points(total)
        progress(0.0, 0, total)
        parts = host.gather_all(
            {s: host.shards[s].call("compression_sample", math.ceil(DEFAULT_MAX_SAMPLES * n / total), seed + s) for s, n in counts.items() if n}, None
        )
        sample = np.concatenate([parts[s] for s in sorted(parts)])[:DEFAULT_MAX_SAMPLES]
        pipeline, rerank, held_queries = fit_pipeline(spec, sample, queries, seed, np.random.default_rng(seed))
        used = {"seed": seed, "sample": len(sample), "queries": 0 if queries is None else len(queries)}
        # Each shard indexes its rows and holds out its own stored vectors (and measures the given held queries) to
        # choose its depth, up to its swap; only when every shard got there does any swap.
        calls = {s: host.shards[s].call("stage_compression", spec, pipeline, rerank, queries, held_queries, used | {"points": n}) for s, n in counts.items()}
        staged = host.stage_everywhere(
            calls, "build the compression", "compression_failed",
            lambda done: progress(0.95 * len(done) / len(calls), sum(counts[r] for r in done), total),
        )
        reports = host.gather({s: host.shards[s].call("finish", token, True) for s, token in staged.items()}, None)
        failed = {s: r for s, r in reports.items() if isinstance(r, Exception)}
        if failed:  # a shard failing in its last step (a few small files written), or restarted while staged
            raise CompressionSplit(
                f"compression switched on shards {sorted(set(reports) - set(failed))} of collection {host.config.name!r} but failed in its last step on {sorted(failed)}; "
                "searches stay correct (every shard reranks on its own vectors) but the shards differ until a new PUT .../compression succeeds",
                details={"switched_shards": sorted(set(reports) - set(failed)), "failed_shards": [{"shard": s, "message": str(e)} for s, e in sorted(failed.items())]},
            )
        progress(1.0, total, total)
        host.save_config(replace(host.config, compression=spec))
        stages = [
            {**stage, "recall_at_10": float(np.average([reports[s]["stages"][j]["recall_at_10"] for s in reports], weights=[max(counts[s], 1) for s in reports]))}
            if stage.get("recall_at_10") is not None else stage
            for j, stage in enumerate(reports[0]["stages"])
        ]
        return {**reports[0], **used, "points": total, "stages": stages, "fit_seconds": time.perf_counter() - started,
                "shards": [{"shard": s, "points": counts[s], "generation": r["generation"], "stages": r["stages"]} for s, r in sorted(reports.items())]}

    def info(self) -> dict[str, Any] | None:
        return compression_of([i for i in self.host.shard_infos() if i["state"] == "up"])


def compression_of(up: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The shards' compression as one: the first shard's config and report, RAM and disk summed, and how many are fitted."""
    found = [i["compression"] for i in up if i.get("compression")]
    if not found:
        return None
    merged = dict(found[0])
    for key in ("ram_bytes", "disk_bytes"):
        if key in merged:
            merged[key] = sum(c.get(key, 0) for c in found)
    return merged | {"shards_fitted": sum(c["state"] == "fitted" for c in found)}


def unsupported(collection: str, what: str, details: dict[str, Any]) -> Unsupported:
    return Unsupported(
        f"collection {collection!r} is sharded, and sharded collections do not support {what} yet: they take points, deletes, "
        "dense and multi-vector queries, builds, compression and relevance fits and upgrades; backfills, text indexes "
        "and keyword or hybrid queries need a one-shard collection for now",
        code="sharded_unsupported",
        details={"collection": collection, **details},
    )
