"""The gateway's ASGI application class: what must happen to a request before anything records it.

FastAPI's native telemetry opens the request span (with `url.query` as an attribute) in `FastAPI.__call__`, before
any middleware runs. A webhook secret passed as `?secret=` (the opt-in for senders that cannot set headers) must
never reach a span, a trace payload or a log line, so it is moved out of the query string into the
`x-omni-webhook-secret` header here, one step earlier, and the rest of the app only ever sees the header.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from gateway.app.api.edge_trace import detach_caller_context

SECRET_HEADER = b"x-omni-webhook-secret"
SECRET_QUERY_PARAMETER = "secret"
WEBHOOK_PATH_PREFIX = "/api/v1/webhook/"

_TRAILING_EVENT_SUFFIX = re.compile(r"/(?:[a-z]+-)+[a-z]+$|/call$")
"""Evolution's by-events mode appends "/messages-upsert" to the URL string, so with "?secret=s" it lands in the
query value ("s/messages-upsert"); the suffix is cut off again to recover the secret."""


def move_secret_to_header(scope: Scope) -> None:
    """Take `secret` out of a webhook request's query string; put it in the secret header unless one is there."""
    query: bytes = scope.get("query_string") or b""
    if b"secret=" not in query or not str(scope.get("path", "")).startswith(WEBHOOK_PATH_PREFIX):
        return
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    secrets = [value for key, value in pairs if key == SECRET_QUERY_PARAMETER]
    scope["query_string"] = urlencode([(k, v) for k, v in pairs if k != SECRET_QUERY_PARAMETER]).encode("latin-1")
    headers = list(scope.get("headers") or [])
    if secrets and secrets[0] and not any(name.lower() == SECRET_HEADER for name, _ in headers):
        headers.append((SECRET_HEADER, _TRAILING_EVENT_SUFFIX.sub("", secrets[0]).encode("latin-1")))
        scope["headers"] = headers


class OmniGateway(FastAPI):
    """FastAPI, with the webhook secret moved out of the URL before the request span records it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            move_secret_to_header(scope)
            # A caller's traceparent must not choose the message's trace: kept only as a span link (edge_trace).
            detach_caller_context(scope)
        await super().__call__(scope, receive, send)
