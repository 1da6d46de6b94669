"""A FAISS flat index file written a block of vectors at a time, never held whole in memory.

A merge of flat segments would otherwise gather every input vector into one array and copy it again into
an ``IndexFlat`` (whose code buffer also grows by reallocation) before ``faiss.write_index``: about three
times the output's size in anonymous memory. FAISS has no streaming writer, so the file's header is taken
from FAISS itself (an empty index serialised with the final ``ntotal``) and the float codes follow it, in
the layout ``faiss.read_index`` reads (memory-mapped, for flat segments). The header is derived, not
hard-coded: a FAISS release that changes the layout fails ``_header``'s check instead of writing a bad file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

_SIZE_FIELD = 8  # the code vector's length field (a size_t) that ends the header


def _serialized(dim: int, metric: int, rows: np.ndarray | None, ntotal: int | None = None) -> bytes:
    index = faiss.IndexFlat(dim, metric)
    if rows is not None:
        index.add(rows)
    if ntotal is not None:
        index.ntotal = ntotal  # only the header's count: the codes stay empty
    return bytes(faiss.serialize_index(index).tobytes())


def _header(dim: int, metric: int, count: int) -> bytes:
    """The bytes before the codes of a flat index of ``count`` vectors, as FAISS writes them."""
    head = _serialized(dim, metric, None, ntotal=count)
    one = _serialized(dim, metric, np.zeros((1, dim), np.float32))
    # The length field counts in some unit (FAISS writes floats, not bytes): measured on a one-vector index.
    one_length = int.from_bytes(one[len(head) - _SIZE_FIELD : len(head)], "little")
    if len(one) != len(head) + dim * 4 or one_length <= 0 or (dim * 4) % one_length:
        raise RuntimeError("this FAISS release lays out flat index files differently; streamed flat writes need updating")
    unit = dim * 4 // one_length
    return head[:-_SIZE_FIELD] + (count * dim * 4 // unit).to_bytes(_SIZE_FIELD, "little")


def write_flat_index(path: Path, dim: int, metric: int, count: int, blocks: Iterable[np.ndarray]) -> None:
    """Write a flat FAISS index of the ``count`` vectors that ``blocks`` yield in order (the caller fsyncs)."""
    written = 0
    with open(path, "wb") as f:
        f.write(_header(dim, metric, count))
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=np.float32)
            if block.ndim != 2 or block.shape[1] != dim:
                raise ValueError(f"a block of shape {block.shape} for a {dim}-d flat index")
            written += len(block)
            if written > count:
                raise ValueError(f"the blocks hold more than the {count} vectors the header names")
            f.write(block.data)
    if written != count:
        raise ValueError(f"the blocks held {written} vectors, not the {count} the header names")
