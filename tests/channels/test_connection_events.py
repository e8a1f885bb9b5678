"""RecordConnectionEvent and the recorded connection states: what Evolution's connection.update and qrcode.updated
leave behind (SQLite and PostgreSQL), and status reads answered from it without a round trip to Evolution."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc
from omni.common.v1 import channel_pb2

from launcher.local_mesh import free_port
from servicekit.database import Database
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import set_serving
from servicekit.instances import Instance
from services.channels.config import Settings
from services.channels.core.connections import (
    QR_FRESH_SECONDS,
    ConnectionBook,
    ConnectionDesk,
    ConnectionEvent,
    ConnectionRecord,
    merge,
)
from services.channels.core.models import ConnectionState
from services.channels.server import SERVICE_NAME, create_server
from services.channels.storage import ConnectionStateStore
from services.ingress.channels_client import GrpcConnectionRelay
from services.ingress.core.evolution_parser import ConnectionReport, parse_connection_event
from simulators.evolution import EvolutionSimulator
from tests.channels.conftest import Harness, MakeHarness
from tests.helpers.mesh_auth import mesh_as

Stub = channels_service_pb2_grpc.ChannelsServiceStub


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub
    harness: Harness
    sim: EvolutionSimulator
    store: ConnectionStateStore
    clock: Clock
    port: int


@pytest.fixture
async def world(
    make_harness: MakeHarness, db: Database, sim: EvolutionSimulator, instance: Instance
) -> AsyncIterator[World]:
    harness = make_harness()
    store = ConnectionStateStore(db)
    clock = Clock()
    # The harness core with a desk over the real table (and a controllable clock for QR freshness).
    harness.core.connections = ConnectionDesk(harness.directory, {}, ConnectionBook(store, clock=clock))
    server, port, health = create_server(Settings(enable_tracing=False, grpc_host="127.0.0.1"), harness.core, port=0)
    await server.start()
    await set_serving(health, [SERVICE_NAME], True)
    async with open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("ingress")) as channel:
        yield World(Stub(channel), harness, sim, store, clock, port)
    await server.stop(None)


async def record(world: World, **fields: object) -> None:
    await world.stub.RecordConnectionEvent(
        channels_service_pb2.RecordConnectionEventRequest(instance_name="acme", **fields),  # type: ignore[arg-type]
        timeout=10,
    )


async def status(world: World, *, qr: bool = False) -> channels_service_pb2.GetConnectionStatusResponse:
    request = channels_service_pb2.GetConnectionStatusRequest(instance_name="acme", include_qr_code=qr)
    return await world.stub.GetConnectionStatus(request, timeout=10)


def at(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


async def test_open_is_served_from_the_record_without_asking_evolution(world: World) -> None:
    await record(
        world,
        state=channel_pb2.CONNECTION_STATE_CONNECTED,
        raw_state="open",
        account_id="5511987650000@s.whatsapp.net",
        account_name="Acme Suporte",
    )
    world.sim.reset()

    answer = await status(world)
    with_qr = await status(world, qr=True)

    assert answer.state == channel_pb2.CONNECTION_STATE_CONNECTED
    assert answer.account_id == "5511987650000@s.whatsapp.net"
    assert answer.account_name == "Acme Suporte"
    assert with_qr.state == channel_pb2.CONNECTION_STATE_CONNECTED
    assert world.sim.requests == []


async def test_a_qr_event_is_served_while_fresh_then_evolution_is_asked_again(world: World) -> None:
    world.sim.set_state("acme-support", "connecting")
    await record(world, state=channel_pb2.CONNECTION_STATE_CONNECTING, raw_state="connecting")
    await record(world, qr_code="QRPNG", pairing_code="WZYEH1YY")
    world.sim.reset()

    fresh = await status(world, qr=True)
    assert fresh.state == channel_pb2.CONNECTION_STATE_CONNECTING
    assert (fresh.qr_code, fresh.pairing_code) == ("QRPNG", "WZYEH1YY")
    assert (await status(world)).qr_code == ""  # a plain status read carries no QR
    assert world.sim.requests == []

    world.clock.now += QR_FRESH_SECONDS + 1
    world.harness.core.connections.book._memory.clear()
    stale = await status(world, qr=True)
    assert stale.qr_code != "QRPNG"  # the simulator's own QR: Evolution was asked
    assert ("GET", "/instance/connect/acme-support") in world.sim.requests


async def test_nothing_recorded_falls_back_to_evolution(world: World) -> None:
    world.sim.set_state("acme-support", "open")
    answer = await status(world)
    assert answer.state == channel_pb2.CONNECTION_STATE_CONNECTED
    assert ("GET", "/instance/connectionState/acme-support") in world.sim.requests


async def test_close_and_refused_drop_the_qr_and_keep_the_detail(world: World) -> None:
    await record(world, qr_code="QRPNG")
    await record(world, state=channel_pb2.CONNECTION_STATE_ERROR, raw_state="refused", detail="QR code limit reached")
    refused = await status(world)
    assert refused.state == channel_pb2.CONNECTION_STATE_ERROR
    assert refused.detail == "QR code limit reached"
    row = await world.store.get("acme")
    assert row is not None
    assert row.qr_code == ""


async def test_an_older_event_does_not_overwrite_a_newer_one(world: World) -> None:
    await record(world, state=channel_pb2.CONNECTION_STATE_CONNECTED, raw_state="open", occurred_at=at(2_000))
    await record(world, state=channel_pb2.CONNECTION_STATE_CONNECTING, raw_state="connecting", occurred_at=at(1_500))
    row = await world.store.get("acme")
    assert row is not None
    assert row.state is ConnectionState.CONNECTED


async def test_the_table_keeps_the_later_write_whatever_the_order(world: World) -> None:
    """Two replicas writing at once: the conditional upsert keeps the later event."""
    newer = ConnectionRecord("acme", ConnectionState.CONNECTED, raw_state="open", occurred_at=20.0)
    older = ConnectionRecord("acme", ConnectionState.DISCONNECTED, raw_state="close", occurred_at=10.0)
    assert await world.store.save(newer)
    assert not await world.store.save(older)
    row = await world.store.get("acme")
    assert row == newer
    assert await world.store.count_by_state() == {"connected": 1}


async def test_purge_forgets_the_connection_state(world: World) -> None:
    await record(world, state=channel_pb2.CONNECTION_STATE_CONNECTED, raw_state="open")
    purged = await world.stub.PurgeInstance(channels_service_pb2.PurgeInstanceRequest(instance_name="acme"), timeout=10)
    assert purged.deleted_rows == 1
    assert await world.store.get("acme") is None


async def test_recording_needs_an_instance_name(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await world.stub.RecordConnectionEvent(channels_service_pb2.RecordConnectionEventRequest(), timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_record_connection_event_is_mesh_only(world: World) -> None:
    """An API key (even the admin's) may not write connection states: only ingress relays what Evolution said."""
    async with open_channel(f"127.0.0.1:{world.port}", tracing=False) as bare:
        stub = Stub(bare)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RecordConnectionEvent(
                channels_service_pb2.RecordConnectionEventRequest(instance_name="acme"),
                metadata=(("x-api-key", "whatever"),),
                timeout=10,
            )
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_merge_rules() -> None:
    qr = merge(None, "acme", ConnectionEvent(qr_code="Q1"), now=50.0)
    assert (qr.state, qr.raw_state, qr.qr_code, qr.qr_at) == (ConnectionState.CONNECTING, "connecting", "Q1", 50.0)
    connecting = merge(qr, "acme", ConnectionEvent(state=ConnectionState.CONNECTING, raw_state="connecting"), now=60)
    assert connecting.qr_code == "Q1"  # still the QR to scan
    opened = merge(
        connecting,
        "acme",
        ConnectionEvent(state=ConnectionState.CONNECTED, raw_state="open", account_id="5511@s.whatsapp.net"),
        now=70,
    )
    assert (opened.qr_code, opened.account_id) == ("", "5511@s.whatsapp.net")
    closed = merge(opened, "acme", ConnectionEvent(state=ConnectionState.DISCONNECTED, raw_state="close"), now=80)
    assert (closed.account_id, closed.qr_code) == ("", "")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "connection-update-open.json",
            ConnectionReport(
                state="connected",
                raw_state="open",
                account_id="5511987650000@s.whatsapp.net",
                account_name="Acme Suporte",
            ),
        ),
        ("connection-update-connecting.json", ConnectionReport(state="connecting", raw_state="connecting")),
        (
            "connection-update-close.json",
            ConnectionReport(state="disconnected", raw_state="close", detail="connection closed (status 401)"),
        ),
        (
            "connection-update-refused.json",
            ConnectionReport(state="error", raw_state="refused", detail="QR code limit reached"),
        ),
        (
            "qrcode-updated-limit.json",
            ConnectionReport(state="error", raw_state="refused", detail="QR code limit reached, please login again"),
        ),
    ],
)
def test_ingress_reads_each_connection_fixture(evolution_fixtures: Path, fixture: str, expected: object) -> None:
    envelope = json.loads((evolution_fixtures / fixture).read_text())
    assert parse_connection_event(envelope) == expected


