"""Embedding for batch builds on Ray (the `distributed` extra): Ray Data map_batches over an actor pool.

Each actor loads the collection's model once (choosing and checking its backend as any process does,
with the cores Ray gives it) and embeds batches of texts through the encoder's one path. The driver
hands the texts out shortest first, so each Ray batch holds texts of like length and pads little; rows
carry their position so the driver reassembles them in order. The same code
runs on a local Ray (``ray.init(num_cpus=...)``) and on a cluster (an address);
every node needs Trove installed, as the actors import ``encoders``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoders.errors import Unsupported


class _EncodeBatch:
    """A Ray actor: one model per process, reused for every batch it is given."""

    def __init__(self, model: str, models_dir: str | None):
        from encoders.registry import ModelRegistry

        self._encoder = ModelRegistry(Path(models_dir) if models_dir else None).get(model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"position": batch["position"], "vector": self._encoder.encode_docs([str(t) for t in batch["text"]])}


@dataclass(frozen=True)
class RayEmbedder:
    model: str
    dim: int
    models_dir: Path | None = None
    address: str | None = None  # None: start (or join) a Ray on this machine
    num_cpus: int | None = None  # for a local Ray only
    actors: int = 2
    batch_size: int = 256

    @staticmethod
    def check_available() -> None:
        """Whether Ray is installed; finding the package is cheap where importing it takes seconds, so a build request asks this."""
        if importlib.util.find_spec("ray") is None:
            raise Unsupported("Ray builds need the 'distributed' extra: pip install 'trove[distributed]'", code="ray_unavailable")

    def __call__(self, texts: list[str], on_done: Callable[[int], None]) -> np.ndarray:
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
        by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # characters: a cheap proxy for tokens here
        dataset = ray.data.from_items([{"position": i, "text": texts[i]} for i in by_length]).map_batches(
            _EncodeBatch,
            fn_constructor_kwargs={"model": self.model, "models_dir": str(self.models_dir) if self.models_dir else None},
            batch_size=self.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=1,
        )
        out = np.zeros((len(texts), self.dim), np.float32)
        done = 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            out[batch["position"]] = batch["vector"]
            done += len(batch["position"])
            on_done(done)
        return out
