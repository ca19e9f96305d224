"""The server's outer wall, as plain ASGI middleware: request bodies over the limit get 413 (by Content-Length
before anything is read, else as soon as the stream passes the limit), and an exception that escapes an
endpoint becomes a 500 JSON answer; the server goes on either way."""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)


class _BodyTooLarge(Exception):
    """Raised inside `receive` once a streamed body passes the limit."""


class RequestGuard:
    """ASGI middleware: the body limit (`max_bytes`) and the last catch of unexpected errors."""

    def __init__(self, app, *, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _send_error(send, *self._too_large() if declared.isdigit() else
                                     (400, f"Content-Length {declared.decode('latin-1')!r} is not a number"))
        started, received = False, 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _BodyTooLarge:
            if not started:
                await _send_error(send, *self._too_large())
        except Exception:  # a bug, never the client's doing: logged with its traceback, and the server goes on
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await _send_error(send, 500, "internal error; the server logged it and goes on")

    def _too_large(self) -> tuple[int, str]:
        return 413, f"the request body is larger than the server's limit of {self.max_bytes / 2**20:g} MB (--max-mb)"


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
