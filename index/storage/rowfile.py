"""Fixed-width rows (codes, reduced or full vectors) kept in a file, read from RAM or through a memory map.

Rows are written at their own offset (``pwrite``); readers only ever look at rows below ``rows``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np


class RowFile:
    """Rows of ``width`` values of ``dtype``; ``in_ram`` keeps a growable copy in memory, else reads map the file."""

    def __init__(self, path: Path, width: int, dtype: type[np.generic], in_ram: bool, rows: int = 0):
        self.path, self.width, self.dtype, self.in_ram = path, width, np.dtype(dtype), in_ram
        self.row_bytes = width * self.dtype.itemsize
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        available = os.fstat(self._fd).st_size // self.row_bytes if self.row_bytes else 0
        if rows > available:
            raise RuntimeError(f"{path} holds {available} rows, expected at least {rows}")
        self.rows = rows
        self._ram = np.fromfile(path, self.dtype, count=rows * width).reshape(rows, width) if in_ram else None
        self._map: tuple[int, np.ndarray] = (0, np.zeros((0, width), self.dtype))
        self._lock = threading.Lock()

    def write(self, first_row: int, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1, self.width)
        os.pwrite(self._fd, values.tobytes(), first_row * self.row_bytes)
        end = first_row + len(values)
        if self._ram is not None:
            ram = self._ram
            if end > len(ram):  # grow geometrically into a new buffer; readers keep the old one
                grown = np.empty((max(end, 2 * len(ram), 1024), self.width), self.dtype)
                grown[: self.rows] = ram[: self.rows]
                ram = grown
            ram[first_row:end] = values
            self._ram = ram
        self.rows = max(self.rows, end)

    def view(self) -> np.ndarray:
        """Rows 0..rows-1: a slice of the RAM copy, or a read-only memory map (re-mapped when rows grew)."""
        rows = self.rows
        if self._ram is not None:
            return self._ram[:rows]
        with self._lock:
            mapped, array = self._map
            if mapped != rows:
                array = np.memmap(self.path, self.dtype, mode="r", shape=(rows, self.width)) if rows else array[:0]
                self._map = (rows, array)
        return array

    def ram_bytes(self) -> int:
        return self.rows * self.row_bytes if self._ram is not None else 0

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
