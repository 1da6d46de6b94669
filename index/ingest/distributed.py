"""Embedding for batch builds on Ray (the `distributed` extra): a pool of encoding actors that lives for the whole job.

Each actor loads the collection's model once (choosing and checking its backend as any process does,
with the one core Ray gives it) and embeds slices of texts through the encoder's one path. The pool is
started on the job's first call and reused by every later one (a build calls once per 50,000-row chunk):
starting it (a Ray worker per actor, torch, the model, its backend check) took 51-77 s on the dev
machines, as long as embedding a chunk. ``close`` (the build does it when it ends, however it ends)
stops the actors, so a finished job holds no cores on the cluster.

The driver hands out the texts longest first, in slices of like length (each actor sorts its slice by
tokens and batches it by the token budget, so little is padded): the last slices are the quickest, so no
actor waits long for another at the end. It keeps two slices queued on every actor so none waits
between slices, and puts the vectors back in the caller's order. The same code
runs on a local Ray (``ray.init(num_cpus=...)``) and on a cluster (an address); every node needs Trove
installed, as the actors import ``encoders``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import Unsupported

SLICE_TEXTS = (256, 4096)  # texts a slice holds, at least and at most: about four slices for each actor in between
QUEUED_PER_ACTOR = 2  # slices handed to an actor before it answers: one running, one waiting


class _EncodeActor:
    """A Ray actor: one model per process, reused for every slice it is given."""

    def __init__(self, model: str, models_dir: str | None):
        from encoders.registry import ModelRegistry

        self._encoder = ModelRegistry(Path(models_dir) if models_dir else None).get(model)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._encoder.encode_docs(texts)


@dataclass
class RayEmbedder:
    model: str
    dim: int
    models_dir: Path | None = None
    address: str | None = None  # None: start (or join) a Ray on this machine
    num_cpus: int | None = None  # for a local Ray only
    actors: int = 2
    pools_started: int = field(default=0, init=False)  # how many times this embedder started its actors: once per job
    _pool: list[Any] = field(default_factory=list, init=False, repr=False)

    @staticmethod
    def check_available() -> None:
        """Whether Ray is installed; finding the package is cheap where importing it takes seconds, so a build request asks this."""
        if importlib.util.find_spec("ray") is None:
            raise Unsupported("Ray builds need the 'distributed' extra: pip install 'trove[distributed]'", code="ray_unavailable")

    @property
    def actor_ids(self) -> list[str]:
        """The running actors' ids (empty before the first call and after ``close``)."""
        return [actor._actor_id.hex() for actor in self._pool]

    def _actors(self) -> list[Any]:
        if not self._pool:
            self.check_available()
            import ray

            if not ray.is_initialized():
                ray.init(
                    address=self.address,
                    num_cpus=None if self.address else self.num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    ignore_reinit_error=True,
                )
            actor = ray.remote(num_cpus=1)(_EncodeActor)
            models_dir = str(self.models_dir) if self.models_dir else None
            self._pool = [actor.remote(self.model, models_dir) for _ in range(self.actors)]
            self.pools_started += 1
        return self._pool

    def __call__(self, texts: list[str], on_done: Callable[[int], None]) -> np.ndarray:
        import ray

        actors = self._actors()
        longest_first = np.argsort(-np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")  # characters: a cheap proxy for tokens
        low, high = SLICE_TEXTS
        size = min(max(-(-len(texts) // (4 * len(actors))), low), high)
        waiting = [longest_first[start : start + size] for start in range(0, len(texts), size)][::-1]  # popped longest first
        running: dict[Any, tuple[Any, np.ndarray]] = {}  # result ref -> (actor, positions)

        def hand_out(actor: Any) -> None:
            if waiting:
                positions = waiting.pop()
                running[actor.encode.remote([texts[i] for i in positions])] = (actor, positions)

        for _ in range(QUEUED_PER_ACTOR):
            for actor in actors:
                hand_out(actor)
        out = np.zeros((len(texts), self.dim), np.float32)
        done = 0
        while running:
            (ready,), _ = ray.wait(list(running), num_returns=1)
            actor, positions = running.pop(ready)
            out[positions] = ray.get(ready)
            hand_out(actor)
            done += len(positions)
            on_done(done)
        return out

    def close(self) -> None:
        """Stop the actors; a later call starts a new pool."""
        if self._pool:
            import ray

            if ray.is_initialized():  # else Ray itself is gone, and the actors with it
                for actor in self._pool:
                    ray.kill(actor)
            self._pool = []
