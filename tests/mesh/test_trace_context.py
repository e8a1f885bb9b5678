"""Only the mesh continues its traces through gRPC metadata: a direct client's traceparent starts nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace

from servicekit.grpc_server import bind, new_server
from servicekit.mesh_auth import API_KEY_HEADER, CALLER_HEADER, MESH_TOKEN_HEADER, MeshCredentials, ServerAuth
from servicekit.principals import Principal

TOKEN = "mesh-token-for-trace-tests-0123456789"
ADMIN_KEY = "admin-key-for-trace-tests-0123456789"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = ("traceparent", f"00-{CALLER_TRACE}-00f067aa0ba902b7-01")
PUBLIC = "/omni.router.v1.RouterService/SendText"


async def no_keys(key: str) -> Principal | None:
    return None


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    """A server whose public SendText answers the trace id current while it runs."""

    async def unary(request: bytes, context: Any) -> bytes:
        return format(trace.get_current_span().get_span_context().trace_id, "032x").encode()

    auth = ServerAuth(MeshCredentials("router", token=TOKEN), admin_key=ADMIN_KEY, resolve_key=no_keys)
    server = new_server("test", tracing=True, auth=auth)
    handlers = {"SendText": grpc.unary_unary_rpc_method_handler(unary)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("omni.router.v1.RouterService", handlers)])
    port = bind(server, "127.0.0.1", 0, auth=auth)
    await server.start()
    opened = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield opened
    finally:
        await opened.close(None)
        await server.stop(None)


async def current_trace(channel: grpc.aio.Channel, *metadata: tuple[str, str]) -> str:
    call = channel.unary_unary(PUBLIC, request_serializer=None, response_deserializer=None)
    return bytes(await call(b"", metadata=(*metadata, TRACEPARENT), timeout=5)).decode()


async def test_a_mesh_caller_continues_its_trace(channel: grpc.aio.Channel) -> None:
    assert await current_trace(channel, (MESH_TOKEN_HEADER, TOKEN), (CALLER_HEADER, "gateway")) == CALLER_TRACE


async def test_a_direct_client_does_not_choose_the_trace(channel: grpc.aio.Channel) -> None:
    assert await current_trace(channel, (API_KEY_HEADER, ADMIN_KEY)) != CALLER_TRACE
