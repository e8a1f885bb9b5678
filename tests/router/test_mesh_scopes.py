"""Who may do what on the real router: scoped keys, the admin key, and which mesh service receives which secret."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from omni.router.v1 import instance_pb2, router_service_pb2, router_service_pb2_grpc

from servicekit.grpc_clients import open_channel
from servicekit.key_resolver import RouterKeyResolver
from servicekit.principals import Principal
from tests.helpers.mesh_auth import mesh_as
from tests.router.conftest import AGENT_KEY, EVOLUTION_KEY, Harness, whatsapp_instance

ADMIN_KEY = "router-scopes-admin-key"
WITH_SECRETS = instance_pb2.INSTANCE_VIEW_WITH_SECRETS


@pytest.fixture(autouse=True)
def admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness's router reads its admin key from the environment (autouse: set before the harness starts)."""
    monkeypatch.setenv("AUTOMAGIK_OMNI_API_KEY", ADMIN_KEY)


@asynccontextmanager
async def router_as(harness: Harness, caller: str | None = None) -> AsyncIterator[Any]:
    """A RouterService stub calling as mesh service `caller`, or without mesh credential (None)."""
    channel = open_channel(
        f"127.0.0.1:{harness.port}", tracing=False, mesh=mesh_as(caller) if caller is not None else None
    )
    try:
        yield router_service_pb2_grpc.RouterServiceStub(channel)
    finally:
        await channel.close(None)


def key(value: str) -> tuple[tuple[str, str]]:
    return (("x-api-key", value),)


def clear_secrets(message: Message, path: str = "") -> Iterator[str]:
    """The paths of every SecretValue in `message` that carries a clear value."""
    for field, value in message.ListFields():
        where = f"{path}{field.name}"
        if isinstance(value, instance_pb2.SecretValue):
            if value.value:
                yield where
        elif isinstance(value, Message):
            yield from clear_secrets(value, where + ".")


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def create(harness: Harness, name: str) -> None:
    await harness.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(harness.agent.url, name=name))
    )


async def scoped_key(harness: Harness, instance: str) -> str:
    async with router_as(harness) as admin:
        created = await admin.CreateApiKey(
            router_service_pb2.CreateApiKeyRequest(instance_name=instance), metadata=key(ADMIN_KEY), timeout=5
        )
    return str(created.key)


async def test_a_scoped_key_reaches_its_instance_and_nothing_else(harness: Harness) -> None:
    await create(harness, "acme")
    await create(harness, "beta")
    acme_key = await scoped_key(harness, "acme")
    async with router_as(harness) as client:
        own = await client.GetInstance(
            router_service_pb2.GetInstanceRequest(name="acme", view=WITH_SECRETS), metadata=key(acme_key), timeout=5
        )
        assert own.instance.name == "acme"
        assert list(clear_secrets(own.instance)) == []  # an API key never reads a secret

        not_found = [
            client.GetInstance(router_service_pb2.GetInstanceRequest(name="beta"), metadata=key(acme_key)),
            client.SendText(
                router_service_pb2.SendTextRequest(instance_name="beta", recipient="+5511999999999", text="hi"),
                metadata=key(acme_key),
            ),
        ]
        for call in not_found:
            assert await code_of(call) == grpc.StatusCode.NOT_FOUND

        admin_only = [
            client.ListInstances(router_service_pb2.ListInstancesRequest(), metadata=key(acme_key)),
            client.CreateInstance(
                router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(harness.agent.url, name="gamma")),
                metadata=key(acme_key),
            ),
            client.UpdateInstance(
                router_service_pb2.UpdateInstanceRequest(instance=instance_pb2.Instance(name="acme")),
                metadata=key(acme_key),
            ),
            client.DeleteInstance(router_service_pb2.DeleteInstanceRequest(name="acme"), metadata=key(acme_key)),
            client.RotateWebhookSecret(
                router_service_pb2.RotateWebhookSecretRequest(instance_name="acme"), metadata=key(acme_key)
            ),
            client.RotateAgentSigningSecret(
                router_service_pb2.RotateAgentSigningSecretRequest(instance_name="acme"), metadata=key(acme_key)
            ),
            client.CreateApiKey(router_service_pb2.CreateApiKeyRequest(instance_name="acme"), metadata=key(acme_key)),
        ]
        for call in admin_only:
            assert await code_of(call) == grpc.StatusCode.PERMISSION_DENIED

        internal = client.AuthenticateApiKey(
            router_service_pb2.AuthenticateApiKeyRequest(key=acme_key), metadata=key(acme_key)
        )
        assert await code_of(internal) == grpc.StatusCode.UNAUTHENTICATED

        listed = await client.ListInstances(router_service_pb2.ListInstancesRequest(), metadata=key(ADMIN_KEY))
        assert {i.name for i in listed.instances} == {"acme", "beta"}
    await harness.stub.GetInstance(router_service_pb2.GetInstanceRequest(name="acme"))  # nothing was deleted


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("gateway", set()),
        ("tracing", set()),
        ("router", set()),
        ("channels", {"whatsapp.evolution_key"}),
        ("ingress", {"whatsapp.evolution_key", "webhook_secret"}),
    ],
)
async def test_clear_secrets_go_only_to_the_services_that_use_them(
    harness: Harness, caller: str, expected: set[str]
) -> None:
    await create(harness, "acme")
    async with router_as(harness, caller) as client:
        got = await client.GetInstance(router_service_pb2.GetInstanceRequest(name="acme", view=WITH_SECRETS))
        assert set(clear_secrets(got.instance)) == expected
        assert got.instance.agent_api_key.is_set  # the agent's key is known to exist, never shown
        assert got.instance.agent_signing_secret.is_set

        stream = client.WatchInstances(router_service_pb2.WatchInstancesRequest())
        first = await anext(aiter(stream))
        stream.cancel()
        assert first.instance.name == "acme"
        assert set(clear_secrets(first.instance)) == expected
    if caller == "channels":
        assert got.instance.whatsapp.evolution_key.value == EVOLUTION_KEY
        assert AGENT_KEY not in str(got)


async def test_other_services_resolve_keys_through_the_router_with_a_short_cache(harness: Harness) -> None:
    await create(harness, "acme")
    acme_key = await scoped_key(harness, "acme")
    now = [1000.0]
    channel = open_channel(f"127.0.0.1:{harness.port}", tracing=False, mesh=mesh_as("tracing"))
    try:
        resolver = RouterKeyResolver(lambda: router_service_pb2_grpc.RouterServiceStub(channel), clock=lambda: now[0])
        principal = await resolver(acme_key)
        assert principal is not None
        assert principal.key_id
        assert principal == Principal("scoped", instance_name="acme", key_id=principal.key_id)
        assert await resolver("omni_sk_no-such-key") is None

        async with router_as(harness) as admin:
            await admin.RevokeApiKey(
                router_service_pb2.RevokeApiKeyRequest(instance_name="acme", id=principal.key_id),
                metadata=key(ADMIN_KEY),
            )
        assert await resolver(acme_key) == principal  # still cached: revocation takes effect within the TTL
        now[0] += 5.1
        assert await resolver(acme_key) is None
    finally:
        await channel.close(None)
