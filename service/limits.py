"""Request body size (413) and in-flight request (429) limits, enforced before any handler runs."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from encoders.errors import TooLarge
from service.errors import Overloaded, trove_error_response


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_in_flight: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._slots = asyncio.Semaphore(max_in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = TooLarge(
            f"request body exceeds {self.max_body_bytes} bytes (TROVE_MAX_REQUEST_BYTES); split the batch",
            details={"limit_bytes": self.max_body_bytes},
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await trove_error_response(too_large)(scope, receive, send)
            return
        if self._slots.locked():
            await trove_error_response(Overloaded("too many requests in flight; retry shortly"))(scope, receive, send)
            return
        async with self._slots:
            if length is None and scope["method"] in {"POST", "PUT", "PATCH"}:
                # Chunked bodies carry no length header: read them here, within the limit, before any handler.
                messages: list[Message] = []
                received = 0
                while True:
                    message = await receive()
                    messages.append(message)
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        await trove_error_response(too_large)(scope, receive, send)
                        return
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        break
                replay = iter(messages)

                async def buffered_receive() -> Message:
                    return next(replay, None) or await receive()

                await self.app(scope, buffered_receive, send)
            else:
                await self.app(scope, receive, send)
