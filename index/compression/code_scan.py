"""Scoring one-byte codes (LVQ-8, int8) in bulk straight from the code bytes, never decoding them to float32 vectors.

Both quantizers' scores are affine in one inner product of a prepared query p with the code bytes taken as
int8, w = code - 128:

- LVQ-8 (per-vector scale s and bias b, mean μ): q·x̂ = q·μ + (b + 128 s) Σq + s (q·w).
- int8 (per-dimension lower and step): q·x̂ = q·lower + 128 Σ(q⊙step) + (q⊙step)·w.

p·w is an integer matmul: p is quantised to int8 per query (p ≈ α p', α = max|p| / 127) and
``torch._int_mm`` multiplies it with the int8 code rows into int32 (oneDNN: VNNI / AMX where the CPU has
them), so a scan reads each code byte once, with no float copy of the codes. Only the query is rounded (the
codes are scored as stored): the scores stay within a fraction of a percent of the quantizer's float
``score``, and the rerank orders the shortlist on the finer copy anyway.

A search ranks rows by keys, not scores: per query, score = α key + offset with α > 0, so the order is the
same, and only the survivors' keys become scores. An int8 row's key is p'·w itself; an LVQ-8 row's is
s (p'·w) + (Σq / α) b, two passes over the (m, rows) result in place. (Scaling by α and adding the offsets
to every row's score made the scan of one query 1.7-2.2x the bandwidth floor of its codes; see
bench/suites/compression.py.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from encoders.transforms.common import offset_dot
from encoders.transforms.lvq import LVQ, Int8Quantizer
from encoders.transforms.quantizer import Quantizer

# (m, rows) float32 keys one block of a scan produces at most: one query's scan of 1M rows is one block, so
# the per-block work (launching the matmul, the passes, a top-k) is paid once, not 61 times.
BLOCK_KEYS = 1 << 20


@dataclass(frozen=True)
class Prepared:
    """Queries as the integer matmul takes them, with the per-query terms that turn keys into scores."""

    codes: torch.Tensor  # (m, d) int8: p'
    alpha: torch.Tensor  # (m, 1) float32: p ≈ α p'
    offset: torch.Tensor  # (m, 1) float32: score = α key + offset
    bias_weight: torch.Tensor | None  # (m, 1) float32: Σq / α, the weight of an LVQ-8 row's bias in its key


@dataclass(frozen=True)
class CodeScan:
    """Rows 0..n-1 of one-byte codes, laid out for scoring: int8 values and, for LVQ-8, per-row factors."""

    quantizer: LVQ | Int8Quantizer
    values: torch.Tensor  # (n, d) int8: code - 128
    scale: torch.Tensor | None  # (n,) float32: each row's factor of p·w (LVQ-8), None for int8
    bias: torch.Tensor | None  # (n,) float32: each row's factor of Σq (LVQ-8), None for int8

    @staticmethod
    def supports(quantizer: Quantizer | None) -> bool:
        return isinstance(quantizer, Int8Quantizer) or (isinstance(quantizer, LVQ) and quantizer.bits == 8 and not quantizer.residual_bits)

    @staticmethod
    def row_bytes(quantizer: LVQ | Int8Quantizer) -> int:
        """RAM per row: the int8 values and, for LVQ-8, a float32 scale and bias."""
        return quantizer.input_dim + (8 if isinstance(quantizer, LVQ) else 0)

    @classmethod
    def of(cls, quantizer: LVQ | Int8Quantizer, codes: np.ndarray) -> CodeScan:
        if isinstance(quantizer, LVQ):
            values, scale, bias = quantizer.byte_codes(codes)
            scale = np.ascontiguousarray(scale, np.float32)
            return cls(quantizer, _signed(values), torch.from_numpy(scale), torch.from_numpy(bias + 128 * scale))
        return cls(quantizer, _signed(np.asarray(codes)), None, None)

    def __len__(self) -> int:
        return len(self.values)

    def prepare(self, queries: np.ndarray) -> Prepared:
        """Float queries in the codes' space as the integer matmul takes them, with their per-query terms."""
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        if isinstance(self.quantizer, LVQ):
            p, offset, q_sum = q, offset_dot(q, self.quantizer.tensor("mean")), q.sum(dim=1, keepdim=True)
        else:
            p = q * self.quantizer.tensor("step")
            offset, q_sum = offset_dot(q, self.quantizer.tensor("lower")) + 128 * p.sum(dim=1, keepdim=True), torch.zeros(len(q), 1)
        alpha = p.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / 127
        return Prepared(torch.round(p / alpha).to(torch.int8), alpha, offset, q_sum / alpha if self.scale is not None else None)

    def block_rows(self, queries: int) -> int:
        """Rows one block of a scan of ``queries`` queries covers (its keys stay within BLOCK_KEYS floats)."""
        return max(1, BLOCK_KEYS // max(1, queries))

    def keys(self, prepared: Prepared, start: int, end: int) -> torch.Tensor:
        """(m, end - start) float32 ranking keys of rows start..end-1: each query's scores are α key + offset."""
        out = torch._int_mm(prepared.codes, self.values[start:end].T).float()
        if self.scale is not None and self.bias is not None and prepared.bias_weight is not None:
            out.mul_(self.scale[start:end]).addcmul_(prepared.bias_weight, self.bias[start:end])  # elementwise, in place
        return out

    @staticmethod
    def scores_of(prepared: Prepared, keys: torch.Tensor | np.ndarray) -> np.ndarray:
        """The approximate inner products whose ranking keys are ``keys`` (m, c); -inf stays -inf."""
        return (torch.as_tensor(keys) * prepared.alpha + prepared.offset).numpy()

    def scores(self, prepared: Prepared, start: int, end: int) -> np.ndarray:
        """(m, end - start) approximate inner products of the prepared queries with rows start..end-1."""
        return self.scores_of(prepared, self.keys(prepared, start, end))


def _signed(codes: np.ndarray) -> torch.Tensor:
    """uint8 code bytes as int8 values shifted by -128 (flipping the top bit), in memory torch allocated: oneDNN's
    integer matmul runs at less than half speed on rows that are not 64-byte aligned, as numpy's may not be."""
    out = torch.empty(codes.shape, dtype=torch.int8)
    np.bitwise_xor(codes, np.uint8(128), out=out.numpy().view(np.uint8))
    return out
