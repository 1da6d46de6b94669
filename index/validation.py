"""The input policy: limits and value rules for everything a client can hand Trove.

The HTTP edge (service/validation.py wraps these checks as pydantic types), the build and relevance
file readers and the store all apply these same functions, so a value the edge accepts is a value the
store writes and every read returns unchanged. Each check raises InvalidInput with a stable code and a
message that never repeats the offending value (it may be huge, binary or someone else's data).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import InvalidInput

# ---- limits (README "Limits" states each one) -----------------------------------------------------

MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 65_536
MAX_LABEL_CHARS = 4096  # model names, file paths
MAX_KEY_CHARS = 256  # payload and filter keys
MAX_PAYLOAD_BYTES = 65_536  # as compact UTF-8 JSON
MAX_PAYLOAD_DEPTH = 32  # levels of objects and arrays, the payload object itself being the first
MAX_FILTER_CONDITIONS = 64
MAX_FILTER_VALUES = 1024  # values across all conditions of one filter
MAX_LOOKUP_IDS = 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32; below it values are subnormal
COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,62}")
FILTER_KEY = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
TASK_ID = re.compile(r"[0-9a-f]{32}")  # job and upgrade ids (uuid4 hex)
CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")

# Every code a check below raises: the edge answers these with 400 and the code.
CODES = frozenset(
    {
        "invalid_unicode", "nul_character", "string_too_long", "empty_string", "invalid_name", "invalid_id",
        "invalid_payload", "payload_too_deep", "payload_too_big", "non_finite_number", "number_out_of_range",
        "invalid_number", "non_finite_vector", "subnormal_vector", "invalid_filter", "filter_too_large",
    }
)

Json = Any  # a value json.loads can return


def _invalid(code: str, message: str, **details: Any) -> InvalidInput:
    return InvalidInput(message, code=code, details=details)


def check_string(value: str, max_chars: int) -> str:
    """Valid Unicode (no lone surrogates: they cannot be encoded as UTF-8, so could never be read back), no NUL."""
    if len(value) > max_chars:
        raise _invalid("string_too_long", f"strings here hold at most {max_chars} characters", limit=max_chars)
    if "\x00" in value:
        raise _invalid("nul_character", "strings must not contain NUL (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("invalid_unicode", "strings must be valid Unicode: a lone UTF-16 surrogate is not") from None
    return value


def check_text(value: str) -> str:
    return check_string(value, MAX_TEXT_CHARS)


def check_label(value: str) -> str:
    return check_string(value, MAX_LABEL_CHARS)


def check_collection_name(value: str) -> str:
    # fullmatch: re.match with '$' would let a trailing newline through (and make it a folder name).
    if not COLLECTION_NAME.fullmatch(value):
        raise _invalid("invalid_name", "collection names are 1-63 letters, digits, '_' or '-', starting with a letter or digit")
    return value


def check_task_id(value: str) -> str:
    if not TASK_ID.fullmatch(value):
        raise _invalid("invalid_id", "job and upgrade ids are 32 lowercase hex digits")
    return value


def check_int64(value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise _invalid("number_out_of_range", "integers must fit in 64 bits (signed)", min=INT64_MIN, max=INT64_MAX)
    return value


def check_point_id(value: Any) -> int | str:
    """A point id: a 64-bit integer, or a string of 1..MAX_ID_CHARS characters of valid Unicode without NUL."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _invalid("invalid_id", "point ids are integers or non-empty strings")
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise _invalid("invalid_id", "integer point ids must fit in 64 bits (signed)")
        return value
    if not value:
        raise _invalid("invalid_id", "point ids are integers or non-empty strings")
    try:
        return check_string(value, MAX_ID_CHARS)
    except InvalidInput as err:
        raise _invalid("invalid_id", f"string point ids: {err.message}", **err.details) from None


def path_point_id(segment: str) -> int | str:
    """The id a URL path segment (or a line of an ids file) names: the integer for a canonical decimal
    integer within 64 bits ("7", "-7"; not "07", "+7" or "٧"), else the text itself."""
    if len(segment) <= 20 and CANONICAL_INT.fullmatch(segment) and INT64_MIN <= (number := int(segment)) <= INT64_MAX:
        return number
    return segment


def check_number(value: Any) -> int | float:
    """A JSON number as stored in payloads and compared by filters: a 64-bit integer or a finite double."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid("invalid_number", "expected a number")
    if isinstance(value, int):
        return check_int64(value)
    if not math.isfinite(value):
        raise _invalid("non_finite_number", "numbers must be finite (no NaN or infinity)")
    return value


def check_payload(value: Any) -> dict[str, Json] | None:
    """A JSON object of bounded depth and size whose every key and value reads back exactly as written."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid("invalid_payload", "a payload is a JSON object")
    _check_json(value, 1)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise _invalid("payload_too_big", f"a payload holds at most {MAX_PAYLOAD_BYTES} bytes as JSON", limit=MAX_PAYLOAD_BYTES, size=size)
    return value


def _check_json(value: Json, depth: int) -> None:
    if isinstance(value, dict | list):
        if depth > MAX_PAYLOAD_DEPTH:
            raise _invalid("payload_too_deep", f"payloads nest at most {MAX_PAYLOAD_DEPTH} levels of objects and arrays", limit=MAX_PAYLOAD_DEPTH)
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _invalid("invalid_payload", "payload keys are strings")
                check_string(key, MAX_KEY_CHARS)
                _check_json(item, depth + 1)
        else:
            for item in value:
                _check_json(item, depth + 1)
    elif isinstance(value, str):
        check_string(value, MAX_TEXT_CHARS)
    elif value is not None and not isinstance(value, bool):
        if not isinstance(value, int | float):
            raise _invalid("invalid_payload", "payload values are JSON: objects, arrays, strings, numbers, booleans or null")
        check_number(value)


