"""Deleting an instance through the router purges it in ingress, channels and tracing (real servers, real databases):
a new instance of the same name sees nothing of the old one; when a service cannot purge, the instance stays."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from omni.channels.v1 import channels_service_pb2_grpc
from omni.ingress.v1 import ingress_service_pb2, ingress_service_pb2_grpc
from omni.tracing.v1 import tracing_service_pb2, tracing_service_pb2_grpc

from servicekit.database import Database, migrate, open_database
from servicekit.errors import UnavailableError
from servicekit.grpc_clients import open_channel
from servicekit.instances import Instance, WhatsAppConfig
from services.channels.config import Settings as ChannelsSettings
from services.channels.core.outbox import OutboxSender
from services.channels.core.service import ChannelsCore
from services.channels.server import create_server as channels_server
from services.channels.storage import MIGRATION_LOCK as CHANNELS_LOCK
from services.channels.storage import MIGRATIONS as CHANNELS_MIGRATIONS
from services.channels.storage import SCHEMA as CHANNELS_SCHEMA
from services.channels.storage import OutboxStore
from services.ingress.config import Settings as IngressSettings
from services.ingress.core.accept import IngressCore
from services.ingress.core.bots.status import BotStatus
from services.ingress.server import create_server as ingress_server
from services.ingress.storage import MIGRATION_LOCK as INGRESS_LOCK
from services.ingress.storage import MIGRATIONS as INGRESS_MIGRATIONS
from services.ingress.storage import SCHEMA as INGRESS_SCHEMA
from services.ingress.storage import BotLeaseStore, InboxStore
from services.router.core.broadcaster import InstanceBroadcaster
from services.router.core.instances import InstanceService
from services.router.core.models import ChannelAccount
from services.router.purge_client import GrpcInstancePurger
from services.router.secret_box import SecretBox
from services.router.storage import MIGRATIONS as ROUTER_MIGRATIONS
from services.router.storage import SCHEMA as ROUTER_SCHEMA
from services.router.storage import InstanceRepository
from services.tracing.config import Settings as TracingSettings
from services.tracing.core import TracingCore
from services.tracing.server import create_server as tracing_server
from services.tracing.storage import TraceStore, open_tracing_database
from tests.helpers.instances import DictDirectory
from tests.helpers.mesh_auth import mesh_as
from tests.helpers.tenant_data import OUTBOX_KEY, fill_channels, fill_ingress, fill_tracing, inbound


def acme(instance_id: str) -> Instance:
    return Instance(
        name="acme",
        id=instance_id,
        webhook_auth="none",
        config=WhatsAppConfig(evolution_url="http://evolution.invalid", whatsapp_instance="acme"),
        created_at=1.0,
        updated_at=1.0,
    )


class NoChannelChecks:
    """The router's AccountChecker; deletion never calls it."""

    async def check(self, instance: Instance) -> ChannelAccount:
        raise AssertionError("not called by delete")

    async def register_webhook(self, instance: Instance, webhook_url: str) -> None:
        raise AssertionError("not called by delete")


@dataclass
class Mesh:
    """Ingress, channels and tracing serving on real ports, the router's control plane calling them."""

    instances: InstanceService
    repository: InstanceRepository
    ingress_core: IngressCore
    inbox: InboxStore
    leases: BotLeaseStore
    outbox: OutboxStore
    ingress_db: Database
    channels_db: Database
    tracing_core: TracingCore
    ingress: ingress_service_pb2_grpc.IngressServiceAsyncStub
    tracing: tracing_service_pb2_grpc.TracingServiceAsyncStub
    servers: dict[str, grpc.aio.Server]
    closers: list[Any] = field(default_factory=list)


def per_service(db_url: str, service: str) -> str:
    """SQLite: one file per service (each has its own schema_migrations); PostgreSQL: one database, a schema each."""
    if db_url.startswith("sqlite:///"):
        return db_url.removesuffix(".db") + f"-{service}.db"
    return db_url


