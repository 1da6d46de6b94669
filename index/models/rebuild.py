"""Native rebuild after a complete query_side backfill: the index moves into the serving model's own space.

A query_side upgrade leaves the index in the old model's space: after a complete backfill every point holds
the serving model's vector sent through its map, and queries go through the same map. A rebuild re-embeds
the stored texts with the serving model, no map, into a new store and new segments while queries and writes
go on (Collection.rebuild), then serves a new model version of the same model, embedded natively: what a
fresh collection of that model would hold. Every earlier version is retired, as no map takes its vectors
into the new space; a rollback past the rebuild is refused.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders.errors import Conflict, Unsupported
from index.config import ModelVersion
from index.models.backfill import check_backfillable
from index.models.upgrades import Progress, load_record, mark
from index.storage.store import StoredPoint

if TYPE_CHECKING:
    from index.collection import Collection

REBUILT = "rebuilt"


def check_rebuildable(collection: Collection, record: dict[str, Any]) -> None:
    """What a rebuild refuses, known before it runs (the route calls it before answering 202, the job again)."""
    if collection.config.multivector:
        raise Unsupported("native rebuilds are not available for multi-vector collections yet", code="rebuild_unsupported")
    if record["mode"] != "query_side":
        raise Conflict(
            f"upgrade {record['id']} is a {record['mode']} upgrade: its promotion already moved the index into the new model's space",
            code="rebuild_needs_query_side",
            details={"mode": record["mode"]},
        )
    if record["state"] == REBUILT:
        raise Conflict(f"upgrade {record['id']} was rebuilt natively already (model version {record['rebuilt_version']})", code="already_rebuilt")
    collection.check_reprojectable("rebuilt")
    check_backfillable(collection, record)
    old = len(collection.store.rows_where("model_version != ?", [record["version"]]))
    without_text = len(collection.store.rows_where("text IS NULL", []))
    if old or without_text:
        raise Conflict(
            f"a native rebuild needs a complete backfill: {old} points are still embedded by an older model version and "
            f"{without_text} points have no text to re-embed (delete them, or re-upsert them with text, and backfill)",
            code="backfill_incomplete",
            details={"older_version_points": old, "without_text": without_text},
        )


def run_rebuild(collection: Collection, upgrade_id: str, progress: Progress) -> dict[str, Any]:
    """The rebuild job: re-embed every stored text natively into a new index space and serve it; returns the report."""
    record = load_record(collection, upgrade_id)
    check_rebuildable(collection, record)
    serving = collection.serving
    encoder = serving.encoder
    assert encoder is not None  # an upgrade's model serves
    config = collection.config
    version = max(m.version for m in config.models) + 1
    native = ModelVersion(version=version, name=config.serving_model.name, dim=record["model_dim"])
    new_config = replace(
        config,
        dim=record["model_dim"],
        models=(*(replace(m, retired=True) for m in config.models), native),
        serving_version=version,
        store_file=f"store-{upgrade_id}-native.sqlite",
    )

    def vectors_of(points: list[StoredPoint]) -> np.ndarray:
        missing = [p.id for p in points if p.text is None]
        if missing:  # written with a vector only while the rebuild ran
            raise Conflict(
                f"points without text were written during the rebuild ({missing[:5]}); nothing was changed: delete them or give them text, then rebuild",
                code="backfill_incomplete",
                details={"without_text": len(missing)},
            )
        return encoder.encode_docs([str(p.text) for p in points])

    def before_commit() -> None:  # under the write lock: a rollback or another change of the config meanwhile wins
        if collection.serving.version != record["version"]:
            raise Conflict(f"upgrade {upgrade_id} stopped serving during the rebuild; nothing was changed", code="not_serving")
        if collection.config != config:
            raise Conflict(
                "the collection's configuration changed during the rebuild (compression was configured, say); nothing was changed, run it again",
                code="collection_changed",
            )

    started = time.monotonic()
    counts = collection.rebuild(new_config, vectors_of, progress, before_commit)
    seconds = time.monotonic() - started
    mark(collection, record, REBUILT, rebuilt_version=version)
    return {
        "upgrade_id": upgrade_id,
        "model": native.name,
        "from_version": record["version"],
        "version": version,
        "dim": native.dim,
        "index_space": "native",
        "points": counts["copied"],
        "caught_up": {"added": counts["added"], "removed": counts["removed"]},
        "seconds": seconds,
        "points_per_second": counts["copied"] / seconds if seconds > 0 else None,
    }
