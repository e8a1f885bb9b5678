"""Body size and JSON depth limits, enforced before anything parses a request body.

A public edge must not let one request decide how much memory or CPU it gets. This pure ASGI middleware sits in
front of the webhook fast path and of FastAPI's routing, so both read only bodies that already passed it:

- size: a declared `Content-Length` over the limit is refused at once (nothing is read); a chunked body is counted
  while it streams and refused as soon as it crosses the limit. Webhooks and REST have separate limits because
  Evolution posts media as base64 (large), while the REST API's largest body is a send-media call.
- depth: JSON nested deeper than `max_json_depth` is refused with 400. orjson stops at 1024 levels and the standard
  library's parser at Python's recursion limit, but code that walks a payload recursively (snapshots, conversions
  to protobuf `Struct`, whose own limit is 100) deserves a much smaller, explicit bound. The check is
  `json_depth_exceeds`, a few C-speed byte operations instead of a second parse.

Refusals are JSON like every other error (`{"detail", "reason", ...}`), and the body the app then reads is the one
buffered here, replayed as a single message.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.app.api.errors import json_response

WEBHOOK_PATH_PREFIX = "/api/v1/webhook/"

_ESCAPED = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_BRACKETS_ONLY = bytes.maketrans(b"{}", b"[]")
_NOT_A_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON text `body` nests arrays/objects more than `limit` levels deep.

    Linear work in C for ordinary bodies: when the body holds no more than `limit` opening brackets it cannot be
    deeper (two `count` calls, the common case). Otherwise escapes and strings are cut out (brackets inside strings
    do not nest), everything but brackets is dropped, and innermost `[]` pairs are removed one level per round:
    after `limit` rounds a valid document of depth <= limit is gone. At most `limit` rounds, each a `replace` over
    what is left. Text that is not balanced JSON answers False here and is left to the parser to refuse.
    """
    if limit <= 0 or body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", _ESCAPED.sub(b"", body)).translate(_BRACKETS_ONLY, _NOT_A_BRACKET)
    if brackets.count(b"[") <= limit:
        return False
    for _ in range(limit):
        shorter = brackets.replace(b"[]", b"")
        if not shorter:
            return False
        if len(shorter) == len(brackets):
            return False
        brackets = shorter
    return True


class BodyLimits:
    """Pure ASGI middleware: 413 for a body over its route's limit, 400 for JSON nested too deep."""

    def __init__(self, app: ASGIApp, *, rest_limit: int, webhook_limit: int, max_json_depth: int) -> None:
        self._app = app
        self._rest_limit = rest_limit
        self._webhook_limit = webhook_limit
        self._max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared, chunked = _body_headers(scope)
        if (declared is None and not chunked) or declared == 0:
            await self._app(scope, receive, send)
            return
        limit = self._webhook_limit if str(scope.get("path", "")).startswith(WEBHOOK_PATH_PREFIX) else self._rest_limit
        body = None if declared is not None and declared > limit else await _read_body(receive, limit)
        if body is None:
            await _refuse_too_large(limit, scope, receive, send)
            return
        if json_depth_exceeds(body, self._max_json_depth):
            detail = f"JSON nested deeper than {self._max_json_depth} levels"
            response = json_response(400, {"detail": detail, "reason": "JSON_TOO_DEEP", "limit": self._max_json_depth})
            await response(scope, receive, send)
            return
        await self._app(scope, _replay(body, receive), send)


def _body_headers(scope: Scope) -> tuple[int | None, bool]:
    """(declared Content-Length or None, whether the body is chunked); an unreadable length counts as undeclared."""
    declared: int | None = None
    chunked = False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                chunked = True
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as more than `limit` bytes have arrived (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _refuse_too_large(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    body = {"detail": f"request body is larger than {limit} bytes", "reason": "BODY_TOO_LARGE", "limit_bytes": limit}
    # The unread rest of the body would otherwise be the next request on this connection: close it.
    response = json_response(413, body, {"Connection": "close"})
    await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the buffered body once, then the real channel (for the disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
