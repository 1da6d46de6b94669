"""LanceDB: an embedded columnar store with an IVF-PQ index, re-ranked on the stored full vectors."""

from __future__ import annotations

import math
import os

import numpy as np

from bench.peers.base import Params, Peer, folder_bytes, pad_ids

# (nprobes, refine_factor): more lists probed, and more PQ candidates re-scored on full vectors.
SWEEP = ((4, 1), (8, 2), (16, 4), (32, 8), (64, 16))


class LanceDB(Peer):
    name = "lancedb"
    package = "lancedb"
    modules = ("lancedb", "pyarrow")
    memory_method = "on-disk size of the Lance table (vectors + IVF-PQ index; reads go through the page cache)"

    def build(self, vectors: np.ndarray) -> None:
        os.environ.setdefault("LANCE_LOG", "error")  # lance warns about every search that projects columns
        import lancedb
        import pyarrow as pa
        from lancedb.index import IvfPq

        n, dim = vectors.shape
        self.folder = self.workdir / "lance"
        db = lancedb.connect(str(self.folder))
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
        self.table = db.create_table("bench", pa.table({"id": pa.array(np.arange(n)), "vector": column}))
        self.partitions = max(1, int(math.sqrt(n)))
        self.sub_vectors = next(m for m in (dim // 4, dim // 2, dim) if m and dim % m == 0)
        config = IvfPq(distance_type="dot", num_partitions=self.partitions, num_sub_vectors=self.sub_vectors)
        self.table.create_index("vector", config=config)

    def build_params(self) -> Params:
        return {"num_partitions": self.partitions, "num_sub_vectors": self.sub_vectors}

    def sweep(self) -> list[Params]:
        return [{"nprobes": min(p, self.partitions), "refine_factor": r} for p, r in SWEEP]

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        result = (
            self.table.search(queries if len(queries) > 1 else queries[0])
            .distance_type("dot")
            .limit(k)
            .nprobes(int(params["nprobes"]))
            .refine_factor(int(params["refine_factor"]))
            .select(["id"])
            .to_arrow()
        )
        ids = result.column("id").to_numpy()
        owner = result.column("query_index").to_numpy() if "query_index" in result.column_names else np.zeros(len(ids), int)
        rows: list[list[int]] = [[] for _ in queries]
        for query, doc in zip(owner, ids, strict=True):  # results come ordered by score within each query
            rows[query].append(int(doc))
        return pad_ids(rows, k)

    def memory_bytes(self) -> int:
        return folder_bytes(self.folder)
