"""Encoders backed by a sentence-transformers folder (the bundled MiniLM or any local one)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from encoders.base import Encoder, ModelInfo, l2_normalize
from encoders.device import torch_device


class SentenceTransformerEncoder(Encoder):
    def __init__(self, name: str, folder: Path, source: str):
        # Never reach for a hub: everything must already be in `folder`.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(folder), device=str(torch_device()), local_files_only=True)
        self._model.eval()
        self._special_ids = torch.tensor(sorted(set(self._model.tokenizer.all_special_ids)))
        dim = self._model.get_embedding_dimension()
        assert dim is not None, f"{folder} does not declare an embedding dimension"
        self.info = ModelInfo(
            name=name,
            dim=int(dim),
            kinds=("dense", "multivector"),
            source=source,
            family="sentence-transformers",
            max_tokens=int(self._model.get_max_seq_length() or 0) or None,
        )

    def encode_docs(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        out = self._model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    @torch.inference_mode()
    def encode_tokens(self, texts: list[str], batch_size: int = 64) -> list[np.ndarray]:
        result: list[np.ndarray] = []
        device = torch_device()
        special = self._special_ids.to(device)
        for start in range(0, len(texts), batch_size):
            features = self._model.preprocess(texts[start : start + batch_size])
            features = {k: v.to(device) for k, v in features.items() if isinstance(v, torch.Tensor)}
            out = self._model.forward(features)
            tokens = out["token_embeddings"]
            keep = features["attention_mask"].bool() & ~torch.isin(features["input_ids"], special)
            for row in range(tokens.shape[0]):
                result.append(l2_normalize(tokens[row][keep[row]].float().cpu().numpy()))
        return result
