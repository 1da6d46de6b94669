"""On-disk cache of text embeddings, so benchmarks encode a corpus once rather than on every run."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

CHUNK = 4096  # texts per encode call: large enough to keep batches full, small enough for a live progress bar


def cache_dir() -> Path:
    """TROVE_BENCH_CACHE if set, else bench/cache in the repo (git-ignored); created on demand."""
    forced = os.environ.get("TROVE_BENCH_CACHE")
    path = Path(forced) if forced else Path(__file__).resolve().parent / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def texts_sha256(texts: list[str]) -> str:
    # NUL cannot occur inside the texts, so distinct lists never join to the same string.
    return hashlib.sha256("\0".join(texts).encode("utf-8")).hexdigest()


def _load_if_fresh(npy: Path, meta_path: Path, model_name: str, digest: str, count: int) -> np.ndarray | None:
    if not (npy.exists() and meta_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("model") != model_name or meta.get("sha256") != digest:
        return None
    vectors = np.load(npy)
    return vectors if vectors.shape[0] == count else None


def _encode_chunked(texts: list[str], encode: Callable[[list[str]], np.ndarray], tag: str) -> np.ndarray:
    parts: list[np.ndarray] = []
    with tqdm(total=len(texts), desc=f"encode {tag}", unit="text") as bar:
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start : start + CHUNK]
            parts.append(np.asarray(encode(chunk), dtype=np.float32))
            bar.update(len(chunk))
    return np.concatenate(parts, axis=0)


def cached_embeddings(
    tag: str,
    texts: list[str],
    encode: Callable[[list[str]], np.ndarray],
    model_name: str,
) -> np.ndarray:
    """Vectors for `texts` from `<tag>.npy`, re-encoding when the model or the texts changed."""
    folder = cache_dir()
    npy, meta_path = folder / f"{tag}.npy", folder / f"{tag}.json"
    digest = texts_sha256(texts)
    cached = _load_if_fresh(npy, meta_path, model_name, digest, len(texts))
    if cached is not None:
        return cached

    started = time.perf_counter()
    vectors = _encode_chunked(texts, encode, tag)
    seconds = time.perf_counter() - started

    _save(npy, vectors)
    _save_meta(meta_path, model=model_name, dim=int(vectors.shape[1]), count=int(vectors.shape[0]), sha256=digest, encode_seconds=seconds)
    return vectors


def _save(path: Path, array: np.ndarray) -> None:
    # Write to a temporary name and rename, so an interrupted run never leaves a half-written cache behind.
    tmp = path.with_name(path.name.replace(".npy", ".tmp.npy"))
    np.save(tmp, array)
    tmp.replace(path)


def _save_meta(path: Path, encode_seconds: float, **meta: object) -> None:
    """Written last: its presence (with the model and texts digest) is what makes the cache valid."""
    tmp = path.with_name(path.name.replace(".json", ".tmp.json"))
    record = {**meta, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "encode_seconds": round(encode_seconds, 2)}
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def cached_token_sets(
    tag: str,
    texts: list[str],
    encode_tokens: Callable[[list[str]], list[np.ndarray]],
    model_name: str,
) -> list[np.ndarray]:
    """Per-text token vectors from `<tag>.tokens.npy` (all tokens, concatenated) and `<tag>.offsets.npy`
    (text i owns rows offsets[i]:offsets[i+1]), re-encoding when the model or the texts changed."""
    folder = cache_dir()
    tokens_path, offsets_path, meta_path = (folder / f"{tag}.{part}" for part in ("tokens.npy", "offsets.npy", "json"))
    digest = texts_sha256(texts)
    offsets = _load_if_fresh(offsets_path, meta_path, model_name, digest, len(texts) + 1)
    if offsets is not None and tokens_path.exists():
        tokens = np.load(tokens_path, mmap_mode="r")
        if tokens.shape[0] == offsets[-1]:
            return [np.asarray(tokens[a:b]) for a, b in itertools.pairwise(offsets)]

    started = time.perf_counter()
    sets: list[np.ndarray] = []
    with tqdm(total=len(texts), desc=f"encode tokens {tag}", unit="text") as bar:
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start : start + CHUNK]
            sets += encode_tokens(chunk)
            bar.update(len(chunk))
    seconds = time.perf_counter() - started
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    _save(tokens_path, np.concatenate(sets).astype(np.float32))
    _save(offsets_path, offsets)
    _save_meta(meta_path, model=model_name, dim=int(sets[0].shape[1]), count=len(sets), tokens=int(offsets[-1]), sha256=digest, encode_seconds=seconds)
    return sets
