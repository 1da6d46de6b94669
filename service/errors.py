"""One error body for every failure: {"error": {"code", "message", "details"}}.

Lower layers raise categories from encoders.errors; this module alone knows their HTTP status.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from encoders.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    NotFound,
    NotReady,
    TooLarge,
    TroveError,
    Unsupported,
)
from service.validation import policy_error

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


class ErrorJSONResponse(JSONResponse):
    """Renders whatever an error echoes: a lone surrogate or a NaN in it must not turn a 4xx into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_printable(content), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_printable(str(k)): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value if value is None or isinstance(value, bool | int) else _printable(str(value))


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return ErrorJSONResponse(body, status_code=status, headers=headers)


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
        refused = policy_error(errors)  # the input policy's refusals are 400s with the policy's code
        status, code, first = (400, *refused) if refused else (422, "validation_error", errors[0] if errors else {})
        return error_response(status, code, f"{_where(first)}: {first.get('msg', 'invalid request')}", {"errors": _jsonable(errors)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot parse at all (invalid UTF-8, nesting beyond the parser) with a bare 400.
        code = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


def _where(error: dict[str, Any]) -> str:
    return ".".join(str(p) for p in error.get("loc", ()))


def _jsonable(errors: list[Any]) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]


class UnhandledErrorMiddleware:
    """A genuine 500 answered here, as a response: an exception that reached the server would make uvicorn
    drop the keep-alive connection, and the client's next request on it would be reset."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error")
            if started:  # half a response is out: only closing the connection can end it
                raise
            await error_response(500, "internal_error", "internal error; see the server log")(scope, receive, send)
