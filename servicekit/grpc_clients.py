"""Channels to peer services and the call wrapper that sets a deadline and turns failures into domain errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from servicekit.grpc_errors import translate_rpc_error
from servicekit.grpc_server import MAX_MESSAGE_BYTES
from servicekit.keepalive import client_keepalive_options
from servicekit.mesh_auth import MeshCredentials
from servicekit.trace_propagation import call_metadata_interceptors

Resp = TypeVar("Resp")

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Ping idle connections so a dead peer is noticed before a call; the servers accept exactly these pings.
    *client_keepalive_options(),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def open_channel(address: str, *, tracing: bool = True, mesh: MeshCredentials | None = None) -> grpc.aio.Channel:
    """A channel to `address`; with tracing, each call carries the current trace context (the server's span
    continues the trace; see `trace_propagation` for why clients record no span of their own).

    With `mesh`, every call carries the mesh credential (token and caller name), over mutual TLS when it has
    certificates; without it the channel is plain and anonymous (health probes, tests of a bare servicer).
    """
    interceptors = call_metadata_interceptors(static=mesh.metadata() if mesh else (), propagate_context=tracing)
    if mesh is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors)
    options = [*CHANNEL_OPTIONS, *mesh.channel_options()]
    tls = mesh.channel_credentials()
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, tls, options=options, interceptors=interceptors)


async def call(
    method: Callable[..., Awaitable[Resp]], request: Any, *, timeout: float, wait_for_ready: bool = True
) -> Resp:
    """Invoke a unary RPC with a deadline; a failure is raised as the matching `OmniError`.

    By default the call waits for the channel to be ready (within the deadline) instead of failing at once while a
    peer is starting or being restarted by the launcher: a hop inside the mesh should ride out a restart, and the
    deadline bounds it. The gateway passes `wait_for_ready=False` so a client learns at once (503) that a service
    is down.
    """
    try:
        return await method(request, timeout=timeout, wait_for_ready=wait_for_ready)
    except grpc.aio.AioRpcError as exc:
        raise translate_rpc_error(exc) from None
