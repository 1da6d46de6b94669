"""Intel Scalable Vector Search (scalable-vs): the Vamana graph on float32, LVQ and LeanVec storage.

SVS's LVQ and LeanVec refuse non-Intel CPUs by ending the whole process, so those two variants are
first tried on a tiny data set in a child process, and a refusal becomes the recorded reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.peers.base import Params, Peer, PeerUnavailable, folder_bytes

# Builds a 64-d index of 500 vectors with the storage named in argv[1]; exit 0 means SVS accepts it here.
PROBE = """
import sys, tempfile, os, numpy as np
from bench.peers.svs_peer import make_loader
import svs
x = np.random.default_rng(0).standard_normal((500, 64)).astype(np.float32)
path = os.path.join(tempfile.mkdtemp(), "data.fvecs")
svs.write_vecs(x, path)
svs.Vamana.build(svs.VamanaBuildParameters(graph_max_degree=16, window_size=32), make_loader(sys.argv[1], path, 64), svs.DistanceType.MIP)
"""


def make_loader(storage: str, path: str, dim: int) -> Any:
    """The SVS data loader for a storage kind over an .fvecs file."""
    import svs

    source = svs.VectorDataLoader(path, svs.DataType.float32, dims=dim)
    if storage == "lvq4x8":
        return svs.LVQLoader(source, primary=4, residual=8)
    if storage == "leanvec":
        return svs.LeanVecLoader(source, dim // 2)  # half the dimensions for the graph walk, full for re-ranking
    raise ValueError(f"unknown SVS storage {storage!r}")


class SvsVamana(Peer):
    name = "svs-vamana"
    package = "scalable-vs"
    modules = ("svs",)
    memory_method = "size of the saved SVS index (data + graph)"
    storage: ClassVar[str] = "float32"

    def check(self) -> None:
        super().check()
        if self.storage == "float32":
            return
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, self.storage], capture_output=True, text=True, timeout=300,
            cwd=Path(__file__).resolve().parents[2],
        )
        if probe.returncode != 0:
            said = " ".join((probe.stdout + probe.stderr).split())[-300:]
            raise PeerUnavailable(f"SVS refused {self.storage} on this CPU (exit {probe.returncode}): {said}")

    def build(self, vectors: np.ndarray) -> None:
        import svs

        parameters = svs.VamanaBuildParameters(
            graph_max_degree=2 * self.settings.m,  # Vamana has one layer: match HNSW's level-0 degree
            window_size=self.settings.ef_construction,
        )
        data: Any = vectors
        if self.storage != "float32":
            path = str(self.workdir / "data.fvecs")
            svs.write_vecs(vectors, path)
            data = make_loader(self.storage, path, vectors.shape[1])
        self.index = svs.Vamana.build(parameters, data, svs.DistanceType.MIP, num_threads=self.settings.threads)

    def build_params(self) -> Params:
        return {"graph_max_degree": 2 * self.settings.m, "window_size": self.settings.ef_construction}

    def sweep(self) -> list[Params]:
        return [{"search_window": ef} for ef in self.settings.ef_search]

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        self.index.search_window_size = max(int(params["search_window"]), k)
        ids, _ = self.index.search(queries, k)
        return ids.astype(np.int64)

    def memory_bytes(self) -> int:
        saved = self.workdir / "saved"
        saved.mkdir(exist_ok=True)
        self.index.save(str(saved / "config"), str(saved / "graph"), str(saved / "data"))
        return folder_bytes(saved)


class SvsLVQ(SvsVamana):
    name = "svs-lvq4x8"
    storage = "lvq4x8"


class SvsLeanVec(SvsVamana):
    name = "svs-leanvec"
    storage = "leanvec"
