"""Builds the channels gRPC server: servicer, error mapping, tracing, health and reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1._async import HealthServicer
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc

from servicekit.grpc_server import add_health_and_reflection, bind, new_server
from servicekit.key_resolver import server_auth
from servicekit.mesh_auth import KeyResolver
from services.channels.config import Settings
from services.channels.core.service import ChannelsCore
from services.channels.servicer import ChannelsServicer

SERVICE_NAME = channels_service_pb2.DESCRIPTOR.services_by_name["ChannelsService"].full_name
"""omni.channels.v1.ChannelsService, the name health and reflection report."""


def create_server(
    settings: Settings,
    core: ChannelsCore,
    *,
    port: int | None = None,
    tracing: bool | None = None,
    resolve_key: KeyResolver | None = None,
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """A bound (not yet started) server; `port=0` picks a free port (tests). Returns the server, port, health.
    Scoped API keys are resolved by `resolve_key`, by default by asking the router."""
    auth = server_auth(settings, "channels", resolve_key=resolve_key)
    server = new_server("channels", tracing=settings.enable_tracing if tracing is None else tracing, auth=auth)
    channels_service_pb2_grpc.add_ChannelsServiceServicer_to_server(ChannelsServicer(core), server)
    health = add_health_and_reflection(server, [SERVICE_NAME], reflection_enabled=settings.reflection_enabled)
    bound = bind(server, settings.grpc_host, settings.channels_grpc_port if port is None else port, auth=auth)
    return server, bound, health
