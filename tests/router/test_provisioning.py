"""Instance CRUD with provisioning: the router's InstanceService calling a real ChannelsService (gRPC) that talks to
the Evolution simulator, instances stored by the real repository on SQLite and PostgreSQL.

What must hold: a new instance exists on both sides or on neither; the token Evolution issued is kept encrypted and
used; an update that touches what Evolution holds re-syncs it; a delete keeps the Evolution instance unless asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import aiohttp
import pytest
from omni.channels.v1 import channels_service_pb2_grpc

from launcher.local_mesh import free_port
from servicekit import errors
from servicekit.channels import Channel
from servicekit.database import Database, migrate, open_database
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import set_serving
from servicekit.instances import Instance, WhatsAppConfig
from services.channels.config import Settings as ChannelsSettings
from services.channels.core.connections import ConnectionDesk
from services.channels.core.evolution import EvolutionClient
from services.channels.core.evolution_admin import EvolutionAdmin
from services.channels.core.outbox import OutboxSender
from services.channels.core.senders.whatsapp import WEBHOOK_EVENTS, EvolutionSender
from services.channels.core.service import ChannelsCore
from services.channels.server import SERVICE_NAME as CHANNELS_SERVICE
from services.channels.server import create_server as create_channels_server
from services.channels.storage import MIGRATION_LOCK as CHANNELS_LOCK
from services.channels.storage import MIGRATIONS as CHANNELS_MIGRATIONS
from services.channels.storage import SCHEMA as CHANNELS_SCHEMA
from services.channels.storage import OutboxStore
from services.router.channel_client import GrpcAccountChecker, GrpcProvisioner
from services.router.core.broadcaster import InstanceBroadcaster
from services.router.core.instances import InstanceService
from services.router.secret_box import SecretBox
from services.router.storage import MIGRATIONS, SCHEMA, InstanceRepository
from simulators.evolution import EvolutionSimulator
from tests.helpers.mesh_auth import mesh_as
from tests.router.conftest import PUBLIC_URL, RecordingPurger

GLOBAL_KEY = "sim-global-key-0001"
HOOK = f"{PUBLIC_URL}/api/v1/webhook/evolution/acme"


class RepositoryDirectory:
    """Channels' instance directory, read straight from the router's table (the watch stream's job in the mesh)."""

    def __init__(self, repository: InstanceRepository) -> None:
        self._repository = repository

    async def get(self, name: str) -> Instance:
        found = await self._repository.get(name)
        if found is None:
            raise errors.NotFoundError(f"instance {name!r} not found")
        return found


class FailingUpdates(InstanceRepository):
    """The repository, except that storing the instance token fails: the moment Omni cannot keep what Evolution
    already created."""

    async def update(self, instance: Instance) -> bool:
        raise errors.UnavailableError("database went away")


@dataclass
class World:
    service: InstanceService
    repository: InstanceRepository
    sim: EvolutionSimulator
    db: Database
    purger: RecordingPurger
    provisioner: GrpcProvisioner
    accounts: GrpcAccountChecker
    box: SecretBox

    def with_repository(self, repository: InstanceRepository) -> InstanceService:
        return InstanceService(
            repository,
            InstanceBroadcaster(queue_size=10),
            self.accounts,
            purger=self.purger,
            webhook_base_url=PUBLIC_URL,
            provisioner=self.provisioner,
        )


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[World]:
    sim = EvolutionSimulator(api_key=GLOBAL_KEY)
    await sim.start()
    router_db = await open_database(db_url, SCHEMA)
    await migrate(router_db, MIGRATIONS, lock_key=SCHEMA)
    channels_db = await open_database(db_url.replace(".db", "-channels.db"), CHANNELS_SCHEMA)
    await migrate(channels_db, CHANNELS_MIGRATIONS, lock_key=CHANNELS_LOCK)
    box = SecretBox.generate()
    repository = InstanceRepository(router_db, box, cache_seconds=0.0)
    session = aiohttp.ClientSession()
    client = EvolutionClient(session, timeout_seconds=5)
    directory = RepositoryDirectory(repository)
    senders = {Channel.WHATSAPP: EvolutionSender(client)}
    desk = ConnectionDesk(directory, {Channel.WHATSAPP: EvolutionAdmin(client)})
    core = ChannelsCore(
        directory, senders, OutboxSender(OutboxStore(channels_db), senders, worker_id="w"), connections=desk
    )
    server, port, health = create_channels_server(
        ChannelsSettings(enable_tracing=False, grpc_host="127.0.0.1"), core, port=0
    )
    await server.start()
    await set_serving(health, [CHANNELS_SERVICE], True)
    channel = open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("router"))
    stub = channels_service_pb2_grpc.ChannelsServiceStub(channel)
    purger = RecordingPurger()
    accounts = GrpcAccountChecker(stub)
    provisioner = GrpcProvisioner(stub, timeout=10)
    service = InstanceService(
        repository,
        InstanceBroadcaster(queue_size=10),
        accounts,
        purger=purger,
        webhook_base_url=PUBLIC_URL,
        provisioner=provisioner,
    )
    try:
        yield World(service, repository, sim, router_db, purger, provisioner, accounts, box)
    finally:
        await channel.close(None)
        await server.stop(None)
        await session.close()
        await channels_db.close()
        await router_db.close()
        await sim.stop()


def acme(url: str, *, key: str = GLOBAL_KEY, remote: str = "acme-wa") -> Instance:
    return Instance(
        name="acme",
        agent_api_url="http://agent.example.com",
        config=WhatsAppConfig(evolution_url=url, evolution_key=key, whatsapp_instance=remote),
    )


