"""IngressService through a real in-process grpc.aio server, delivering to a fake RouterService over gRPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from omni.common.v1 import channel_pb2, message_pb2
from omni.ingress.v1 import ingress_service_pb2, ingress_service_pb2_grpc
from omni.router.v1 import router_service_pb2, router_service_pb2_grpc

from servicekit import errors
from servicekit.database import Database
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import new_server
from servicekit.instances import DiscordConfig, Instance
from servicekit.messages import InboundMessage, Sender
from services.ingress.config import Settings
from services.ingress.core.accept import IngressCore
from services.ingress.core.bots.host import bot_statuses
from services.ingress.core.bots.status import BotStatus
from services.ingress.core.dispatcher import Dispatcher
from services.ingress.router_client import GrpcRouterPort
from services.ingress.server import create_server
from services.ingress.storage import BotLeaseStore, InboxStore
from tests.helpers.instances import DictDirectory
from tests.helpers.mesh_auth import mesh_as
from tests.ingress.support import FAST, body, eventually, upsert

ACME = Instance(name="acme", webhook_auth="none", group_reply="all")  # auth: test_webhook_auth.py; groups: events
DISCO = Instance(name="disco", config=DiscordConfig(bot_token="token"))
WA = channel_pb2.CHANNEL_WHATSAPP
Ingress = ingress_service_pb2


@dataclass
class FakeRouterService(router_service_pb2_grpc.RouterServiceServicer):
    """RouterService.RouteMessage with configurable outcomes: a queue of errors to raise, then SENT."""

    failures: list[errors.OmniError] = field(default_factory=list)
    requests: list[router_service_pb2.RouteMessageRequest] = field(default_factory=list)

    async def RouteMessage(
        self, request: router_service_pb2.RouteMessageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> router_service_pb2.RouteMessageResponse:
        self.requests.append(request)
        if self.failures:
            raise self.failures.pop(0)
        return router_service_pb2.RouteMessageResponse(outcome=channel_pb2.MESSAGE_OUTCOME_SENT, session_id="s1")


@dataclass
class Mesh:
    ingress: ingress_service_pb2_grpc.IngressServiceAsyncStub
    router: FakeRouterService
    store: InboxStore
    router_stub: router_service_pb2_grpc.RouterServiceAsyncStub
    leases: BotLeaseStore


@pytest.fixture
async def mesh(store: InboxStore, db: Database) -> AsyncIterator[Mesh]:
    settings = Settings(enable_tracing=False, grpc_host="127.0.0.1")
    fake_router = FakeRouterService()  # type: ignore[abstract]  # only RouteMessage is exercised
    router_server = new_server("router", tracing=False)
    router_service_pb2_grpc.add_RouterServiceServicer_to_server(fake_router, router_server)
    router_port = router_server.add_insecure_port("127.0.0.1:0")
    await router_server.start()
    router_channel = open_channel(f"127.0.0.1:{router_port}", tracing=False)
    router_stub = router_service_pb2_grpc.RouterServiceStub(router_channel)
    dispatcher = Dispatcher(
        store,
        GrpcRouterPort(router_stub),
        replica_id="test",
        policy=FAST,
    )
    core = IngressCore(store, DictDirectory(ACME, DISCO), on_accept=dispatcher.wake)
    leases = BotLeaseStore(db)

    async def statuses(instance_name: str) -> list[BotStatus]:
        return await bot_statuses(leases, instance_name, time.time())

    server, port, _ = create_server(settings, core, statuses, port=0)
    await server.start()
    await dispatcher.start()
    channel = open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("gateway"))
    try:
        yield Mesh(ingress_service_pb2_grpc.IngressServiceStub(channel), fake_router, store, router_stub, leases)
    finally:
        await channel.close(None)
        await dispatcher.stop(1.0)
        await server.stop(None)
        await router_channel.close(None)
        await router_server.stop(None)


def webhook(payload: bytes, instance: str = "acme") -> Ingress.ReceiveWebhookRequest:
    return Ingress.ReceiveWebhookRequest(instance_name=instance, channel=WA, body=payload, headers={})


async def test_unknown_instance_is_unauthenticated_like_a_wrong_secret(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await mesh.ingress.ReceiveWebhook(webhook(body(upsert("X")), instance="nobody"), timeout=5)
    assert failure.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_non_json_body_is_invalid_argument(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await mesh.ingress.ReceiveWebhook(webhook(b"<html>"), timeout=5)
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_dispositions_and_delivery_to_the_router(mesh: Mesh, evolution_fixtures: Path) -> None:
    payload = (evolution_fixtures / "messages-upsert-group-text.json").read_bytes()
    accepted = await mesh.ingress.ReceiveWebhook(webhook(payload), timeout=5)
    assert accepted.disposition == Ingress.WEBHOOK_DISPOSITION_ACCEPTED
    assert (accepted.event, len(accepted.message_id)) == ("messages.upsert", 32)
    duplicate = await mesh.ingress.ReceiveWebhook(webhook(payload), timeout=5)
    assert (duplicate.disposition, duplicate.message_id) == (
        Ingress.WEBHOOK_DISPOSITION_DUPLICATE,
        accepted.message_id,
    )
    presence = (evolution_fixtures / "presence-update.json").read_bytes()
    ignored = await mesh.ingress.ReceiveWebhook(webhook(presence), timeout=5)
    assert (ignored.disposition, ignored.reason, ignored.event) == (
        Ingress.WEBHOOK_DISPOSITION_IGNORED,
        "not_a_message",
        "presence.update",
    )
    fromme = (evolution_fixtures / "messages-upsert-fromme.json").read_bytes()
    fromme = fromme.replace(b'"3A9C4E2B7D1F5A8C6E30"', b'"FROM-ME-1"')  # the fixtures share this key id
    echo = await mesh.ingress.ReceiveWebhook(webhook(fromme), timeout=5)
    assert (echo.disposition, echo.reason) == (Ingress.WEBHOOK_DISPOSITION_IGNORED, "from_me")

    await eventually(lambda: _routed(mesh, 1))
    await asyncio.sleep(0.2)
    (request,) = mesh.router.requests
    message = request.message
    assert (request.attempt, request.final_attempt) == (1, False)
    assert message.id == accepted.message_id
    assert (message.instance_name, message.channel, message.channel_message_id) == ("acme", WA, "3A9C4E2B7D1F5A8C6E30")
    assert (message.chat_id, message.is_group, message.message_type) == (
        "120363041857263915@g.us",
        True,
        channel_pb2.MESSAGE_TYPE_TEXT,
    )
    assert (message.sender.id, message.sender.alt_id, message.sender.phone_number, message.sender.display_name) == (
        "97315264018832@lid",
        "5531988776655@s.whatsapp.net",
        "+5531988776655",
        "Carlos Lima",
    )
    assert message.sent_at.seconds == 1764945130
    assert message.received_at.seconds > 1764945130
    row = await mesh.store.get(accepted.message_id)
    assert row is not None
    assert (row.state, row.outcome) == ("handled", "sent")


async def test_media_and_quote_reach_the_router_as_protos(mesh: Mesh, evolution_fixtures: Path) -> None:
    for name in ("messages-upsert-document.json", "messages-upsert-text-reply.json"):
        payload = (evolution_fixtures / name).read_bytes()
        if name == "messages-upsert-text-reply.json":
            payload = payload.replace(b'"3A9C4E2B7D1F5A8C6E30"', b'"REPLY-1"')
        await mesh.ingress.ReceiveWebhook(webhook(payload), timeout=5)
    await eventually(lambda: _routed(mesh, 2))
    by_type = {r.message.message_type: r.message for r in mesh.router.requests}
    document = by_type[channel_pb2.MESSAGE_TYPE_DOCUMENT]
    assert (document.text, document.media[0].filename, document.media[0].size_bytes) == (
        "contrato assinado",
        "Contrato_2025.pdf",
        248133,
    )
    assert document.media[0].type == channel_pb2.MESSAGE_TYPE_DOCUMENT
    reply = by_type[channel_pb2.MESSAGE_TYPE_TEXT]
    assert reply.HasField("quoted")
    assert reply.quoted.channel_message_id == "3EB0F4D2A91C6B7E830A15"


async def test_router_unavailable_is_retried_then_dead_letter_redelivered(mesh: Mesh) -> None:
    mesh.router.failures = [errors.UnavailableError("agent down", retry_after=0.05) for _ in range(8)]
    mesh.router.failures.append(errors.UnavailableError("still down"))  # enough to exhaust the 8 attempts
    accepted = await mesh.ingress.ReceiveWebhook(webhook(body(upsert("DL"))), timeout=5)
    await eventually(lambda: _dead(mesh, 1), timeout=30)
    listed = await mesh.ingress.ListDeadLetters(Ingress.ListDeadLettersRequest(instance_name="acme"), timeout=5)
    assert listed.total_count == 1
    (letter,) = listed.dead_letters
    assert (letter.id, letter.attempts, letter.message.channel_message_id) == (accepted.message_id, 8, "DL")
    assert "agent down" in letter.last_error
    assert letter.dead_at.seconds > 0
    assert [r.final_attempt for r in mesh.router.requests] == [False] * 7 + [True]

    mesh.router.failures = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:  # limited to another instance: as if it did not exist
        await mesh.ingress.RedeliverDeadLetter(
            Ingress.RedeliverDeadLetterRequest(id=letter.id, instance_name="disco"), timeout=5
        )
    assert failure.value.code() is grpc.StatusCode.NOT_FOUND
    redelivered = await mesh.ingress.RedeliverDeadLetter(
        Ingress.RedeliverDeadLetterRequest(id=letter.id, instance_name="acme"), timeout=5
    )
    assert redelivered.id == letter.id
    await eventually(lambda: _routed(mesh, 9))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await mesh.ingress.RedeliverDeadLetter(Ingress.RedeliverDeadLetterRequest(id=letter.id), timeout=5)
    assert failure.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await mesh.ingress.RedeliverDeadLetter(Ingress.RedeliverDeadLetterRequest(id="nope"), timeout=5)
    assert failure.value.code() is grpc.StatusCode.NOT_FOUND


async def test_router_not_found_dead_letters_at_once(mesh: Mesh) -> None:
    mesh.router.failures = [errors.NotFoundError("instance deleted")]
    await mesh.ingress.ReceiveWebhook(webhook(body(upsert("NF"))), timeout=5)
    await eventually(lambda: _dead(mesh, 1))
    assert len(mesh.router.requests) == 1


async def test_ingest_message(mesh: Mesh) -> None:
    message = message_pb2.InboundMessage(
        instance_name="disco",
        channel=channel_pb2.CHANNEL_DISCORD,
        channel_message_id="1187",
        chat_id="C1",
        sender=message_pb2.Sender(id="U1", is_bot=False),
        message_type=channel_pb2.MESSAGE_TYPE_TEXT,
        text="hey",
    )
    first = await mesh.ingress.IngestMessage(Ingress.IngestMessageRequest(message=message), timeout=5)
    second = await mesh.ingress.IngestMessage(Ingress.IngestMessageRequest(message=message), timeout=5)
    assert (first.duplicate, second.duplicate, second.message_id) == (False, True, first.message_id)
    await eventually(lambda: _routed(mesh, 1))
    routed = mesh.router.requests[0].message
    assert (routed.id, routed.channel, routed.text, routed.sender.id) == (
        first.message_id,
        channel_pb2.CHANNEL_DISCORD,
        "hey",
        "U1",
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await mesh.ingress.IngestMessage(Ingress.IngestMessageRequest(message=message_pb2.InboundMessage()), timeout=5)
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_router_adapter_translates_statuses(mesh: Mesh) -> None:
    adapter = GrpcRouterPort(mesh.router_stub)
    message = InboundMessage(channel_message_id="A", chat_id="c", sender=Sender(id="u"), id="m1", instance_name="acme")
    assert (await adapter.route(message, attempt=1, final_attempt=False, timeout=5)).outcome == "sent"
    mesh.router.failures = [errors.UnavailableError("busy", retry_after=0.25), errors.NotFoundError("gone")]
    with pytest.raises(errors.UnavailableError) as unavailable:
        await adapter.route(message, attempt=2, final_attempt=True, timeout=5)
    assert unavailable.value.retry_after == pytest.approx(0.25)
    with pytest.raises(errors.NotFoundError):
        await adapter.route(message, attempt=3, final_attempt=True, timeout=5)
    assert [(r.attempt, r.final_attempt, r.message.id) for r in mesh.router.requests] == [
        (1, False, "m1"),
        (2, True, "m1"),
        (3, True, "m1"),
    ]


async def _routed(mesh: Mesh, count: int) -> bool:
    return len(mesh.router.requests) >= count


async def _dead(mesh: Mesh, count: int) -> bool:
    return (await mesh.store.count_by_state()).get("dead", 0) == count


async def test_list_bots_reports_every_owner_s_last_status(mesh: Mesh) -> None:
    now = time.time()
    assert await mesh.leases.acquire("disco", "discord", "replica-a", now, 30)
    assert not await mesh.leases.acquire("disco", "discord", "replica-b", now, 30)
    report = '{"workspaces": [["42", "acme guild"]], "latency_ms": 41.5, "account_id": "7", "account_name": "omni"}'
    assert await mesh.leases.renew("disco", "replica-a", now, 30, "connected", "", report)
    assert await mesh.leases.acquire("stale", "discord", "replica-gone", now - 60, 30)

    every = await mesh.ingress.ListBots(Ingress.ListBotsRequest(), timeout=5)
    one = await mesh.ingress.ListBots(Ingress.ListBotsRequest(instance_name="disco"), timeout=5)

    assert [b.instance_name for b in every.bots] == ["disco", "stale"]
    disco, stale = every.bots
    assert (disco.state, disco.owner, disco.account_id, disco.latency_ms) == (
        channel_pb2.CONNECTION_STATE_CONNECTED,
        "replica-a",
        "7",
        41.5,
    )
    assert [(w.id, w.name) for w in disco.workspaces] == [("42", "acme guild")]
    assert (stale.state, stale.owner) == (channel_pb2.CONNECTION_STATE_CONNECTING, "")
    assert "takes it over" in stale.detail
    assert [b.instance_name for b in one.bots] == ["disco"]
