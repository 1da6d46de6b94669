"""Crash-safe writes: a file or folder appears whole under its final name, or not at all.

Every write goes to a temporary name in the same folder, is fsynced, renamed over the final name, and the
folder itself is fsynced so the rename survives power loss (POSIX makes rename atomic, not durable).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

TMP_PREFIX = ".tmp-"


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_file(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` fills a temporary file that then replaces ``path`` durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes) -> None:
    write_file(path, lambda f: f.write(data))


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_bytes(path, json.dumps(data, indent=2).encode())


def write_npy(path: Path, array: np.ndarray) -> None:
    write_file(path, lambda f: np.save(f, array))


def new_temp_dir(parent: Path, name: str) -> Path:
    """An empty folder to fill before ``publish_dir`` gives it its final name (a leftover of a crash is replaced).

    Only ``parent`` itself is created: if its own parent is gone (a dropped collection), this fails rather
    than bring a stray folder back.
    """
    parent.mkdir(exist_ok=True)
    tmp = parent / f"{TMP_PREFIX}{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def publish_dir(tmp: Path, final: Path) -> None:
    """fsync every file in ``tmp`` and the folder, then rename it to ``final`` and fsync the parent."""
    for path in tmp.rglob("*"):
        if path.is_file():
            fsync_file(path)
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def is_temp(path: Path) -> bool:
    return path.name.startswith(TMP_PREFIX)


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
