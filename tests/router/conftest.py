"""Fixtures of the router suite: the real router server on port 0, a real echo agent, a fake channels service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc, outbound_pb2
from omni.common.v1 import channel_pb2, message_pb2
from omni.router.v1 import instance_pb2, router_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from examples.agent_echo import EchoAgent
from servicekit.database import Database, migrate, open_database
from servicekit.errors import InvalidArgumentError, OmniError
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import bind, new_server
from services.router.access_servicer import AccessServicer
from services.router.access_store import AccessRuleCache, AccessRuleRepository
from services.router.api_key_store import ApiKeyRepository
from services.router.channel_client import GrpcAccountChecker, GrpcChannelSender
from services.router.config import Settings
from services.router.core.agent_client import AgentClient
from services.router.core.api_keys import ApiKeyService
from services.router.core.api_sends import ApiSender
from services.router.core.broadcaster import InstanceBroadcaster
from services.router.core.instances import InstanceService
from services.router.core.router import MessageRouter
from services.router.secret_box import SecretBox
from services.router.server import create_server
from services.router.storage import MIGRATIONS, SCHEMA, IdentityRepository, InstanceRepository, RouteRepository
from tests.helpers.http_servers import servers  # noqa: F401 (a fixture for the tests of this folder)
from tests.helpers.mesh_auth import mesh_as

AGENT_KEY = "agent-secret-key-1FAB"
EVOLUTION_KEY = "evo-secret-key-9C3D"

PUBLIC_URL = "https://hub.example.com"
"""The harness router's AUTOMAGIK_OMNI_PUBLIC_URL: webhooks are registered under it."""

TYPING_DELAY = 0.2
"""The harness router shows \"typing...\" when the agent takes longer than this."""


class FakeChannels(channels_service_pb2_grpc.ChannelsServiceServicer):
    """ChannelsService that records sends, de-duplicates parts by (key, index) like the real one, and can fail."""

    def __init__(self) -> None:
        self.requests: list[channels_service_pb2.SendMessageRequest] = []
        self.presences: list[channels_service_pb2.SendPresenceRequest] = []
        self.checks: list[channels_service_pb2.CheckAccountRequest] = []
        self.webhooks: list[channels_service_pb2.RegisterWebhookRequest] = []
        self.sent: dict[tuple[str, int], str] = {}
        self._failures: list[OmniError] = []

    def fail_next(self, error: OmniError, count: int = 1) -> None:
        """Raise `error` (mapped to its status by the server interceptor) on the next `count` SendMessage calls."""
        self._failures.extend([error] * count)

    @property
    def delivered(self) -> list[str]:
        """Texts of every part actually sent (once per key and index)."""
        texts = {}
        for request in self.requests:
            for index, part in enumerate(request.parts):
                if (request.idempotency_key, index) in self.sent:
                    texts[(request.idempotency_key, index)] = part.text
        return list(texts.values())

    async def SendMessage(
        self, request: channels_service_pb2.SendMessageRequest, context: Any
    ) -> channels_service_pb2.SendMessageResponse:
        self.requests.append(request)
        if self._failures:
            raise self._failures.pop(0)
        results = []
        for index, _part in enumerate(request.parts):
            key = (request.idempotency_key, index)
            if key not in self.sent:
                self.sent[key] = f"wamid-{len(self.sent) + 1}"
            results.append(
                outbound_pb2.PartResult(
                    index=index, state=outbound_pb2.PART_STATE_SENT, channel_message_id=self.sent[key]
                )
            )
        return channels_service_pb2.SendMessageResponse(results=results)

    async def SendPresence(
        self, request: channels_service_pb2.SendPresenceRequest, context: Any
    ) -> channels_service_pb2.SendPresenceResponse:
        self.presences.append(request)
        return channels_service_pb2.SendPresenceResponse()

    async def GetConnectionStatus(
        self, request: channels_service_pb2.GetConnectionStatusRequest, context: Any
    ) -> channels_service_pb2.GetConnectionStatusResponse:
        return channels_service_pb2.GetConnectionStatusResponse(state=channel_pb2.CONNECTION_STATE_CONNECTED)

    async def CheckAccount(
        self, request: channels_service_pb2.CheckAccountRequest, context: Any
    ) -> channels_service_pb2.CheckAccountResponse:
        """Refuses Discord tokens starting with "bad", as Discord would with 401; records every check."""
        self.checks.append(request)
        if request.instance.WhichOneof("channel_config") == "discord":
            if request.instance.discord.bot_token.value.startswith("bad"):
                raise InvalidArgumentError("Discord refused the bot token: 401 Unauthorized", reason="ACCOUNT_REJECTED")
            return channels_service_pb2.CheckAccountResponse(account_id="7001", account_name="omni-bot")
        if request.instance.WhichOneof("channel_config") == "slack":
            if request.instance.slack.bot_token.value.startswith("xoxb-bad"):
                raise InvalidArgumentError("Slack refused the bot token: invalid_auth", reason="ACCOUNT_REJECTED")
            return channels_service_pb2.CheckAccountResponse(
                account_id="U0BOT1", account_name="omni", workspace_id="T0ACME", workspace_name="Acme"
            )
        return channels_service_pb2.CheckAccountResponse()

    async def RegisterWebhook(
        self, request: channels_service_pb2.RegisterWebhookRequest, context: Any
    ) -> channels_service_pb2.RegisterWebhookResponse:
        """Records the registration; an Evolution URL containing "refuse" is refused as Evolution's 401 would be."""
        self.webhooks.append(request)
        if "refuse" in request.instance.whatsapp.evolution_url:
            raise InvalidArgumentError(
                "whatsapp refused the webhook registration: Unauthorized", reason="ACCOUNT_REJECTED"
            )
        return channels_service_pb2.RegisterWebhookResponse(registered=True)


