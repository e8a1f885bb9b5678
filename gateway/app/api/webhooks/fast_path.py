"""Serves the Evolution webhook straight from the ASGI stack, ahead of FastAPI's routing and dependency injection.

The webhook is the hot path: every WhatsApp message crosses it, and Evolution retries (duplicates) anything slower
than its timeout. Profiled under load, FastAPI's router, dependency resolution and request/response wrappers took
~60% of the gateway's CPU per webhook while the endpoint's own work (a JSON check and one gRPC call) took ~20%. This
middleware runs inside FastAPI's app (so its request span still starts the message's trace and its error
middleware still guards it) but before the router, and calls the same `forward` as the documented route.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app.api import deps
from gateway.app.api.errors import error_response
from gateway.app.api.webhooks.evolution import forward, webhook_headers
from gateway.app.mesh import IngressStub
from servicekit import errors

PREFIX = "/api/v1/webhook/evolution/"


class EvolutionWebhookFastPath:
    """Pure ASGI middleware answering POST /api/v1/webhook/evolution/{instance}[/{event_suffix}]."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(PREFIX):
            await self._app(scope, receive, send)
            return
        segments = path[len(PREFIX) :].split("/")
        if not 1 <= len(segments) <= 2 or not all(segments):
            await self._app(scope, receive, send)
            return
        app = scope["app"]
        body = await _read_body(receive)
        response: Response
        try:
            stub = await _ingress_stub(app)
            status, payload = await forward(stub, app.state.settings, segments[0], body, webhook_headers(scope))
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


async def _ingress_stub(app: Any) -> IngressStub:
    """The ingress stub the documented route would get (dependency overrides included, as tests use them)."""
    override = app.dependency_overrides.get(deps.get_ingress_stub)
    if override is not None:
        stub: IngressStub = await override()
        return stub
    mesh = getattr(app.state, "mesh", None)
    if mesh is None:
        raise errors.UnavailableError("the gateway is not connected to the mesh yet", reason="GATEWAY_STARTING")
    ingress: IngressStub = mesh.ingress
    return ingress
