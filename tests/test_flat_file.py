"""Flat index files written a block at a time: FAISS reads them as its own, and a merge never gathers its output.

Real FAISS, real SQLite, real files.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec
from index.backends.flat_file import write_flat_index
from index.catalog import Catalog
from index.requests import PointInput, Query
from index.segments import sealed
from index.segments.policy import EngineSettings


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 48),
    cuts=st.lists(st.integers(0, 30), max_size=6),
    metric=st.sampled_from([faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2]),
    seed=st.integers(0, 2**16),
)
def test_a_streamed_flat_file_is_byte_for_byte_what_faiss_writes(tmp_path_factory: pytest.TempPathFactory, dim: int, cuts: list[int], metric: int, seed: int) -> None:
    blocks = [np.random.default_rng(seed + i).normal(size=(n, dim)).astype(np.float32) for i, n in enumerate(cuts)]
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
    reference = faiss.IndexFlat(dim, metric)
    reference.add(vectors)
    path = tmp_path_factory.mktemp("flat") / "index.faiss"
    write_flat_index(path, dim, metric, len(vectors), blocks)
    assert path.read_bytes() == bytes(faiss.serialize_index(reference).tobytes())
    loaded = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    assert loaded.ntotal == len(vectors) and loaded.metric_type == metric
    if len(vectors):
        assert np.array_equal(loaded.reconstruct_n(0, len(vectors)), vectors)


def test_blocks_that_disagree_with_the_count_are_refused(tmp_path: Path) -> None:
    block = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="not the 4"):
        write_flat_index(tmp_path / "short.faiss", 4, faiss.METRIC_L2, 4, [block])
    with pytest.raises(ValueError, match="more than the 2"):
        write_flat_index(tmp_path / "long.faiss", 4, faiss.METRIC_L2, 2, [block])
    with pytest.raises(ValueError, match="4-d"):
        write_flat_index(tmp_path / "wide.faiss", 4, faiss.METRIC_L2, 3, [np.zeros((3, 5), np.float32)])


def test_a_merge_of_flat_segments_streams_its_vectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten sealed flat segments merge into one without the merged vectors ever held in memory at once."""
    monkeypatch.setattr(sealed, "BUILD_CHUNK", 1000)  # blocks far smaller than the output, as at scale
    dim, per_segment, segments = 64, 4000, 10
    catalog = Catalog(tmp_path, ModelRegistry(tmp_path / "models"), EngineSettings(seal_points=per_segment, max_segment_points=per_segment * segments, merge_factor=segments))
    catalog.load_all()
    collection = catalog.create("c", model=None, dim=dim, metric="ip", index=IndexSpec(type="flat"))
    vectors = np.random.default_rng(0).normal(size=(per_segment * segments, dim)).astype(np.float32)
    for start in range(0, len(vectors), per_segment):
        collection.upsert([PointInput(id=i, vector=vectors[i].tolist()) for i in range(start, start + per_segment)])
        collection.engine.rebuild("seal")
    task = collection.engine.next_task()
    assert task is not None and task.kind == "merge" and len(task.segments) == segments
    tracemalloc.start()
    try:
        collection.engine.run(task)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [s["points"] for s in collection.engine.info() if s["state"] == "sealed"] == [per_segment * segments]
    # Gathering the output first would trace at least its size (10 MB here); a few blocks of 1000 rows, ~1 MB.
    assert peak < vectors.nbytes / 4, f"the merge traced {peak} bytes for a {vectors.nbytes}-byte output"
    q = vectors[1234]
    hit = collection.query(Query(vector=q.tolist(), k=1))[0]
    assert int(hit.id) == int(np.argmax(vectors @ q))
    catalog.close()
