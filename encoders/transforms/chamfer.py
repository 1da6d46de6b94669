"""Exact Chamfer (MaxSim) similarity between token sets, batched in torch.

Chamfer(Q, D) = sum over query tokens q of max over document tokens d of <q, d>.
It is the score MUVERA's fixed-dimensional encodings approximate, and the
exact score candidates are reranked with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from encoders.device import torch_device
from encoders.errors import InvalidInput

# Elements of the (queries, docs, query tokens, doc tokens) similarity block computed at once:
# 2^25 float32 is 128 MiB, small enough for a busy CPU host and any GPU.
_BLOCK_ELEMENTS = 1 << 25


def as_token_sets(sets: Sequence[np.ndarray] | np.ndarray, dim: int | None = None) -> list[np.ndarray]:
    """Validate token sets: each a non-empty, finite (n_i, dim) matrix; returns float32 arrays.

    ``dim=None`` takes the dimension from the first set and requires the rest to agree.
    """
    out: list[np.ndarray] = []
    for i, s in enumerate(sets):
        a = np.asarray(s, dtype=np.float32)
        if a.ndim != 2:
            raise InvalidInput(
                f"token set {i} must be a 2-D (tokens, dim) array, got shape {a.shape}",
                code="invalid_vectors",
                details={"index": i, "shape": list(a.shape)},
            )
        if a.shape[0] == 0:
            raise InvalidInput(f"token set {i} is empty", code="empty_vector_set", details={"index": i})
        if dim is None:
            dim = a.shape[1]
        if a.shape[1] != dim:
            raise InvalidInput(
                f"token set {i} has dimension {a.shape[1]}, expected {dim}",
                code="dimension_mismatch",
                details={"index": i, "expected": dim, "got": a.shape[1]},
            )
        if not np.isfinite(a).all():
            raise InvalidInput(f"token set {i} holds NaN or infinite values", code="invalid_vectors", details={"index": i})
        out.append(a)
    return out


def pad_token_sets(sets: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged (n_i, d) sets into a zero-padded (B, max n_i, d) tensor and its (B, max n_i) token mask."""
    lengths = torch.tensor([len(s) for s in sets], device=device)
    flat = torch.from_numpy(np.concatenate(sets)).to(device)
    mask = torch.arange(int(lengths.max()), device=device)[None, :] < lengths[:, None]
    padded = flat.new_zeros((len(sets), mask.shape[1], flat.shape[1]))
    padded[mask] = flat  # boolean-mask assignment fills row-major, i.e. set by set, token by token
    return padded, mask


def chamfer(
    queries: torch.Tensor,
    docs: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    doc_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Chamfer scores of every padded query set against every padded document set.

    queries (Q, Nq, d), docs (B, Nd, d), masks (Q, Nq) / (B, Nd) with True on real tokens
    (None: no padding). Returns (Q, B). Every document needs at least one real token.
    """
    sim = torch.einsum("qid,bjd->qbij", queries, docs)
    if doc_mask is not None:
        sim = sim.masked_fill(~doc_mask[None, :, None, :], float("-inf"))
    best = sim.amax(dim=-1)
    if query_mask is not None:
        best = best.masked_fill(~query_mask[:, None, :], 0.0)
    return best.sum(dim=-1)


def chamfer_scores(
    queries: Sequence[np.ndarray],
    docs: Sequence[np.ndarray],
    device: torch.device | None = None,
) -> np.ndarray:
    """(len(queries), len(docs)) float32 Chamfer scores between numpy token sets, in memory-bounded blocks."""
    qs = as_token_sets(queries)
    ds = as_token_sets(docs, qs[0].shape[1] if qs else None)
    out = np.zeros((len(qs), len(ds)), dtype=np.float32)
    if not qs or not ds:
        return out
    device = device or torch_device()
    # Sorting documents by length keeps padding small inside each block.
    lengths = np.array([len(d) for d in ds])
    order = np.argsort(lengths, kind="stable")
    max_q, dim = max(len(q) for q in qs), qs[0].shape[1]
    # Bound both the similarity block (query tokens x doc tokens) and the padded inputs (tokens x dim).
    q_block = max(1, min(len(qs), _BLOCK_ELEMENTS // (max_q * max(int(lengths.max()), dim))))
    blocks = _doc_blocks(lengths[order], _BLOCK_ELEMENTS // max(q_block * max_q, dim))
    with torch.inference_mode():
        for q_start in range(0, len(qs), q_block):
            q, q_mask = pad_token_sets(qs[q_start : q_start + q_block], device)
            for d_start, d_stop in blocks:
                idx = order[d_start:d_stop]
                d, d_mask = pad_token_sets([ds[i] for i in idx], device)
                out[q_start : q_start + q.shape[0], idx] = chamfer(q, d, q_mask, d_mask).float().cpu().numpy()
    return out


def _doc_blocks(sorted_lengths: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Split length-sorted documents into runs whose padded size (count x longest) stays within ``limit`` tokens."""
    blocks: list[tuple[int, int]] = []
    start = 0
    while start < len(sorted_lengths):
        # Lengths are sorted, so a run's padded size is its last length times its count: nondecreasing in the run's end.
        padded = sorted_lengths[start:] * np.arange(1, len(sorted_lengths) - start + 1)
        stop = start + max(1, int(np.searchsorted(padded, limit, side="right")))
        blocks.append((start, stop))
        start = stop
    return blocks
