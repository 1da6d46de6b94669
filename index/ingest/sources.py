"""Batch build sources: JSONL, Parquet and .npy files, read row by row into points.

A row that cannot be read becomes an InvalidInput carrying its row number (and for JSONL its byte
offset), so the build can fail with it or skip it. Rows go through the same value policy as the HTTP
edge (index/validation.py). A file that is not of its declared format fails the build with
``invalid_<format>``. Messages never quote the file: it is data, and they reach whoever reads the job.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from encoders.errors import InvalidInput
from index.requests import PointInput
from index.validation import (
    bad_row,
    check_payload,
    check_point_id,
    check_text,
    check_vector,
    checked,
    is_readable_file,
    jsonl_lines,
    jsonl_rows,
    parse_json,
    path_point_id,
)

Format = Literal["jsonl", "parquet", "npy"]
RowResult = PointInput | InvalidInput
FIELDS = ("id", "text", "vector", "vectors", "payload")
READ_ROWS = 4096  # .npy rows a file read brings in (6 MiB of 384-d float32)


def point_from_mapping(row: int, data: Any) -> RowResult:
    """Shape and value checks of one row; checks that need the collection (dimension, zero vector) are its own."""
    if not isinstance(data, Mapping):
        return bad_row(row, "a row must be an object with 'id' and 'text' or 'vector'")
    unknown = [k for k in data if k not in FIELDS]
    if unknown:  # counted, not named: the names are the file's content
        return bad_row(row, f"{len(unknown)} unknown field(s); rows have {', '.join(FIELDS)}")
    if data.get("id") is None:
        return bad_row(row, "missing 'id'", code="missing_id")
    text, vector, vectors, payload = data.get("text"), data.get("vector"), data.get("vectors"), data.get("payload")
    try:
        point_id = checked(row, "id", check_point_id, data["id"])
        if text is not None and not isinstance(text, str):
            return bad_row(row, "'text' must be a string")
        if text is not None:
            checked(row, "text", check_text, text)
        if vector is not None:
            checked(row, "vector", check_vector, vector)
        if vectors is not None:  # a multi-vector point's token vectors; the collection checks their shape
            if not isinstance(vectors, list | tuple | np.ndarray):
                return bad_row(row, "'vectors' must be an array of vectors")
            vectors = [checked(row, "vectors", check_vector, v) for v in vectors]
        if isinstance(payload, str):  # Parquet files often carry payloads as JSON text
            try:
                payload = parse_json(payload)
            except ValueError:
                return bad_row(row, "'payload' text is not JSON")
        checked(row, "payload", check_payload, payload)
    except InvalidInput as err:
        return err
    return PointInput(id=point_id, text=text, vector=vector, vectors=vectors, payload=payload)


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
            if not is_readable_file(path):
                which = "ids file" if path == self.ids_path else "source file"
                raise InvalidInput(f"cannot read the {which} {path.name[:100]!r}: no such file", code="source_unreadable")

    def count(self) -> int:
        """Rows in the file, read cheaply (line count, Parquet metadata, array header)."""
        with self._format_errors():
            if self.format == "jsonl":
                return sum(1 for _ in jsonl_rows(self.path))
            if self.format == "parquet":
                import pyarrow.parquet as pq

                return int(pq.ParquetFile(self.path).metadata.num_rows)
            return int(self._matrix().shape[0])

    def rows(self) -> Iterator[RowResult]:
        """Rows in file order, numbered from 1 (JSONL rows count non-blank lines)."""
        readers = {"jsonl": self._jsonl, "parquet": self._parquet, "npy": self._npy}
        with self._format_errors():
            yield from readers[self.format]()

    @contextmanager
    def _format_errors(self) -> Iterator[None]:
        """A file that its format's reader refuses fails with a fixed message: readers' own messages quote content."""
        import pyarrow as pa

        try:
            yield
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise InvalidInput(f"the source file is not a readable {self.format} file", code=f"invalid_{self.format}") from exc

    def _jsonl(self) -> Iterator[RowResult]:
        for row, data in jsonl_lines(self.path):
            yield data if isinstance(data, InvalidInput) else point_from_mapping(row, data)

    def _parquet(self) -> Iterator[RowResult]:
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=4096):
            for data in batch.to_pylist():
                row += 1
                yield point_from_mapping(row, {k: v for k, v in data.items() if v is not None})

    def _matrix(self) -> np.ndarray:
        matrix = np.load(self.path, mmap_mode="r", allow_pickle=False)
        if not isinstance(matrix, np.ndarray) or matrix.ndim != 2 or matrix.dtype.kind not in "iuf":
            raise InvalidInput("builds from .npy need one 2-d (rows, dim) array of numbers", code="invalid_npy")
        return matrix

    def _npy(self) -> Iterator[RowResult]:
        matrix = self._matrix()
        ids = self._npy_ids(len(matrix))
        for start, block in npy_blocks(self.path, matrix):
            try:  # one check for a whole block; a block that fails is checked row by row to name its rows
                vectors: np.ndarray | None = check_vector(block)
            except InvalidInput:
                vectors = None
            for offset in range(len(block)):
                row = start + offset
                try:
                    vector = vectors[offset] if vectors is not None else checked(row + 1, "vector", check_vector, block[offset])
                    yield PointInput(id=checked(row + 1, "id", check_point_id, ids[row]), vector=vector)
                except InvalidInput as err:
                    yield err

    def _npy_ids(self, n: int) -> list[Any]:
        if self.ids_path is None:
            return list(range(n))
        if self.ids_path.suffix == ".npy":
            ids = np.load(self.ids_path, allow_pickle=False).tolist()
        else:
            ids = []
            for row, start, line in jsonl_rows(self.ids_path):
                try:
                    ids.append(path_point_id(line.decode("utf-8").strip()) if line is not None else None)
                except UnicodeDecodeError as exc:
                    raise bad_row(row, f"ids file not UTF-8 at byte {start + exc.start}", "invalid_utf8", byte=start + exc.start) from None
        if len(ids) != n:
            raise InvalidInput(f"the ids file has {len(ids)} ids for {n} rows", code="ids_mismatch", details={"ids": len(ids), "rows": n})
        return ids


def npy_blocks(path: Path, matrix: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) blocks of an .npy's matrix, read by file reads into fresh arrays. Read through its
    memory map instead, every page would be faulted in inside numpy calls that hold the GIL (queries stalled
    behind a build) and stay resident until the build ends, the whole file in the server's RSS."""
    if not matrix.flags.c_contiguous or not isinstance(matrix, np.memmap):  # Fortran order: rows are not runs of bytes
        for start in range(0, len(matrix), READ_ROWS):
            yield start, np.array(matrix[start : start + READ_ROWS])
        return
    with open(path, "rb") as f:
        f.seek(matrix.offset)
        for start in range(0, len(matrix), READ_ROWS):
            block = np.empty((min(READ_ROWS, len(matrix) - start), *matrix.shape[1:]), matrix.dtype)
            if f.readinto(block.reshape(-1).view(np.uint8)) != block.nbytes:
                raise InvalidInput("the .npy file is shorter than its header says", code="invalid_npy")
            yield start, block
