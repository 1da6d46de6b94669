"""What every peer adapter offers, so a benchmark can treat FAISS, a database and Trove alike.

An adapter builds once over the documents, then answers `search` at each point of its own parameter
sweep (those points trace its recall/speed curve). Vectors are L2-normalised; every peer ranks by
inner product, so exact systems agree with the torch ground truth.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

Params = dict[str, int | float]


class PeerUnavailable(Exception):
    """The peer cannot run here (not installed, or it refused this machine); the message says why."""


@dataclass(frozen=True)
class BuildSettings:
    """Shared knobs so graph peers are built alike; the sweep is the search-depth list every graph walks."""

    m: int = 16  # graph degree (HNSW M; Vamana and usearch use their equivalents)
    ef_construction: int = 100
    ef_search: tuple[int, ...] = (10, 20, 40, 80, 160, 320)
    threads: int = 2


class Peer(ABC):
    name: ClassVar[str]  # "faiss-hnsw": the row in every table
    package: ClassVar[str]  # what `pip install` needs, for the "not installed" reason
    modules: ClassVar[tuple[str, ...]]  # imported by `check`
    exact: ClassVar[bool] = False  # exact peers must reach recall 1.0
    memory_method: ClassVar[str]  # how memory_bytes is measured: reports quote it

    def __init__(self, settings: BuildSettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir  # scratch space for peers that keep files; removed by the caller

    def check(self) -> None:
        """Raise PeerUnavailable when this peer cannot run on this machine."""
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise PeerUnavailable(f"not installed: {exc} (pip install {self.package})") from exc

    @abstractmethod
    def build(self, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def sweep(self) -> list[Params]:
        """Search settings from fastest to most thorough."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        """(len(queries), k) int64 document indices, best first; -1 where fewer than k were found."""

    @abstractmethod
    def memory_bytes(self) -> int: ...

    def build_params(self) -> Params:
        """The build settings this peer used, for the report."""
        return {"m": self.settings.m, "ef_construction": self.settings.ef_construction}

    def close(self) -> None:
        """Release servers, files and memory held by the index."""


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pad_ids(rows: list[list[int]], k: int) -> np.ndarray:
    """Ragged per-query id lists (databases may return fewer than k) as a (n, k) array padded with -1."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, ids in enumerate(rows):
        out[i, : len(ids[:k])] = ids[:k]
    return out