class RecordingPurger:
    """The harness's `InstancePurger`: no other service runs here, so it records which instances were purged (the
    real gRPC purger runs against real services in test_purge.py)."""

    def __init__(self) -> None:
        self.purged: list[str] = []

    async def purge(self, instance_name: str) -> int:
        self.purged.append(instance_name)
        return 0


@dataclass
class Harness:
    """Everything a router test drives or inspects."""

    stub: router_service_pb2_grpc.RouterServiceAsyncStub
    agent: EchoAgent
    channels: FakeChannels
    exporter: InMemorySpanExporter
    db: Database
    broadcaster: InstanceBroadcaster
    router: MessageRouter
    closers: list[Any] = field(default_factory=list)
    purger: RecordingPurger = field(default_factory=RecordingPurger)
    port: int = 0
    """The router server's port, for clients with other credentials than the harness stub's."""
    access_cache: AccessRuleCache | None = None
    """The router's in-memory access rules (AccessService writes through it)."""

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


def whatsapp_instance(agent_url: str, name: str = "acme", **overrides: Any) -> instance_pb2.Instance:
    """A valid WhatsApp instance pointing at `agent_url`."""
    values: dict[str, Any] = {
        "name": name,
        "channel": channel_pb2.CHANNEL_WHATSAPP,
        "whatsapp": instance_pb2.WhatsAppConfig(
            evolution_url="http://evolution.invalid:8080",
            evolution_key=instance_pb2.SecretValue(value=EVOLUTION_KEY),
            whatsapp_instance="acme-support",
        ),
        "agent_api_url": agent_url,
        "agent_api_key": instance_pb2.SecretValue(value=AGENT_KEY),
        "default_agent": "support-bot",
        "agent_timeout_seconds": 5,
        "enable_auto_split": True,
        "is_active": True,
    }
    values.update(overrides)
    return instance_pb2.Instance(**values)


def inbound(
    message_id: str = "msg-1",
    *,
    text: str = "Hello!",
    instance: str = "acme",
    chat_id: str = "5511999990001@s.whatsapp.net",
    sender_id: str = "5511999990001@s.whatsapp.net",
    alt_id: str = "",
    phone: str = "",
    is_group: bool = False,
    name: str = "Maria",
) -> message_pb2.InboundMessage:
    return message_pb2.InboundMessage(
        id=message_id,
        instance_name=instance,
        channel=channel_pb2.CHANNEL_WHATSAPP,
        channel_message_id=f"WA-{message_id}",
        chat_id=chat_id,
        sender=message_pb2.Sender(id=sender_id, display_name=name, phone_number=phone, alt_id=alt_id),
        message_type=channel_pb2.MESSAGE_TYPE_TEXT,
        text=text,
        is_group=is_group,
    )


@pytest.fixture
async def harness(db_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    settings = Settings(sqlite_database_path=str(tmp_path / "omni.db"), enable_tracing=False)
    db = await open_database(db_url, SCHEMA)
    await migrate(db, MIGRATIONS, lock_key=SCHEMA)

    channels = FakeChannels()
    channels_server = new_server("channels", tracing=False)
    channels_service_pb2_grpc.add_ChannelsServiceServicer_to_server(channels, channels_server)
    channels_port = bind(channels_server, "127.0.0.1", 0)
    await channels_server.start()
    channels_channel = open_channel(f"127.0.0.1:{channels_port}", tracing=False)
    sender = GrpcChannelSender(channels_service_pb2_grpc.ChannelsServiceStub(channels_channel), send_timeout=5)

    agent = EchoAgent(api_key=AGENT_KEY, prefix="Echo: ")
    await agent.start()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    box = SecretBox.generate()
    identities = IdentityRepository(db)
    instances_repo = InstanceRepository(db, box, cache_seconds=2.0, on_delete=identities.forget_instance)
    broadcaster = InstanceBroadcaster(queue_size=50)
    purger = RecordingPurger()
    access_rules = AccessRuleRepository(db)
    access_cache = AccessRuleCache(access_rules, poll_seconds=0.1)
    await access_cache.start()
    router = MessageRouter(
        access=access_cache,
        instances=instances_repo,
        identities=identities,
        routes=RouteRepository(db),
        agent=AgentClient(session, backoff=(0.05, 0.1, 0.2), tracer=tracer),
        channels=sender,
        tracer=tracer,
        typing_delay=TYPING_DELAY,
    )
    server, port, _health = create_server(
        settings,
        instances=InstanceService(
            instances_repo,
            broadcaster,
            GrpcAccountChecker(channels_service_pb2_grpc.ChannelsServiceStub(channels_channel)),
            webhook_base_url=PUBLIC_URL,
            purger=purger,
        ),
        router=router,
        api_sender=ApiSender(instances=instances_repo, channels=sender, tracer=tracer),
        api_keys=ApiKeyService(ApiKeyRepository(db), instances_repo),
        port=0,
        tracing=False,
        access=AccessServicer(rules=access_rules, cache=access_cache, instances=instances_repo),
    )
    await server.start()
    # As ingress, the router's main caller: it receives the channel and webhook secrets in clear, never the agent's.
    channel = open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("ingress"))
    stub = router_service_pb2_grpc.RouterServiceStub(channel)
    try:
        harness = Harness(stub, agent, channels, exporter, db, broadcaster, router, purger=purger, port=port)
        harness.access_cache = access_cache
        yield harness
    finally:
        await access_cache.stop()
        await channel.close(None)
        await server.stop(None)
        await router.aclose()
        await session.close()
        await agent.stop()
        await channels_channel.close(None)
        await channels_server.stop(None)
        await db.close()
        provider.shutdown()


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    """Poll a synchronous predicate until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