async def test_a_new_instance_is_created_on_evolution_and_its_token_kept_encrypted(world: World) -> None:
    created = await world.service.create(acme(world.sim.url))

    remote = world.sim.state.instances["acme-wa"]
    hook = world.sim.webhook_of("acme-wa")
    assert hook is not None
    assert hook["url"] == HOOK
    assert hook["headers"] == {"x-omni-webhook-secret": created.webhook_secret}
    assert hook["events"] == list(WEBHOOK_EVENTS)
    stored = await world.repository.get("acme")
    assert stored is not None
    assert stored.config_of(WhatsAppConfig).instance_token == remote.token
    assert created.config_of(WhatsAppConfig).instance_token == remote.token
    rows = await world.db.fetch("SELECT * FROM instances WHERE name = $1", "acme")
    assert remote.token not in repr(rows)  # encrypted at rest


async def test_calls_on_the_instance_then_use_its_token(world: World) -> None:
    await world.service.create(acme(world.sim.url))
    remote = world.sim.state.instances["acme-wa"]
    world.sim.api_key = "rotated-global-key"  # the global key no longer works: only the instance token does

    current = await world.service.get("acme")
    updated = await world.service.update(replace(current, group_reply="never"), ["group_reply"])

    settings = world.sim.settings_of("acme-wa")
    assert settings is not None
    assert settings["groupsIgnore"] is True  # re-synced: groups are dropped at the source now
    assert updated.config_of(WhatsAppConfig).instance_token == remote.token
    rotated = await world.service.rotate_webhook_secret("acme")
    hook = world.sim.webhook_of("acme-wa")
    assert hook is not None
    assert hook["headers"] == {"x-omni-webhook-secret": rotated[0]}


async def test_an_existing_evolution_instance_is_adopted(world: World) -> None:
    token = world.sim.add_instance("acme-wa", state="open")

    created = await world.service.create(acme(world.sim.url, key=token))

    assert ("POST", "/instance/create") not in world.sim.requests
    assert ("POST", "/settings/set/acme-wa") in world.sim.requests
    hook = world.sim.webhook_of("acme-wa")
    assert hook is not None
    assert hook["headers"] == {"x-omni-webhook-secret": created.webhook_secret}
    assert created.config_of(WhatsAppConfig).instance_token == ""


async def test_evolution_down_stores_nothing(world: World) -> None:
    with pytest.raises(errors.UnavailableError) as caught:
        await world.service.create(acme(f"http://127.0.0.1:{free_port()}"))
    assert caught.value.metadata == {"upstream": "whatsapp"}
    assert await world.repository.get("acme") is None


async def test_a_refused_key_stores_nothing_and_says_why(world: World) -> None:
    with pytest.raises(errors.InvalidArgumentError) as caught:
        await world.service.create(acme(world.sim.url, key="wrong"))
    assert caught.value.reason == "ACCOUNT_REJECTED"
    assert "Unauthorized" in caught.value.message
    assert caught.value.metadata == {"upstream": "whatsapp"}
    assert await world.repository.get("acme") is None
    assert "acme-wa" not in world.sim.state.instances


async def test_a_failed_store_deletes_the_evolution_instance_it_created(world: World) -> None:
    failing = world.with_repository(FailingUpdates(world.db, world.box, cache_seconds=0.0))

    with pytest.raises(errors.UnavailableError):
        await failing.create(acme(world.sim.url))

    assert "acme-wa" not in world.sim.state.instances
    assert ("DELETE", "/instance/delete/acme-wa") in world.sim.requests
    assert await world.repository.get("acme") is None


async def test_an_update_of_the_evolution_instance_moves_it_and_its_token(world: World) -> None:
    await world.service.create(acme(world.sim.url))
    first = world.sim.state.instances["acme-wa"].token
    current = await world.service.get("acme")
    moved = replace(current, config=replace(current.config_of(WhatsAppConfig), whatsapp_instance="acme-two"))

    updated = await world.service.update(moved, ["whatsapp.whatsapp_instance"])

    second = world.sim.state.instances["acme-two"]
    assert second.token != first
    assert updated.config_of(WhatsAppConfig).instance_token == second.token
    hook = world.sim.webhook_of("acme-two")
    assert hook is not None
    assert hook["headers"] == {"x-omni-webhook-secret": updated.webhook_secret}


async def test_an_unrelated_update_calls_nobody(world: World) -> None:
    await world.service.create(acme(world.sim.url))
    world.sim.reset()
    await world.service.update(replace(await world.service.get("acme"), default_agent="other"), ["default_agent"])
    assert world.sim.requests == []


async def test_delete_keeps_the_evolution_instance_by_default(world: World) -> None:
    await world.service.create(acme(world.sim.url))
    await world.service.delete("acme")
    assert "acme-wa" in world.sim.state.instances
    assert await world.repository.get("acme") is None


async def test_delete_remote_deletes_it_first(world: World) -> None:
    await world.service.create(acme(world.sim.url))
    await world.service.delete("acme", delete_remote=True)
    assert "acme-wa" not in world.sim.state.instances
    assert await world.repository.get("acme") is None
    assert world.purger.purged


async def test_a_refused_remote_delete_keeps_the_instance(world: World) -> None:
    await world.service.create(acme(world.sim.url))
    world.sim.state.instances["acme-wa"].token = "revoked"
    world.sim.api_key = "rotated"

    with pytest.raises(errors.InvalidArgumentError):
        await world.service.delete("acme", delete_remote=True)

    assert await world.repository.get("acme") is not None
    assert "acme-wa" in world.sim.state.instances
    assert world.purger.purged == []
