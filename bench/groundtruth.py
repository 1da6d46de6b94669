"""Exact nearest neighbours, computed once with torch and cached under the bench cache by a content hash.

Dense vectors use inner product (the embeddings are L2-normalised, so this is cosine). Multi-vector
ground truth (exact Chamfer / MaxSim) belongs beside `exact_topk` as its own function with its own
`kind` in the cache key; it lands with the multi-vector issue, not before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from bench.cache import cache_dir

TRUTH_K = 100
QUERY_CHUNK = 128  # queries per matmul: 128 x 1M float32 scores is 512 MB


@dataclass(frozen=True)
class GroundTruth:
    ids: np.ndarray  # (queries, k) int64, best first
    scores: np.ndarray  # (queries, k) float32


def content_key(kind: str, k: int, *arrays: np.ndarray) -> str:
    """A hash of the arrays' bytes and shapes: any change to the vectors is a new cache entry."""
    digest = hashlib.blake2b(f"{kind}:{k}".encode(), digest_size=16)
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype}{contiguous.shape}".encode())
        digest.update(memoryview(contiguous).cast("B"))
    return digest.hexdigest()


def _compute_ip_topk(docs: np.ndarray, queries: np.ndarray, k: int) -> GroundTruth:
    doc_t = torch.from_numpy(np.ascontiguousarray(docs, dtype=np.float32))
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores = np.empty((len(queries), k), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(queries), QUERY_CHUNK):
            q = torch.from_numpy(np.ascontiguousarray(queries[start : start + QUERY_CHUNK], dtype=np.float32))
            top = torch.topk(q @ doc_t.T, k, dim=1)
            ids[start : start + len(q)] = top.indices.numpy()
            scores[start : start + len(q)] = top.values.numpy()
    return GroundTruth(ids=ids, scores=scores)


def exact_topk(docs: np.ndarray, queries: np.ndarray, k: int = TRUTH_K) -> GroundTruth:
    """Top-k documents by inner product for every query, from the cache when these exact vectors were seen."""
    k = min(k, len(docs))
    path = cache_dir() / f"truth-ip-{content_key('ip', k, docs, queries)}.npz"
    if path.exists():
        with np.load(path) as cached:
            return GroundTruth(ids=cached["ids"], scores=cached["scores"])
    truth = _compute_ip_topk(docs, queries, k)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=truth.ids, scores=truth.scores)
    tmp.replace(path)  # never leave a half-written entry behind
    return truth
