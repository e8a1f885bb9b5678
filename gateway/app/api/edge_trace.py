"""The public edge starts every request's trace itself; a caller's W3C context becomes a span link, never the parent.

A message's trace id is the handle the API gives out (`trace_id` in acks and send results, `/api/v1/traces/{id}`)
and what the tracing service files spans under. If a stranger's `traceparent` chose it, they could make two
messages share a trace, graft a message into someone else's trace, or pick ids to collide with; `baggage` would
ride into the mesh and on to the agent. So `detach_caller_context`, called by `gateway.app.edge.OmniGateway`,
removes `traceparent`, `tracestate` and `baggage` from the request before FastAPI's telemetry reads them (it
extracts the parent from the headers with the global propagator, outside any middleware), and `LinkCallerTrace`
adds the caller's span context as a link on the request span, which keeps the correlation for a legitimate caller.

Inside the mesh, context still flows as before: the gateway's own span is injected into gRPC metadata.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

CALLER_CONTEXT_KEY = "omni.caller_span_context"
"""Scope key holding the caller's `SpanContext` (a valid one only) from `detach_caller_context` to the link."""

_DROPPED = frozenset({b"traceparent", b"tracestate", b"baggage"})
_W3C = TraceContextTextMapPropagator()


def detach_caller_context(scope: Scope) -> None:
    """Remove the W3C context headers from `scope`, keeping a valid caller span context under CALLER_CONTEXT_KEY."""
    headers = scope.get("headers")
    if not headers or not any(name in _DROPPED for name, _ in headers):
        return
    carrier: dict[str, str] = {}
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name in _DROPPED:
            carrier.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        else:
            kept.append((name, value))
    scope["headers"] = kept
    caller = trace.get_current_span(_W3C.extract(carrier)).get_span_context()
    if caller.is_valid:
        scope[CALLER_CONTEXT_KEY] = caller


class LinkCallerTrace:
    """Pure ASGI middleware: links the current (request) span to the caller context `detach_caller_context` kept."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = scope.get(CALLER_CONTEXT_KEY)
        if caller is not None:
            span = trace.get_current_span()
            if span.is_recording():
                span.add_link(caller, {"omni.link": "caller"})
        await self._app(scope, receive, send)
