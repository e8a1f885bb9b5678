"""Instance CRUD, validation and the watch stream, through the real router server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from omni.common.v1 import channel_pb2
from omni.router.v1 import instance_pb2, router_service_pb2

from servicekit.errors import UnavailableError
from services.router.core.broadcaster import InstanceBroadcaster
from services.router.core.models import InstanceChange
from tests.router.conftest import EVOLUTION_KEY, Harness, wait_for, whatsapp_instance

WITH_SECRETS = instance_pb2.INSTANCE_VIEW_WITH_SECRETS


async def create(h: Harness, **overrides: Any) -> instance_pb2.Instance:
    response = await h.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(h.agent.url, **overrides))
    )
    return response.instance


def violations(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


async def test_create_get_list_update_delete(harness: Harness) -> None:
    created = await create(harness)
    assert created.name == "acme"
    assert created.agent_timeout_seconds == 5
    assert created.whatsapp.evolution_key.is_set
    assert created.whatsapp.evolution_key.hint == "****9C3D"
    assert created.whatsapp.evolution_key.value == ""
    assert created.agent_api_key.hint == "****1FAB"
    assert created.agent_api_key.value == ""
    assert created.WhichOneof("channel_config") == "whatsapp"
    assert created.created_at.seconds > 0

    redacted = (await harness.stub.GetInstance(router_service_pb2.GetInstanceRequest(name="acme"))).instance
    assert redacted.agent_api_key.value == ""
    clear = (
        await harness.stub.GetInstance(router_service_pb2.GetInstanceRequest(name="acme", view=WITH_SECRETS))
    ).instance
    assert clear.agent_api_key.value == ""  # the agent's key never leaves the router
    assert clear.agent_api_key.is_set
    assert clear.whatsapp.evolution_key.value == EVOLUTION_KEY  # the harness calls as ingress, which uses it

    await create(harness, name="beta", agent_timeout_seconds=0)
    await harness.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(
            instance=instance_pb2.Instance(
                name="gamma",
                discord=instance_pb2.DiscordConfig(bot_token=instance_pb2.SecretValue(value="discord-token-5678")),
                agent_api_url=harness.agent.url,
            )
        )
    )
    listed = await harness.stub.ListInstances(router_service_pb2.ListInstancesRequest(page=1, page_size=2))
    assert [i.name for i in listed.instances] == ["acme", "beta"]
    assert listed.total_count == 3
    assert all(i.agent_api_key.value == "" for i in listed.instances)
    page2 = await harness.stub.ListInstances(router_service_pb2.ListInstancesRequest(page=2, page_size=2))
    assert [i.name for i in page2.instances] == ["gamma"]
    discord = await harness.stub.ListInstances(
        router_service_pb2.ListInstancesRequest(channel=channel_pb2.CHANNEL_DISCORD)
    )
    assert [i.name for i in discord.instances] == ["gamma"]
    beta = (await harness.stub.GetInstance(router_service_pb2.GetInstanceRequest(name="beta"))).instance
    assert beta.agent_timeout_seconds == 60

    updated = (
        await harness.stub.UpdateInstance(
            router_service_pb2.UpdateInstanceRequest(
                instance=instance_pb2.Instance(
                    name="acme",
                    default_agent="sales-bot",
                    agent_api_key=instance_pb2.SecretValue(value="new-agent-key-7777"),
                    fallback_text="Sorry!",
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["default_agent", "agent_api_key", "fallback_text"]),
            )
        )
    ).instance
    assert updated.default_agent == "sales-bot"
    assert updated.agent_api_key.hint == "****7777"
    assert updated.whatsapp.evolution_key.hint == "****9C3D"  # untouched: not in the mask
    assert updated.whatsapp.whatsapp_instance == "acme-support"
    assert updated.fallback_text == "Sorry!"

    await harness.stub.DeleteInstance(router_service_pb2.DeleteInstanceRequest(name="acme"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.stub.GetInstance(router_service_pb2.GetInstanceRequest(name="acme"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.stub.DeleteInstance(router_service_pb2.DeleteInstanceRequest(name="acme"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_duplicate_name_is_already_exists(harness: Harness) -> None:
    await create(harness)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(harness)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


@dataclass(frozen=True)
class ViolationSpec:
    name: str
    overrides: dict[str, Any]
    field: str


VIOLATIONS = [
    ViolationSpec("upper case name", {"name": "Acme"}, "name"),
    ViolationSpec("name starting with dash", {"name": "-acme"}, "name"),
    ViolationSpec("name too long", {"name": "a" * 64}, "name"),
    ViolationSpec("reserved name", {"name": "instances"}, "name"),
    ViolationSpec("reserved name send-text", {"name": "send-text"}, "name"),
    ViolationSpec("no channel", {"channel": channel_pb2.CHANNEL_UNSPECIFIED, "whatsapp": None}, "channel"),
    ViolationSpec("channel and settings disagree", {"channel": channel_pb2.CHANNEL_DISCORD}, "channel"),
    ViolationSpec("agent url not http", {"agent_api_url": "ftp://agent"}, "agent_api_url"),
    ViolationSpec(
        "whatsapp without evolution url",
        {"whatsapp": instance_pb2.WhatsAppConfig(whatsapp_instance="acme-support")},
        "whatsapp.evolution_url",
    ),
    ViolationSpec(
        "whatsapp without evolution instance",
        {"whatsapp": instance_pb2.WhatsAppConfig(evolution_url="http://evolution.invalid")},
        "whatsapp.whatsapp_instance",
    ),
    ViolationSpec(
        "discord without a token",
        {"channel": channel_pb2.CHANNEL_DISCORD, "whatsapp": None, "discord": instance_pb2.DiscordConfig()},
        "discord.bot_token",
    ),
    ViolationSpec(
        "slack with a user token",
        {
            "channel": channel_pb2.CHANNEL_SLACK,
            "whatsapp": None,
            "slack": instance_pb2.SlackConfig(
                bot_token=instance_pb2.SecretValue(value="xoxp-user"),
                signing_secret=instance_pb2.SecretValue(value="s"),
            ),
        },
        "slack.bot_token",
    ),
    ViolationSpec("timeout too long", {"agent_timeout_seconds": 601}, "agent_timeout_seconds"),
    ViolationSpec("negative timeout", {"agent_timeout_seconds": -1}, "agent_timeout_seconds"),
]


@pytest.mark.parametrize("spec", VIOLATIONS, ids=[v.name for v in VIOLATIONS])
async def test_validation(harness: Harness, spec: ViolationSpec) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(harness, **spec.overrides)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert spec.field in violations(err.value)


async def test_update_rejects_unknown_paths_and_bad_values(harness: Harness) -> None:
    await create(harness)
    for paths, field in ((["name"], "update_mask"), ([], "update_mask"), (["agent_api_url"], "agent_api_url")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await harness.stub.UpdateInstance(
                router_service_pb2.UpdateInstanceRequest(
                    instance=instance_pb2.Instance(name="acme", agent_api_url="not a url"),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in violations(err.value)


async def test_watch_snapshot_then_changes(harness: Harness) -> None:
    await create(harness, name="acme")
    await create(harness, name="beta")
    stream = harness.stub.WatchInstances(router_service_pb2.WatchInstancesRequest())
    changes = aiter(stream)

    async def next_change() -> router_service_pb2.WatchInstancesResponse:
        return await asyncio.wait_for(anext(changes), 5)

    first, second, done = await next_change(), await next_change(), await next_change()
    assert [first.kind, second.kind] == [instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT] * 2
    assert {first.instance.name, second.instance.name} == {"acme", "beta"}
    assert first.instance.whatsapp.evolution_key.value == EVOLUTION_KEY  # watchers get the secrets they use...
    assert first.instance.agent_api_key.value == ""  # ...and never the agent's
    assert done.kind == instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT_DONE

    await create(harness, name="gamma")
    upserted = await next_change()
    assert upserted.kind == instance_pb2.INSTANCE_CHANGE_KIND_UPSERTED
    assert upserted.instance.name == "gamma"
    assert upserted.instance.whatsapp.evolution_key.value == EVOLUTION_KEY

    await harness.stub.UpdateInstance(
        router_service_pb2.UpdateInstanceRequest(
            instance=instance_pb2.Instance(name="acme", is_active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["is_active"]),
        )
    )
    changed = await next_change()
    assert changed.kind == instance_pb2.INSTANCE_CHANGE_KIND_UPSERTED
    assert changed.instance.name == "acme"
    assert not changed.instance.is_active

    await harness.stub.DeleteInstance(router_service_pb2.DeleteInstanceRequest(name="beta"))
    deleted = await next_change()
    assert deleted.kind == instance_pb2.INSTANCE_CHANGE_KIND_DELETED
    assert deleted.instance.name == "beta"

    assert harness.broadcaster.watcher_count == 1
    stream.cancel()
    await wait_for(lambda: harness.broadcaster.watcher_count == 0)


async def test_slow_watcher_is_cut_off() -> None:
    """A watcher whose queue overflows gets UnavailableError (its stream ends and it re-snapshots)."""
    broadcaster = InstanceBroadcaster(queue_size=3)
    with broadcaster.subscribe() as slow, broadcaster.subscribe() as fast:
        for index in range(5):
            broadcaster.publish(InstanceChange("deleted", None, f"i{index}"))
            if index < 2:
                assert (await fast.next()).name == f"i{index}"
        assert slow.overflowed
        assert not fast.overflowed
        with pytest.raises(UnavailableError):
            await slow.next()
        assert [(await fast.next()).name for _ in range(3)] == ["i2", "i3", "i4"]
    assert broadcaster.watcher_count == 0
