"""ProvisionInstance, DeleteRemoteInstance, ManageConnection and DiscoverInstances through a real ChannelsService
server, against the Evolution simulator, with the connection states stored on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import grpc
import pytest
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc
from omni.common.v1 import channel_pb2

from launcher.local_mesh import free_port
from servicekit.channels import Channel
from servicekit.convert import instance_to_proto
from servicekit.database import Database
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import set_serving
from servicekit.instances import Instance, SlackConfig, WhatsAppConfig
from servicekit.secret_grants import WEBHOOK_REGISTRATION
from services.channels.config import Settings
from services.channels.core.connections import ConnectionBook, ConnectionDesk, ConnectionEvent
from services.channels.core.evolution import EvolutionClient
from services.channels.core.evolution_admin import EvolutionAdmin
from services.channels.core.models import ConnectionState
from services.channels.core.outbox import OutboxSender
from services.channels.core.senders.whatsapp import WEBHOOK_EVENTS, EvolutionSender
from services.channels.core.service import ChannelsCore
from services.channels.server import SERVICE_NAME, create_server
from services.channels.storage import ConnectionStateStore, OutboxStore
from simulators.evolution import EvolutionSimulator
from tests.channels.conftest import GLOBAL_KEY
from tests.helpers.instances import DictDirectory
from tests.helpers.mesh_auth import mesh_as

HOOK = "https://hub.example.com/api/v1/webhook/evolution/acme"
SECRET = "webhook-secret-0123456789abcdef"


@dataclass
class World:
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub
    sim: EvolutionSimulator
    directory: DictDirectory
    desk: ConnectionDesk
    store: ConnectionStateStore


def acme(url: str, *, key: str = GLOBAL_KEY, remote: str = "acme-wa", token: str = "", name: str = "acme") -> Instance:
    return Instance(
        name=name,
        webhook_secret=SECRET,
        config=WhatsAppConfig(evolution_url=url, evolution_key=key, whatsapp_instance=remote, instance_token=token),
    )


@pytest.fixture
async def world(db: Database, session: aiohttp.ClientSession, sim: EvolutionSimulator) -> AsyncIterator[World]:
    directory = DictDirectory()
    client = EvolutionClient(session, timeout_seconds=5)
    admin = EvolutionAdmin(client, default_url=sim.url, fallback_key=GLOBAL_KEY)
    store = ConnectionStateStore(db)
    desk = ConnectionDesk(directory, {Channel.WHATSAPP: admin}, ConnectionBook(store))
    senders = {Channel.WHATSAPP: EvolutionSender(client)}
    core = ChannelsCore(directory, senders, OutboxSender(OutboxStore(db), senders, worker_id="w"), connections=desk)
    server, port, health = create_server(Settings(enable_tracing=False, grpc_host="127.0.0.1"), core, port=0)
    await server.start()
    await set_serving(health, [SERVICE_NAME], True)
    async with open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("router")) as channel:
        yield World(channels_service_pb2_grpc.ChannelsServiceStub(channel), sim, directory, desk, store)
    await server.stop(None)


async def provision(world: World, instance: Instance) -> channels_service_pb2.ProvisionInstanceResponse:
    request = channels_service_pb2.ProvisionInstanceRequest(
        instance=instance_to_proto(instance, with_secrets=WEBHOOK_REGISTRATION), webhook_url=HOOK
    )
    return await world.stub.ProvisionInstance(request, timeout=10)


async def test_a_new_instance_is_created_with_the_webhook_secret_and_events(world: World) -> None:
    answer = await provision(world, acme(world.sim.url))

    created = world.sim.state.instances["acme-wa"]
    assert answer.provisioned
    assert answer.created
    assert answer.instance_token == created.token
    assert answer.remote_id == created.instance_id
    hook = world.sim.webhook_of("acme-wa")
    assert hook is not None
    assert hook["url"] == HOOK
    assert hook["enabled"] is True
    assert hook["headers"] == {"x-omni-webhook-secret": SECRET}
    assert hook["events"] == list(WEBHOOK_EVENTS)
    assert not hook["webhookByEvents"]
    assert not hook["webhookBase64"]
    assert world.sim.settings_of("acme-wa") == {
        "rejectCall": False,
        "groupsIgnore": False,
        "alwaysOnline": False,
        "readMessages": False,
        "readStatus": False,
        "syncFullHistory": False,
        "msgCall": "",
    }
    assert world.sim.requests == [("GET", "/instance/fetchInstances"), ("POST", "/instance/create")]
    # The QR instance/create returned is kept: the status read that follows needs no Evolution round trip.
    assert answer.qr_code
    assert "data:" not in answer.qr_code
    record = await world.store.get("acme")
    assert record is not None
    assert record.qr_code == answer.qr_code
    assert record.state.value == "connecting"


async def test_an_existing_instance_is_adopted_with_webhook_and_settings(world: World) -> None:
    token = world.sim.add_instance("acme-wa", state="open")

    answer = await provision(world, acme(world.sim.url, key=token, remote="acme-wa"))

    assert answer.provisioned
    assert not answer.created
    assert answer.instance_token == ""
    assert ("POST", "/instance/create") not in world.sim.requests
    assert ("POST", "/webhook/set/acme-wa") in world.sim.requests
    assert ("POST", "/settings/set/acme-wa") in world.sim.requests
    hook = world.sim.webhook_of("acme-wa")
    assert hook is not None
    assert hook["headers"] == {"x-omni-webhook-secret": SECRET}
    assert hook["events"] == list(WEBHOOK_EVENTS)
    settings = world.sim.settings_of("acme-wa")
    assert settings is not None
    assert settings["groupsIgnore"] is False


async def test_group_reply_never_ignores_groups_at_the_source(world: World) -> None:
    world.sim.add_instance("acme-wa", state="open")
    await provision(world, dataclasses.replace(acme(world.sim.url), group_reply="never"))
    settings = world.sim.settings_of("acme-wa")
    assert settings is not None
    assert settings["groupsIgnore"] is True


async def test_a_refused_key_is_account_rejected_with_evolutions_words(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await provision(world, acme(world.sim.url, key="wrong-key"))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "Unauthorized" in (caught.value.details() or "")
    assert "acme-wa" not in world.sim.state.instances
    assert await world.store.get("acme") is None


async def test_an_unreachable_evolution_is_unavailable(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await provision(world, acme(f"http://127.0.0.1:{free_port()}"))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "could not be reached" in (caught.value.details() or "")


async def test_a_channel_without_provisioning_answers_not_provisioned(world: World) -> None:
    slack = Instance(name="team", config=SlackConfig(bot_token="xoxb-1", signing_secret="s"))
    answer = await provision(world, slack)
    assert not answer.provisioned
    assert world.sim.requests == []


async def test_delete_remote_deletes_and_a_gone_instance_is_fine(world: World) -> None:
    token = world.sim.add_instance("acme-wa")
    world.directory.instances["acme"] = acme(world.sim.url, token=token)
    await world.desk.book.record("acme", _connecting())

    first = await world.stub.DeleteRemoteInstance(
        channels_service_pb2.DeleteRemoteInstanceRequest(instance_name="acme"), timeout=10
    )
    again = await world.stub.DeleteRemoteInstance(
        channels_service_pb2.DeleteRemoteInstanceRequest(instance_name="acme"), timeout=10
    )

    assert first.deleted
    assert not again.deleted
    assert "acme-wa" not in world.sim.state.instances
    assert await world.store.get("acme") is None


async def test_delete_remote_of_an_unknown_instance_is_not_found(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await world.stub.DeleteRemoteInstance(
            channels_service_pb2.DeleteRemoteInstanceRequest(instance_name="nope"), timeout=10
        )
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def _connecting() -> ConnectionEvent:
    return ConnectionEvent(state=ConnectionState.CONNECTING, raw_state="connecting", qr_code="QR")


async def manage(
    world: World, action: channels_service_pb2.ConnectionAction.ValueType, phone: str = ""
) -> channels_service_pb2.ManageConnectionResponse:
    request = channels_service_pb2.ManageConnectionRequest(instance_name="acme", action=action, phone_number=phone)
    return await world.stub.ManageConnection(request, timeout=10)


@pytest.fixture
def closed(world: World) -> World:
    """An instance whose Evolution instance exists, logged out."""
    token = world.sim.add_instance("acme-wa", state="close")
    world.directory.instances["acme"] = acme(world.sim.url, token=token)
    return world


async def test_connect_returns_a_qr_then_the_scan_opens_it(closed: World) -> None:
    world = closed
    answer = await manage(world, channels_service_pb2.CONNECTION_ACTION_CONNECT)
    assert answer.status.state == channel_pb2.CONNECTION_STATE_CONNECTING
    assert answer.status.qr_code
    assert not answer.status.qr_code.startswith("data:")

    with_phone = await manage(world, channels_service_pb2.CONNECTION_ACTION_CONNECT, "+55 11 98765-0000")
    assert len(with_phone.status.pairing_code) == 8
    assert ("GET", "/instance/connect/acme-wa") in world.sim.requests

    world.sim.scan_qr("acme-wa")
    again = await manage(world, channels_service_pb2.CONNECTION_ACTION_CONNECT)
    assert again.status.state == channel_pb2.CONNECTION_STATE_CONNECTED
    assert again.status.qr_code == ""


async def test_connect_answering_200_error_true_is_refused_with_evolutions_words(closed: World) -> None:
    closed.sim.fail_connection_actions("acme-wa", "Connection Closed by the phone")
    for action in (channels_service_pb2.CONNECTION_ACTION_CONNECT, channels_service_pb2.CONNECTION_ACTION_RESTART):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await manage(closed, action)
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "Connection Closed by the phone" in (caught.value.details() or "")


async def test_logout_of_a_closed_account_is_refused_but_disconnect_is_idempotent(closed: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await manage(closed, channels_service_pb2.CONNECTION_ACTION_LOGOUT)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "is not connected" in (caught.value.details() or "")

    answer = await manage(closed, channels_service_pb2.CONNECTION_ACTION_DISCONNECT)
    assert answer.status.state == channel_pb2.CONNECTION_STATE_DISCONNECTED
    assert "acme-wa" in closed.sim.state.instances  # the Evolution instance stays


async def test_logout_and_restart_of_an_open_account(closed: World) -> None:
    world = closed
    world.sim.set_state("acme-wa", "open")
    restarted = await manage(world, channels_service_pb2.CONNECTION_ACTION_RESTART)
    assert restarted.status.state == channel_pb2.CONNECTION_STATE_CONNECTING

    logged_out = await manage(world, channels_service_pb2.CONNECTION_ACTION_LOGOUT)
    assert logged_out.status.state == channel_pb2.CONNECTION_STATE_DISCONNECTED
    assert logged_out.message == "Instance logged out"
    assert world.sim.state.instances["acme-wa"].state == "close"
    record = await world.store.get("acme")
    assert record is not None
    assert record.state.value == "disconnected"
    assert record.qr_code == ""


async def test_an_unspecified_action_is_invalid(closed: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await manage(closed, channels_service_pb2.CONNECTION_ACTION_UNSPECIFIED)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_discover_lists_only_unmanaged_instances(world: World) -> None:
    token = world.sim.add_instance("acme-wa", state="open")
    world.sim.add_instance("spare-1", state="close")
    world.sim.add_instance("spare-2", state="open")
    managed = acme(world.sim.url + "/", key=token)  # a trailing slash is the same server
    world.desk.instances_changed({"acme": managed})

    answer = await world.stub.DiscoverInstances(channels_service_pb2.DiscoverInstancesRequest(), timeout=10)

    assert [(i.name, i.evolution_url) for i in answer.instances] == [
        ("spare-1", world.sim.url),
        ("spare-2", world.sim.url),
    ]
    spare2 = answer.instances[1]
    assert spare2.state == channel_pb2.CONNECTION_STATE_CONNECTED
    assert spare2.raw_state == "open"
    assert spare2.owner_jid.endswith("@s.whatsapp.net")
    assert spare2.remote_id


async def test_discover_on_a_named_server_with_a_wrong_key_is_refused(world: World) -> None:
    request = channels_service_pb2.DiscoverInstancesRequest(evolution_url=world.sim.url, evolution_key="nope")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await world.stub.DiscoverInstances(request, timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    world.sim.add_instance("spare")
    good = channels_service_pb2.DiscoverInstancesRequest(evolution_url=world.sim.url, evolution_key=GLOBAL_KEY)
    assert [i.name for i in (await world.stub.DiscoverInstances(good, timeout=10)).instances] == ["spare"]


async def test_receipts_can_be_left_unsubscribed(session: aiohttp.ClientSession, sim: EvolutionSimulator) -> None:
    """AUTOMAGIK_OMNI_WHATSAPP_RECEIPTS=false: creating and adopting both leave MESSAGES_UPDATE out, nothing else."""
    admin = EvolutionAdmin(EvolutionClient(session, timeout_seconds=5), fallback_key=GLOBAL_KEY, receipts=False)
    expected = [event for event in WEBHOOK_EVENTS if event != "MESSAGES_UPDATE"]
    await admin.provision(acme(sim.url), HOOK)
    created = sim.webhook_of("acme-wa")
    assert created is not None
    assert created["events"] == expected
    sim.add_instance("kept-wa")
    await admin.provision(acme(sim.url, remote="kept-wa", name="kept"), HOOK)
    adopted = sim.webhook_of("kept-wa")
    assert adopted is not None
    assert adopted["events"] == expected
