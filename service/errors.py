"""One error body for every failure: {"error": {"code", "message", "details"}}.

Lower layers raise categories from encoders.errors; this module alone knows their HTTP status.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from encoders.errors import AlreadyExists, Conflict, InvalidInput, NotFound, NotReady, TooLarge, TroveError, Unsupported

log = logging.getLogger(__name__)

STATUS: dict[type[TroveError], int] = {
    InvalidInput: 400,
    Unsupported: 400,
    NotFound: 404,
    AlreadyExists: 409,
    Conflict: 409,
    TooLarge: 413,
    NotReady: 503,
}


class Unauthenticated(TroveError):
    default_code = "unauthenticated"


class Forbidden(TroveError):
    default_code = "forbidden"


class Overloaded(TroveError):
    default_code = "overloaded"


STATUS |= {Unauthenticated: 401, Forbidden: 403, Overloaded: 429}
RETRY_AFTER_S = {Overloaded: "1", NotReady: "2"}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status, headers=headers)


def trove_error_response(exc: TroveError) -> JSONResponse:
    kind = next((k for k in type(exc).__mro__ if k in STATUS), None)
    status = STATUS[kind] if kind else 500
    retry = RETRY_AFTER_S.get(kind) if kind else None  # type: ignore[call-overload]
    return error_response(status, exc.code, exc.message, exc.details, {"Retry-After": retry} if retry else None)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(TroveError)
    async def _trove(_: Request, exc: TroveError) -> JSONResponse:
        return trove_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "invalid_json", "request body is not valid JSON", {"errors": _jsonable(errors)})
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "validation_error", f"{where}: {first.get('msg', 'invalid request')}", {"errors": _jsonable(errors)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the server log")


def _jsonable(errors: list[Any]) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
