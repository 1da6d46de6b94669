"""Backfill after an upgrade: re-encode the points an older model version embedded, with the serving model, at a bounded rate.

After a promotion, points written before it keep the old model's vectors (query_side: the old model's own;
reproject: those mapped into the new space). A backfill walks them in row order, re-embeds their stored
texts with the serving model (a window of WINDOW points per call of the encoding path, so they are sorted
and batched together) and writes them through the collection's normal write path, one chunk per durable
transaction. Each re-encoded vector goes through the serving version's chain into the index's
space exactly as a newly written point does, so a gallery that is part old, part new ranks at every
moment as a collection written that way from the start would.

A chunk writes only the points that still hold the row they were read from (checked in the same
transaction), so a point the user re-upserted or deleted meanwhile is never overwritten. Committed chunks
stay when the job stops (cancel, crash, rollback); running it again continues with what is left, since
it selects points by model version. Points without text cannot be re-encoded: they keep their vectors and
the report counts them.
"""

from __future__ import annotations

import time
from typing import Any

from encoders.errors import Cancelled, Conflict
from index.collection import Collection
from index.models.upgrades import Progress, load_record
from index.requests import PointInput

CHUNK = 256  # points per transaction at most; a rate below it makes chunks of one second's worth
# Points read and embedded in one call of the encoding path, then written CHUNK at a time. Embedding each
# transaction's 256 alone sorted and padded them apart (0.6x the rate of the whole set at once on WordNet).
WINDOW = 4096
SLEEP_SLICE_S = 0.2  # a rate-limited pause checks for cancellation this often


def check_backfillable(collection: Collection, record: dict[str, Any]) -> None:
    if record["state"] != "promoted" or collection.config.serving_version != record["version"]:
        raise Conflict(f"upgrade {record['id']} is not the serving version; promote it before backfilling", code="not_serving", details={"state": record["state"]})


def run_backfill(collection: Collection, upgrade_id: str, rate: float | None, progress: Progress) -> dict[str, Any]:
    """The backfill job: re-encode every point with text whose model version is not the upgrade's; returns the report."""
    record = load_record(collection, upgrade_id)
    check_backfillable(collection, record)
    version = record["version"]
    total = len(collection.store.rows_where("model_version != ? AND text IS NOT NULL", [version]))
    chunk = CHUNK if rate is None else max(1, min(CHUNK, int(rate)))
    window = WINDOW if rate is None else chunk  # rate-limited: embed no further ahead than one pause
    started = time.monotonic()
    done = reencoded = 0
    after = -1
    progress(0.0, 0, total)
    try:
        while len(rows := collection.store.rows_of_other_versions(version, after, window)):
            serving = collection.serving
            if serving.version != version:
                raise Conflict(
                    f"upgrade {upgrade_id} stopped serving during the backfill; {reencoded} points re-encoded before that keep its vectors",
                    code="not_serving",
                    details={"reencoded": reencoded},
                )
            stored = collection.store.by_rows(rows.tolist())
            present = [stored[int(r)] for r in rows if int(r) in stored]  # a point deleted since the row query is skipped
            if present:
                # The bar follows the embedding (most of the time); the rows count follows the commits.
                points = [PointInput(id=p.id, text=p.text, payload=p.payload) for p in present]
                records = collection.inputs.prepare(points, serving, lambda n, d=done: progress((d + n) / max(total, 1), d, total))
                for start in range(0, len(records), chunk):
                    part = slice(start, start + chunk)
                    reencoded += collection.write(records[part], serving, expected_rows=[p.row for p in present[part]]).count
                    progress((done + len(records)) / max(total, 1), done + min(start + chunk, len(records)), total)
            after, done = int(rows[-1]), done + len(rows)
            progress(done / max(total, 1), done, total)
            _pace(done, total, rate, started, progress)
    except Cancelled:
        raise Cancelled(f"cancelled on request after re-encoding {reencoded} points, which keep their new vectors; run the backfill again to continue") from None
    serving_model = collection.config.serving_model
    without_text = len(collection.store.rows_where("model_version != ? AND text IS NULL", [version]))
    seconds = time.monotonic() - started
    return {
        "upgrade_id": upgrade_id,
        "version": version,
        "mode": record["mode"],
        "candidates": total,
        "reencoded": reencoded,
        # Re-upserted or deleted by the user while the job ran (before or after the job reached them): left alone.
        "changed_meanwhile": max(total - reencoded, 0),
        "without_text": without_text,
        "complete": without_text == 0,
        "index_space": "mapped" if serving_model.chain else "native",
        "seconds": seconds,
        "rate_limit": rate,
        "points_per_second": done / seconds if seconds > 0 else None,
    }


def _pace(done: int, total: int, rate: float | None, started: float, progress: Progress) -> None:
    """Wait until ``done`` points fit under ``rate`` per second since ``started``; each progress report checks for cancellation."""
    if rate is None:
        return
    while (wait := done / rate - (time.monotonic() - started)) > 0:
        time.sleep(min(wait, SLEEP_SLICE_S))
        progress(done / max(total, 1), done, total)
