"""Batch builds: read a source file in chunks, validate and embed each, index it into a sealed segment, commit once.

Multi-vector collections build the same way: rows carry token ``vectors`` or ``text`` (encoded to token vectors),
and each point's FDE is what the chunk's segment indexes while its token vectors are staged beside it.

A build streams (index/ingest/streamed_build.py): each chunk of BUILD_CHUNK rows is checked, embedded, staged in
the store and indexed into its own sealed segment, off the write lock, while writes and queries go on.
Nothing is visible until the one commit at the end, so a failed or cancelled build leaves the collection as
it was; memory is bounded by a chunk, not the file.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from encoders.base import Encoder
from encoders.errors import InvalidInput
from index.collection import BUILD_CHUNK, Collection
from index.ingest.sources import RowResult, Source
from index.requests import PointInput
from index.storage.store import PointId

# progress(fraction 0..1, rows done, rows total); may raise Cancelled to stop the build.
Progress = Callable[[float, int, int], None]
ENCODE_SHARE = 0.9  # of the progress bar: embedding dominates a build's time
MAX_REPORTED_BAD_ROWS = 20
# Rows a build request reads and checks before it is accepted: a wrong format or a bad first row is a 400 then.
HEAD_ROWS = 100


class Embedder(Protocol):
    """Called once per chunk of a build; closed when the build ends (what it started for the job, such as Ray actors, stops then)."""

    def __call__(self, texts: list[str], on_done: Callable[[int], None]) -> np.ndarray:
        """Embed ``texts`` in order, calling ``on_done(n)`` as the first n are finished."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LocalEmbedder:
    """Embeds in this process through the encoder's one path (sorted, token-budget batches; its chosen runtime)."""

    encoder: Encoder

    def __call__(self, texts: list[str], on_done: Callable[[int], None]) -> np.ndarray:
        return self.encoder.encode_docs(texts, on_done)

    def close(self) -> None:
        """Nothing to stop: the encoder belongs to the process."""


@dataclass(frozen=True)
class BuildOptions:
    on_error: Literal["fail", "skip"] = "fail"


@dataclass
class _Rows:
    points: list[PointInput] = field(default_factory=list)
    vectors: list[np.ndarray | None] = field(default_factory=list)
    bad: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


def _read(collection: Collection, numbered: Iterable[tuple[int, RowResult]], options: BuildOptions, seen: set[PointId]) -> _Rows:
    """Check rows (numbered from 1 in the file); ``seen`` holds the ids of earlier rows, and gains these."""
    rows = _Rows()
    for number, item in numbered:
        try:
            if isinstance(item, InvalidInput):
                raise item
            vector = collection.inputs.check_point(item, {"row": number, "id": item.id})
            if item.id in seen:
                raise InvalidInput(f"row {number}: id {item.id!r} appeared on an earlier row", code="duplicate_id", details={"row": number, "id": item.id})
        except InvalidInput as err:
            if options.on_error == "fail":
                err.details.setdefault("row", number)
                if not err.message.startswith("row "):
                    err.message = f"row {number}: {err.message}"
                raise
            rows.skipped += 1
            if len(rows.bad) < MAX_REPORTED_BAD_ROWS:
                rows.bad.append({"row": number, "code": err.code, "reason": err.message})
            continue
        seen.add(item.id)
        rows.points.append(item)
        rows.vectors.append(vector)
    return rows


def check_build(collection: Collection, source: Source, options: BuildOptions) -> None:
    """What a build would refuse that shows without reading the whole file: the collection's kind, the file, its first rows.

    The route calls it before answering 202, and the job when it starts.
    """
    source.check_readable()
    with closing(source.rows()) as rows:
        head = _read(collection, enumerate(itertools.islice(rows, HEAD_ROWS), start=1), options, set())
    if len(head.points) + head.skipped < HEAD_ROWS:  # that was the whole file
        _require_rows(len(head.points), head)


def _require_rows(points: int, rows: _Rows) -> None:
    if not points:
        raise InvalidInput("the source file has no usable rows", code="empty_source", details={"skipped": rows.skipped, "bad_rows": rows.bad})


def run_build(
    collection: Collection,
    source: Source,
    options: BuildOptions,
    progress: Progress,
    embed: Embedder | None = None,
) -> dict[str, Any]:
    """Build ``source`` into ``collection``, BUILD_CHUNK rows at a time; returns the job result."""
    started = time.perf_counter()
    check_build(collection, source, options)  # again: the file may have changed since the request
    total = source.count()
    progress(0.0, 0, total)
    serving = collection.serving
    build = collection.begin_build(total, serving)
    seen: set[PointId] = set()
    read = _Rows()  # skipped rows and the first bad ones, over all chunks
    encode_s, embedded, done, kept = 0.0, 0, 0, 0
    try:
        with closing(source.rows()) as items:
            numbered = enumerate(items, start=1)
            while chunk := list(itertools.islice(numbered, BUILD_CHUNK)):
                rows = _read(collection, chunk, options, seen)
                read.skipped += rows.skipped
                read.bad += rows.bad[: MAX_REPORTED_BAD_ROWS - len(read.bad)]
                kept += len(rows.points)

                def report(share: float, base: int = done, size: int = len(chunk)) -> None:
                    progress((base + share * size) / max(total, 1), base + int(share * size), total)

                to_embed = [i for i, v in enumerate(rows.vectors) if v is None]
                encode_started = time.perf_counter()
                if to_embed:
                    texts = [str(rows.points[i].text) for i in to_embed]

                    def on_done(n: int, texts: list[str] = texts) -> None:
                        report(ENCODE_SHARE * n / len(texts))

                    if collection.config.multivector:  # token vectors, through the collection's own checks
                        made = collection.inputs.embed_texts(texts, serving, on_done)
                    else:
                        embed = embed or LocalEmbedder(collection.inputs.require_encoder("points", {}, serving))
                        made = list(collection.inputs.to_index(embed(texts, on_done), serving))
                    for i, vector in zip(to_embed, made, strict=True):
                        rows.vectors[i] = vector
                encode_s += time.perf_counter() - encode_started
                embedded += len(to_embed)
                records = collection.inputs.records(rows.points, [v for v in rows.vectors if v is not None]) if rows.points else []
                if records:
                    build.add(records, lambda n, m=len(records): report(ENCODE_SHARE + (1 - ENCODE_SHARE) * n / m))
                done += len(chunk)
                progress(done / max(total, 1), done, total)
        _require_rows(kept, read)
        ack = build.commit()
    except BaseException:
        build.abort()
        raise
    finally:
        if embed is not None:
            embed.close()
    seconds = time.perf_counter() - started
    return {
        "points": ack.count,
        "skipped": read.skipped,
        "bad_rows": read.bad,
        "operation_id": ack.operation_id,
        "seconds": seconds,
        "encode_seconds": encode_s,
        "texts_embedded": embedded,
        "rows_per_second": kept / seconds if seconds else None,
        "segments": len(build.segments),
    }
