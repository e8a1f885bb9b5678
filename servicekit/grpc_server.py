"""The gRPC server bootstrap every service shares: interceptors, health, reflection and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from servicekit.grpc_errors import ErrorMappingInterceptor
from servicekit.keepalive import server_keepalive_options
from servicekit.mesh_auth import MeshAuthInterceptor, ServerAuth
from servicekit.runner import stop_signal
from servicekit.trace_propagation import TraceContextServerInterceptor

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 160 * 1024 * 1024
"""Evolution may post base64 media of ~135 MB (its own body limit is 136 MB)."""

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    # Accept the keepalive pings the mesh's clients send on idle channels (see `servicekit.keepalive`): with gRPC's
    # defaults the server answers them with GOAWAY "too_many_pings" and the idle channel is dropped.
    *server_keepalive_options(),
]


def error_domain(service: str) -> str:
    """The `ErrorInfo.domain` of a service's errors: "omni.<service>", one spelling for every service."""
    return f"omni.{service}"


def new_server(service: str, *, tracing: bool = True, auth: ServerAuth | None = None) -> grpc.aio.Server:
    """A grpc.aio server that continues the caller's trace (when tracing) and maps domain errors to statuses, with
    the error domain of `service` ("router" -> "omni.router").

    With `auth` every call but health and reflection must carry the mesh credential (or an API key, on the public
    RPCs); its check runs first, so a refused call costs no span. Without it (in-process tests of one servicer) the
    caller is the mesh.
    """
    interceptors: list[Any] = [MeshAuthInterceptor(auth)] if auth is not None else []
    if tracing:
        interceptors.append(TraceContextServerInterceptor())
    interceptors.append(ErrorMappingInterceptor(error_domain(service)))
    return grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)


def add_health_and_reflection(
    server: grpc.aio.Server, service_names: Sequence[str], *, reflection_enabled: bool = True
) -> HealthServicer:
    """Register the standard health service (SERVING for each name and for "") and, when enabled, reflection (off
    in production: it hands anyone a map of the mesh)."""
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if reflection_enabled:
        reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    return servicer


async def set_serving(servicer: HealthServicer, service_names: Sequence[str], serving: bool) -> None:
    """Flip every listed service (and the overall "" entry) to SERVING or NOT_SERVING."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await servicer.set(name, status)


def bind(server: grpc.aio.Server, host: str, port: int, *, auth: ServerAuth | None = None) -> int:
    """Bind a port, with mutual TLS when `auth` has certificates (plain otherwise); port 0 picks a free one.
    Returns the bound port."""
    tls = auth.credentials.server_credentials() if auth is not None else None
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, tls) if tls is not None else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"could not bind gRPC port {host}:{port}")
    return bound


async def serve_until_signalled(
    server: grpc.aio.Server,
    health_servicer: HealthServicer,
    service_names: Sequence[str],
    *,
    grace: float,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain: NOT_SERVING, stop accepting, let RPCs finish within `grace`."""
    stop = stop_signal()
    await set_serving(health_servicer, service_names, True)
    await stop.wait()
    log.info("shutting down (grace %.1fs)", grace)
    await health_servicer.enter_graceful_shutdown()
    stopping = asyncio.ensure_future(server.stop(grace))
    if on_shutdown is not None:
        await on_shutdown()
    await stopping
