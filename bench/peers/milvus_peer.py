"""Milvus Lite: the embedded Milvus (pymilvus client, a local server process, one file on disk)."""

from __future__ import annotations

import numpy as np

from bench.peers.base import Params, Peer, folder_bytes, pad_ids

INSERT_BATCH = 2000


class MilvusLite(Peer):
    name = "milvus-lite"
    package = "pymilvus[milvus_lite]"
    modules = ("pymilvus", "milvus_lite")
    memory_method = "on-disk size of the Milvus Lite database (its server keeps the index in RAM)"

    def build(self, vectors: np.ndarray) -> None:
        from pymilvus import DataType, MilvusClient

        self.folder = self.workdir / "milvus"
        self.folder.mkdir()
        self.client = MilvusClient(str(self.folder / "bench.db"))
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        index = self.client.prepare_index_params()
        index.add_index(
            field_name="vector",
            index_type="HNSW",
            metric_type="IP",
            params={"M": self.settings.m, "efConstruction": self.settings.ef_construction},
        )
        self.client.create_collection("bench", schema=schema, index_params=index)
        for start in range(0, len(vectors), INSERT_BATCH):
            block = vectors[start : start + INSERT_BATCH]
            self.client.insert("bench", [{"id": start + i, "vector": v.tolist()} for i, v in enumerate(block)])
        self.client.flush("bench")
        self.client.load_collection("bench")

    def sweep(self) -> list[Params]:
        return [{"ef_search": ef} for ef in self.settings.ef_search]

    def search(self, queries: np.ndarray, k: int, params: Params) -> np.ndarray:
        found = self.client.search(
            "bench",
            data=queries.tolist(),
            limit=k,
            anns_field="vector",
            search_params={"metric_type": "IP", "params": {"ef": max(int(params["ef_search"]), k)}},
        )
        return pad_ids([[int(hit["id"]) for hit in hits] for hits in found], k)

    def memory_bytes(self) -> int:
        return folder_bytes(self.folder)

    def close(self) -> None:
        self.client.close()
