"""Batch build sources: JSONL, Parquet and .npy files, read row by row into points.

A row that cannot be read becomes an InvalidInput carrying its row number, so the
build can fail with it or skip it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from encoders.errors import InvalidInput
from index.collection import PointInput

Format = Literal["jsonl", "parquet", "npy"]
RowResult = PointInput | InvalidInput
FIELDS = {"id", "text", "vector", "payload"}


def bad_row(row: int, reason: str, code: str = "bad_row") -> InvalidInput:
    return InvalidInput(f"row {row}: {reason}", code=code, details={"row": row, "reason": reason})


def point_from_mapping(row: int, data: Any) -> RowResult:
    """Shape checks a JSON schema would do; value checks (dimension, NaN, ...) are the collection's."""
    if not isinstance(data, Mapping):
        return bad_row(row, "a row must be an object with 'id' and 'text' or 'vector'")
    unknown = set(data) - FIELDS
    if unknown:
        return bad_row(row, f"unknown fields {sorted(unknown)}; rows have {sorted(FIELDS)}")
    if data.get("id") is None:
        return bad_row(row, "missing 'id'", code="missing_id")
    text, vector, payload = data.get("text"), data.get("vector"), data.get("payload")
    if text is not None and not isinstance(text, str):
        return bad_row(row, "'text' must be a string")
    if vector is not None and (
        not isinstance(vector, list | np.ndarray) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vector)
    ):
        return bad_row(row, "'vector' must be a list of numbers")
    if isinstance(payload, str):  # Parquet files often carry payloads as JSON text
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError:
            return bad_row(row, "'payload' text is not JSON")
    if payload is not None and not isinstance(payload, dict):
        return bad_row(row, "'payload' must be an object")
    return PointInput(id=data["id"], text=text, vector=vector, payload=payload)


@dataclass(frozen=True)
class Source:
    path: Path
    format: Format
    ids_path: Path | None = None  # npy only: one id per row (.npy array or a text file, one per line)

    def __post_init__(self) -> None:
        if self.ids_path is not None and self.format != "npy":
            raise InvalidInput(
                f"'ids_path' names the ids of an npy matrix's rows; {self.format} rows carry their own 'id'",
                code="ids_path_not_supported",
                details={"format": self.format},
            )

    def check_readable(self) -> None:
        for path in [self.path, *([self.ids_path] if self.ids_path else [])]:
            if not path.is_file():
                raise InvalidInput(f"cannot read {path}: no such file", code="source_unreadable", details={"path": str(path)})

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A file that is not what its format says (or vanished) is the caller's input, not a server fault."""
        try:
            yield
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid and ArrowIOError are among these
            raise InvalidInput(f"cannot read {self.path} as {self.format}: {exc}", code="source_unreadable", details={"path": str(self.path)}) from exc

    def count(self) -> int:
        """Rows in the file, read cheaply (line count, Parquet metadata, array header)."""
        with self._reading():
            if self.format == "jsonl":
                with open(self.path, "rb") as f:
                    return sum(1 for line in f if line.strip())
            if self.format == "parquet":
                import pyarrow.parquet as pq

                return int(pq.ParquetFile(self.path).metadata.num_rows)
            return int(np.load(self.path, mmap_mode="r").shape[0])

    def rows(self) -> Iterator[RowResult]:
        """Rows in file order, numbered from 1 (JSONL rows count non-blank lines)."""
        readers = {"jsonl": self._jsonl, "parquet": self._parquet, "npy": self._npy}
        with self._reading():
            yield from readers[self.format]()

    def _jsonl(self) -> Iterator[RowResult]:
        with open(self.path, encoding="utf-8") as f:
            row = 0
            for line in f:
                if not line.strip():
                    continue
                row += 1
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield bad_row(row, f"invalid JSON ({exc.msg} at column {exc.colno})", code="invalid_json")
                    continue
                yield point_from_mapping(row, data)

    def _parquet(self) -> Iterator[RowResult]:
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=4096):
            for data in batch.to_pylist():
                row += 1
                yield point_from_mapping(row, {k: v for k, v in data.items() if v is not None})

    def _npy(self) -> Iterator[RowResult]:
        matrix = np.load(self.path, mmap_mode="r")
        if matrix.ndim != 2 or not (np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)):
            raise InvalidInput(
                f"{self.path} holds a {matrix.ndim}-d {matrix.dtype} array; builds need a 2-d (rows, dim) matrix of numbers",
                code="source_unreadable",
                details={"path": str(self.path), "shape": list(matrix.shape), "dtype": str(matrix.dtype)},
            )
        ids = self._npy_ids(len(matrix))
        for row in range(len(matrix)):
            yield PointInput(id=ids[row], vector=np.asarray(matrix[row], dtype=np.float32))

    def _npy_ids(self, n: int) -> list[Any]:
        if self.ids_path is None:
            return list(range(n))
        if self.ids_path.suffix == ".npy":
            ids = np.load(self.ids_path, allow_pickle=False).tolist()
        else:
            lines = [line.strip() for line in self.ids_path.read_text().splitlines() if line.strip()]
            ids = [int(x) if x.lstrip("-").isdigit() else x for x in lines]
        if len(ids) != n:
            raise InvalidInput(f"{self.ids_path} has {len(ids)} ids for {n} rows", code="ids_mismatch", details={"ids": len(ids), "rows": n})
        return ids
