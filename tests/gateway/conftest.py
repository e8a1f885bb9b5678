"""Gateway fixtures: fake mesh services on a real in-process grpc.aio server (port 0), the app with its stub
dependencies pointed at them through `app.dependency_overrides`, and httpx clients over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI
from grpc_health.v1 import health_pb2_grpc
from omni.channels.v1 import channels_service_pb2_grpc
from omni.ingress.v1 import ingress_service_pb2_grpc
from omni.router.v1 import access_service_pb2_grpc, router_service_pb2_grpc, users_service_pb2_grpc
from omni.tracing.v1 import tracing_service_pb2_grpc

from gateway.app.config import Settings
from gateway.app.main import create_app
from gateway.app.mesh import MESH_SERVICES, Mesh
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import add_health_and_reflection, bind, new_server, set_serving
from tests.gateway.fakes import FakeAccess, FakeChannels, FakeIngress, FakeRouter, FakeTracing, FakeUsers, Script

API_KEY = "test-admin-key-0123456789"
KNOWN_INSTANCE = "acme"


@dataclass
class FakeMesh:
    """The fakes, their shared script and a channel to the server hosting them."""

    script: Script
    router: FakeRouter
    ingress: FakeIngress
    channels: FakeChannels
    tracing: FakeTracing
    channel: grpc.aio.Channel
    address: str
    access: FakeAccess
    users: FakeUsers


def gateway_settings(**overrides: Any) -> Settings:
    """Settings independent of the machine's environment and .env."""
    values: dict[str, Any] = {"api_key": API_KEY, "enable_tracing": False, "environment": "test"}
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
async def mesh() -> AsyncIterator[FakeMesh]:
    """All four fake services plus SERVING health on one server bound to port 0."""
    script = Script()
    fakes = FakeMesh(
        script=script,
        router=FakeRouter(script),
        ingress=FakeIngress(script, known={KNOWN_INSTANCE}),
        channels=FakeChannels(script),
        tracing=FakeTracing(script),
        channel=None,  # type: ignore[arg-type]
        address="",
        access=FakeAccess(script),
        users=FakeUsers(script),
    )
    server = new_server("fake", tracing=False)
    router_service_pb2_grpc.add_RouterServiceServicer_to_server(fakes.router, server)
    ingress_service_pb2_grpc.add_IngressServiceServicer_to_server(fakes.ingress, server)
    channels_service_pb2_grpc.add_ChannelsServiceServicer_to_server(fakes.channels, server)
    tracing_service_pb2_grpc.add_TracingServiceServicer_to_server(fakes.tracing, server)
    access_service_pb2_grpc.add_AccessServiceServicer_to_server(fakes.access, server)
    users_service_pb2_grpc.add_UsersServiceServicer_to_server(fakes.users, server)
    health = add_health_and_reflection(server, [])
    port = bind(server, "127.0.0.1", 0)
    await server.start()
    await set_serving(health, [], True)
    fakes.address = f"127.0.0.1:{port}"
    fakes.channel = open_channel(fakes.address, tracing=False)
    try:
        yield fakes
    finally:
        await fakes.channel.close(None)
        await server.stop(None)


def override_stubs(app: FastAPI, channel: grpc.aio.Channel, health_channels: dict[str, grpc.aio.Channel]) -> None:
    """Give `app` a mesh whose stubs talk to `channel` (and each health check to its own channel), as the lifespan
    would with the real services."""
    app.state.mesh = Mesh(
        router=router_service_pb2_grpc.RouterServiceStub(channel),
        ingress=ingress_service_pb2_grpc.IngressServiceStub(channel),
        channels=channels_service_pb2_grpc.ChannelsServiceStub(channel),
        tracing=tracing_service_pb2_grpc.TracingServiceStub(channel),
        health={name: health_pb2_grpc.HealthStub(health_channels[name]) for name in MESH_SERVICES},
        grpc_channels=(),
        access=access_service_pb2_grpc.AccessServiceStub(channel),
        users=users_service_pb2_grpc.UsersServiceStub(channel),
    )


@pytest.fixture
def app(mesh: FakeMesh) -> FastAPI:
    """The real app, its stubs pointed at the fakes."""
    application = create_app(gateway_settings())
    override_stubs(application, mesh.channel, dict.fromkeys(MESH_SERVICES, mesh.channel))
    return application


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client without the API key."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        yield client


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that presents the admin key."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://hub.test", headers={"x-api-key": API_KEY}
    ) as client:
        yield client


def whatsapp_instance(name: str = "acme", **overrides: Any) -> dict[str, Any]:
    """A valid create body for a WhatsApp instance."""
    body: dict[str, Any] = {
        "name": name,
        "channel_type": "whatsapp",
        "evolution_url": "http://evolution.local:8080",
        "evolution_key": "evo-secret-1FAB",
        "whatsapp_instance": "acme-support",
        "agent_api_url": "http://agent.local:8000",
        "agent_api_key": "agent-secret-9XYZ",
        "default_agent": "support",
    }
    body.update(overrides)
    return body
