"""Error categories shared by every layer.

The service maps each category to one HTTP status; lower layers raise them
without knowing about HTTP. Each error carries a stable snake_case ``code``.
"""

from __future__ import annotations

from typing import Any


class TroveError(Exception):
    """Base class: ``code`` is stable and machine-readable, ``details`` is JSON-able."""

    default_code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details or {}


class InvalidInput(TroveError):
    default_code = "invalid_input"


class NotFound(TroveError):
    default_code = "not_found"


class AlreadyExists(TroveError):
    default_code = "already_exists"


class Conflict(TroveError):
    default_code = "conflict"


class TooLarge(TroveError):
    default_code = "payload_too_large"


class NotReady(TroveError):
    default_code = "not_ready"


class Unsupported(TroveError):
    """A valid request for something this build does not do (yet)."""

    default_code = "unsupported"


class Cancelled(TroveError):
    """Long work stopped at a checkpoint because someone asked it to; nothing was changed."""

    default_code = "cancelled"
