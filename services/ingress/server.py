"""Builds the ingress gRPC server (tests call `create_server` with port 0)."""

from __future__ import annotations

import grpc
from grpc_health.v1._async import HealthServicer
from omni.ingress.v1 import ingress_service_pb2_grpc

from servicekit.grpc_server import add_health_and_reflection, bind, new_server
from servicekit.key_resolver import server_auth
from servicekit.mesh_auth import KeyResolver
from services.ingress.config import Settings
from services.ingress.core.accept import IngressCore
from services.ingress.servicer import BotStatuses, ConnectionEventSink, IngressServicer

SERVICE_NAME = "omni.ingress.v1.IngressService"


def create_server(
    settings: Settings,
    core: IngressCore,
    bot_statuses: BotStatuses,
    *,
    port: int | None = None,
    resolve_key: KeyResolver | None = None,
    connection_events: ConnectionEventSink | None = None,
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """The server with the ingress servicer, health and reflection, bound to `port` (default: the setting).
    Scoped API keys are resolved by `resolve_key`, by default by asking the router."""
    auth = server_auth(settings, "ingress", resolve_key=resolve_key)
    server = new_server("ingress", tracing=settings.enable_tracing, auth=auth)
    ingress_service_pb2_grpc.add_IngressServiceServicer_to_server(
        IngressServicer(core, bot_statuses, connection_events), server
    )
    health = add_health_and_reflection(server, [SERVICE_NAME], reflection_enabled=settings.reflection_enabled)
    bound = bind(server, settings.grpc_host, settings.ingress_grpc_port if port is None else port, auth=auth)
    return server, bound, health
