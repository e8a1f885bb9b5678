"""Builds the router's gRPC server."""

from __future__ import annotations

import grpc
from grpc_health.v1._async import HealthServicer
from omni.router.v1 import access_service_pb2_grpc, router_service_pb2, router_service_pb2_grpc, users_service_pb2_grpc

from servicekit.grpc_server import add_health_and_reflection, bind, new_server
from servicekit.key_resolver import server_auth
from services.router.access_servicer import AccessServicer
from services.router.config import Settings
from services.router.core.api_keys import ApiKeyService
from services.router.core.api_sends import ApiSender
from services.router.core.instances import InstanceService
from services.router.core.router import MessageRouter
from services.router.servicer import RouterServicer
from services.router.users_servicer import UsersServicer

SERVICE_NAME = router_service_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name
"""omni.router.v1.RouterService: the health and reflection name."""


def create_server(
    settings: Settings,
    *,
    instances: InstanceService,
    router: MessageRouter,
    api_sender: ApiSender,
    api_keys: ApiKeyService,
    port: int | None = None,
    tracing: bool | None = None,
    access: AccessServicer | None = None,
    users: UsersServicer | None = None,
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """A server with RouterService, health and reflection, bound to `port` (default: settings; 0 picks a free one)."""
    auth = server_auth(settings, "router", resolve_key=api_keys.resolve)
    server = new_server("router", tracing=settings.enable_tracing if tracing is None else tracing, auth=auth)
    router_service_pb2_grpc.add_RouterServiceServicer_to_server(
        RouterServicer(instances=instances, router=router, api_sender=api_sender, api_keys=api_keys), server
    )
    if access is not None:
        access_service_pb2_grpc.add_AccessServiceServicer_to_server(access, server)
    if users is not None:
        users_service_pb2_grpc.add_UsersServiceServicer_to_server(users, server)
    health = add_health_and_reflection(server, [SERVICE_NAME], reflection_enabled=settings.reflection_enabled)
    bound = bind(server, settings.grpc_host, settings.router_grpc_port if port is None else port, auth=auth)
    return server, bound, health
