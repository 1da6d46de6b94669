"""Binary codes: 1-bit signs of mean-centred values, and multi-bit residual codes (2 to 4 bits per dimension).

Level 1 stores sign(x - μ) as one bit per dimension with a scale s₁; each further level stores the
signs of what the previous levels left unexplained, r_l = x - μ - Σ_{j<l} s_j ⊙ sign(r_j), with its own
scale (as in Tencent's BEBR). The reconstruction is x̂ = μ + Σ_l s_l ⊙ (2 b_l - 1), b_l ∈ {0, 1}.

Scales are either one per level and dimension (``scale="dimension"``: fitted on a sample, stored
once, codes stay pure bit planes) or one per level and vector (``scale="vector"``: stored in the
code as float16, adapting to each vector's spread). Either way s = mean |r| is the least-squares
scale for a sign code, so every level strictly lowers the reconstruction error.

A code row is ``[plane 1][plane 2]...[per-vector scales: f16 x levels]``; each plane is
ceil(d/8) bytes, bit i of byte j holding dimension 8j + i (numpy ``packbits(bitorder="little")``,
the layout ``faiss.real_to_binary`` produces). Plane 1 alone (``sign_bits``) is what a FAISS binary
index searches by Hamming distance, with ``query_bits`` for the queries.

Asymmetric scoring ranks by the float query against the reconstruction without building it:
q·x̂ = q·μ + Σ_l v_l (2 (q ⊙ w_l)·b_l - Σ q ⊙ w_l), with w_l the per-dimension scale (or 1) and v_l
the per-vector scale (or 1): one matmul per bit plane against its raw 0/1 bits.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import torch

from encoders.errors import InvalidInput
from encoders.transforms.common import (
    DEFAULT_MAX_SAMPLES,
    as_matrix,
    map_blocks,
    offset_dot,
    rowwise_dot,
    to_numpy,
    to_torch,
)
from encoders.transforms.quantizer import (
    Quantizer,
    fp16_bytes,
    fp16_from_bytes,
    pack_bits,
    unpack_bits,
)

Scale = Literal["dimension", "vector"]
MAX_BITS = 4


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(na, nb) Hamming distances between packed bit rows (uint8, same width): a small-scale reference for tests."""
    return np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=-1).sum(axis=-1, dtype=np.int64)


# Bit i of each byte value, as floats: (256, 8).
_BYTE_BITS = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).float()


