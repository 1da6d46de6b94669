"""Locally-adaptive vector quantization (LVQ) and a per-dimension 8-bit scalar quantizer.

LVQ (Aguerrebere et al., "Similarity search in the blink of an eye with compressed indices", 2023;
the quantizer LeanVec pairs with its reduced vectors): each vector is centred by the dataset mean μ,
then quantised uniformly between its own minimum and maximum, so the grid adapts to every vector. A
code row is ``[scale: f16][bias: f16][primary codes][residual codes]``:

- ``lvq8`` / ``lvq4``: c = round((r - bias) / scale) with 8 or 4 bits (4-bit codes two per byte,
  even dimension in the low nibble); r ≈ bias + scale * c.
- ``lvq4x8``: the 4-bit step's rounding error, which lies in [-scale/2, scale/2], is quantised again
  with 8 bits on that interval, so no second pair of constants is stored; the error falls 255-fold.

Scale and bias are rounded to float16 *before* the codes are computed, so the stored constants are
exactly the ones the codes were made with. Inputs must lie within float16 range (embeddings do).

Scoring never reconstructs vectors: q·x̂ = q·μ + scale (q·c) + bias Σq [+ scale/255 (q·c₂) - scale/2 Σq],
so one matmul against the raw code values plus per-vector and per-query scalars.

``Int8Quantizer`` is the plain scalar quantizer (FAISS "SQ8"): per-dimension minimum and step
learned from a sample, one byte per dimension; q·x̂ = q·lower + (q ⊙ step)·c.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from encoders.errors import InvalidInput
from encoders.transforms.common import DEFAULT_MAX_SAMPLES, offset_dot, rowwise_dot
from encoders.transforms.quantizer import Quantizer, fp16_bytes, fp16_from_bytes

# (bits, residual_bits) of the supported LVQ variants, by the name collection configs use.
LVQ_VARIANTS = {"lvq8": (8, 0), "lvq4": (4, 0), "lvq4x8": (4, 8)}
_HEADER = 4  # scale and bias, float16 each
_TINY = 1e-30  # divides by a zero scale (a constant vector) without a NaN; such codes are all zero


def _pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """(..., d) values in [0, 15] -> (..., ceil(d/2)) uint8, even dimensions in the low nibble."""
    padded = torch.nn.functional.pad(codes.to(torch.uint8), (0, codes.shape[-1] % 2))
    return padded[..., 0::2] | (padded[..., 1::2] << 4)


def _unpack_nibbles(packed: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.stack([packed & 15, packed >> 4], dim=-1).flatten(-2)[..., :dim]


def _uniform_codes(values: torch.Tensor, low: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """round((values - low) / step) clamped to the ``bits``-bit range, as float."""
    return torch.round((values - low) / step.clamp_min(_TINY)).clamp_(0, 2**bits - 1)


class LVQ(Quantizer):
    """LVQ with ``bits`` (8 or 4) per dimension, optionally followed by an 8-bit residual (``lvq4x8``)."""

    kind = "lvq"

    def __init__(
        self,
        bits: int = 8,
        residual_bits: int = 0,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        seed: int = 0,
        provenance: dict[str, Any] | None = None,
    ):
        if (bits, residual_bits) not in LVQ_VARIANTS.values():
            raise InvalidInput(
                f"unsupported LVQ bits {bits}x{residual_bits}; supported: {sorted(LVQ_VARIANTS)}", code="invalid_transform"
            )
        super().__init__(max_samples, seed, provenance)
        self.bits, self.residual_bits = bits, residual_bits

    @classmethod
    def named(cls, name: str, **kwargs: Any) -> LVQ:
        """The variant a collection config names: "lvq8", "lvq4" or "lvq4x8"."""
        if name not in LVQ_VARIANTS:
            raise InvalidInput(f"unknown LVQ variant {name!r}; known: {sorted(LVQ_VARIANTS)}", code="invalid_transform")
        bits, residual_bits = LVQ_VARIANTS[name]
        return cls(bits, residual_bits, **kwargs)

    def expected_tensors(self) -> set[str]:
        return {"mean"}

    @property
    def _primary_size(self) -> int:
        return self.input_dim if self.bits == 8 else (self.input_dim + 1) // 2

    @property
    def code_size(self) -> int:
        return _HEADER + self._primary_size + (self.input_dim if self.residual_bits else 0)

    def _fit(self, sample: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mean": sample.mean(dim=0)}

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        r = x - self.tensor("mean")
        low, high = r.amin(dim=1, keepdim=True), r.amax(dim=1, keepdim=True)
        header = fp16_bytes(torch.cat([(high - low) / (2**self.bits - 1), low], dim=1))
        scale, bias = fp16_from_bytes(header).split(1, dim=1)
        primary = _uniform_codes(r, bias, scale, self.bits)
        parts = [header, primary.to(torch.uint8) if self.bits == 8 else _pack_nibbles(primary)]
        if self.residual_bits:
            error = r - (bias + scale * primary)
            parts.append(_uniform_codes(error, -scale / 2, scale / (2**self.residual_bits - 1), self.residual_bits).to(torch.uint8))
        return torch.cat(parts, dim=1)

    def _split(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(scale, bias) per row as float, the primary code bytes, the residual code bytes (or None)."""
        scale, bias = fp16_from_bytes(codes[..., :_HEADER]).unbind(-1)
        end = _HEADER + self._primary_size
        return scale, bias, codes[..., _HEADER:end], codes[..., end:] if self.residual_bits else None

    def byte_codes(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LVQ-8 codes as (code values (n, d) uint8, scale (n,), bias (n,)) float32: x̂ = μ + bias + scale * values."""
        if self.bits != 8 or self.residual_bits:
            raise InvalidInput("only lvq8 codes are one byte per dimension", code="invalid_codes")
        scale, bias, primary, _ = self._split(torch.from_numpy(np.array(self._codes(codes))))  # a copy: codes may be a read-only map
        return primary.numpy(), scale.numpy(), bias.numpy()

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        scale, bias, primary, residual = self._split(codes)
        values = primary if self.bits == 8 else _unpack_nibbles(primary, self.input_dim)
        x = bias[..., None] + scale[..., None] * values.float()
        if residual is not None:
            x += scale[..., None] * (residual.float() / (2**self.residual_bits - 1) - 0.5)
        return x + self.tensor("mean")

    def _prepare(self, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return q, q.sum(dim=1, keepdim=True), offset_dot(q, self.tensor("mean"))

    def _dot_primary(self, q: torch.Tensor, primary: torch.Tensor) -> torch.Tensor:
        if self.bits == 8:
            return rowwise_dot(q, primary.float())
        # Low nibbles hold even dimensions, high nibbles odd ones: split the query, not the codes.
        odd = torch.nn.functional.pad(q[:, 1::2], (0, q.shape[1] % 2))
        return rowwise_dot(q[:, 0::2], (primary & 15).float()) + rowwise_dot(odd, (primary >> 4).float())

    def _score(self, prepared: tuple[torch.Tensor, ...], codes: torch.Tensor) -> torch.Tensor:
        q, q_sum, offset = prepared
        scale, bias, primary, residual = self._split(codes)
        scores = offset + scale * self._dot_primary(q, primary) + bias * q_sum
        if residual is not None:
            scores += scale / (2**self.residual_bits - 1) * rowwise_dot(q, residual.float()) - scale / 2 * q_sum
        return scores

    def config(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "residual_bits": self.residual_bits,
            "max_samples": self.max_samples,
            "seed": self.seed,
            "provenance": self.provenance,
        }


class Int8Quantizer(Quantizer):
    """Per-dimension uniform 8-bit codes between the sample's minimum and maximum (values outside are clamped)."""

    kind = "int8"

    def __init__(self, max_samples: int = DEFAULT_MAX_SAMPLES, seed: int = 0, provenance: dict[str, Any] | None = None):
        super().__init__(max_samples, seed, provenance)

    def expected_tensors(self) -> set[str]:
        return {"lower", "step"}

    @property
    def code_size(self) -> int:
        return self.input_dim

    def _fit(self, sample: torch.Tensor) -> dict[str, torch.Tensor]:
        lower = sample.amin(dim=0)
        return {"lower": lower, "step": (sample.amax(dim=0) - lower) / 255}

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return _uniform_codes(x, self.tensor("lower"), self.tensor("step"), 8).to(torch.uint8)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.tensor("lower") + self.tensor("step") * codes.float()

    def _prepare(self, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return q * self.tensor("step"), offset_dot(q, self.tensor("lower"))

    def _score(self, prepared: tuple[torch.Tensor, ...], codes: torch.Tensor) -> torch.Tensor:
        q_step, offset = prepared
        return offset + rowwise_dot(q_step, codes.float())

    def config(self) -> dict[str, Any]:
        return {"max_samples": self.max_samples, "seed": self.seed, "provenance": self.provenance}
