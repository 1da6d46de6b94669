"""A sharded collection: N segment-engine collections (shards) behind the interface the service uses for one.

Points go to the shard their id hashes to (index/shards/routing.py). A write is validated and embedded on
every shard it touches before any shard commits, so a bad point rejects the whole batch; it is
acknowledged once every touched shard committed. A shard failing between the two steps is reported, never
hidden: ShardWriteFailed names the shards that committed and those that did not. Queries fan out to every
shard at once and merge the per-shard top-k by score, which is exact: any of the global top k is in its
own shard's top k, and scores compare across shards (one model, one metric).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import (
    Cancelled,
    Conflict,
    InvalidInput,
    NotReady,
    TroveError,
)
from encoders.registry import ModelRegistry
from index.config import CollectionConfig
from index.ingest.points import PointInputs
from index.models.versions import Serving, load_serving
from index.multivector import TokenInputs, fde_transform
from index.query.coalescer import Coalescer
from index.relevance.calibrators import PROFILE_DEPTH, Calibrator, query_words
from index.relevance.state import Relevance, relevance_details
from index.requests import Hit, Hits, PointInput, Query, WriteAck
from index.segments.policy import EngineSettings, Task
from index.shards.builds import ShardedBuild
from index.shards.compression import ShardedCompression, compression_of, unsupported
from index.shards.handles import (
    Pending,
    ShardHandle,
    ShardRuntime,
    ShardUnavailable,
    open_shards,
)
from index.shards.routing import shard_of, split_by_shard
from index.shards.stores import ShardedStore
from index.shards.tokens import token_profiles, token_search
from index.storage import atomic
from index.storage.store import StoredPoint, validate_point_id
from index.token_codec import TokenCodec

log = logging.getLogger(__name__)

SHARDS_FILE = "shards.json"  # marks a sharded collection's folder: {"shards": N, "config": the collection's config}
MAX_SHARDS = 64
# Scroll cursors carry the shard in their high bits and the shard's own cursor (a store row, plus one) below.
CURSOR_SHIFT = 40


class SwitchFailed(Conflict):
    """A shard could not switch model version; the shards that had switched were switched back."""

    default_code = "switch_failed"


class ChangeFailed(Conflict):
    """Collection-wide work that some shards failed to stage: no shard committed it."""


class ShardWriteFailed(NotReady):
    """Some touched shards committed their part of a write, others did not: the client must resend it."""

    default_code = "shard_write_failed"


@dataclass(frozen=True)
class FanOut:
    """Per-query merged hits, and the shards that did not answer (empty unless partial results were allowed)."""

    results: list[list[Hit]]
    unavailable: list[int]


def check_shards(shards: int) -> None:
    if not 1 <= shards <= MAX_SHARDS:
        raise InvalidInput(f"shards must be between 1 and {MAX_SHARDS}", code="invalid_shards", details={"shards": shards, "max": MAX_SHARDS})


def is_sharded(folder: Path) -> bool:
    return (folder / SHARDS_FILE).exists()


class ShardedInputs(PointInputs):
    """Points are checked and embedded in this process, once for every shard; query vectors come from a shard."""

    host: ShardedCollection

    def query_vectors(self, queries: Sequence[Query]) -> np.ndarray:
        """Validated, embedded and normalised query vectors, from the first shard that answers (all hold the same model)."""
        host = self.host
        for shard in host._shards:
            try:
                vectors: np.ndarray = host._one(shard.index, "query_vectors", list(queries))
                return vectors
            except ShardUnavailable:
                continue
        raise ShardUnavailable(f"no shard of collection {host.config.name!r} answers", details={"collection": host.config.name, "shards": list(range(host.shard_count))})


class ShardedCollection:
    def __init__(self, root: Path, config: CollectionConfig, shards: int, registry: ModelRegistry, engine: EngineSettings, runtime: ShardRuntime):
        self.root, self.config, self.shard_count = root, config, shards
        self.registry, self.engine_settings, self.runtime = registry, engine, runtime
        self._pool = ThreadPoolExecutor(max_workers=4 * shards, thread_name_prefix=f"trove-shards-{config.name}")
        self._shards: list[ShardHandle] = []
        self._placement: Any = None
        self._serving = load_serving(root, config, registry)
        self.inputs: PointInputs = ShardedInputs(self)
        self.relevance = Relevance(self)
        if config.multivector:  # points and queries are checked and embedded here, as on one multi-vector collection
            assert config.muvera is not None
            self.inputs = TokenInputs(self, fde_transform(config.muvera, config.dim), config.muvera.max_tokens, TokenCodec(config.muvera.token_storage, config.dim))
            self.relevance = Relevance(self, lambda examples, on_done: token_profiles(self, examples, on_done))
        self.compression = ShardedCompression(self)
        # Concurrent single queries share one fan-out (one call per shard for all of them), as one collection's
        # share one search; strict queries and those allowing partial answers batch apart.
        self._coalescers: dict[bool, Coalescer[Query, tuple[list[Hit], list[int]]]] = {
            partial: Coalescer(lambda queries, partial=partial: self._answers(queries, partial)) for partial in (False, True)
        }
        self.loaded = False

    # ---- lifecycle -------------------------------------------------------

    @classmethod
    def create(cls, root: Path, config: CollectionConfig, shards: int, registry: ModelRegistry, engine: EngineSettings, runtime: ShardRuntime) -> ShardedCollection:
        check_shards(shards)
        root.mkdir(parents=True)
        collection = cls(root, config, shards, registry, engine, runtime)
        try:
            atomic.write_json(root / SHARDS_FILE, {"shards": shards, "config": config.to_json()})
            collection.load()
        except BaseException:
            collection.close()
            shutil.rmtree(root, ignore_errors=True)
            raise
        return collection

    @classmethod
    def open(cls, root: Path, registry: ModelRegistry, engine: EngineSettings, runtime: ShardRuntime) -> ShardedCollection:
        meta = json.loads((root / SHARDS_FILE).read_text())
        return cls(root, CollectionConfig.from_json(meta["config"]), int(meta["shards"]), registry, engine, runtime)

    def save_config(self, config: CollectionConfig) -> None:
        """Persist the collection's config beside the shards' (each shard keeps its own copy) and serve it."""
        atomic.write_json(self.root / SHARDS_FILE, {"shards": self.shard_count, "config": config.to_json()})
        self.config = config

    def shard_folder(self, shard: int) -> Path:
        return self.root / "shards" / f"{shard:03d}"

    def load(self) -> None:
        """Open (or create) every shard; each loads its sealed segments and replays its store. Ready when all answer."""
        folders = [self.shard_folder(i) for i in range(self.shard_count)]
        self._shards, self._placement = open_shards(folders, self.config.to_json(), self.config.name, self.registry, self.engine_settings, self.runtime, self._pool)
        self.gather_all({s.index: s.call("count") for s in self._shards}, None)
        self.loaded = True
        log.info("%s: %d shards open (%s)", self.config.name, self.shard_count, "ray" if self.runtime.ray else "in process")

    def close(self) -> None:
        for shard in self._shards:
            shard.close()
        if self._placement is not None:
            import ray

            ray.util.remove_placement_group(self._placement)
        for coalescer in self._coalescers.values():
            coalescer.close()
        self._pool.shutdown(wait=False)

    def optimize(self, seal: bool = False) -> int:
        """Every shard's optimizer run to completion, in parallel (Collection.optimize); the tasks they ran."""
        return sum(self.gather_all({s.index: s.call("optimize", seal) for s in self._shards}, None).values())

    def optimizer_task(self) -> Task | None:
        """None: each shard runs its own optimizer where its segments live (index/shards/server.py)."""
        return None

    @property
    def shards(self) -> list[ShardHandle]:
        return self._shards

    # ---- fan-out ---------------------------------------------------------

    def gather(self, calls: dict[int, Pending], timeout: float | None) -> dict[int, Any]:
        """Each shard's result, or the exception it raised."""
        out: dict[int, Any] = {}
        for shard, pending in calls.items():
            try:
                out[shard] = pending.result(timeout)
            except TimeoutError:  # an in-process shard slower than the timeout
                out[shard] = ShardUnavailable(f"shard {shard} of {self.config.name!r} did not answer in time", details={"collection": self.config.name, "shard": shard, "reason": "timeout"})
            except Exception as exc:  # the caller decides per shard: a 400 to raise, an outage to name, a partial write to report
                out[shard] = exc
        return out

    def stage_everywhere(self, calls: dict[int, Pending], what: str, code: str, on_staged: Callable[[list[int]], None]) -> dict[int, str]:
        """Each shard's token for work it ran up to its commit point (ShardServer._stage), once all of them got there.

        ``on_staged`` sees the shards staged so far and may raise Cancelled. A shard failing (or a cancel) drops
        what the others staged: the ChangeFailed (``code``) names the shards that failed, or the cancel is raised.
        """
        staged: dict[int, Any] = {}
        cancel: Cancelled | None = None
        for s, pending in calls.items():
            staged[s] = self.gather({s: pending}, None)[s]
            try:
                on_staged(list(staged))
            except Cancelled as err:  # the other shards still finish staging; then none commits
                cancel = err
        failed = {s: r for s, r in staged.items() if isinstance(r, Exception)}
        if not failed and cancel is None:
            return staged
        dropped = self.gather({s: self._shards[s].call("finish", token, False) for s, token in staged.items() if s not in failed}, None)
        if not failed:
            assert cancel is not None
            raise cancel
        raise ChangeFailed(
            f"shards {sorted(failed)} of collection {self.config.name!r} failed to {what}; no shard committed it (each serves what it had)",
            code=code,
            details={
                "failed_shards": [{"shard": s, "code": getattr(e, "code", type(e).__name__), "message": str(e)} for s, e in sorted(failed.items())],
                "rolled_back_shards": sorted(s for s, r in dropped.items() if not isinstance(r, Exception)),
            },
        )

    # ---- writes ----------------------------------------------------------

    def upsert(self, points: Sequence[PointInput]) -> WriteAck:
        if not points:
            raise InvalidInput("a batch needs at least one point", code="empty_batch")
        for i, point in enumerate(points):
            _checked_id(point.id, i)
        groups = split_by_shard([p.id for p in points], self.shard_count)
        prepared = self.gather({s: self._shards[s].call("prepare", [points[j] for j in positions]) for s, positions in groups.items()}, None)
        failures = {s: r for s, r in prepared.items() if isinstance(r, Exception)}
        if failures:  # nothing committed anywhere: drop what the other shards hold, raise the earliest point's error
            for s, token in prepared.items():
                if s not in failures:
                    self._shards[s].call("discard", token)
            raise _earliest(failures, groups)
        return self._commit({s: self._shards[s].call("commit", token) for s, token in prepared.items()}, groups, [p.id for p in points])

    def delete(self, ids: Sequence[Any]) -> WriteAck:
        checked = [_checked_id(point_id, i) for i, point_id in enumerate(ids)]
        groups = split_by_shard(checked, self.shard_count)
        return self._commit({s: self._shards[s].call("delete", [checked[j] for j in positions]) for s, positions in groups.items()}, groups, checked)

    def _commit(self, calls: dict[int, Pending], groups: dict[int, list[int]], ids: Sequence[Any]) -> WriteAck:
        """The write's ack once every touched shard committed; else ShardWriteFailed naming who did and who did not."""
        done = self.gather(calls, None)
        failed = {s: r for s, r in done.items() if isinstance(r, Exception)}
        acks = [r for r in done.values() if isinstance(r, WriteAck)]
        if failed:
            committed = sorted(s for s in done if s not in failed)
            pending_ids = [ids[j] for s in sorted(failed) for j in groups.get(s, [])]
            raise ShardWriteFailed(
                f"the write committed on shards {committed} of collection {self.config.name!r} but not on shards {sorted(failed)}: "
                "points routed to those may or may not be stored. Resend the whole batch (upserts and deletes are idempotent)",
                details={
                    "collection": self.config.name,
                    "committed_shards": committed,
                    "failed_shards": [{"shard": s, "code": getattr(e, "code", type(e).__name__), "message": str(e)} for s, e in sorted(failed.items())],
                    "committed_count": sum(a.count for a in acks),
                    "unconfirmed_ids": pending_ids[:1000],
                    "unconfirmed_count": len(pending_ids),
                },
            )
        return WriteAck(operation_id=max(a.operation_id for a in acks), count=sum(a.count for a in acks))

    # ---- reads -----------------------------------------------------------

    def _one(self, shard: int, method: str, *args: Any) -> Any:
        result = self.gather({shard: self._shards[shard].call(method, *args)}, self.runtime.timeout_s)[shard]
        if isinstance(result, Exception):
            raise result
        return result

    def get(self, point_id: Any, with_vector: bool = False) -> StoredPoint:
        checked = validate_point_id(point_id)
        point: StoredPoint = self._one(shard_of(checked, self.shard_count), "get", checked, with_vector)
        return point

    def count(self) -> int:
        return sum(self.gather_all({s.index: s.call("count") for s in self._shards}, self.runtime.timeout_s).values())

    def gather_all(self, calls: dict[int, Pending], timeout: float | None) -> dict[int, Any]:
        """Every shard's answer; the first error (a down shard: 503 shard_unavailable naming it) is raised."""
        done = self.gather(calls, timeout)
        for result in done.values():
            if isinstance(result, Exception):
                raise result
        return done

    def scroll(self, offset: int | None, limit: int, with_vector: bool = False) -> tuple[list[StoredPoint], int | None]:
        """Shard after shard, each in its storage order; the cursor names the shard and the position in it."""
        shard, row = (0, None) if offset is None else divmod(offset, 1 << CURSOR_SHIFT)
        if offset is not None and (offset < 0 or shard >= self.shard_count):
            raise InvalidInput("offset is not a cursor this collection gave", code="invalid_offset", details={"offset": offset})
        cursor = None if row in (None, 0) else row - 1
        points: list[StoredPoint] = []
        while shard < self.shard_count:
            page, after = self._one(shard, "scroll", cursor, limit - len(points), with_vector)
            points += page
            if after is not None:
                return points, (shard << CURSOR_SHIFT) + after + 1
            shard, cursor = shard + 1, None
            if len(points) == limit:
                return points, (shard << CURSOR_SHIFT) if shard < self.shard_count else None
        return points, None

    def query(self, query: Query) -> list[Hit]:
        """One query; concurrent callers are answered together in one fan-out."""
        return self._coalescers[False].submit(query)[0]

    async def search_async(self, query: Query, allow_partial: bool) -> FanOut:
        """As ``search`` for one query, awaited from an event loop and batched with concurrent ones (the HTTP edge)."""
        hits, down = await self._coalescers[allow_partial].submit_async(query)
        return FanOut([hits], down)

    def batch_sizes(self) -> dict[int, int]:
        """Fan-outs the coalescers formed, by size (for /metrics)."""
        sizes: Counter[int] = Counter()
        for coalescer in self._coalescers.values():
            sizes.update(coalescer.sizes())
        return dict(sizes)

    def lingered_seconds(self) -> float:
        """Seconds the coalescers waited for fan-outs to fill (for /metrics)."""
        return sum(coalescer.lingered_seconds() for coalescer in self._coalescers.values())

    def _answers(self, queries: Sequence[Query], allow_partial: bool) -> list[tuple[list[Hit], list[int]]]:
        found = self.search(queries, allow_partial)
        return [(hits, found.unavailable) for hits in found.results]

    def query_batch(self, queries: Sequence[Query]) -> list[list[Hit]]:
        return self.search(queries, allow_partial=False).results

    def fan_out(self, calls: dict[int, Pending], allow_partial: bool) -> tuple[dict[int, Any], list[int]]:
        """The answers of the shards that answered a read, and those that are down (allowed only with ``allow_partial``,
        and never all of them); any other error (a bad query fails the same way on every shard) is raised."""
        done = self.gather(calls, self.runtime.timeout_s)
        down = sorted(s for s, r in done.items() if isinstance(r, ShardUnavailable))
        for result in done.values():
            if isinstance(result, Exception) and not isinstance(result, ShardUnavailable):
                raise result
        if down and (not allow_partial or len(down) == len(done)):
            raise done[down[0]] if len(down) == 1 else ShardUnavailable(
                f"shards {down} of collection {self.config.name!r} are unavailable; retry shortly or query with \"allow_partial\": true",
                details={"collection": self.config.name, "shards": down},
            )
        return {s: r for s, r in done.items() if s not in down}, down

    def search(self, queries: Sequence[Query], allow_partial: bool) -> FanOut:
        """Every query on every shard in one batch call each, in parallel; per query, the merged top k.

        With a relevance calibrator, each shard returns its top max(k, PROFILE_DEPTH) and the calibrator reads
        the merged profile, as one collection's does; min_score and min_relevance cut after the merge.
        With ``allow_partial`` a shard that does not answer is left out and named; without, it fails the request.
        """
        for i, q in enumerate(queries):
            if q.mode != "dense":
                raise unsupported(self.config.name, f"mode {q.mode!r} queries", {"query": i})
        if self.config.multivector:
            return token_search(self, queries, allow_partial)
        calibrator = self.relevance.for_queries(queries)
        # Texts are embedded once, not once per shard; calibrated queries also need their normalised vectors.
        calibrate = [calibrator is not None and q.uses_relevance for q in queries]  # relevance only when asked
        embed = [i for i, q in enumerate(queries) if q.text is not None or calibrate[i]]
        try:
            vectors = self.inputs.query_vectors([queries[i] for i in embed]) if embed else np.zeros((0, self.config.dim), np.float32)
        except InvalidInput as err:  # name the query by its place in the whole batch
            if isinstance(err.details.get("query"), int):
                err.details["query"] = embed[err.details["query"]]
            raise
        asked = list(queries)
        for j, i in enumerate(embed):
            asked[i] = replace(queries[i], text=None, vector=vectors[j])
            if calibrate[i]:
                asked[i] = replace(asked[i], k=max(queries[i].k, PROFILE_DEPTH), min_score=None, min_relevance=None, with_relevance=False, with_relevance_details=False)
        answered, down = self.fan_out({s.index: s.call("query_batch", asked) for s in self._shards}, allow_partial)
        merged = [merge([per_shard[i] for per_shard in answered.values()], q.k) for i, q in enumerate(asked)]
        if calibrator is not None:
            at = {i: j for j, i in enumerate(embed)}
            merged = [calibrated(calibrator, q, hits, vectors[at[i]]) if calibrate[i] else hits for i, (q, hits) in enumerate(zip(queries, merged, strict=True))]
        return FanOut(merged, down)

    @property
    def serving(self) -> Serving:
        """The model version serving now; this process loads it too, to check and embed points once for every shard."""
        return self._serving

    @property
    def index_dim(self) -> int:
        """What the shards' segments hold: the model's vector, or a multi-vector collection's FDE."""
        return self.inputs.fde.output_dim if isinstance(self.inputs, TokenInputs) else self.config.dim

    # ---- builds: read, checked and embedded here, then each shard stages and indexes its rows in parallel ----

    def begin_build(self, capacity: int, serving: Serving) -> ShardedBuild:
        return ShardedBuild(self, capacity, serving)

    # ---- model upgrades (index/models/upgrades.py runs its jobs on this as on one collection) ----------

    @property
    def store(self) -> ShardedStore:
        """The shards' stores as one, read-only: the upgrade job samples stored texts and vectors across shards."""
        return ShardedStore(self)

    def check_reprojectable(self, action: str = "reprojected") -> None:
        """As one collection's check, on every shard (a compressed collection is refused); native rebuilds
        (index/models/rebuild.py) are not available across shards."""
        if action != "reprojected":
            raise unsupported(self.config.name, "native rebuilds", {})
        self.gather_all({s.index: s.call("check_reprojectable") for s in self._shards}, None)

    def reproject(self, config: CollectionConfig, mapping: Callable[[np.ndarray], np.ndarray], progress: Callable[[float, int, int], None]) -> None:
        """Map every shard's stored vectors into the new index space, committed on every shard or on none.

        Each shard installs the maps, loads the new serving model and writes its mapped store and segments up to
        its commit point (Collection.reproject; writes to it wait, queries use the old space); once every shard
        got there all commit. A shard failing before that drops the others' work: 409 reproject_failed names it.
        The commit itself (one config file per shard) failing on a shard after others committed cannot be
        undone, as their old stores are gone: 409 reproject_split names who is where.
        """
        self.check_reprojectable()
        serving = load_serving(self.root, config, self.registry)  # the new model loads here before anything changes
        files = self._chain_files(config)
        total = self.count()
        calls = {s.index: s.call("stage_reproject", config.to_json(), files, mapping) for s in self._shards}
        staged = self.stage_everywhere(calls, "reproject into the new model's space", "reproject_failed", lambda done: progress(0.95 * len(done) / len(calls), 0, total))
        done = self.gather({s: self._shards[s].call("finish", token, True) for s, token in staged.items()}, None)
        failed = {s: r for s, r in done.items() if isinstance(r, Exception)}
        if failed:
            raise Conflict(
                f"shards {sorted(failed)} of collection {self.config.name!r} failed to commit the reprojection after shards "
                f"{sorted(set(done) - set(failed))} did; those serve the new space, these the old one",
                code="reproject_split",
                details={"committed_shards": sorted(set(done) - set(failed)), "failed_shards": [{"shard": s, "message": str(e)} for s, e in sorted(failed.items())]},
            )
        self.save_config(config)
        self._serving = serving
        self.relevance.reload()
        progress(1.0, total, total)

    def _chain_files(self, config: CollectionConfig) -> dict[str, bytes]:
        """The compatibility maps ``config``'s versions name, by path in the collection's folder (each shard gets a copy)."""
        return {
            path.relative_to(self.root).as_posix(): path.read_bytes()
            for folder in {f for m in config.models for f in m.chain}
            for path in sorted((self.root / folder).rglob("*"))
            if path.is_file()
        }

    def switch_config(self, config: CollectionConfig) -> None:
        """Serve another model version on every shard, or on none.

        The compatibility maps ``config`` names are copied into every shard's folder and every shard loads the
        new serving model first (any failure: nothing switched); then each shard switches, and if one fails
        the others are switched back and SwitchFailed names it.
        """
        serving = load_serving(self.root, config, self.registry)  # loads the model here before anything changes
        files = self._chain_files(config)
        shards = self._shards
        self.gather_all({s.index: s.call("prepare_switch", config.to_json(), files) for s in shards}, None)
        done = self.gather({s.index: s.call("switch", config.to_json()) for s in shards}, None)
        failed = {s: r for s, r in done.items() if isinstance(r, Exception)}
        if failed:
            back = self.gather({s: shards[s].call("switch", self.config.to_json()) for s in done if s not in failed}, None)
            raise SwitchFailed(
                f"shards {sorted(failed)} of collection {self.config.name!r} failed to switch model version; the others were switched back",
                details={
                    "failed_shards": [{"shard": s, "message": str(e)} for s, e in sorted(failed.items())],
                    "switched_back": sorted(s for s, r in back.items() if not isinstance(r, Exception)),
                    "not_switched_back": sorted(s for s, r in back.items() if isinstance(r, Exception)),
                },
            )
        self.save_config(config)
        self._serving = serving
        self.relevance.reload()

    # ---- reporting -------------------------------------------------------

    def shard_infos(self) -> list[dict[str, Any]]:
        """Each shard's full info (with its node), or ``{"shard", "state": "unavailable"}`` for one that does not answer."""
        done = self.gather({s.index: s.call("info") for s in self._shards}, self.runtime.timeout_s)
        return [
            {"shard": s, "state": "unavailable", "reason": getattr(r, "code", type(r).__name__)} if isinstance(r, Exception) else {"shard": s, "state": "up", **r}
            for s, r in sorted(done.items())
        ]

    def info(self) -> dict[str, Any]:
        cfg = self.config
        infos = self.shard_infos()
        up = [i for i in infos if i["state"] == "up"]
        first = up[0] if up else None
        return {
            "name": cfg.name,
            "model": cfg.serving_model.name,
            "models": [{"version": m.version, "name": m.name, "dim": m.dim, "serving": m.version == cfg.serving_version, "retired": m.retired} for m in cfg.models],
            "dim": cfg.dim,
            "metric": cfg.metric,
            "multivector": cfg.multivector,
            **({"muvera": first["muvera"]} if first and "muvera" in first else {}),
            "index": first["index"] if first else {"type": cfg.index.type},
            "compression": compression_of(up),
            "points": sum(i["points"] for i in up),
            "memory_bytes": sum(i["memory_bytes"] for i in up),
            "stages": first["stages"] if first else [{"name": "float32", "bytes_per_vector": 4 * cfg.dim}],
            "operation_id": sum(i["operation_id"] for i in up),
            "dead_rows": sum(i["dead_rows"] for i in up),
            "segments": [{**seg, "id": f"s{i['shard']}/{seg['id']}"} for i in up for seg in i["segments"]],
            "relevance": self.relevance.info(),
            "text_index": None,
            "created_at": cfg.created_at,
            "shards": [
                {k: i[k] for k in ("shard", "state", "points", "memory_bytes", "node", "pid", "operation_id", "dead_rows") if k in i}
                | ({"segments": len(i["segments"])} if "segments" in i else {"reason": i.get("reason")})
                for i in infos
            ],
            "placement": "ray" if self.runtime.ray else "in_process",
        }

    def __getattr__(self, name: str) -> Any:
        """Single-collection work not yet done across shards answers 400 sharded_unsupported, not a 500."""
        if name.startswith("_"):
            raise AttributeError(name)
        config = self.__dict__.get("config")
        raise unsupported(config.name if config else "?", f"this operation ({name})", {"operation": name})


