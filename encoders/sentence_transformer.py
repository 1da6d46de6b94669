"""Encoders backed by a sentence-transformers folder (the bundled MiniLM or any local one), on the runtime chosen for them.

sentence-transformers loads the folder and tokenises; the runtime (torch, or the folder's ONNX export on
ONNX Runtime or OpenVINO: encoders/backend_choice.py) runs the model.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from encoders.backend_choice import choose, open_backend, torch_only
from encoders.base import Encoder, ModelInfo, l2_normalize
from encoders.batching import run_batches
from encoders.device import torch_device
from encoders.runtimes import Features, Runtime
from encoders.threads import configure_torch, inference_threads



class SentenceTransformerEncoder(Encoder):
    def __init__(self, name: str, folder: Path, source: str, choose_backend: bool = True):
        """``choose_backend=False``: torch only, nothing exported into the folder (how a folder is checked before install)."""
        # Never reach for a hub: everything must already be in `folder`.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        device = torch_device()
        threads = inference_threads()
        configure_torch(threads)
        self._model = SentenceTransformer(str(folder), device=str(device), local_files_only=True)
        self._model.eval()
        self._max_tokens = int(self._model.get_max_seq_length() or 0) or None
        tokenizer = self._model.tokenizer
        self._special_ids = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
        self._pad_left = tokenizer.padding_side == "left"
        self._pad_values = {"input_ids": tokenizer.pad_token_id or 0, "token_type_ids": tokenizer.pad_token_type_id, "attention_mask": 0}
        dim = self._model.get_embedding_dimension()
        assert dim is not None, f"{folder} does not declare an embedding dimension"
        self._dim = int(dim)
        self._where = (device, folder, name, source, threads)
        self._runtime, choice = choose(self._model, device, folder, name, source, threads, self._encode_with) if choose_backend else torch_only(self._model, device, False)
        self.info = ModelInfo(
            name=name,
            dim=self._dim,
            kinds=("dense", "multivector"),
            source=source,
            family="sentence-transformers",
            max_tokens=self._max_tokens,
            backend=choice.to_json(),
        )

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    def using(self, backend: str) -> SentenceTransformerEncoder:
        """This model on another backend (sharing the loaded model and tokenizer): how benchmarks compare them."""
        device, folder, name, source, threads = self._where
        other = copy.copy(self)
        other._runtime = self._runtime if backend == self._runtime.name else open_backend(self._model, device, folder, name, source, threads, backend)
        return other

    def token_lengths(self, texts: list[str]) -> list[int]:
        return self._inputs(texts)[1]

    def _inputs(self, texts: list[str]) -> tuple[list[Features], list[int]]:
        """Each text's token arrays and its length, from one tokenizer call for the whole call: the tokenizer
        sentence-transformers set up (its normaliser lowercases where the model does; truncation at the model's
        max tokens), without the padding and tensor conversion its ``preprocess`` adds. Tokenising each batch again
        through ``preprocess`` cost 0.25 s of every 1,500 WordNet glosses (the tokenizer alone: 0.07 s), on the
        cores the model runs on."""
        encoded = self._model.tokenizer(texts, truncation="longest_first", max_length=self._max_tokens)
        rows = [{key: np.asarray(ids[i], dtype=np.int64) for key, ids in encoded.items()} for i in range(len(texts))]
        return rows, [len(row["attention_mask"]) for row in rows]

    def _features(self, rows: list[Features]) -> Features:
        """One batch's arrays, padded to its longest text as the tokenizer pads: the same arrays as tokenising the batch."""
        longest = max(len(row["attention_mask"]) for row in rows)
        out: Features = {}
        for key, first in rows[0].items():
            batch = np.full((len(rows), longest), self._pad_values.get(key, 0), dtype=first.dtype)
            for i, row in enumerate(rows):
                length = len(row[key])
                batch[i, slice(longest - length, longest) if self._pad_left else slice(0, length)] = row[key]
            out[key] = batch
        return out

    @property
    def streams(self) -> int:
        return self._runtime.streams

    def _pooled(self, batches: Iterator[list[Features]]) -> list[np.ndarray]:
        return self._pooled_on(self._runtime, batches)

    def _pooled_on(self, runtime: Runtime, batches: Iterator[list[Features]]) -> list[np.ndarray]:
        return [pooled for _, pooled in runtime.run_many(self._features(b) for b in batches)]

    def _encode_with(self, runtime: Runtime, texts: list[str]) -> np.ndarray:
        """The shared path with a given runtime: how backends are checked and timed before one is chosen."""
        rows = run_batches(*self._inputs(texts), self.policy, lambda batches: self._pooled_on(runtime, batches), None, runtime.streams)
        return l2_normalize(np.stack(rows))

    def _tokens(self, batches: Iterator[list[Features]]) -> list[list[np.ndarray]]:
        features: list[Features] = []  # kept as the runtime draws them: their masks say which tokens to keep

        def drawn() -> Iterator[Features]:
            for batch in batches:
                features.append(self._features(batch))
                yield features[-1]

        outputs = self._runtime.run_many(drawn())
        out = []
        for f, (tokens, _) in zip(features, outputs, strict=True):
            keep = f["attention_mask"].astype(bool) & ~np.isin(f["input_ids"], self._special_ids)
            out.append([l2_normalize(tokens[row][keep[row]].astype(np.float32)) for row in range(len(keep))])
        return out