def _table_dot(weights: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """w·b for each query's own candidates' packed bits: weights (m, bits), packed (m, k, bytes) -> (m, k).

    Each query's table holds, per byte position, the sum of its weights over the set bits of every byte value
    (m, bytes, 256); a candidate's score is one lookup per byte. That touches 8x fewer values than unpacking the
    bits and stays under torch's parallel grain for a single query's shortlist, whose parallel regions only waited
    for a second thread on a busy machine."""
    m, nbytes = weights.shape[0], packed.shape[-1]
    padded = torch.nn.functional.pad(weights, (0, 8 * nbytes - weights.shape[1]))
    tables = padded.view(m, nbytes, 8) @ _BYTE_BITS.T  # (m, bytes, 256)
    return tables.gather(2, packed.transpose(1, 2).long()).sum(dim=1)


def _signs(r: torch.Tensor) -> torch.Tensor:
    """+1 where r > 0, else -1: the value a stored bit stands for (FAISS binarises with > 0 too)."""
    return torch.where(r > 0, 1.0, -1.0)


class BinaryQuantizer(Quantizer):
    """``bits`` sign planes per dimension (1 to 4), each level coding the previous levels' residual."""

    kind = "binary"

    def __init__(
        self,
        bits: int = 1,
        scale: Scale = "dimension",
        max_samples: int = DEFAULT_MAX_SAMPLES,
        seed: int = 0,
        provenance: dict[str, Any] | None = None,
    ):
        if not 1 <= bits <= MAX_BITS or scale not in get_args(Scale):
            raise InvalidInput(f"binary codes need bits in 1..{MAX_BITS} and scale in {get_args(Scale)}", code="invalid_transform")
        super().__init__(max_samples, seed, provenance)
        self.bits, self.scale = bits, scale

    def expected_tensors(self) -> set[str]:
        return {"mean", "scales"} if self.scale == "dimension" else {"mean"}

    @property
    def plane_bits(self) -> int:
        """Bits per plane: one per dimension (a learned binarizer's code length may differ)."""
        return self.input_dim

    @property
    def label(self) -> str:
        """The codes' name in stage listings."""
        return f"binary{self.bits}"

    @property
    def sign_bytes(self) -> int:
        """Bytes per bit plane; a FAISS binary index over ``sign_bits`` has dimension 8 * sign_bytes."""
        return (self.plane_bits + 7) // 8

    @property
    def code_size(self) -> int:
        return self.bits * self.sign_bytes + (2 * self.bits if self.scale == "vector" else 0)

    def _fit(self, sample: torch.Tensor) -> dict[str, torch.Tensor]:
        mean = sample.mean(dim=0)
        if self.scale == "vector":
            return {"mean": mean}
        r, scales = sample - mean, []
        for _ in range(self.bits):
            signs = _signs(r)
            scales.append((r * signs).mean(dim=0))
            r = r - scales[-1] * signs
        return {"mean": mean, "scales": torch.stack(scales)}

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        r, planes, vector_scales = x - self.tensor("mean"), [], []
        for level in range(self.bits):
            signs = _signs(r)
            if self.scale == "vector":
                # Rounded to float16 first, so the next residual is taken against the stored scale.
                vector_scales.append(fp16_bytes((r * signs).mean(dim=1, keepdim=True)))
                s = fp16_from_bytes(vector_scales[-1])
            else:
                s = self.tensor("scales")[level]
            planes.append(pack_bits(signs > 0))
            r = r - s * signs
        return torch.cat(planes + vector_scales, dim=1)

    def _split(self, codes: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The bits of each plane as 0/1 uint8 (..., d), and per-vector scales (..., bits) or None."""
        nbytes = self.sign_bytes
        planes = [unpack_bits(codes[..., i * nbytes : (i + 1) * nbytes], self.plane_bits) for i in range(self.bits)]
        return planes, fp16_from_bytes(codes[..., self.bits * nbytes :]) if self.scale == "vector" else None

    def _dimension_scales(self) -> torch.Tensor:
        """(bits, d): w_l, the per-dimension scales, or ones when scales are per vector."""
        if self.scale == "dimension":
            return self.tensor("scales")
        return torch.ones(self.bits, self.input_dim, device=self.tensor("mean").device)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        planes, vector_scales = self._split(codes)
        x = self.tensor("mean").expand(*codes.shape[:-1], self.input_dim).clone()
        for level, (bits, w) in enumerate(zip(planes, self._dimension_scales(), strict=True)):
            step = w * (2 * bits.float() - 1)
            x += step if vector_scales is None else vector_scales[..., level : level + 1] * step
        return x

    def _prepare(self, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        weighted = q[:, None, :] * self._dimension_scales()  # (m, bits, d): q ⊙ w_l
        return weighted, weighted.sum(dim=-1), offset_dot(q, self.tensor("mean"))

    def _score(self, prepared: tuple[torch.Tensor, ...], codes: torch.Tensor) -> torch.Tensor:
        """A full scan (codes shared by all queries) unpacks each plane and multiplies; candidate lists (m, k, bytes)
        look their bytes up in per-query tables instead (``_table_dot``)."""
        weighted, weighted_sum, scores = prepared
        nbytes, candidates = self.sign_bytes, codes.dim() == 3
        vector_scales = fp16_from_bytes(codes[..., self.bits * nbytes :]) if self.scale == "vector" else None
        for level in range(self.bits):
            plane = codes[..., level * nbytes : (level + 1) * nbytes]
            dot = _table_dot(weighted[:, level], plane) if candidates else rowwise_dot(weighted[:, level], unpack_bits(plane, self.plane_bits).float())
            term = 2 * dot - weighted_sum[:, level : level + 1]
            scores = scores + (term if vector_scales is None else vector_scales[..., level] * term)
        return scores

    def sign_bits(self, codes: np.ndarray) -> np.ndarray:
        """The first bit plane of each code, contiguous (n, sign_bytes): what a FAISS binary index stores."""
        return np.ascontiguousarray(self._codes(codes)[:, : self.sign_bytes])

    def query_bits(self, queries: np.ndarray) -> np.ndarray:
        """The queries' first-plane bits, packed like ``sign_bits``, for symmetric Hamming search."""
        queries = as_matrix(queries, self.input_dim, "queries")
        return map_blocks(queries, self.input_dim + self.plane_bits, lambda block: to_numpy(pack_bits(self._first_plane(to_torch(block)))))

    def _first_plane(self, x: torch.Tensor) -> torch.Tensor:
        """(m, d) float -> (m, plane_bits) bool: the bits plane 1 would hold for these vectors (here: signs of x - μ)."""
        return x - self.tensor("mean") > 0

    def config(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "scale": self.scale,
            "max_samples": self.max_samples,
            "seed": self.seed,
            "provenance": self.provenance,
        }
