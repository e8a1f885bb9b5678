"""Every instance is born with a webhook secret and an agent signing secret, shown once; the webhook secret is
registered with the channel, rotated with a grace period, and "none" is an explicit, development-only opt-out."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from omni.router.v1 import instance_pb2, router_service_pb2

from servicekit.standard_webhooks import sign
from tests.router.conftest import PUBLIC_URL, Harness, whatsapp_instance

WITH_SECRETS = instance_pb2.INSTANCE_VIEW_WITH_SECRETS


async def create(h: Harness, **overrides: Any) -> router_service_pb2.CreateInstanceResponse:
    instance = whatsapp_instance(h.agent.url, **overrides)
    response: router_service_pb2.CreateInstanceResponse = await h.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(instance=instance)
    )
    return response


async def clear(h: Harness, name: str = "acme") -> instance_pb2.Instance:
    answer = await h.stub.GetInstance(router_service_pb2.GetInstanceRequest(name=name, view=WITH_SECRETS))
    return answer.instance


async def test_create_generates_both_secrets_shows_them_once_and_registers_the_webhook(harness: Harness) -> None:
    created = await create(harness)
    assert len(created.webhook_secret) >= 32
    assert created.agent_signing_secret.startswith("whsec_")
    # The instance in the response is redacted like every later read.
    assert created.instance.webhook_secret.is_set
    assert created.instance.webhook_secret.value == ""
    assert created.instance.agent_signing_secret.is_set
    assert created.instance.agent_signing_secret.value == ""
    assert created.instance.webhook_auth == instance_pb2.WEBHOOK_AUTH_SECRET
    assert created.instance.id
    stored = await clear(harness)
    assert stored.webhook_secret.value == created.webhook_secret
    # The signing secret is a usable Standard Webhooks key.
    assert sign(created.agent_signing_secret, "msg_1", 1, b"{}").startswith("v1,")
    [registration] = harness.channels.webhooks
    assert registration.webhook_url == f"{PUBLIC_URL}/api/v1/webhook/evolution/acme"
    assert registration.instance.webhook_secret.value == created.webhook_secret


async def test_a_given_secret_is_kept_and_a_short_one_refused(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await create(harness, webhook_secret=instance_pb2.SecretValue(value="short"))
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    given = "operator-chosen-secret-1234567890"
    created = await create(harness, webhook_secret=instance_pb2.SecretValue(value=given))
    assert created.webhook_secret == given


async def test_two_instances_never_share_a_generated_secret(harness: Harness) -> None:
    first = await create(harness, name="one")
    second = await create(harness, name="two")
    assert first.webhook_secret != second.webhook_secret
    assert first.agent_signing_secret != second.agent_signing_secret
    assert first.instance.id != second.instance.id


async def test_a_refused_registration_leaves_no_instance(harness: Harness) -> None:
    instance = whatsapp_instance(harness.agent.url)
    instance.whatsapp.evolution_url = "http://evolution.invalid/refuse"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await harness.stub.CreateInstance(router_service_pb2.CreateInstanceRequest(instance=instance))
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await harness.stub.GetInstance(router_service_pb2.GetInstanceRequest(name="acme"))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND


async def test_rotation_registers_the_new_secret_and_keeps_the_old_one_for_a_day(harness: Harness) -> None:
    created = await create(harness)
    before = time.time()
    rotated = await harness.stub.RotateWebhookSecret(
        router_service_pb2.RotateWebhookSecretRequest(instance_name="acme")
    )
    assert rotated.webhook_secret not in ("", created.webhook_secret)
    grace = rotated.previous_valid_until.seconds - before
    assert 24 * 3600 - 5 <= grace <= 24 * 3600 + 5
    stored = await clear(harness)
    assert stored.webhook_secret.value == rotated.webhook_secret
    assert stored.previous_webhook_secret.value == created.webhook_secret
    assert harness.channels.webhooks[-1].instance.webhook_secret.value == rotated.webhook_secret
    # Reads after the rotation never show either secret in clear.
    redacted = (await harness.stub.GetInstance(router_service_pb2.GetInstanceRequest(name="acme"))).instance
    assert redacted.webhook_secret.value == ""
    assert redacted.previous_webhook_secret.value == ""


async def test_agent_signing_secret_rotation(harness: Harness) -> None:
    created = await create(harness)
    rotated = await harness.stub.RotateAgentSigningSecret(
        router_service_pb2.RotateAgentSigningSecretRequest(instance_name="acme")
    )
    assert rotated.agent_signing_secret.startswith("whsec_")
    assert rotated.agent_signing_secret != created.agent_signing_secret
    # The signing secret never leaves the router, even to mesh services: its hint shows the rotated one is stored.
    stored = (await clear(harness)).agent_signing_secret
    assert stored.value == ""
    assert stored.hint == "****" + rotated.agent_signing_secret[-4:]


async def test_rotating_a_missing_instance_is_not_found(harness: Harness) -> None:
    for rpc, request in (
        (harness.stub.RotateWebhookSecret, router_service_pb2.RotateWebhookSecretRequest(instance_name="ghost")),
        (
            harness.stub.RotateAgentSigningSecret,
            router_service_pb2.RotateAgentSigningSecretRequest(instance_name="ghost"),
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await rpc(request)
        assert failure.value.code() is grpc.StatusCode.NOT_FOUND


async def test_webhook_auth_none_is_explicit_and_generates_no_secret(harness: Harness) -> None:
    created = await create(harness, webhook_auth=instance_pb2.WEBHOOK_AUTH_NONE)
    assert created.webhook_secret == ""
    assert created.instance.webhook_auth == instance_pb2.WEBHOOK_AUTH_NONE
    # Turning authentication back on gives the instance a secret (and registers it).
    updated = await harness.stub.UpdateInstance(
        router_service_pb2.UpdateInstanceRequest(
            instance=instance_pb2.Instance(name="acme", webhook_auth=instance_pb2.WEBHOOK_AUTH_SECRET),
            update_mask=field_mask_pb2.FieldMask(paths=["webhook_auth"]),
        )
    )
    assert updated.instance.webhook_secret.is_set
    assert harness.channels.webhooks[-1].instance.webhook_secret.value == (await clear(harness)).webhook_secret.value
