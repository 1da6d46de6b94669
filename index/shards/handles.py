"""Handles on the shards of a collection: a ShardServer in this process, or one in a Ray actor (cluster mode).

Both answer ``call(method, *args)`` with a pending result, so the sharded collection fans out the same way
in either mode. A shard that does not answer (its actor died, is restarting, or is slower than the
runtime's timeout) raises ShardUnavailable naming it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from encoders.errors import NotReady, Unsupported
from encoders.registry import ModelRegistry
from index.segments.policy import EngineSettings
from index.shards.server import ShardServer

log = logging.getLogger(__name__)

LOCAL_RAY_CPUS = 64


class ShardUnavailable(NotReady):
    default_code = "shard_unavailable"


@dataclass(frozen=True)
class ShardRuntime:
    """Where a collection's shards run, and how long a read waits for one."""

    ray: bool = False  # False: in this process
    address: str | None = None  # a Ray cluster; None with ray: a local Ray started by this process
    local_cpus: int | None = None  # a local Ray's logical CPUs (default: the machine's)
    cpus_per_shard: float = 1.0  # resources each shard actor reserves in its placement bundle
    memory_per_shard: int | None = None  # bytes, or None for no reservation
    max_restarts: int = -1  # Ray restarts a dead shard actor this often (-1: always)
    timeout_s: float = 30.0  # a read waits this long for a shard before answering it unavailable
    optimizer_interval_s: float = 1.0
    models_dir: Path | None = None  # where shard actors find models (the service's models dir)


class Pending(Protocol):
    def result(self, timeout: float | None) -> Any: ...


class ShardHandle(Protocol):
    index: int

    def call(self, method: str, *args: Any) -> Pending: ...

    def close(self) -> None: ...


class _Local:
    def __init__(self, future: Future[Any]):
        self._future = future

    def result(self, timeout: float | None) -> Any:
        return self._future.result(timeout)


class LocalShard:
    """A shard in this process; calls run on the collection's fan-out threads."""

    def __init__(self, index: int, server: ShardServer, pool: ThreadPoolExecutor):
        self.index, self._server, self._pool = index, server, pool

    def call(self, method: str, *args: Any) -> Pending:
        return _Local(self._pool.submit(getattr(self._server, method), *args))

    def close(self) -> None:
        self._server.close()


class _Remote:
    def __init__(self, ref: Any, shard: int, collection: str):
        self._ref, self._shard, self._collection = ref, shard, collection

    def result(self, timeout: float | None) -> Any:
        import ray
        from ray.exceptions import (
            ActorDiedError,
            ActorUnavailableError,
            GetTimeoutError,
            RayTaskError,
        )

        try:
            return ray.get(self._ref, timeout=timeout)
        except RayTaskError as err:  # the shard's own error (a 400, a 404...): raise it as it was raised there
            raise err.cause from None
        except (ActorDiedError, ActorUnavailableError, GetTimeoutError) as err:
            if isinstance(err, GetTimeoutError):
                ray.cancel(self._ref)  # a slow read is not worth finishing; the shard stays usable
            raise unavailable(self._collection, self._shard, type(err).__name__) from None


def unavailable(collection: str, shard: int, reason: str) -> ShardUnavailable:
    return ShardUnavailable(
        f"shard {shard} of collection {collection!r} is unavailable ({reason}); Ray restarts it from its data dir, retry shortly "
        "or query with \"allow_partial\": true for the other shards' results",
        details={"collection": collection, "shard": shard, "reason": reason},
    )


class RayShard:
    """A shard in a Ray actor, pinned to its bundle of the collection's placement group (spread across nodes)."""

    def __init__(self, index: int, actor: Any, collection: str):
        self.index, self._actor, self._collection = index, actor, collection

    def call(self, method: str, *args: Any) -> Pending:
        return _Remote(getattr(self._actor, method).remote(*args), self.index, self._collection)

    def close(self) -> None:
        import ray

        try:
            ray.get(self._actor.close.remote(), timeout=30)
        except Exception:  # a dead actor has nothing to flush: its store committed every acknowledged write
            log.warning("shard %d of %s did not close cleanly", self.index, self._collection)
        ray.kill(self._actor, no_restart=True)


def ensure_ray(runtime: ShardRuntime) -> None:
    try:
        import ray
    except ImportError:
        raise Unsupported("Ray shards need the 'distributed' extra: pip install 'trove[distributed]'", code="ray_unavailable") from None
    if not ray.is_initialized():
        if runtime.address is None:
            # Ray's memory monitor kills workers when the machine nears full, whoever uses the memory; a shard it
            # kills only reloads (an outage for nothing), so a local Ray leaves memory to the kernel. A cluster
            # keeps its own setting.
            os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
        # A local Ray counts logical CPUs for placement only; shards idle between queries, so one machine holds
        # more shards than cores unless TROVE_SHARD_CPUS says otherwise.
        ray.init(
            address=runtime.address,
            num_cpus=None if runtime.address else runtime.local_cpus or max(os.cpu_count() or 1, LOCAL_RAY_CPUS),
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )


def open_shards(
    folders: Sequence[Path], config: dict[str, Any], collection: str, registry: ModelRegistry, engine: EngineSettings,
    runtime: ShardRuntime, pool: ThreadPoolExecutor,
) -> tuple[list[ShardHandle], Any]:
    """One handle per folder, opening (or creating) each shard; and the Ray placement group, if any."""
    if not runtime.ray:
        servers = list(pool.map(lambda f: ShardServer(str(f), config, engine, runtime.optimizer_interval_s, registry=registry), folders))
        return [LocalShard(i, s, pool) for i, s in enumerate(servers)], None
    ensure_ray(runtime)
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    bundle: dict[str, float] = {"CPU": runtime.cpus_per_shard} | ({"memory": float(runtime.memory_per_shard)} if runtime.memory_per_shard else {})
    group = placement_group([bundle] * len(folders), strategy="SPREAD", name=f"trove-{collection}")
    try:
        ray.get(group.ready(), timeout=max(runtime.timeout_s, 60.0))
    except Exception:
        ray.util.remove_placement_group(group)
        raise ShardUnavailable(
            f"Ray could not place {len(folders)} shards of {bundle} each for collection {collection!r}; add nodes or lower TROVE_SHARD_CPUS",
            details={"collection": collection, "bundle": bundle, "shards": len(folders)},
        ) from None
    actor_class = ray.remote(ShardServer)
    handles: list[ShardHandle] = []
    for i, folder in enumerate(folders):
        actor = actor_class.options(
            num_cpus=runtime.cpus_per_shard,
            memory=runtime.memory_per_shard,
            max_restarts=runtime.max_restarts,
            max_task_retries=0,  # a call in flight when the shard dies fails: a write must not be applied twice unseen
            max_concurrency=16,  # queries run beside writes, as they do on one collection
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i),
        ).remote(str(folder), config, engine, runtime.optimizer_interval_s, None, str(runtime.models_dir) if runtime.models_dir else None)
        handles.append(RayShard(i, actor, collection))
    return handles, group
