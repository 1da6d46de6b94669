"""Models a user adds: check a folder (it loads, embeds a test sentence), copy it into the models dir with a
provenance record, or remove one.

A model dir's sub-folders are the models a server can use, by folder name, found on every listing (no
restart). An install is copied under a dot-prefixed staging name, which the registry never lists, and
renamed into place when complete; a removal renames the folder away before deleting it. So a server
listing the dir meanwhile sees the model whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import AlreadyExists, InvalidInput, NotFound
from encoders.registry import DEFAULT_MODEL, PROVENANCE, Family, folder_family, load_folder

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
TEST_TEXT = "Trove checks a new model by embedding this sentence."
HASH_CHUNK = 1 << 20


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise InvalidInput(
            f"model name {name!r} must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit", code="invalid_model_name", details={"name": name}
        )
    if name == DEFAULT_MODEL:
        raise InvalidInput(f"{DEFAULT_MODEL!r} is the bundled model's name", code="model_name_reserved", details={"name": name})


def check_folder(folder: Path, kind: Family | None = None) -> dict[str, Any]:
    """Load the folder as the model it says it is and embed a test sentence; what it is, or an error naming what is wrong."""
    family = folder_family(folder)
    if kind is not None and kind != family:
        raise InvalidInput(f"{folder} is a {family} model, not a {kind} one", code="wrong_model_kind", details={"path": str(folder), "found": family, "expected": kind})
    started = time.perf_counter()
    try:
        encoder = load_folder(folder.name, folder, str(folder), choose_backend=False)  # the server measures backends on first use
        vector = encoder.encode_docs([TEST_TEXT])
    except Exception as e:  # whatever the loader says (missing weights, bad tokenizer, shape mismatch), said plainly
        raise InvalidInput(f"{folder} looks like a {family} model but does not load: {type(e).__name__}: {e}", code="model_load_failed", details={"path": str(folder), "family": family}) from None
    info = encoder.info
    norm = float(np.linalg.norm(vector))
    if vector.shape != (1, info.dim) or not math.isfinite(norm) or abs(norm - 1.0) > 1e-3:
        raise InvalidInput(
            f"{folder} loads but its test vector has shape {vector.shape} and norm {norm}, expected (1, {info.dim}) of unit length",
            code="model_load_failed",
            details={"path": str(folder)},
        )
    return {
        "family": family,
        "dim": info.dim,
        "kinds": list(info.kinds),
        "max_tokens": info.max_tokens,
        "test_encode": {"text": TEST_TEXT, "norm": round(norm, 6), "first": [round(float(v), 6) for v in vector[0, :4]], "seconds": round(time.perf_counter() - started, 2)},
    }


def folder_digest(folder: Path) -> tuple[str, int, int]:
    """sha256 over every file's relative path and bytes (in path order), the file count and total bytes."""
    digest, files, size = hashlib.sha256(), 0, 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != PROVENANCE):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
        files, size = files + 1, size + path.stat().st_size
    return digest.hexdigest(), files, size


def install(source: Path, models_dir: Path, name: str | None = None, kind: Family | None = None, replace: bool = False, origin: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check ``source`` and copy it to ``models_dir/<name>`` with its provenance record; returns the record."""
    source = source.resolve()
    name = name or source.name
    check_name(name)
    target = models_dir / name
    if target.exists() and not replace:
        raise AlreadyExists(f"a model named {name!r} is already installed in {models_dir}; remove it first or pass --replace", code="model_exists", details={"name": name})
    checked = check_folder(source, kind)
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = models_dir / f".{name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(PROVENANCE))
        sha256, files, size = folder_digest(staging)
        record = {
            "name": name,
            **checked,
            "source": str(source),
            "origin": origin or {"how": "trove models add"},
            "sha256": sha256,
            "files": files,
            "bytes": size,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (staging / PROVENANCE).write_text(json.dumps(record, indent=2))
        if target.exists():
            _discard(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def installed(models_dir: Path, name: str) -> Path:
    check_name(name)
    folder = models_dir / name
    if not folder.is_dir():
        raise NotFound(f"no model {name!r} in {models_dir}", code="model_not_found", details={"name": name})
    return folder


def remove(models_dir: Path, name: str) -> None:
    _discard(installed(models_dir, name))


def _discard(folder: Path) -> None:
    """Rename out of the listing first (one atomic step), then delete."""
    trash = folder.with_name(f".{folder.name}.removed-{os.getpid()}-{time.monotonic_ns()}")
    folder.rename(trash)
    shutil.rmtree(trash)
