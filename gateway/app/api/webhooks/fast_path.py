"""Serves every channel's webhook straight from the ASGI stack, ahead of FastAPI's routing and dependency injection.

The webhook is the hot path: every WhatsApp message crosses it, and channels retry (duplicate) anything slower
than their timeout. Profiled under load, FastAPI's router, dependency resolution and request/response wrappers took
~60% of the gateway's CPU per webhook while the endpoint's own work (a JSON check and one gRPC call) took ~20%. This
middleware runs inside FastAPI's app (so its request span still starts the message's trace and its error
middleware still guards it) but before the router, serves the channels of `receivers.WEBHOOK_CHANNELS`, and calls
the same `forward` as the documented routes. It reads the ingress stub from the app's mesh, as the routes'
dependency does.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app.api.deps import mesh_of
from gateway.app.api.errors import error_response
from gateway.app.api.webhooks.receivers import forward, match_webhook, webhook_headers
from servicekit import errors


class WebhookFastPath:
    """Pure ASGI middleware answering POST /api/v1/webhook/{channel}/{instance}[/{event_suffix}]."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = (
            match_webhook(scope.get("path", "")) if scope["type"] == "http" and scope["method"] == "POST" else None
        )
        if matched is None:
            await self._app(scope, receive, send)
            return
        channel, instance_name = matched
        app = scope["app"]
        body = await _read_body(receive)
        response: Response
        try:
            stub = mesh_of(app).ingress
            status, payload = await forward(
                stub, app.state.settings, channel, instance_name, body, webhook_headers(scope)
            )
            response = Response(content=payload, status_code=status, media_type="application/json")
        except errors.OmniError as exc:
            response = error_response(exc)
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
