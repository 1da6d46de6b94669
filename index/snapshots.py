"""FAISS snapshots on disk: ``index/<seq>.faiss`` covers every operation up to ``seq``.

Written to a temporary file, fsynced and renamed, so a crash leaves either the
old snapshot or the new one, never half of one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
SUFFIX = ".faiss"
KEEP = 2  # the newest plus one fallback in case the newest cannot be read


def snapshots(folder: Path, suffix: str = SUFFIX) -> list[tuple[int, Path]]:
    """(seq, path), newest first."""
    if not folder.is_dir():
        return []
    found = [(int(p.stem), p) for p in folder.glob(f"*{suffix}") if p.stem.isdigit()]
    return sorted(found, reverse=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_snapshot(folder: Path, seq: int, tmp: Path, suffix: str = SUFFIX) -> Path:
    """Make a fully written temporary file the snapshot for ``seq`` and prune old ones."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    final = folder / f"{seq:012d}{suffix}"
    os.replace(tmp, final)
    _fsync_dir(folder)
    for _, old in snapshots(folder, suffix)[KEEP:]:
        old.unlink(missing_ok=True)
    return final


def temp_path(folder: Path, seq: int, suffix: str = SUFFIX) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f".{seq:012d}{suffix}.tmp"
