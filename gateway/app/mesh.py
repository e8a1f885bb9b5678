"""The gateway's only state: one gRPC channel per mesh service and the stubs bound to them.

Channels are opened once when the app starts and closed when it stops; every request reuses them (a grpc.aio
channel multiplexes many concurrent calls over one HTTP/2 connection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from omni.channels.v1 import channels_service_pb2_grpc
from omni.common.v1 import metrics_pb2_grpc
from omni.ingress.v1 import ingress_service_pb2_grpc
from omni.router.v1 import access_service_pb2_grpc, router_service_pb2_grpc, users_service_pb2_grpc
from omni.tracing.v1 import tracing_service_pb2_grpc

from servicekit.grpc_clients import open_channel
from servicekit.mesh_auth import MeshCredentials

if TYPE_CHECKING:
    from omni.channels.v1.channels_service_pb2_grpc import ChannelsServiceAsyncStub as ChannelsStub
    from omni.ingress.v1.ingress_service_pb2_grpc import IngressServiceAsyncStub as IngressStub
    from omni.router.v1.access_service_pb2_grpc import AccessServiceAsyncStub as AccessStub
    from omni.router.v1.router_service_pb2_grpc import RouterServiceAsyncStub as RouterStub
    from omni.router.v1.users_service_pb2_grpc import UsersServiceAsyncStub as UsersStub
    from omni.tracing.v1.tracing_service_pb2_grpc import TracingServiceAsyncStub as TracingStub
else:
    # The *AsyncStub classes exist only for type checkers; at run time the stub class is the same for aio channels.
    from omni.channels.v1.channels_service_pb2_grpc import ChannelsServiceStub as ChannelsStub
    from omni.ingress.v1.ingress_service_pb2_grpc import IngressServiceStub as IngressStub
    from omni.router.v1.access_service_pb2_grpc import AccessServiceStub as AccessStub
    from omni.router.v1.router_service_pb2_grpc import RouterServiceStub as RouterStub
    from omni.router.v1.users_service_pb2_grpc import UsersServiceStub as UsersStub
    from omni.tracing.v1.tracing_service_pb2_grpc import TracingServiceStub as TracingStub

from gateway.app.config import Settings

MESH_SERVICES = ("ingress", "router", "channels", "tracing")
"""The services /health reports on, in display order."""

METRICS_SERVICES = ("ingress", "channels", "tracing")
"""The services hosting omni.common.v1.MetricsService (the tracing service counts from the spans of all; ingress and
channels count what spans do not say: ignored webhooks, the inbox, outbox retries)."""

HealthStubMap = dict[str, Any]
"""Service name -> grpc.health.v1 HealthStub (untyped upstream)."""

__all__ = [
    "MESH_SERVICES",
    "AccessStub",
    "ChannelsStub",
    "HealthStubMap",
    "IngressStub",
    "Mesh",
    "RouterStub",
    "TracingStub",
    "UsersStub",
]


@dataclass(frozen=True)
class Mesh:
    """The stubs the routes use, bound to the channels the app lifespan opened."""

    router: RouterStub
    ingress: IngressStub
    channels: ChannelsStub
    tracing: TracingStub
    health: HealthStubMap
    grpc_channels: tuple[grpc.aio.Channel, ...]
    access: AccessStub | None = None
    """AccessService, hosted by the router process (over the router's channel)."""
    users: UsersStub | None = None
    """UsersService, hosted by the router process (over the router's channel)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Service name -> MetricsService stub, for the services that count something (/metrics asks each)."""

    @classmethod
    def open(cls, settings: Settings) -> Mesh:
        """Open one channel per service; with tracing, the OTel client interceptor starts each trace here. Every
        call carries the mesh credential as caller "gateway" (which gets no clear secret from the router)."""
        tracing = settings.enable_tracing
        mesh = MeshCredentials.from_settings(settings, "gateway")
        opened = {name: open_channel(settings.address_of(name), tracing=tracing, mesh=mesh) for name in MESH_SERVICES}
        return cls(
            router=router_service_pb2_grpc.RouterServiceStub(opened["router"]),
            ingress=ingress_service_pb2_grpc.IngressServiceStub(opened["ingress"]),
            channels=channels_service_pb2_grpc.ChannelsServiceStub(opened["channels"]),
            tracing=tracing_service_pb2_grpc.TracingServiceStub(opened["tracing"]),
            health={name: health_pb2_grpc.HealthStub(channel) for name, channel in opened.items()},
            grpc_channels=tuple(opened.values()),
            access=access_service_pb2_grpc.AccessServiceStub(opened["router"]),
            users=users_service_pb2_grpc.UsersServiceStub(opened["router"]),
            metrics={name: metrics_pb2_grpc.MetricsServiceStub(opened[name]) for name in METRICS_SERVICES},
        )

    async def close(self, grace: float | None = None) -> None:
        """Close every channel, letting in-flight calls finish within `grace` seconds."""
        for channel in self.grpc_channels:
            await channel.close(grace)
