"""Property-based: schemathesis generates requests from the gateway's own OpenAPI schema (valid and invalid bodies,
paths, queries, headers) and no answer may be a 5xx.

The gateway runs for real: uvicorn on a free port, its stubs pointed at the in-process fake mesh, both on one event
loop in a background thread (gRPC aio channels belong to the loop that made them, and schemathesis' test functions
are synchronous). Bounded: a few examples per operation, so the whole run stays well under two minutes.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, settings
from omni.channels.v1 import channels_service_pb2_grpc
from omni.ingress.v1 import ingress_service_pb2_grpc
from omni.router.v1 import access_service_pb2_grpc, router_service_pb2_grpc, users_service_pb2_grpc
from omni.tracing.v1 import tracing_service_pb2_grpc
from schemathesis.checks import not_a_server_error

from gateway.app.main import create_app
from gateway.app.mesh import MESH_SERVICES
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import add_health_and_reflection, bind, new_server, set_serving
from tests.gateway.conftest import API_KEY, KNOWN_INSTANCE, gateway_settings, override_stubs
from tests.gateway.fakes import FakeAccess, FakeChannels, FakeIngress, FakeRouter, FakeTracing, FakeUsers, Script

EXAMPLES_PER_OPERATION = 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Server(uvicorn.Server):
    """Uvicorn that says when it listens."""

    def __init__(self, config: uvicorn.Config, listening: threading.Event) -> None:
        super().__init__(config)
        self._listening = listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._listening.set()


class _Gateway:
    """The app under uvicorn plus the fake mesh, on one loop in a daemon thread."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._run, name="schemathesis-gateway", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(30) or self.error is not None:
            raise RuntimeError(f"the gateway did not start: {self.error!r}")

    def stop(self) -> None:
        if self._server is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(setattr, self._server, "should_exit", True)
        self._thread.join(15)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        script = Script()
        grpc_server = new_server("fake", tracing=False)
        router_service_pb2_grpc.add_RouterServiceServicer_to_server(FakeRouter(script), grpc_server)
        ingress_service_pb2_grpc.add_IngressServiceServicer_to_server(
            FakeIngress(script, known={KNOWN_INSTANCE}), grpc_server
        )
        channels_service_pb2_grpc.add_ChannelsServiceServicer_to_server(FakeChannels(script), grpc_server)
        tracing_service_pb2_grpc.add_TracingServiceServicer_to_server(FakeTracing(script), grpc_server)
        users_service_pb2_grpc.add_UsersServiceServicer_to_server(FakeUsers(script), grpc_server)
        access_service_pb2_grpc.add_AccessServiceServicer_to_server(FakeAccess(script), grpc_server)
        health = add_health_and_reflection(grpc_server, [])
        grpc_port = bind(grpc_server, "127.0.0.1", 0)
        await grpc_server.start()
        await set_serving(health, [], True)
        channel = open_channel(f"127.0.0.1:{grpc_port}", tracing=False)
        app = create_app(gateway_settings())
        override_stubs(app, channel, dict.fromkeys(MESH_SERVICES, channel))
        # No lifespan: it would replace the fake mesh with channels to the real services' default ports.
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning")
        self._server = _Server(config, self.ready)
        try:
            await self._server.serve()
        finally:
            await channel.close(None)
            await grpc_server.stop(None)


@pytest.fixture(scope="module")
def gateway() -> Iterator[_Gateway]:
    running = _Gateway()
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _schema() -> Any:
    """The OpenAPI document as the app generates it (no server needed to build it)."""
    return create_app(gateway_settings()).openapi()


schema = schemathesis.openapi.from_dict(_schema())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_request_gets_a_server_error(case: Any, gateway: _Gateway) -> None:
    headers = {"x-api-key": API_KEY}
    response = case.call(base_url=f"http://127.0.0.1:{gateway.port}", headers=headers, timeout=30)
    case.validate_response(response, checks=[not_a_server_error], headers=headers)
