"""Scoring LVQ-8 codes in bulk straight from the code bytes, never decoding them to float32 vectors.

LVQ-8 scores (per-vector scale s and bias b, mean μ) are affine in one inner product of the query with the code
bytes taken as int8, w = code - 128: q·x̂ = q·μ + (b + 128 s) Σq + s (q·w).

q·w is an integer matmul: q is quantised to int8 per query (q ≈ α q', α = max|q| / 127) and
``torch._int_mm`` multiplies it with the int8 code rows into int32 (oneDNN: VNNI / AMX where the CPU has
them), so a scan reads each code byte once, with no float copy of the codes. A few queries go in as the right
operand (codes x queries), whose kernel reads the codes faster than the one-row form does. Only the query is
rounded (the codes are scored as stored): the scores stay within a fraction of a percent of the quantizer's
float ``score``, and the rerank orders the shortlist on the finer copy anyway.

q'·w is exact in float32 too: every product and partial sum is an integer below 2^24 (codes and queries within
±128, at most EXACT_FLOAT_DIM dimensions), so a float matrix product of the converted block gives the same keys
to the bit. For one query the integer matmul is several times faster (converting the block costs more than the
product); for a batch the float product amortises the conversion and reaches the BLAS kernels (300 queries x 117k
codes x 96 dims, 2 cores: 84 ms against 165). For batches of FLOAT_MIN_QUERIES or more, which one runs is
measured per (dimension, batch bucket) on first use (index/backends/measured_choice.py), as the machine decides.

A search ranks rows by keys, not scores: per query, score = α key + offset with α > 0, so the order is the
same, and only the survivors' keys become scores. A row's key is s (q'·w) + (Σq / α) b', two passes over the
(m, rows) result in place, where scaling by α and adding the offsets to every row's score took five.

FAISS's IndexScalarQuantizer cannot hold these codes: its scalar quantizers share one grid per dimension (or
one for all), while LVQ's grid is each vector's own (index/backends/scalar_quantizer.py serves the per-dimension
int8 codes that way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from encoders.transforms.common import offset_dot
from encoders.transforms.lvq import LVQ
from encoders.transforms.quantizer import Quantizer
from index.backends.measured_choice import MeasuredChoice

# (m, rows) float32 keys one block of a scan produces at most: one query's scan of 1M rows is one block, so
# the per-block work (launching the matmul, the passes, the heap) is paid once.
BLOCK_KEYS = 1 << 20
# Widest codes whose inner products with an int8 query stay exact in float32: d x 128 x 128 < 2^24.
EXACT_FLOAT_DIM = (1 << 24) // (128 * 128) - 1
KERNELS: MeasuredChoice[torch.Tensor] = MeasuredChoice()  # integer or float matmul, per (dimension, batch bucket)
# Up to this many queries the integer matmul may take the code rows as its left operand, the queries padded to
# COLUMN_PAD columns, and which orientation runs is measured per (dimension, batch bucket) on first use: oneDNN's
# kernel for (rows x d) x (d x 8) read one query's 117k x 96 codes in 3.4 ms against 5.7 ms for (1 x d) x (d x rows)
# on the Intel dev machine (from 8 queries on it is slower), but 1M x 96 codes in 14.9 ms against 10.6 on an AMD
# EPYC with AVX-512 VNNI.
COLUMN_MAX_QUERIES = 4
COLUMN_PAD = 8
ORIENTATIONS: MeasuredChoice[torch.Tensor] = MeasuredChoice()  # codes-left or queries-left, per (dimension, batch bucket)
# Batches smaller than this always take the integer matmul: converting the block costs more than their product
# (one query over 117k x 96 codes: 32 ms against 7), and a first measurement taken in a busy moment must not
# leave single queries on the float kernel for the life of the process.
FLOAT_MIN_QUERIES = 32


@dataclass(frozen=True)
class Prepared:
    """Queries as the integer matmul takes them, with the per-query terms that turn keys into scores."""

    codes: torch.Tensor  # (m, d) int8: q'
    float_codes: torch.Tensor  # (m, d) float32: q', for the float product
    alpha: torch.Tensor  # (m, 1) float32: q ≈ α q'
    offset: torch.Tensor  # (m, 1) float32: score = α key + offset
    bias_weight: torch.Tensor  # (m, 1) float32: Σq / α, the weight of a row's bias in its key


@dataclass(frozen=True)
class CodeScan:
    """Rows 0..n-1 of LVQ-8 codes, laid out for scoring: int8 values and per-row factors."""

    quantizer: LVQ
    values: torch.Tensor  # (n, d) int8: code - 128
    scale: torch.Tensor  # (n,) float32: each row's factor of q'·w
    bias: torch.Tensor  # (n,) float32: each row's factor of Σq (b + 128 s)

    @staticmethod
    def supports(quantizer: Quantizer | None) -> bool:
        return isinstance(quantizer, LVQ) and quantizer.bits == 8 and not quantizer.residual_bits

    @staticmethod
    def row_bytes(quantizer: LVQ) -> int:
        """RAM per row: the int8 values and a float32 scale and bias."""
        return quantizer.input_dim + 8

    @classmethod
    def of(cls, quantizer: LVQ, codes: np.ndarray) -> CodeScan:
        values, scale, bias = quantizer.byte_codes(codes)
        scale = np.ascontiguousarray(scale, np.float32)
        return cls(quantizer, _signed(values), torch.from_numpy(scale), torch.from_numpy(bias + 128 * scale))

    def __len__(self) -> int:
        return len(self.values)

    def prepare(self, queries: np.ndarray) -> Prepared:
        """Float queries as the integer matmul takes them, with their per-query terms."""
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        alpha = q.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / 127
        codes = torch.round(q / alpha)
        return Prepared(codes.to(torch.int8), codes, alpha, offset_dot(q, self.quantizer.tensor("mean")), q.sum(dim=1, keepdim=True) / alpha)

    def block_rows(self, queries: int) -> int:
        """Rows one block of a scan of ``queries`` queries covers (its keys stay within BLOCK_KEYS floats)."""
        return max(1, BLOCK_KEYS // max(1, queries))

    def keys(self, prepared: Prepared, start: int, end: int) -> torch.Tensor:
        """(m, end - start) float32 ranking keys of rows start..end-1: each query's scores are α key + offset."""
        values = self.values[start:end]

        def integer() -> torch.Tensor:
            return integer_products(prepared.codes, values)

        if values.shape[1] <= EXACT_FLOAT_DIM and len(prepared.codes) >= FLOAT_MIN_QUERIES:
            out = KERNELS.run(values.shape[1], len(prepared.codes), {"int8": integer, "float32": lambda: prepared.float_codes @ values.float().T})
        else:
            out = integer()
        return out.mul_(self.scale[start:end]).addcmul_(prepared.bias_weight, self.bias[start:end])  # elementwise, in place

    @staticmethod
    def scores_of(prepared: Prepared, keys: torch.Tensor | np.ndarray) -> np.ndarray:
        """The approximate inner products whose ranking keys are ``keys`` (m, c); -inf stays -inf."""
        return (torch.as_tensor(keys) * prepared.alpha + prepared.offset).numpy()

    def scores(self, prepared: Prepared, start: int, end: int) -> np.ndarray:
        """(m, end - start) approximate inner products of the prepared queries with rows start..end-1."""
        return self.scores_of(prepared, self.keys(prepared, start, end))


