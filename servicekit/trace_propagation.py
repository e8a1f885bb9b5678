"""Carries the trace context across gRPC hops in metadata (W3C `traceparent`, `tracestate`, `baggage`).

The OTel gRPC instrumentation records a client and a server span for every call: four extra spans per message
whose only content is the method name and a loopback latency, each costing CPU in the caller, the callee and the
tracing service (measured: its server interceptor was 12-17% of ingress's and router's CPU). The services' own spans
(ingress.accept, ingress.dispatch, router.route, agent.call, channels.send) already say what each hop did and how
long it took, so the mesh only propagates the context: clients inject it, servers attach it around the handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate

from servicekit.grpc_handlers import replace_unary_unary
from servicekit.principals import current_principal

Pairs = tuple[tuple[str, str], ...]


def _with_metadata(
    details: grpc.aio.ClientCallDetails, static: Pairs, propagate_context: bool
) -> grpc.aio.ClientCallDetails:
    carrier: dict[str, str] = {}
    if propagate_context:
        propagate.inject(carrier)
    if not carrier and not static:
        return details
    metadata = [*(details.metadata or ()), *static, *carrier.items()]
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, grpc.aio.Metadata(*metadata), details.credentials, details.wait_for_ready
    )


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, static: Pairs, propagate_context: bool) -> None:
        self._static = static
        self._propagate = propagate_context

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_metadata(client_call_details, self._static, self._propagate), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, static: Pairs, propagate_context: bool) -> None:
        self._static = static
        self._propagate = propagate_context

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_metadata(client_call_details, self._static, self._propagate), request)


def call_metadata_interceptors(*, static: Pairs = (), propagate_context: bool = True) -> list[Any]:
    """Client interceptors that add `static` metadata (the mesh credential) and, when `propagate_context`, the
    current trace context to each call. One interceptor does both: every grpc.aio client interceptor wraps the call
    in another task-backed call object, a measurable cost on the message path."""
    if not static and not propagate_context:
        return []
    return [_UnaryUnary(static, propagate_context), _UnaryStream(static, propagate_context)]


def context_propagating_interceptors() -> list[Any]:
    """Client interceptors that put the current trace context into each call's metadata."""
    return call_metadata_interceptors()


_PROPAGATED = frozenset({"traceparent", "tracestate", "baggage"})


class TraceContextServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Makes the caller's trace context current while a unary handler runs, so its spans join the caller's trace.

    Only mesh callers' contexts are continued (the auth interceptor, outside this one, has set the principal): like
    the public HTTP edge, a direct gRPC client's `traceparent` does not choose a trace."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        carrier = {key: str(value) for key, value in metadata if key in _PROPAGATED}
        if handler is None or handler.unary_unary is None or not carrier:
            return handler
        remote = propagate.extract(carrier)
        inner: Any = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            if current_principal().kind != "mesh":
                # A direct client (an API key on a public RPC) does not choose the trace its call joins.
                return await inner(request, context)
            token = otel_context.attach(remote)
            try:
                return await inner(request, context)
            finally:
                otel_context.detach(token)

        return replace_unary_unary(handler, unary_unary)