def check_vector(values: Any) -> Sequence[float]:
    """A vector from a file: numbers (not strings or booleans, which JSON can hold there too), then check_float32."""
    if not isinstance(values, list | tuple | np.ndarray):
        raise _invalid("invalid_number", "a vector is an array of numbers")
    if not isinstance(values, np.ndarray) and not all(type(x) is float or type(x) is int for x in values):  # type(): True is an int
        raise _invalid("invalid_number", "vector elements must be numbers")
    try:
        narrowed = check_float32(np.asarray(values, dtype=np.float64))
    except OverflowError:  # an integer beyond float64
        raise _invalid("non_finite_vector", "vector values must be finite and within float32 range") from None
    return narrowed if isinstance(values, np.ndarray) else values


def check_float32(array: np.ndarray) -> np.ndarray:
    """Values that float32 holds as given, as float32: finite, in range, and zero or normal.

    A value beyond float32 would become infinity, and one below its smallest normal would be flushed or
    lose precision: both would silently change the vector, so both are refused.
    """
    with np.errstate(over="ignore", under="ignore"):
        narrowed = array.astype(np.float32)
    if not np.isfinite(narrowed).all():
        raise _invalid("non_finite_vector", f"vector values must be finite and within float32 range (|x| <= {FLOAT32_MAX:.7g})")
    if ((np.abs(narrowed) < FLOAT32_TINY) & (array != 0)).any():
        raise _invalid("subnormal_vector", f"nonzero vector values must have |x| >= {FLOAT32_TINY:.7g} (smaller ones are not held exactly by float32)")
    return narrowed


def check_filter_key(value: str) -> str:
    check_string(value, MAX_KEY_CHARS)
    if not FILTER_KEY.fullmatch(value):
        raise _invalid("invalid_filter", "filter keys are names of letters, digits, '_' or '-', joined by dots")
    if value.count(".") >= MAX_PAYLOAD_DEPTH:
        raise _invalid("invalid_filter", f"filter keys name at most {MAX_PAYLOAD_DEPTH} levels")
    return value


def check_filter_size(conditions: int, values: int) -> None:
    if conditions > MAX_FILTER_CONDITIONS or values > MAX_FILTER_VALUES:
        raise _invalid(
            "filter_too_large",
            f"a filter has at most {MAX_FILTER_CONDITIONS} conditions and {MAX_FILTER_VALUES} values in all",
            conditions=conditions,
            values=values,
        )


# ---- files ----------------------------------------------------------------------------------------

MAX_LINE_BYTES = 16 * 1024 * 1024  # one JSONL row; a longer line is a bad row, never read into memory whole


class _NotJson(ValueError):
    pass


def _no_constants(name: str) -> None:
    raise _NotJson(f"{name} is not JSON")


def parse_json(text: str) -> Json:
    """Strict JSON: no NaN or Infinity; nesting too deep for the parser and over-long integers are errors too."""
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise _NotJson("nested too deeply") from None
    except (json.JSONDecodeError, _NotJson):
        raise
    except ValueError:  # the interpreter's limit on integer digits
        raise _NotJson("a number with too many digits") from None


def is_readable_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name longer than the file system takes
        return False


def jsonl_rows(path: Path) -> Iterator[tuple[int, int, bytes | None]]:
    """(row, byte offset, line) for each non-blank line, rows numbered from 1; the line is None when it
    is longer than MAX_LINE_BYTES (it is skipped unread, so a file without newlines never fills memory)."""
    with open(path, "rb") as f:
        row, offset = 0, 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            start, offset = offset, offset + len(raw)
            line: bytes | None = raw
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                line, tail = None, raw
                while tail and not tail.endswith(b"\n"):
                    tail = f.readline(1 << 20)
                    offset += len(tail)
            elif not raw.strip():
                continue
            row += 1
            yield row, start, line


def jsonl_lines(path: Path) -> Iterator[tuple[int, Json | InvalidInput]]:
    """(row, parsed value or the reason it is not one) for each non-blank line.

    Reasons give the row and byte offset but never quote the line: the file is data, and error
    messages reach whoever can read the job.
    """
    for row, start, line in jsonl_rows(path):
        if line is None:
            yield row, bad_row(row, f"line longer than {MAX_LINE_BYTES} bytes at byte {start}", "line_too_long", byte=start)
        else:
            yield row, _json_row(row, start, line)


def _json_row(row: int, start: int, raw: bytes) -> Json | InvalidInput:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = start + exc.start
        return bad_row(row, f"not UTF-8 at byte {byte}", "invalid_utf8", byte=byte)
    try:
        return parse_json(line)
    except json.JSONDecodeError as exc:
        byte = start + len(line[: exc.pos].encode("utf-8"))
        return bad_row(row, f"invalid JSON ({exc.msg}) at byte {byte}", "invalid_json", byte=byte)
    except _NotJson as exc:
        return bad_row(row, f"invalid JSON ({exc}) in the line at byte {start}", "invalid_json", byte=start)


def bad_row(row: int, reason: str, code: str = "bad_row", **details: Any) -> InvalidInput:
    return InvalidInput(f"row {row}: {reason}", code=code, details={"row": row, **details, "reason": reason})


def checked(row: int, field: str, check: Callable[[Any], Any], value: Any) -> Any:
    """``check(value)``, with its InvalidInput restated for a file row and field."""
    try:
        return check(value)
    except InvalidInput as err:
        raise bad_row(row, f"{field}: {err.message}", err.code) from None
