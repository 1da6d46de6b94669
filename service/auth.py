"""API keys: read-write keys, read-only keys, or (with none configured) localhost only."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from service.errors import Forbidden, Unauthenticated
from service.settings import Settings


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("api-key")


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in {"localhost", "testclient"}


def _matches(key: str, keys: list[str]) -> bool:
    return any(hmac.compare_digest(key, k) for k in keys)


def check_access(request: Request, settings: Settings, write: bool) -> None:
    if not settings.auth_enabled:
        if _is_loopback(request):
            return
        raise Unauthenticated(
            "no API keys are configured, so only clients on this machine are served; set TROVE_API_KEYS to serve others",
            code="unauthenticated",
        )
    key = _presented_key(request)
    if not key:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>' or an 'api-key' header")
    if _matches(key, settings.api_keys):
        return
    if _matches(key, settings.read_only_api_keys):
        if write:
            raise Forbidden("this API key is read-only", code="read_only_key")
        return
    raise Unauthenticated("unknown API key", code="invalid_api_key")
