"""How a multi-vector collection stores its token vectors: float32, float16, or int8 with one scale per token.

The exact Chamfer rerank reads these; float16 halves their bytes and int8 quarters them (plus 4 bytes of
scale per token), at the cost of approximating each stored token. Query tokens are never stored, so they
stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from encoders.errors import InvalidInput

TokenStorage = Literal["float32", "float16", "int8"]
_INT8_MAX = 127.0


@dataclass(frozen=True)
class TokenCodec:
    storage: TokenStorage
    dim: int

    def __post_init__(self) -> None:
        if self.storage not in get_args(TokenStorage):
            raise InvalidInput(
                f"muvera.token_storage must be one of {', '.join(get_args(TokenStorage))}, got {self.storage!r}",
                code="invalid_token_storage",
                details={"token_storage": self.storage},
            )

    @property
    def bytes_per_token(self) -> int:
        return {"float32": 4 * self.dim, "float16": 2 * self.dim, "int8": self.dim + 4}[self.storage]

    def encode(self, tokens: np.ndarray) -> bytes:
        """A (tokens, dim) float32 set as the bytes the store keeps."""
        if self.storage == "float32":
            return np.ascontiguousarray(tokens, dtype=np.float32).tobytes()
        if self.storage == "float16":
            return tokens.astype(np.float16).tobytes()
        # Symmetric per-token scale: each token's largest coordinate maps to +-127 (a zero token keeps scale 1).
        peak = np.abs(tokens).max(axis=1)
        scale = np.where(peak > 0, peak / _INT8_MAX, 1.0).astype(np.float32)
        codes = np.rint(tokens / scale[:, None]).astype(np.int8)
        return codes.tobytes() + scale.tobytes()

    def decode(self, blob: bytes) -> np.ndarray:
        """The stored bytes of one set back as (tokens, dim) float32."""
        if self.storage == "float32":
            return np.frombuffer(blob, dtype=np.float32).reshape(-1, self.dim)
        if self.storage == "float16":
            return np.frombuffer(blob, dtype=np.float16).reshape(-1, self.dim).astype(np.float32)
        count = len(blob) // (self.dim + 4)
        codes = np.frombuffer(blob, dtype=np.int8, count=count * self.dim).reshape(count, self.dim)
        scale = np.frombuffer(blob, dtype=np.float32, offset=count * self.dim)
        return codes.astype(np.float32) * scale[:, None]