@pytest.fixture
async def mesh(db_url: str) -> AsyncIterator[Mesh]:
    dbs: list[Database] = []

    async def database(service: str, schema: str, migrations: Any, lock: str) -> Database:
        db = await open_database(per_service(db_url, service), schema)
        dbs.append(db)
        await migrate(db, migrations, lock_key=lock)
        return db

    ingress_db = await database("ingress", INGRESS_SCHEMA, INGRESS_MIGRATIONS, INGRESS_LOCK)
    channels_db = await database("channels", CHANNELS_SCHEMA, CHANNELS_MIGRATIONS, CHANNELS_LOCK)
    router_db = await database("router", ROUTER_SCHEMA, ROUTER_MIGRATIONS, ROUTER_SCHEMA)
    tracing_db = await open_tracing_database(per_service(db_url, "tracing"))
    dbs.append(tracing_db)

    inbox, leases = InboxStore(ingress_db), BotLeaseStore(ingress_db)
    directory = DictDirectory(acme("first"), Instance(name="other", webhook_auth="none"))
    ingress_core = IngressCore(inbox, directory, also_purged=(leases,))

    async def no_bots(instance_name: str) -> list[BotStatus]:
        return []

    outbox = OutboxStore(channels_db)
    tracing_core = TracingCore(TraceStore(tracing_db))
    servers: dict[str, grpc.aio.Server] = {}
    ports: dict[str, int] = {}
    servers["ingress"], ports["ingress"], _ = ingress_server(
        IngressSettings(enable_tracing=False), ingress_core, no_bots, port=0
    )
    servers["channels"], ports["channels"], _ = channels_server(
        ChannelsSettings(enable_tracing=False), ChannelsCore(directory, {}, OutboxSender(outbox, {})), port=0
    )
    servers["tracing"], ports["tracing"], _ = tracing_server(TracingSettings(), tracing_core, port=0)
    for server in servers.values():
        await server.start()
    channels = {
        name: open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("router")) for name, port in ports.items()
    }
    purger = GrpcInstancePurger(
        ingress=ingress_service_pb2_grpc.IngressServiceStub(channels["ingress"]),
        channels=channels_service_pb2_grpc.ChannelsServiceStub(channels["channels"]),
        tracing=tracing_service_pb2_grpc.TracingServiceStub(channels["tracing"]),
        timeout=2.0,
    )
    repository = InstanceRepository(router_db, SecretBox.generate())
    service = InstanceService(repository, InstanceBroadcaster(10), NoChannelChecks(), purger=purger)
    try:
        yield Mesh(
            instances=service,
            repository=repository,
            ingress_core=ingress_core,
            inbox=inbox,
            leases=leases,
            outbox=outbox,
            ingress_db=ingress_db,
            channels_db=channels_db,
            tracing_core=tracing_core,
            ingress=ingress_service_pb2_grpc.IngressServiceStub(channels["ingress"]),
            tracing=tracing_service_pb2_grpc.TracingServiceStub(channels["tracing"]),
            servers=servers,
        )
    finally:
        for channel in channels.values():
            await channel.close(None)
        for server in servers.values():
            await server.stop(None)
        for db in dbs:
            await db.close()


async def fill(mesh: Mesh, name: str) -> None:
    await fill_ingress(mesh.ingress_core, mesh.inbox, mesh.leases, name)
    await fill_channels(mesh.outbox, name)
    await fill_tracing(mesh.tracing_core, name)


async def visible(mesh: Mesh, name: str) -> dict[str, int]:
    """What each service still shows of `name`, through its gRPC API where it has one."""
    dead = await mesh.ingress.ListDeadLetters(ingress_service_pb2.ListDeadLettersRequest(instance_name=name))
    traces = await mesh.tracing.ListTraces(tracing_service_pb2.ListTracesRequest(instance_name=name))
    return {
        "dead_letters": dead.total_count,
        "traces": traces.total_count,
        "inbox": int(await mesh.ingress_db.fetchval("SELECT count(*) FROM inbox WHERE instance_name = $1", name)),
        "bot_leases": len(await mesh.leases.list(name)),
        "outbox": int(
            await mesh.channels_db.fetchval("SELECT count(*) FROM outbox_parts WHERE instance_name = $1", name)
        ),
    }


async def test_delete_purges_every_service_and_a_recreated_instance_inherits_nothing(mesh: Mesh) -> None:
    await mesh.repository.create(acme("first"))
    await fill(mesh, "acme")
    await fill(mesh, "other")
    assert await visible(mesh, "acme") == {"dead_letters": 1, "traces": 2, "inbox": 2, "bot_leases": 1, "outbox": 3}

    await mesh.instances.delete("acme")

    assert await mesh.repository.get("acme") is None
    assert await visible(mesh, "acme") == {"dead_letters": 0, "traces": 0, "inbox": 0, "bot_leases": 0, "outbox": 0}
    assert await visible(mesh, "other") == {"dead_letters": 1, "traces": 2, "inbox": 2, "bot_leases": 1, "outbox": 3}

    # The same name again: its first messages are new (not duplicates of the old instance's), its keys are free.
    await mesh.repository.create(acme("second"))
    assert not (await mesh.ingress_core.ingest_message(inbound("acme", "WA-1"))).duplicate
    assert await mesh.outbox.parts(f"{OUTBOX_KEY}:acme") == []
    assert (await visible(mesh, "acme"))["dead_letters"] == 0


async def test_a_service_that_cannot_purge_keeps_the_instance_for_a_retry(mesh: Mesh) -> None:
    await mesh.repository.create(acme("first"))
    await fill(mesh, "acme")
    await mesh.servers["tracing"].stop(None)

    started = time.monotonic()
    with pytest.raises(UnavailableError, match="tracing"):
        await mesh.instances.delete("acme")
    assert time.monotonic() - started < 10

    assert await mesh.repository.get("acme") is not None  # kept: the delete can be retried
    assert (await visible_without_tracing(mesh, "acme")) == {"inbox": 0, "outbox": 0}  # purges are idempotent


async def visible_without_tracing(mesh: Mesh, name: str) -> dict[str, int]:
    counts = {}
    counts["inbox"] = int(await mesh.ingress_db.fetchval("SELECT count(*) FROM inbox WHERE instance_name = $1", name))
    counts["outbox"] = int(
        await mesh.channels_db.fetchval("SELECT count(*) FROM outbox_parts WHERE instance_name = $1", name)
    )
    return counts
