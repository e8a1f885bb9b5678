"""/health asks each mesh service's standard gRPC health service, concurrently, with a short deadline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from fastapi import FastAPI
from omni.channels.v1 import channels_service_pb2
from omni.common.v1 import channel_pb2
from omni.ingress.v1 import ingress_service_pb2

from gateway.app.mesh import MESH_SERVICES
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import add_health_and_reflection, bind, new_server, set_serving
from tests.gateway.conftest import FakeMesh, override_stubs


@pytest.fixture
async def not_serving() -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a server whose health says NOT_SERVING (a service draining for shutdown)."""
    server = new_server("draining", tracing=False)
    health = add_health_and_reflection(server, [])
    port = bind(server, "127.0.0.1", 0)
    await server.start()
    await set_serving(health, [], False)
    channel = open_channel(f"127.0.0.1:{port}", tracing=False)
    yield channel
    await channel.close(None)
    await server.stop(None)


async def test_healthy_mesh(anon: httpx.AsyncClient) -> None:
    response = await anon.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "services": dict.fromkeys(MESH_SERVICES, "SERVING"),
        "bots": {},
        "connections": {},
    }


async def test_health_counts_connection_states_without_naming_instances(
    anon: httpx.AsyncClient, mesh: FakeMesh
) -> None:
    counts = {"connected": 3, "connecting": 1, "error": 1}
    mesh.script.respond("CountConnections", channels_service_pb2.CountConnectionsResponse(counts=counts))
    response = await anon.get("/health")
    assert (response.status_code, response.json()["connections"]) == (200, counts)


async def test_health_lists_every_bot_and_a_bot_in_error_leaves_the_hub_healthy(
    anon: httpx.AsyncClient, mesh: FakeMesh
) -> None:
    mesh.script.respond(
        "ListBots",
        ingress_service_pb2.ListBotsResponse(
            bots=[
                ingress_service_pb2.BotStatus(
                    instance_name="acme-discord",
                    channel=channel_pb2.CHANNEL_DISCORD,
                    state=channel_pb2.CONNECTION_STATE_CONNECTED,
                ),
                ingress_service_pb2.BotStatus(
                    instance_name="revoked",
                    channel=channel_pb2.CHANNEL_DISCORD,
                    state=channel_pb2.CONNECTION_STATE_ERROR,
                    detail="Discord refused the bot token",
                ),
            ]
        ),
    )
    response = await anon.get("/health")
    assert response.status_code == 200
    assert response.json()["bots"] == {
        "acme-discord": {"channel_type": "discord", "status": "connected", "detail": None},
        "revoked": {"channel_type": "discord", "status": "error", "detail": "Discord refused the bot token"},
    }


async def test_one_service_not_serving_makes_it_503(
    app: FastAPI, anon: httpx.AsyncClient, mesh: FakeMesh, not_serving: grpc.aio.Channel
) -> None:
    override_stubs(app, mesh.channel, {**dict.fromkeys(MESH_SERVICES, mesh.channel), "router": not_serving})
    response = await anon.get("/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unhealthy",
        "services": {"ingress": "SERVING", "router": "NOT_SERVING", "channels": "SERVING", "tracing": "SERVING"},
        "bots": {},
        "connections": {},
    }


async def test_unreachable_services_answer_within_the_deadline(
    app: FastAPI, anon: httpx.AsyncClient, mesh: FakeMesh
) -> None:
    dead = open_channel("127.0.0.1:1", tracing=False)
    override_stubs(app, mesh.channel, {**dict.fromkeys(MESH_SERVICES, dead), "ingress": mesh.channel})
    started = time.monotonic()
    response = await anon.get("/health")
    elapsed = time.monotonic() - started
    await dead.close(None)
    assert response.status_code == 503
    services = response.json()["services"]
    assert services["ingress"] == "SERVING"
    assert {services[name] for name in ("router", "channels", "tracing")} <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert elapsed < 2.5  # concurrent 1 s checks, not 3 s in a row