def test_ingress_reads_the_qr_without_its_data_prefix(evolution_fixtures: Path) -> None:
    envelope = json.loads((evolution_fixtures / "qrcode-updated.json").read_text())
    report = parse_connection_event(envelope)
    assert report is not None
    assert report.state == ""  # the state stays what it was
    assert report.qr_code.startswith("iVBORw0KGgo")
    assert parse_connection_event(json.loads((evolution_fixtures / "messages-upsert-text.json").read_text())) is None


async def test_the_relay_records_through_channels_and_never_raises(world: World, evolution_fixtures: Path) -> None:
    body = (evolution_fixtures / "connection-update-open.json").read_bytes()
    async with open_channel(f"127.0.0.1:{world.port}", tracing=False, mesh=mesh_as("ingress")) as channel:
        await GrpcConnectionRelay(Stub(channel)).relay("acme", body)
    row = await world.store.get("acme")
    assert row is not None
    assert (row.state, row.account_name) == (ConnectionState.CONNECTED, "Acme Suporte")

    async with open_channel(f"127.0.0.1:{free_port()}", tracing=False, mesh=mesh_as("ingress")) as dead:
        await GrpcConnectionRelay(Stub(dead), timeout=0.5).relay("acme", body)  # logged, not raised
    await GrpcConnectionRelay(Stub(dead)).relay("acme", b"not json")