def calibrated(calibrator: Calibrator, q: Query, hits: list[Hit], vector: np.ndarray) -> Hits:
    """One query's merged candidates (its top max(k, PROFILE_DEPTH)) through the calibrator, cut as Collection cuts."""
    depth = max(q.k, PROFILE_DEPTH)
    scores = np.full((1, depth), np.nan, np.float32)
    scores[0, : len(hits)] = [h.score for h in hits]
    words = query_words([q.text])
    relevance = calibrator.relevance(scores, vector[None], words)[0]
    cut = calibrator.threshold if q.min_relevance == "default" else q.min_relevance
    keep = [j for j, h in enumerate(hits) if (q.min_score is None or h.score >= q.min_score) and (cut is None or relevance[j] >= cut)][: q.k]
    out = Hits(replace(hits[j], relevance=float(relevance[j])) for j in keep)
    if q.with_relevance_details:
        out.relevance_details = relevance_details(calibrator, scores, vector[None], words, relevance, cut)
    return out


def merge(per_shard: Sequence[Sequence[Hit]], k: int) -> Hits:
    """The k best of the shards' hits by score (each list is already best first; ties keep shard order)."""
    return Hits(sorted((h for hits in per_shard for h in hits), key=lambda h: -h.score)[:k])


def _checked_id(point_id: Any, index: int) -> Any:
    try:
        return validate_point_id(point_id)
    except InvalidInput as err:
        err.details = {"index": index, **err.details}
        raise


def _earliest(failures: dict[int, Exception], groups: dict[int, list[int]]) -> Exception:
    """Of the shards' validation errors, the one about the earliest point of the whole batch (its index remapped)."""

    def position(item: tuple[int, Exception]) -> int:
        shard, err = item
        index = err.details.get("index") if isinstance(err, TroveError) else None
        return groups[shard][index] if isinstance(index, int) and 0 <= index < len(groups[shard]) else 1 << 62

    shard, err = min(failures.items(), key=position)
    if isinstance(err, TroveError) and isinstance(err.details.get("index"), int):
        err.details["index"] = groups[shard][err.details["index"]]
    return err
