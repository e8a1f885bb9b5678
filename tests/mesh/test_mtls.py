"""The mutual-TLS option: servers accept only certificates the mesh CA signed; the caller is the certificate's name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import add_health_and_reflection, bind, new_server, set_serving
from servicekit.mesh_auth import CALLER_HEADER, MeshCredentials, ServerAuth
from servicekit.principals import Principal, current_principal
from tests.mesh.certificates import CertificateAuthority

ADMIN_KEY = "mtls-admin-key"
INTERNAL = "/omni.router.v1.RouterService/RouteMessage"
PUBLIC = "/omni.router.v1.RouterService/ListInstances"


async def no_keys(key: str) -> Principal | None:
    return None


async def whoami(request: bytes, context: Any) -> bytes:
    principal = current_principal()
    return f"{principal.kind}|{principal.service}".encode()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


@pytest.fixture
async def address(ca: CertificateAuthority) -> AsyncIterator[str]:
    """A router-like server speaking mTLS with the CA's certificate for "router"."""
    auth = ServerAuth(MeshCredentials("router", tls=ca.issue("router")), admin_key=ADMIN_KEY, resolve_key=no_keys)
    server = new_server("router", tracing=False, auth=auth)
    handlers = {name: grpc.unary_unary_rpc_method_handler(whoami) for name in ("RouteMessage", "ListInstances")}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("omni.router.v1.RouterService", handlers)])
    health = add_health_and_reflection(server, [])
    port = bind(server, "127.0.0.1", 0, auth=auth)
    await server.start()
    await set_serving(health, [], True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def call(channel: grpc.aio.Channel, method: str, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    return bytes(
        await channel.unary_unary(method, request_serializer=None, response_deserializer=None)(
            b"", metadata=metadata, timeout=5
        )
    )


async def test_a_ca_signed_mesh_certificate_is_the_caller(address: str, ca: CertificateAuthority) -> None:
    channel = open_channel(address, tracing=False, mesh=MeshCredentials("gateway", tls=ca.issue("gateway")))
    try:
        assert await call(channel, INTERNAL) == b"mesh|gateway"
        # The certificate names the caller; a header claiming otherwise changes nothing.
        assert await call(channel, INTERNAL, ((CALLER_HEADER, "ingress"),)) == b"mesh|gateway"
    finally:
        await channel.close(None)


async def test_a_certificate_of_a_non_mesh_name_may_only_use_an_api_key(address: str, ca: CertificateAuthority) -> None:
    channel = open_channel(address, tracing=False, mesh=MeshCredentials("cli", tls=ca.issue("operator-cli")))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(channel, INTERNAL)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await call(channel, PUBLIC, (("x-api-key", ADMIN_KEY),)) == b"admin|"
    finally:
        await channel.close(None)


async def test_no_client_certificate_or_another_ca_is_refused(
    address: str, ca: CertificateAuthority, tmp_path: Path
) -> None:
    server_ca = ca.ca_file.read_bytes()
    rogue = CertificateAuthority(tmp_path / "rogue", name="rogue-ca").issue("gateway")
    attempts = [
        grpc.ssl_channel_credentials(root_certificates=server_ca),
        grpc.ssl_channel_credentials(
            root_certificates=server_ca, private_key=rogue.key.read_bytes(), certificate_chain=rogue.cert.read_bytes()
        ),
    ]
    for credentials in attempts:
        async with grpc.aio.secure_channel(address, credentials) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(channel, INTERNAL)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails
    async with grpc.aio.insecure_channel(address) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(plain, INTERNAL)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_answers_any_mesh_certificate(address: str, ca: CertificateAuthority) -> None:
    channel = open_channel(address, tracing=False, mesh=MeshCredentials("launcher", tls=ca.issue("launcher")))
    try:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close(None)
