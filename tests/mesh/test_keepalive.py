"""Idle mesh channels survive the clients' keepalive pings (no GOAWAY "too_many_pings" from the server).

The intervals are shortened to one second; the option lists come from the same functions as the mesh's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from servicekit.keepalive import client_keepalive_options, server_keepalive_options

INTERVAL_MS = 1_000
IDLE_SECONDS = 4.5
METHOD = "/omni.test.v1.Ping/Ping"


async def pong(request: bytes, context: Any) -> bytes:
    return b"pong"


async def serve(options: list[tuple[str, Any]]) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=options)
    handlers = {"Ping": grpc.unary_unary_rpc_method_handler(pong)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("omni.test.v1.Ping", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.fixture
async def idle_states() -> AsyncIterator[Any]:
    """Runs: start a server with `options`, call once, idle past several ping intervals, report the channel states
    seen while idling and whether a call still works."""
    servers: list[grpc.aio.Server] = []

    async def run(options: list[tuple[str, Any]]) -> tuple[set[grpc.ChannelConnectivity], bytes]:
        server, port = await serve(options)
        servers.append(server)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_keepalive_options(INTERVAL_MS)) as ch:
            assert (
                await ch.unary_unary(METHOD, request_serializer=None, response_deserializer=None)(b"", timeout=5)
                == b"pong"
            )
            seen = set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + IDLE_SECONDS
            while loop.time() < deadline:
                seen.add(ch.get_state())
                await asyncio.sleep(0.05)
            return seen, await ch.unary_unary(METHOD, request_serializer=None, response_deserializer=None)(
                b"", timeout=5
            )

    yield run
    for server in servers:
        await server.stop(None)


async def test_an_idle_channel_stays_connected(idle_states: Any) -> None:
    seen, answer = await idle_states(server_keepalive_options(INTERVAL_MS))
    assert seen == {grpc.ChannelConnectivity.READY}
    assert answer == b"pong"


async def test_a_server_with_grpc_defaults_drops_the_idle_channel(idle_states: Any) -> None:
    """The failure the server options prevent (this also proves the test above can fail)."""
    seen, _answer = await idle_states([])
    assert seen != {grpc.ChannelConnectivity.READY}