def integer_products(queries: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(m, rows) float32 q'·w of int8 queries (m, d) with int8 code rows (rows, d), exact, in the faster orientation."""
    if len(queries) > COLUMN_MAX_QUERIES:
        return _queries_left(queries, values)
    return ORIENTATIONS.run(values.shape[1], len(queries), {"codes-left": lambda: _codes_left(queries, values), "queries-left": lambda: _queries_left(queries, values)})


def _queries_left(queries: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return torch._int_mm(queries, values.T).float()


def _codes_left(queries: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The code rows as the left operand, the queries padded to COLUMN_PAD columns."""
    m = len(queries)
    padded = torch.zeros((COLUMN_PAD, queries.shape[1]), dtype=torch.int8)
    padded[:m] = queries
    products = torch._int_mm(values, padded.T)  # (rows, COLUMN_PAD) int32
    return torch.empty((m, len(values)), dtype=torch.float32).copy_(products[:, :m].T)


def _signed(codes: np.ndarray) -> torch.Tensor:
    """uint8 code bytes as int8 values shifted by -128 (flipping the top bit), in memory torch allocated: oneDNN's
    integer matmul runs at less than half speed on rows that are not 64-byte aligned, as numpy's may not be."""
    out = torch.empty(codes.shape, dtype=torch.int8)
    np.bitwise_xor(codes, np.uint8(128), out=out.numpy().view(np.uint8))
    return out
