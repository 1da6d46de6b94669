"""The input policy at the HTTP edge: pydantic types that apply index/validation.py's checks.

Every string, id, name, payload, vector, filter value and path that a request carries is one of these
types (request bodies in service/schemas.py, path parameters through ``check_path_parameters``, which
the app runs for every route). A value a check refuses is a 400 whose code is the check's; the same
checks run again in the file readers of jobs and in the store, so nothing the edge lets through can
fail to read back. The JSON schema of each type states its limits, so clients and fuzzers see them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from encoders.errors import InvalidInput
from index import validation as policy

# pydantic's own error types that the policy answers with a 400 of its own code: in strict mode a string
# (or a boolean) where a number belongs is a float_type or int_type error.
BUILTIN_CODES = {"finite_number": "non_finite_number", "string_unicode": "invalid_unicode", "float_type": "invalid_number", "int_type": "invalid_number"}


def pydantic_error(err: InvalidInput) -> PydanticCustomError:
    # Braces would be read as pydantic's message placeholders.
    return PydanticCustomError(err.code, err.message.replace("{", "{{").replace("}", "}}"))


def _applying(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(value: Any) -> Any:
        try:
            return check(value)
        except InvalidInput as err:
            raise pydantic_error(err) from None

    return run


def _float32(values: list[float]) -> np.ndarray:
    # pydantic (strict) has already refused strings and booleans, and made the integers floats. The checked
    # float32 array is what the index takes, so a vector is converted once, here.
    return policy.check_float32(np.asarray(values, dtype=np.float64))


def _by_type(value: Any) -> str | None:
    """The member of a JSON scalar union a value belongs to: errors then name one member, not all."""
    return {bool: "bool", int: "int", float: "float", str: "string", list: "array"}.get(type(value))


def _schema(**keywords: Any) -> Any:
    return Field(json_schema_extra=keywords)


def _integral(value: Any) -> Any:
    # JSON has one number type: 5.0 is the integer 5 (as JSON Schema's "integer" says); 5.5 and "5" stay refused.
    return int(value) if type(value) is float and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
Seed = Annotated[Integer, Field(ge=0, le=2**32 - 1)]
# No NUL, said in the schema too (as "not containing", which generators meet by filtering, not by building
# every string from a pattern). Lone surrogates cannot be said there: JSON Schema patterns see UTF-16.
NO_NUL = {"not": {"pattern": "\\u0000"}}
CollectionName = Annotated[
    str,
    AfterValidator(_applying(policy.check_collection_name)),
    _schema(pattern=f"^{policy.COLLECTION_NAME.pattern}$", minLength=1, maxLength=63),
]
Int64 = Annotated[int, AfterValidator(_applying(policy.check_int64)), _schema(minimum=policy.INT64_MIN, maximum=policy.INT64_MAX)]
_IntId = Annotated[int, AfterValidator(_applying(policy.check_point_id)), _schema(minimum=policy.INT64_MIN, maximum=policy.INT64_MAX)]
_StrId = Annotated[str, AfterValidator(_applying(policy.check_point_id)), _schema(minLength=1, maxLength=policy.MAX_ID_CHARS, **NO_NUL)]
PointIdIn = Annotated[
    Annotated[_IntId, Tag("int")] | Annotated[_StrId, Tag("string")],
    Discriminator(_by_type, custom_error_type="invalid_id", custom_error_message="point ids are integers or non-empty strings"),
]
Text = Annotated[str, AfterValidator(_applying(policy.check_text)), _schema(maxLength=policy.MAX_TEXT_CHARS, **NO_NUL)]
Label = Annotated[str, AfterValidator(_applying(policy.check_label)), _schema(maxLength=policy.MAX_LABEL_CHARS, **NO_NUL)]
Vector = Annotated[
    list[Annotated[float, Field(allow_inf_nan=True)]],  # NaN and infinity are the vector check's to name
    AfterValidator(_applying(_float32)),
    _schema(description=f"Finite numbers that float32 holds: |x| <= {policy.FLOAT32_MAX:.7g}, and 0 or |x| >= {policy.FLOAT32_TINY:.7g}."),
]
Payload = Annotated[
    dict[str, Any],
    AfterValidator(_applying(policy.check_payload)),
    _schema(
        description=(
            f"A JSON object: at most {policy.MAX_PAYLOAD_BYTES} bytes as JSON, {policy.MAX_PAYLOAD_DEPTH} levels deep, keys of at most "
            f"{policy.MAX_KEY_CHARS} characters, integers within 64 bits, finite numbers, strings without NUL or lone surrogates."
        )
    ),
]
FilterKey = Annotated[
    str,
    AfterValidator(_applying(policy.check_filter_key)),
    _schema(pattern=f"^{policy.FILTER_KEY.pattern}$", maxLength=policy.MAX_KEY_CHARS),
]
Scalar = Annotated[
    Annotated[bool, Tag("bool")] | Annotated[Int64, Tag("int")] | Annotated[float, Tag("float")] | Annotated[Text, Tag("string")],
    Discriminator(_by_type, custom_error_type="invalid_filter", custom_error_message="filter values are strings, numbers or booleans"),
]
TextOrVector = Annotated[
    Annotated[Text, Tag("string")] | Annotated[Vector, Tag("array")],
    Discriminator(_by_type, custom_error_type="invalid_query_sample", custom_error_message="query samples are texts or vectors"),
]
TaskId = Annotated[str, AfterValidator(_applying(policy.check_task_id)), _schema(pattern=f"^{policy.TASK_ID.pattern}$")]
PathPointId = Annotated[
    str,
    AfterValidator(_applying(policy.check_point_id)),
    _schema(
        minLength=1,
        maxLength=policy.MAX_ID_CHARS,
        **NO_NUL,
        description="An id as URL text: a canonical decimal integer names the integer id when one exists. POST .../points/lookup reads any id.",
    ),
]


# Path parameters of the routes, by name: checked for every route by one app-wide dependency.
PATH_PARAMETERS: dict[str, TypeAdapter[Any]] = {
    "name": TypeAdapter(CollectionName),
    "point_id": TypeAdapter(PathPointId),
    "job_id": TypeAdapter(TaskId),
    "upgrade_id": TypeAdapter(TaskId),
}


async def check_path_parameters(request: Request) -> None:
    errors: list[Any] = []
    for key, value in request.path_params.items():
        if (adapter := PATH_PARAMETERS.get(key)) is not None:
            try:
                adapter.validate_python(value)
            except ValidationError as exc:
                errors += [{**e, "loc": ("path", key)} for e in exc.errors()]
    if errors:
        raise RequestValidationError(errors)


def policy_error(errors: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """The first error a policy check raised, with its code; None when all are plain schema errors (422)."""
    for error in errors:
        code = BUILTIN_CODES.get(error.get("type", ""), error.get("type", ""))
        if code in policy.CODES:
            return code, error
    return None
