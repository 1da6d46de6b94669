"""Exact Chamfer (MaxSim) similarity between token sets, batched in torch.

Chamfer(Q, D) = sum over query tokens q of max over document tokens d of <q, d>.
It is the score MUVERA's fixed-dimensional encodings approximate, and the
exact score candidates are reranked with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from encoders.device import torch_device
from encoders.errors import InvalidInput

# Elements of the (document tokens, query tokens) similarity block computed at once:
# 2^25 float32 is 128 MiB, small enough for a busy CPU host and any GPU.
_BLOCK_ELEMENTS = 1 << 25
# Query tokens scored together (their one-hot summing matrix grows with the square of this).
_QUERY_TOKENS = 4096


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


@dataclass(frozen=True)
class PackedSets:
    """Token sets back to back: (total tokens, dim) float32 rows, set i owning rows offsets[i]:offsets[i + 1]."""

    tokens: np.ndarray
    offsets: np.ndarray  # (sets + 1,) int64, offsets[0] == 0

    @classmethod
    def pack(cls, sets: Sequence[np.ndarray], dim: int | None = None) -> PackedSets:
        """Validated sets (``as_token_sets``) packed into one matrix; ``dim`` as there."""
        checked = as_token_sets(sets, dim)
        offsets = np.zeros(len(checked) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in checked], out=offsets[1:])
        tokens = np.concatenate(checked) if checked else np.zeros((0, dim or 0), dtype=np.float32)
        return cls(tokens=tokens, offsets=offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def runs(self, limit: int) -> list[tuple[int, int]]:
        """Consecutive sets [start, stop) holding at most ``limit`` tokens together (at least one set per run)."""
        out: list[tuple[int, int]] = []
        start = 0
        while start < len(self):
            stop = int(np.searchsorted(self.offsets, self.offsets[start] + limit, side="right")) - 1
            stop = min(max(stop, start + 1), len(self))
            out.append((start, stop))
            start = stop
        return out

    def rows(self, start: int, stop: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens of sets [start, stop) (a view, no copy on the CPU) and each set's token count."""
        tokens = torch.from_numpy(self.tokens[self.offsets[start] : self.offsets[stop]]).to(device)
        return tokens, torch.from_numpy(np.diff(self.offsets[start : stop + 1])).to(device)


def chamfer_scores(
    queries: Sequence[np.ndarray] | PackedSets,
    docs: Sequence[np.ndarray] | PackedSets,
    device: torch.device | None = None,
) -> np.ndarray:
    """(len(queries), len(docs)) float32 Chamfer scores between token sets, in memory-bounded blocks.

    No padding: one matmul of a block's document tokens against its query tokens, then each document's
    maximum per query token (a segment max over the document's rows) and each query's sum over its tokens.
    Sets already packed (``PackedSets``) are used as they are, so a caller scoring many queries against the
    same documents packs them once.
    """
    qs = queries if isinstance(queries, PackedSets) else PackedSets.pack(queries)
    ds = docs if isinstance(docs, PackedSets) else PackedSets.pack(docs, qs.tokens.shape[1] if len(qs) else None)
    out = np.zeros((len(qs), len(ds)), dtype=np.float32)
    if not len(qs) or not len(ds):
        return out
    if ds.tokens.shape[1] != qs.tokens.shape[1]:
        raise InvalidInput(
            f"document tokens have dimension {ds.tokens.shape[1]}, queries {qs.tokens.shape[1]}",
            code="dimension_mismatch",
            details={"expected": qs.tokens.shape[1], "got": ds.tokens.shape[1]},
        )
    device = device or torch_device()
    with torch.inference_mode():
        for q_start, q_stop in qs.runs(_QUERY_TOKENS):
            q, q_lengths = qs.rows(q_start, q_stop, device)
            # Query token i counts towards its own query: a (query tokens, queries) 0/1 matrix sums them.
            owner = torch.repeat_interleave(torch.arange(q_stop - q_start, device=device), q_lengths)
            summing = torch.nn.functional.one_hot(owner, q_stop - q_start).to(q.dtype)
            for d_start, d_stop in ds.runs(max(1, _BLOCK_ELEMENTS // len(q))):
                d, d_lengths = ds.rows(d_start, d_stop, device)
                best = torch.segment_reduce(d @ q.T, "max", lengths=d_lengths, axis=0, unsafe=True)  # (docs, query tokens)
                out[q_start:q_stop, d_start:d_stop] = (best @ summing).T.float().cpu().numpy()
    return out
