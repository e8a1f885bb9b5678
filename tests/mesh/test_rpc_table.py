"""Every RPC of the four services, enumerated from the generated descriptors, against the mesh's auth interceptor.

The servers are real grpc.aio servers built by `new_server` with the mesh auth; each method is served by a handler
that answers with the principal it ran as, so a call that gets through shows who the server thinks called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from omni.channels.v1 import channels_service_pb2
from omni.common.v1 import metrics_pb2
from omni.ingress.v1 import ingress_service_pb2
from omni.router.v1 import access_service_pb2, router_service_pb2, users_service_pb2
from omni.tracing.v1 import tracing_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from servicekit.grpc_server import add_health_and_reflection, bind, new_server, set_serving
from servicekit.mesh_auth import (
    API_KEY_HEADER,
    CALLER_AWARE_INTERNAL,
    CALLER_HEADER,
    MESH_TOKEN_HEADER,
    PUBLIC_RPCS,
    MeshCredentials,
    ServerAuth,
    is_public,
)
from servicekit.principals import Principal, current_principal

TOKEN = "mesh-token-for-the-rpc-table-test-0123456789"
ADMIN_KEY = "admin-key-of-the-rpc-table-test"
SCOPED_KEY = "omni_sk_scoped-key-of-acme"

SERVICES: list[ServiceDescriptor] = [
    router_service_pb2.DESCRIPTOR.services_by_name["RouterService"],
    access_service_pb2.DESCRIPTOR.services_by_name["AccessService"],
    users_service_pb2.DESCRIPTOR.services_by_name["UsersService"],
    metrics_pb2.DESCRIPTOR.services_by_name["MetricsService"],
    ingress_service_pb2.DESCRIPTOR.services_by_name["IngressService"],
    channels_service_pb2.DESCRIPTOR.services_by_name["ChannelsService"],
    tracing_service_pb2.DESCRIPTOR.services_by_name["TracingService"],
    trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"],
]
METHODS: list[MethodDescriptor] = [method for service in SERVICES for method in service.methods]
PUBLIC = [m for m in METHODS if is_public(f"/{m.containing_service.full_name}/{m.name}")]
INTERNAL = [m for m in METHODS if m not in PUBLIC]


def method_id(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


def describe(principal: Principal) -> bytes:
    return f"{principal.kind}|{principal.service}|{principal.instance_name}".encode()


def echo_handler(method: MethodDescriptor) -> grpc.RpcMethodHandler[Any, Any]:
    """Answers with the current principal (raw bytes: the test reads them back without a message type)."""
    if method.server_streaming:

        async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
            yield describe(current_principal())

        return grpc.unary_stream_rpc_method_handler(stream)

    async def unary(request: bytes, context: Any) -> bytes:
        return describe(current_principal())

    return grpc.unary_unary_rpc_method_handler(unary)


async def resolve(key: str) -> Principal | None:
    """The injected resolver: one scoped key of instance "acme"."""
    return Principal("scoped", instance_name="acme", key_id="k1") if key == SCOPED_KEY else None


@dataclass
class Mesh:
    channel: grpc.aio.Channel

    async def call(self, method: MethodDescriptor, metadata: tuple[tuple[str, str], ...]) -> bytes:
        path = f"/{method.containing_service.full_name}/{method.name}"
        if method.server_streaming:
            answers = [
                item
                async for item in self.channel.unary_stream(path, request_serializer=None, response_deserializer=None)(
                    b"", metadata=metadata, timeout=5
                )
            ]
            return bytes(answers[0])
        return bytes(
            await self.channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
                b"", metadata=metadata, timeout=5
            )
        )

    async def code(self, method: MethodDescriptor, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
        try:
            await self.call(method, metadata)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    auth = ServerAuth(MeshCredentials("router", token=TOKEN), admin_key=ADMIN_KEY, resolve_key=resolve)
    server = new_server("test", tracing=False, auth=auth)
    for service in SERVICES:
        handlers = {m.name: echo_handler(m) for m in service.methods}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service.full_name, handlers)])
    health = add_health_and_reflection(server, [s.full_name for s in SERVICES])
    port = bind(server, "127.0.0.1", 0, auth=auth)
    await server.start()
    await set_serving(health, [s.full_name for s in SERVICES], True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Mesh(channel)
    finally:
        await channel.close(None)
        await server.stop(None)


def mesh_metadata(caller: str = "ingress", token: str = TOKEN) -> tuple[tuple[str, str], ...]:
    return ((MESH_TOKEN_HEADER, token), (CALLER_HEADER, caller))


def key(value: str) -> tuple[tuple[str, str], ...]:
    return ((API_KEY_HEADER, value),)


def test_the_public_table_names_only_rpcs_that_exist() -> None:
    existing = {(m.containing_service.full_name, m.name) for m in METHODS}
    for service, names in PUBLIC_RPCS.items():
        for name in names:
            assert (service, name) in existing, f"{service}/{name} is in PUBLIC_RPCS but not in the protos"
    assert {m.name for m in PUBLIC} >= {"SendText", "ListTraces", "ListDeadLetters", "GetConnectionStatus"}
    assert {m.name for m in INTERNAL} >= {"RouteMessage", "WatchInstances", "AuthenticateApiKey", "Export"}


@pytest.mark.parametrize("method", METHODS, ids=method_id)
async def test_every_rpc_needs_a_credential(mesh: Mesh, method: MethodDescriptor) -> None:
    assert await mesh.code(method, ()) == grpc.StatusCode.UNAUTHENTICATED
    assert await mesh.code(method, mesh_metadata(token="not-the-token")) == grpc.StatusCode.UNAUTHENTICATED
    assert await mesh.code(method, key("wrong-key")) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", METHODS, ids=method_id)
async def test_every_rpc_serves_the_mesh(mesh: Mesh, method: MethodDescriptor) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    answer = await mesh.call(method, mesh_metadata("channels"))
    if is_public(path) or path in CALLER_AWARE_INTERNAL:
        assert answer == b"mesh|channels|"
    else:
        # The message path is served without a per-call principal: no internal servicer asks who called.
        assert answer == b"mesh|mesh|"


async def test_a_valid_token_with_an_unknown_caller_is_refused(mesh: Mesh) -> None:
    assert await mesh.code(INTERNAL[0], mesh_metadata("intruder")) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", INTERNAL, ids=method_id)
async def test_an_api_key_never_reaches_an_internal_rpc(mesh: Mesh, method: MethodDescriptor) -> None:
    assert await mesh.code(method, key(ADMIN_KEY)) == grpc.StatusCode.UNAUTHENTICATED
    assert await mesh.code(method, key(SCOPED_KEY)) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", PUBLIC, ids=method_id)
async def test_public_rpcs_take_the_admin_or_a_scoped_key(mesh: Mesh, method: MethodDescriptor) -> None:
    assert await mesh.call(method, key(ADMIN_KEY)) == b"admin||"
    assert await mesh.call(method, key(SCOPED_KEY)) == b"scoped||acme"


async def test_a_mesh_service_may_act_for_a_key_holder(mesh: Mesh) -> None:
    assert await mesh.call(PUBLIC[0], (*mesh_metadata("gateway"), *key(SCOPED_KEY))) == b"scoped||acme"
    assert await mesh.code(PUBLIC[0], (*mesh_metadata("gateway"), *key("wrong"))) == grpc.StatusCode.UNAUTHENTICATED


async def test_health_is_open(mesh: Mesh) -> None:
    answer = await health_pb2_grpc.HealthStub(mesh.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_resolver_that_cannot_answer_is_unavailable_not_unauthenticated() -> None:
    from servicekit.errors import UnavailableError

    async def down(key: str) -> Principal | None:
        raise UnavailableError("router unreachable")

    auth = ServerAuth(MeshCredentials("tracing", token=TOKEN), admin_key=ADMIN_KEY, resolve_key=down)
    server = new_server("test", tracing=False, auth=auth)
    method = tracing_service_pb2.DESCRIPTOR.services_by_name["TracingService"].methods_by_name["ListTraces"]
    handlers = {method.name: echo_handler(method)}
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(method.containing_service.full_name, handlers)]
    )
    port = bind(server, "127.0.0.1", 0, auth=auth)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            probe = Mesh(channel)
            assert await probe.code(method, key("some-scoped-key")) == grpc.StatusCode.UNAVAILABLE
            assert await probe.call(method, key(ADMIN_KEY)) == b"admin||"
    finally:
        await server.stop(None)
