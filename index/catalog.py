"""All collections under ``<data_dir>/collections``: create, open, list, drop."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

from encoders.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    NotFound,
    NotReady,
    Unsupported,
)
from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec
from index.collection import Collection
from index.config import CollectionConfig, Metric, ModelVersion, MuveraSpec
from index.multivector import MultiVectorCollection, resolve_spec
from index.segments.policy import EngineSettings
from index.shards.collection import ShardedCollection, check_shards, is_sharded
from index.shards.handles import ShardRuntime
from index.storage.text_index import TextIndexSpec
from index.validation import check_collection_name

log = logging.getLogger(__name__)


def collection_class(config: CollectionConfig) -> type[Collection]:
    return MultiVectorCollection if config.multivector else Collection


def open_collection(
    folder: Path, registry: ModelRegistry, engine: EngineSettings | None = None, shards: ShardRuntime | None = None
) -> Collection | ShardedCollection:
    if is_sharded(folder):
        return ShardedCollection.open(folder, registry, engine or EngineSettings(), shards or ShardRuntime())
    config = CollectionConfig.load(folder / "collection.json")
    return collection_class(config)(folder, config, registry, engine)


def collections_using(data_dir: Path, model: str) -> list[str]:
    """Collections in a data dir with a version of ``model`` (read from their configs; nothing is opened)."""
    root = data_dir / "collections"
    configs = (CollectionConfig.load(p / "collection.json") for p in sorted(root.iterdir()) if (p / "collection.json").exists()) if root.is_dir() else ()
    return [c.name for c in configs if any(m.name == model for m in c.models)]


class DataDirLock:
    """One Trove process per data dir: a second one would append rows its FAISS never learns about."""

    def __init__(self, data_dir: Path):
        data_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(data_dir / ".lock", "a+")  # noqa: SIM115 - held open for the catalog's lifetime
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise Conflict(
                f"data dir {data_dir} is in use by another Trove process (pid {holder}); stop it or use its HTTP API",
                code="data_dir_locked",
                details={"data_dir": str(data_dir), "pid": holder},
            ) from None
        self._file.truncate(0)
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        self._file.close()  # closing the descriptor drops the lock


class Catalog:
    def __init__(self, data_dir: Path, registry: ModelRegistry, engine: EngineSettings | None = None, shards: ShardRuntime | None = None):
        self._data_lock = DataDirLock(data_dir)
        self.engine = engine or EngineSettings()
        self.shard_runtime = shards or ShardRuntime()
        self.root = data_dir / "collections"
        self.root.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self._collections: dict[str, Collection | ShardedCollection] = {}
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.progress = (0, 0)  # collections loaded, collections found
        self._failed: dict[str, str] = {}

    def load_all(self) -> None:
        """Open every collection: load its sealed segments and replay the rest of its store; readiness follows.

        A collection that cannot load is reported unavailable (with the reason) instead
        of holding the whole service back.
        """
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.progress = (0, len(folders))
        for done, folder in enumerate(folders, start=1):
            try:
                collection = open_collection(folder, self.registry, self.engine, self.shard_runtime)
                with self._lock:
                    self._collections[collection.config.name] = collection
                collection.load()
            except Exception as exc:
                log.exception("collection %s failed to load", folder.name)
                with self._lock:
                    self._collections.pop(folder.name, None)
                    self._failed[folder.name] = type(exc).__name__  # the message, which may hold paths, stays in the log
            self.progress = (done, len(folders))
        for leftover in self.root.glob(".trash-*"):  # drops interrupted by a crash
            shutil.rmtree(leftover, ignore_errors=True)
        self.ready.set()

    def create(
        self,
        name: str,
        *,
        model: str | None,
        dim: int | None,
        metric: Metric,
        index: IndexSpec,
        multivector: bool = False,
        muvera: MuveraSpec | None = None,
        text_index: TextIndexSpec | None = None,
        shards: int = 1,
    ) -> Collection | ShardedCollection:
        check_collection_name(name)
        check_shards(shards)
        if shards > 1 and text_index is not None:
            raise Unsupported(
                "sharded collections have no text index for now; create it with \"shards\": 1 for keyword or hybrid search",
                code="sharded_unsupported",
                details={"shards": shards, "text_index": True},
            )
        if model is None and dim is None:
            raise InvalidInput("give a 'model' to embed text, or a 'dim' for a vectors-only collection", code="missing_model_or_dim")
        if model is not None:
            model_dim = self.registry.info(model).dim
            if dim is not None and dim != model_dim:
                raise InvalidInput(
                    f"model {model!r} produces {model_dim}-d vectors, not {dim}",
                    code="dimension_mismatch",
                    details={"model": model, "model_dim": model_dim, "dim": dim},
                )
            dim = model_dim
        assert dim is not None
        if not 1 <= dim <= 65536:
            raise InvalidInput("dim must be between 1 and 65536", code="invalid_dim", details={"dim": dim})
        if multivector:
            muvera = self._check_multivector(model, metric, dim, muvera or MuveraSpec())
        elif muvera is not None:
            raise InvalidInput("'muvera' settings need 'multivector': true", code="muvera_needs_multivector")
        config = CollectionConfig(
            name=name,
            dim=dim,
            metric=metric,
            index=index,
            models=(ModelVersion(version=1, name=model, dim=dim),),
            multivector=multivector,
            muvera=muvera,
        )
        with self._lock:
            if name in self._collections or name in self._failed or (self.root / name).exists():
                raise AlreadyExists(f"collection {name!r} already exists", code="collection_exists", details={"name": name})
            collection = (
                ShardedCollection.create(self.root / name, config, shards, self.registry, self.engine, self.shard_runtime)
                if shards > 1
                else collection_class(config).create(self.root / name, config, self.registry, self.engine, text_index)
            )
            self._collections[name] = collection
        return collection

    def _check_multivector(self, model: str | None, metric: Metric, dim: int, muvera: MuveraSpec) -> MuveraSpec:
        if metric == "l2":
            raise InvalidInput("multi-vector collections score by Chamfer (inner products): use metric cosine or ip", code="invalid_metric", details={"metric": metric})
        if model is not None and "multivector" not in self.registry.info(model).kinds:
            raise InvalidInput(f"model {model!r} gives no token vectors", code="model_not_multivector", details={"model": model})
        return resolve_spec(muvera, dim)

    def get(self, name: str) -> Collection | ShardedCollection:
        with self._lock:
            collection = self._collections.get(name)
            failure = self._failed.get(name)
        if failure is not None:
            raise NotReady(f"collection {name!r} failed to load ({failure}); see the server log", code="collection_unavailable", details={"name": name})
        if collection is None:
            raise NotFound(f"collection {name!r} does not exist", code="collection_not_found", details={"name": name})
        if not collection.loaded:
            raise NotReady(f"collection {name!r} is still loading", code="collection_loading", details={"name": name})
        return collection

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def all(self) -> list[Collection | ShardedCollection]:
        with self._lock:
            return [c for _, c in sorted(self._collections.items()) if c.loaded]

    def drop(self, name: str) -> None:
        with self._lock:
            collection = self._collections.pop(name, None)
            failed = self._failed.pop(name, None)
            if collection is None and failed is None:
                raise NotFound(f"collection {name!r} does not exist", code="collection_not_found", details={"name": name})
            if collection is not None:
                collection.close()
            # Rename first so a crash mid-delete never leaves a half collection that loads.
            trash = self.root / f".trash-{name}-{uuid.uuid4().hex}"
            (self.root / name).rename(trash)
        shutil.rmtree(trash, ignore_errors=True)

    def close(self) -> None:
        for collection in self.all():
            collection.close()
        self._data_lock.release()
